//! Devices: what the user asks for, what libtorch sees, and the lines of `ccma info`.
use anyhow::{bail, Result};
use tch::Device;

/// The device a user asks for: `auto` (CUDA 0 when available, else the CPU), `cpu`, `cuda`
/// (= `cuda:0`) or `cuda:N`. Written and read back in that form (configs, flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<DeviceSpec, String> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("{s:?} (expected auto, cpu, cuda or cuda:N)")),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DeviceSpec, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("invalid value: {e}")))
    }
}

impl DeviceSpec {
    /// The libtorch device; a CUDA index libtorch does not see is an error.
    pub fn resolve(self) -> Result<Device> {
        let dev = match self {
            DeviceSpec::Auto => Device::cuda_if_available(),
            DeviceSpec::Cpu => Device::Cpu,
            DeviceSpec::Cuda(i) => Device::Cuda(i),
        };
        if let Device::Cuda(i) = dev {
            let n = tch::Cuda::device_count() as usize;
            if i >= n {
                bail!(crate::UsageError(format!(
                    "device {self} asked for, but libtorch sees {n} CUDA device(s)"
                )));
            }
        }
        Ok(dev)
    }

    /// The device of the rank with `local_rank` on its machine in a launched (data-parallel)
    /// run: a CUDA rank uses `cuda:local_rank`, so the config says `auto`, `cpu` or `cuda`.
    pub fn resolve_for_rank(self, local_rank: usize) -> Result<Device> {
        match self {
            DeviceSpec::Cuda(i) if i > 0 => bail!(crate::UsageError(format!(
                "device {self} in a launched run: each rank uses cuda:LOCAL_RANK, so write `device: cuda` (or auto)"
            ))),
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto if !tch::Cuda::is_available() => Ok(Device::Cpu),
            _ => DeviceSpec::Cuda(local_rank).resolve(),
        }
    }
}

