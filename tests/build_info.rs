//! `ccma info` names the CUDA version libtorch was built with, the CUDA and NCCL headers the shim
//! was compiled against and the NCCL library loaded at run time; all are checked against what the
//! torch in use reports itself (`torch.version.cuda`, `torch.cuda.nccl.version()`).
mod common;

#[test]
fn info_names_the_cuda_and_nccl_versions_the_shim_was_built_against() {
    let out = common::ccma_ok(&["info"]);
    let info = String::from_utf8(out.stdout).unwrap();
    let script = "import torch\n\
        print(torch.version.cuda or '')\n\
        print('.'.join(map(str, torch.cuda.nccl.version())) if torch.version.cuda else '')";
    let torch = std::process::Command::new(common::python())
        .args(["-c", script])
        .output()
        .expect("run the Python that has torch");
    assert!(
        torch.status.success(),
        "{}",
        String::from_utf8_lossy(&torch.stderr)
    );
    let torch = String::from_utf8(torch.stdout).unwrap();
    let mut lines = torch.lines();
    let (cuda, nccl) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    if cuda.is_empty() {
        assert!(
            info.contains("libtorch CPU build: the shim has no CUDA part\n"),
            "{info}"
        );
        return;
    }
    let with_nccl = format!(
        "libtorch built with CUDA {cuda}; shim compiled against CUDA {cuda} and NCCL {nccl} headers\n"
    );
    let without = format!("libtorch built with CUDA {cuda}; shim compiled without NCCL");
    assert!(
        info.contains(&with_nccl) || info.contains(&without),
        "expected {with_nccl:?} or {without:?} in:\n{info}"
    );
    // Built with NCCL, the NCCL library loaded at run time is torch's own.
    assert_eq!(
        info.contains(&with_nccl),
        info.contains(&format!("NCCL {nccl} loaded at run time\n")),
        "{info}"
    );
    // The backends line and the headers line tell one story.
    assert_eq!(
        info.contains(&with_nccl),
        info.contains("data-parallel backends: Gloo (CPU), NCCL (CUDA)\n"),
        "{info}"
    );
}
