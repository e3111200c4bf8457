//! Links against the libtorch in use and compiles the shim (`csrc/`: c10d, autocast, pinning, fused
//! Adam, matmul precision) against its headers.
//!
//! - `libtorch_cuda.so` is only reached through static registrars, so the linker's default
//!   `--as-needed` drops it and CUDA then silently reports as unavailable. Forcing it onto the link
//!   line makes the same build use CUDA on a GPU host and the CPU elsewhere.
//! - The shim reaches libtorch's own distributed engine (TCP store, Gloo, NCCL). Its NCCL part is
//!   compiled when the libtorch is a CUDA build and CUDA headers of libtorch's own CUDA version and
//!   NCCL headers are found (the `nvidia-*` wheels beside a pip torch first, then
//!   `NCCL_INCLUDE_DIR`, `CUDA_HOME`, `CUDA_PATH`, `/usr/local/cuda`); otherwise an NCCL process
//!   group is refused at run time with a message saying so.
//! - Every variable read and every header folder looked in that exists is watched, so a build made
//!   before the headers were installed is redone once they are.
//! - The versions found reach the binary as `CCMA_LIBTORCH_VERSION`, `CCMA_LIBTORCH_CUDA` (empty on
//!   a CPU build), `CCMA_SHIM_CUDA` and `CCMA_SHIM_NCCL` (empty without NCCL): `ccma info` prints
//!   them.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The libtorch in use, found the way `torch-sys` finds it.
struct Libtorch {
    lib: PathBuf,
    include: PathBuf,
    version: String,
    /// `torch.version.cuda` of a pip torch ("13.0"; none on a CPU build or a libtorch folder).
    python_cuda: Option<String>,
    cxx11_abi: String,
    /// `site-packages` of a pip torch (where the `nvidia/` header wheels live).
    site_packages: Option<PathBuf>,
}

fn libtorch() -> Option<Libtorch> {
    let abi = std::env::var("LIBTORCH_CXX11_ABI").ok();
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let dir = PathBuf::from(dir);
        let version_file = dir.join("build-version");
        println!("cargo:rerun-if-changed={}", version_file.display());
        let version = std::fs::read_to_string(version_file).unwrap_or_default();
        return Some(Libtorch {
            lib: dir.join("lib"),
            include: dir.join("include"),
            version: version.trim().to_string(),
            python_cuda: None,
            cxx11_abi: abi.unwrap_or_else(|| "1".into()),
            site_packages: None,
        });
    }
    if std::env::var("LIBTORCH_USE_PYTORCH").is_ok() {
        let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python".into());
        let script = "import os, torch; d = os.path.dirname(torch.__file__); print(d); print(torch.__version__); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.version.cuda or '')";
        let out = Command::new(python).args(["-c", script]).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let mut lines = text.lines().map(str::trim);
        let torch = PathBuf::from(lines.next()?);
        let version = lines.next().unwrap_or("").to_string();
        let python_abi = lines.next().unwrap_or("1").to_string();
        let python_cuda = lines.next().filter(|v| !v.is_empty()).map(str::to_string);
        println!(
            "cargo:rerun-if-changed={}",
            torch.join("version.py").display()
        );
        return Some(Libtorch {
            lib: torch.join("lib"),
            include: torch.join("include"),
            version,
            python_cuda,
            cxx11_abi: abi.unwrap_or(python_abi),
            site_packages: torch.parent().map(Path::to_path_buf),
        });
    }
    None
}

/// The CUDA version libtorch was built with, as `major.minor` ("13.0"): `torch.version.cuda` of a
/// pip torch, or the `+cuXYZ` tag of a libtorch folder's `build-version`.
fn torch_cuda_version(t: &Libtorch) -> Option<String> {
    if let Some(v) = &t.python_cuda {
        return Some(v.clone());
    }
    let tag = t.version.split_once("+cu")?.1;
    let split = tag.len().checked_sub(1).filter(|&n| n > 0)?;
    Some(format!("{}.{}", &tag[..split], &tag[split..]))
}

/// The value of `#define NAME value` in the header `file`.
fn header_define(file: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() == Some("#define") && words.next() == Some(name) {
            words.next().map(str::to_string)
        } else {
            None
        }
    })
}

/// `major.minor` of the CUDA runtime headers in `include` (`CUDART_VERSION` 13000 is "13.0").
fn cuda_headers_version(include: &Path) -> Option<String> {
    let code: u32 = header_define(&include.join("cuda_runtime_api.h"), "CUDART_VERSION")?
        .parse()
        .ok()?;
    Some(format!("{}.{}", code / 1000, code % 1000 / 10))
}

/// `major.minor.patch` of the NCCL header in `include`.
fn nccl_headers_version(include: &Path) -> Option<String> {
    let part = |name| header_define(&include.join("nccl.h"), name);
    Some(format!(
        "{}.{}.{}",
        part("NCCL_MAJOR")?,
        part("NCCL_MINOR")?,
        part("NCCL_PATCH")?
    ))
}

/// The headers the NCCL process group compiles against, with their versions.
struct NcclHeaders {
    cuda: PathBuf,
    cuda_version: String,
    nccl: PathBuf,
    nccl_version: String,
}

