//! Links against the libtorch in use and compiles the shim (`csrc/`: c10d, autocast, pinning, fused
//! Adam, matmul precision) against its headers.
//!
//! - `libtorch_cuda.so` is only reached through static registrars, so the linker's default
//!   `--as-needed` drops it and CUDA then silently reports as unavailable. Forcing it onto the link
//!   line makes the same build use CUDA on a GPU host and the CPU elsewhere.
//! - The shim reaches libtorch's own distributed engine (TCP store, Gloo, NCCL). Its NCCL part is
//!   compiled when the libtorch is a CUDA build and the CUDA and NCCL headers are found (the
//!   `nvidia-*` wheels beside a pip torch, `CUDA_HOME`, or `NCCL_INCLUDE_DIR`); otherwise an
//!   NCCL process group is refused at run time with a message saying so.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The libtorch in use, found the way `torch-sys` finds it.
struct Libtorch {
    lib: PathBuf,
    include: PathBuf,
    version: String,
    cxx11_abi: String,
    /// `site-packages` of a pip torch (where the `nvidia/` header wheels live).
    site_packages: Option<PathBuf>,
}

fn libtorch() -> Option<Libtorch> {
    let abi = std::env::var("LIBTORCH_CXX11_ABI").ok();
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let dir = PathBuf::from(dir);
        let version = std::fs::read_to_string(dir.join("build-version")).unwrap_or_default();
        return Some(Libtorch {
            lib: dir.join("lib"),
            include: dir.join("include"),
            version: version.trim().to_string(),
            cxx11_abi: abi.unwrap_or_else(|| "1".into()),
            site_packages: None,
        });
    }
    if std::env::var("LIBTORCH_USE_PYTORCH").is_ok() {
        let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python".into());
        let script = "import os, torch; d = os.path.dirname(torch.__file__); print(d); print(torch.__version__); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))";
        let out = Command::new(python).args(["-c", script]).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let mut lines = text.lines().map(str::trim);
        let torch = PathBuf::from(lines.next()?);
        let version = lines.next().unwrap_or("").to_string();
        let python_abi = lines.next().unwrap_or("1").to_string();
        return Some(Libtorch {
            lib: torch.join("lib"),
            include: torch.join("include"),
            version,
            cxx11_abi: abi.unwrap_or(python_abi),
            site_packages: torch.parent().map(Path::to_path_buf),
        });
    }
    None
}

/// The first of `dirs` that holds every one of `files`.
fn find_dir(dirs: &[PathBuf], files: &[&str]) -> Option<PathBuf> {
    dirs.iter()
        .find(|d| files.iter().all(|f| d.join(f).exists()))
        .cloned()
}

/// Include folders for the NCCL process group: (CUDA runtime, NCCL), where both are found.
fn nccl_includes(t: &Libtorch) -> Option<(PathBuf, PathBuf)> {
    let mut cuda = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(d) = std::env::var(var) {
            cuda.push(PathBuf::from(d).join("include"));
        }
    }
    cuda.push("/usr/local/cuda/include".into());
    let mut nccl = Vec::new();
    if let Ok(d) = std::env::var("NCCL_INCLUDE_DIR") {
        nccl.push(PathBuf::from(d));
    }
    if let Some(sp) = &t.site_packages {
        for entry in std::fs::read_dir(sp.join("nvidia"))
            .into_iter()
            .flatten()
            .flatten()
        {
            cuda.push(entry.path().join("include"));
            nccl.push(entry.path().join("include"));
        }
    }
    nccl.extend(cuda.iter().cloned());
    nccl.push("/usr/include".into());
    let cuda = find_dir(&cuda, &["cuda_runtime.h", "crt/host_config.h", "nv/target"])?;
    let nccl = find_dir(&nccl, &["nccl.h"])?;
    Some((cuda, nccl))
}

fn compile_shim(t: &Libtorch, cuda: bool) {
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
    let nccl = cuda.then(|| nccl_includes(t)).flatten();
    let with_nccl = nccl.is_some();
    match nccl {
        Some((cuda_inc, nccl_inc)) => {
            build
                .define("USE_C10D_NCCL", None)
                .define("USE_CUDA", None)
                .define("CCMA_WITH_NCCL", None)
                .include(cuda_inc)
                .include(nccl_inc);
        }
        None if cuda => println!(
            "cargo:warning=libtorch has CUDA but the CUDA or NCCL headers were not found: NCCL process groups are left out (set CUDA_HOME or NCCL_INCLUDE_DIR)"
        ),
        None => {}
    }
    build.compile("ccma_c10d");
    if with_nccl {
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
    compile_shim(&t, cuda);
}
