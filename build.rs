//! Keeps `libtorch_cuda` linked when the libtorch in use has it.
//!
//! `libtorch_cuda.so` is only reached through static registrars, so the linker's default
//! `--as-needed` drops it and CUDA then silently reports as unavailable. Forcing it onto the link
//! line makes the same build use CUDA on a GPU host and the CPU elsewhere.
use std::path::PathBuf;

/// The libtorch library folder and version in use, found the way `torch-sys` finds them.
fn libtorch() -> Option<(PathBuf, String)> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let version =
            std::fs::read_to_string(PathBuf::from(&dir).join("build-version")).unwrap_or_default();
        return Some((PathBuf::from(dir).join("lib"), version.trim().to_string()));
    }
    if std::env::var("LIBTORCH_USE_PYTORCH").is_ok() {
        let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python".into());
        let script = "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib')); print(torch.__version__)";
        let out = std::process::Command::new(python)
            .args(["-c", script])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let mut lines = text.lines();
        return Some((
            PathBuf::from(lines.next()?.trim()),
            lines.next().unwrap_or("").trim().to_string(),
        ));
    }
    None
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    if let Some((dir, version)) = libtorch() {
        println!("cargo:rustc-env=CCMA_LIBTORCH_VERSION={version}");
        if dir.join("libtorch_cuda.so").exists() {
            // Applies to every linked target: binaries, tests and benches alike.
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
