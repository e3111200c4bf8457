//! Mixed precision: the forward pass under CUDA autocast in bf16, fp32 master weights.
//!
//! `tch::autocast` switches CUDA autocast on but leaves its lower-precision type at libtorch's
//! default, fp16, which needs loss scaling. libtorch's `at::autocast::set_autocast_dtype` is
//! not bound by `tch`; it is a plain exported function of `libtorch_cpu`, looked up here in the
//! running process. The autocast type is thread-local state, so it is set on every entry and
//! restored on exit.
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

// `c10::DeviceType` and `c10::ScalarType` are `enum class : int8_t`.
type SetDtype = unsafe extern "C" fn(i8, i8);
type GetDtype = unsafe extern "C" fn(i8) -> i8;
const DEVICE_CUDA: i8 = 1;
/// `c10::ScalarType` codes of the autocast candidates.
const SCALAR_TYPES: [(Kind, i8); 3] = [(Kind::Half, 5), (Kind::Float, 6), (Kind::BFloat16, 15)];
const SET_SYMBOL: &[u8] =
    b"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE\0";
const GET_SYMBOL: &[u8] = b"_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE\0";

struct DtypeFns {
    set: SetDtype,
    get: GetDtype,
}

fn dtype_fns() -> Option<&'static DtypeFns> {
    static FNS: OnceLock<Option<DtypeFns>> = OnceLock::new();
    FNS.get_or_init(|| {
        // SAFETY: the process's own symbol table is searched; the two functions have the C ABI
        // signatures above (one-byte enums by value) in libtorch 2.x, which `tch =0.24` pins.
        unsafe {
            let this = libloading::os::unix::Library::this();
            let set = *this.get::<SetDtype>(SET_SYMBOL).ok()?;
            let get = *this.get::<GetDtype>(GET_SYMBOL).ok()?;
            std::mem::forget(this);
            Some(DtypeFns { set, get })
        }
    })
    .as_ref()
}

/// CUDA autocast's lower-precision type on this thread, as a `tch::Kind` (None if unknown).
pub fn cuda_autocast_kind() -> Option<Kind> {
    let fns = dtype_fns()?;
    // SAFETY: see `dtype_fns`.
    let code = unsafe { (fns.get)(DEVICE_CUDA) };
    SCALAR_TYPES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(k, _)| *k)
}

/// Sets CUDA autocast's lower-precision type on this thread; false when libtorch lacks the hook.
fn set_cuda_autocast_kind(kind: Kind) -> bool {
    let code = SCALAR_TYPES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, c)| *c);
    match (dtype_fns(), code) {
        // SAFETY: see `dtype_fns`.
        (Some(fns), Some(code)) => unsafe {
            (fns.set)(DEVICE_CUDA, code);
            true
        },
        _ => false,
    }
}

/// Runs `f` with autocast off: what must stay in fp32 inside an autocast region (the retrieval
/// projections, DCA's difference of attention maps) casts its inputs to f32 and runs in here.
pub fn full_precision<T>(f: impl FnOnce() -> T) -> T {
    tch::autocast(false, f)
}

/// `t` in f32 when it is in a 16-bit float type, as it is otherwise (f32, f64).
pub fn at_least_f32(t: &Tensor) -> Tensor {
    match t.kind() {
        Kind::Half | Kind::BFloat16 => t.to_kind(Kind::Float),
        _ => t.shallow_clone(),
    }
}

/// Runs `f` under bf16 autocast when `device` is CUDA, plainly (fp32) otherwise.
/// If libtorch offers no way to pick bf16, `f` runs in fp32 (and a warning is logged once).
pub fn autocast<T>(device: Device, f: impl FnOnce() -> T) -> T {
    if !device.is_cuda() {
        return f();
    }
    let previous = cuda_autocast_kind();
    if !set_cuda_autocast_kind(Kind::BFloat16) {
        static WARNED: OnceLock<()> = OnceLock::new();
        WARNED.get_or_init(|| {
            tracing::warn!("libtorch does not expose the autocast type: running in fp32")
        });
        return f();
    }
    let out = tch::autocast(true, f);
    if let Some(prev) = previous {
        set_cuda_autocast_kind(prev);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_type_can_be_set_and_read_back() {
        let before = cuda_autocast_kind().expect("libtorch exports the autocast type functions");
        assert_eq!(
            before,
            Kind::Half,
            "libtorch's default, which `tch::autocast` alone would use"
        );
        assert!(set_cuda_autocast_kind(Kind::BFloat16));
        assert_eq!(cuda_autocast_kind(), Some(Kind::BFloat16));
        assert!(set_cuda_autocast_kind(before));
        assert_eq!(cuda_autocast_kind(), Some(before));
    }
}