/// Name and total memory (bytes) of each CUDA device, read through the CUDA driver API.
///
/// libtorch does not expose device properties through `tch`, so this asks `libcuda` directly;
/// it returns an empty list when the driver is not present.
pub fn cuda_devices() -> Vec<(String, u64)> {
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Count = unsafe extern "C" fn(*mut i32) -> i32;
    type Get = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type Name = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
    type Mem = unsafe extern "C" fn(*mut usize, i32) -> i32;
    // SAFETY: the symbols are looked up with the signatures the CUDA driver API documents and are
    // only called while the library is loaded.
    unsafe {
        let Ok(lib) = libloading::Library::new("libcuda.so.1") else {
            return vec![];
        };
        let (Ok(init), Ok(count), Ok(get), Ok(name), Ok(mem)) = (
            lib.get::<Init>(b"cuInit"),
            lib.get::<Count>(b"cuDeviceGetCount"),
            lib.get::<Get>(b"cuDeviceGet"),
            lib.get::<Name>(b"cuDeviceGetName"),
            lib.get::<Mem>(b"cuDeviceTotalMem_v2"),
        ) else {
            return vec![];
        };
        if init(0) != 0 {
            return vec![];
        }
        let mut n = 0;
        if count(&mut n) != 0 {
            return vec![];
        }
        (0..n)
            .filter_map(|i| {
                let mut dev = 0;
                if get(&mut dev, i) != 0 {
                    return None;
                }
                let mut buf = [0 as std::ffi::c_char; 256];
                let mut bytes = 0usize;
                if name(buf.as_mut_ptr(), 256, dev) != 0 || mem(&mut bytes, dev) != 0 {
                    return None;
                }
                let s = std::ffi::CStr::from_ptr(buf.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                Some((s, bytes as u64))
            })
            .collect()
    }
}

/// The lines `ccma info` prints.
pub fn info_lines() -> Vec<String> {
    let mut lines = vec![
        format!("ccma {}", env!("CARGO_PKG_VERSION")),
        format!("libtorch {} (built against)", libtorch_version()),
        build_headers_line(),
    ];
    if let Some(v) = nccl_runtime_version() {
        lines.push(format!("NCCL {v} loaded at run time"));
    }
    let n = tch::Cuda::device_count();
    if tch::Cuda::is_available() && n > 0 {
        let props = cuda_devices();
        lines.push(format!(
            "CUDA available: {n} device(s), cuDNN {}",
            tch::Cuda::cudnn_is_available()
        ));
        for i in 0..n as usize {
            match props.get(i) {
                Some((name, mem)) => lines.push(format!(
                    "  cuda:{i}  {name}  {:.1} GiB",
                    *mem as f64 / (1u64 << 30) as f64
                )),
                None => lines.push(format!("  cuda:{i}")),
            }
        }
    } else {
        lines.push("CUDA not available: running on the CPU".into());
    }
    lines.push(format!(
        "CPU threads: {} (libtorch intra-op)",
        tch::get_num_threads()
    ));
    lines
}

/// The CUDA version libtorch was built with and the CUDA and NCCL headers the shim was compiled
/// against (build.rs records them; they are the same CUDA, or the NCCL part is left out).
fn build_headers_line() -> String {
    let recorded = |v: Option<&'static str>| v.filter(|v| !v.is_empty());
    match (
        recorded(option_env!("CCMA_LIBTORCH_CUDA")),
        recorded(option_env!("CCMA_SHIM_CUDA")),
        recorded(option_env!("CCMA_SHIM_NCCL")),
    ) {
        (None, _, _) => "libtorch CPU build: the shim has no CUDA part".into(),
        (Some(torch), Some(cuda), Some(nccl)) => format!(
            "libtorch built with CUDA {torch}; shim compiled against CUDA {cuda} and NCCL {nccl} headers"
        ),
        (Some(torch), _, _) => format!(
            "libtorch built with CUDA {torch}; shim compiled without NCCL (no CUDA {torch} and NCCL headers were found)"
        ),
    }
}

/// The version of the NCCL library loaded at run time (`ncclGetVersion`, through libtorch), where
/// the shim was built with NCCL.
fn nccl_runtime_version() -> Option<String> {
    // SAFETY: returns a string the shim allocated, or null.
    crate::shim::take_string(unsafe { crate::shim::ccma_nccl_runtime_version() })
}

/// The libtorch version the binary runs against, as `torch.__version__` prints it.
pub fn libtorch_version() -> String {
    // tch exposes no version getter; build.rs records the version of the libtorch it linked.
    option_env!("CCMA_LIBTORCH_VERSION")
        .filter(|v| !v.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// (free, total) bytes of `device`'s memory as the driver reports them; `None` on the CPU.
fn memory_info(device: Device) -> Option<(usize, usize)> {
    let Device::Cuda(_) = device else { return None };
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: cuMemGetInfo_v2 has this signature; the calling thread has the CUDA context that
    // libtorch made current once it ran work on the device.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").ok()?;
        let f = lib.get::<MemGetInfo>(b"cuMemGetInfo_v2").ok()?;
        let (mut free, mut total) = (0usize, 0usize);
        (f(&mut free, &mut total) == 0).then_some((free, total))
    }
}

/// Memory in use on `device` (total minus free, GiB) as the driver reports it; `None` on the CPU.
/// libtorch's caching allocator keeps what it reserved, so after a run this is its peak
/// reservation plus the CUDA context.
pub fn used_memory_gib(device: Device) -> Option<f64> {
    memory_info(device).map(|(free, total)| (total - free) as f64 / (1u64 << 30) as f64)
}

/// The CUDA caching allocator's figures for one card, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    /// Allocated to tensors now.
    pub allocated: u64,
    /// The most allocated at once since the last [`reset_peak_allocated`].
    pub peak: u64,
    /// Held by the allocator (allocated, or cached for reuse).
    pub reserved: u64,
    /// Free on the card, as the driver reports it.
    pub free: u64,
    pub total: u64,
}

/// The caching allocator's figures for CUDA device `device` (its own, whichever is current).
pub fn cuda_memory(device: Device) -> anyhow::Result<CudaMemory> {
    let Device::Cuda(i) = device else {
        anyhow::bail!("{device:?} is not a CUDA device");
    };
    let mut out = [0i64; 5];
    // SAFETY: `out` has the five slots the shim writes.
    crate::shim::call(
        |err| unsafe { crate::shim::ccma_cuda_memory(i as i32, out.as_mut_ptr(), err) },
        |ok| *ok == 0,
    )
    .map_err(|e| anyhow::anyhow!("cannot read the memory statistics of cuda:{i}: {e}"))?;
    let [allocated, peak, reserved, free, total] = out.map(|v| v.max(0) as u64);
    Ok(CudaMemory {
        allocated,
        peak,
        reserved,
        free,
        total,
    })
}

/// Starts a new peak of the bytes allocated on CUDA device `device` ([`CudaMemory::peak`]).
pub fn reset_peak_allocated(device: Device) -> anyhow::Result<()> {
    let Device::Cuda(i) = device else {
        anyhow::bail!("{device:?} is not a CUDA device");
    };
    // SAFETY: a query of libtorch's allocator for a device index.
    crate::shim::call(
        |err| unsafe { crate::shim::ccma_cuda_reset_peak(i as i32, err) },
        |ok| *ok == 0,
    )
    .map(|_| ())
    .map_err(|e| anyhow::anyhow!("cannot reset the memory peak of cuda:{i}: {e}"))
}

thread_local! {
    static HOST_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// `t` copied to the host: the one way the training step reads a value back from its device (a
/// read waits for the device's queued work), counted per thread ([`host_reads`]).
pub fn read_to_host(t: &tch::Tensor) -> tch::Tensor {
    HOST_READS.with(|n| n.set(n.get() + 1));
    t.to_device(Device::Cpu)
}

/// How many [`read_to_host`] calls this thread has made.
pub fn host_reads() -> usize {
    HOST_READS.with(std::cell::Cell::get)
}