/// The folders to look in for (CUDA, NCCL) headers, in order of preference: those of the torch in
/// use first (the `nvidia/*/include` wheels beside a pip torch), then the variables', then the
/// system's. Each folder that exists is watched (the wheels' parent folder as a whole).
fn header_candidates(t: &Libtorch) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut cuda = Vec::new();
    let mut nccl = Vec::new();
    if let Some(sp) = &t.site_packages {
        let wheels = sp.join("nvidia");
        if wheels.is_dir() {
            println!("cargo:rerun-if-changed={}", wheels.display());
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(&wheels)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("include"))
            .collect();
        found.sort();
        cuda.extend(found.iter().cloned());
        nccl.extend(found);
    }
    let mut system = Vec::new();
    if let Ok(d) = std::env::var("NCCL_INCLUDE_DIR") {
        nccl.push(PathBuf::from(&d));
        system.push(PathBuf::from(d));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(d) = std::env::var(var) {
            cuda.push(PathBuf::from(&d).join("include"));
            system.push(PathBuf::from(d).join("include"));
        }
    }
    cuda.push("/usr/local/cuda/include".into());
    system.push("/usr/local/cuda/include".into());
    for dir in system.iter().filter(|d| d.is_dir()) {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    nccl.extend(cuda.iter().cloned());
    nccl.push("/usr/include".into());
    (cuda, nccl)
}

/// The first complete set of CUDA headers of libtorch's own CUDA version (a system CUDA 12 beside
/// torch's CUDA 13 would mix two runtimes in one binary) and the first NCCL header; the error says
/// what was missing.
fn nccl_headers(t: &Libtorch, torch_cuda: &str) -> Result<NcclHeaders, String> {
    let (cuda, nccl) = header_candidates(t);
    let complete: Vec<&PathBuf> = cuda
        .iter()
        .filter(|d| {
            ["cuda_runtime_api.h", "crt/host_config.h", "nv/target"]
                .iter()
                .all(|f| d.join(f).exists())
        })
        .collect();
    let matching = complete
        .iter()
        .find(|d| cuda_headers_version(d).as_deref() == Some(torch_cuda));
    let Some(cuda) = matching else {
        return Err(match complete.first() {
            Some(d) => format!(
                "the CUDA headers found ({}: CUDA {}) are not those of libtorch's CUDA {torch_cuda}",
                d.display(),
                cuda_headers_version(d).unwrap_or_else(|| "of unknown version".into())
            ),
            None => format!("no CUDA {torch_cuda} headers were found"),
        });
    };
    let nccl = nccl
        .into_iter()
        .find(|d| d.join("nccl.h").exists())
        .ok_or("no nccl.h was found")?;
    Ok(NcclHeaders {
        cuda: (*cuda).clone(),
        cuda_version: torch_cuda.to_string(),
        nccl_version: nccl_headers_version(&nccl).unwrap_or_else(|| "unknown".into()),
        nccl,
    })
}

/// Compiles the shim, with its NCCL part where `headers` were found.
fn compile_shim(t: &Libtorch, headers: Option<&NcclHeaders>) {
    for f in [
        "csrc/c10d.cpp",
        "csrc/nccl.cpp",
        "csrc/rendezvous.cpp",
        "csrc/torch_ext.cpp",
        "csrc/backends.hpp",
        "csrc/rendezvous.hpp",
        "csrc/shim.hpp",
        "csrc/gloo",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .files([
            "csrc/c10d.cpp",
            "csrc/nccl.cpp",
            "csrc/rendezvous.cpp",
            "csrc/torch_ext.cpp",
        ])
        .include("csrc")
        .include(&t.include)
        .include(t.include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", t.cxx11_abi.as_str())
        .define("USE_C10D_GLOO", None)
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-interference-size")
        .warnings(false);
    if let Some(h) = headers {
        build
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .define("CCMA_WITH_NCCL", None)
            .include(&h.cuda)
            .include(&h.nccl);
    }
    build.compile("ccma_c10d");
    if headers.is_some() {
        // After the shim on the link line: its `c10::cuda::set_device` binds an NCCL rank to its
        // card.
        println!("cargo:rustc-link-search=native={}", t.lib.display());
        println!("cargo:rustc-link-lib=c10_cuda");
    }
}

fn main() {
    for var in [
        "LIBTORCH",
        "LIBTORCH_USE_PYTORCH",
        "LIBTORCH_CXX11_ABI",
        "PYTHON_SYS_EXECUTABLE",
        "CUDA_HOME",
        "CUDA_PATH",
        "NCCL_INCLUDE_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Some(t) = libtorch() else {
        panic!("libtorch not found: set LIBTORCH, or LIBTORCH_USE_PYTORCH=1 with torch installed (scripts/env.sh does this)");
    };
    println!("cargo:rustc-env=CCMA_LIBTORCH_VERSION={}", t.version);
    let cuda = t.lib.join("libtorch_cuda.so").exists();
    if cuda {
        // Applies to every linked target: binaries, tests and benches alike.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", t.lib.display());
    let torch_cuda = cuda.then(|| torch_cuda_version(&t)).flatten();
    let headers = match (cuda, &torch_cuda) {
        (false, _) => None,
        (true, None) => {
            println!("cargo:warning=libtorch has CUDA but its CUDA version is not recorded (no `torch.version.cuda`, no `+cuXYZ` in build-version): NCCL process groups are left out");
            None
        }
        (true, Some(v)) => nccl_headers(&t, v)
            .map_err(|why| println!("cargo:warning={why}: NCCL process groups are left out (set CUDA_HOME or NCCL_INCLUDE_DIR)"))
            .ok(),
    };
    println!(
        "cargo:rustc-env=CCMA_LIBTORCH_CUDA={}",
        torch_cuda.as_deref().unwrap_or("")
    );
    let (shim_cuda, shim_nccl) = match &headers {
        Some(h) => (h.cuda_version.as_str(), h.nccl_version.as_str()),
        None => ("", ""),
    };
    println!("cargo:rustc-env=CCMA_SHIM_CUDA={shim_cuda}");
    println!("cargo:rustc-env=CCMA_SHIM_NCCL={shim_nccl}");
    compile_shim(&t, headers.as_ref());
}
