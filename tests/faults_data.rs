//! Data faults through the binary: SYNTH-PEDES generations that never touch what they did not
//! write.
mod common;
use common::*;
use std::path::Path;
use std::process::Output;

/// `ccma stats` of SYNTH-PEDES under `root` with `synth_ids` (and the default seed 1), run by
/// `run` ([`ccma`] or [`ccma_ok`]).
fn synth_stats(root: &Path, synth_ids: &str, run: fn(&[&str]) -> Output) -> Output {
    run(&[
        "stats",
        "--dataset",
        "SYNTH-PEDES",
        "--root-dir",
        root.to_str().unwrap(),
        "--set",
        &format!("synth_ids={synth_ids}"),
    ])
}

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn synth_generations_with_other_parameters_keep_each_other_and_user_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let out = synth_stats(&root, "[4, 1, 2]", ccma_ok);
    let first = root.join("SYNTH-PEDES-4-1-2-s1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(first.to_str().unwrap()) && text.contains("| train | 4 "),
        "{text}"
    );
    std::fs::write(first.join("my-notes.txt"), b"mine").unwrap();
    let before = snapshot(&first);

    let out = synth_stats(&root, "[3, 1, 2]", ccma_ok);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SYNTH-PEDES-3-1-2-s1") && text.contains("| train | 3 "),
        "{text}"
    );
    assert_eq!(
        snapshot(&first),
        before,
        "the first generation is untouched"
    );
    let out = synth_stats(&root, "[4, 1, 2]", ccma_ok);
    assert!(String::from_utf8_lossy(&out.stdout).contains("| train | 4 "));
    assert_eq!(snapshot(&first), before, "and read again as it is");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["SYNTH-PEDES-3-1-2-s1", "SYNTH-PEDES-4-1-2-s1"],
        "no partial folder is left"
    );
}

/// Runs `ccma stats` on `<root>/SYNTH-PEDES` with the default parameters; asserts one error line
/// containing `needle` and the folder unchanged.
fn assert_refused_untouched(root: &Path, needle: &str) {
    let folder = root.join("SYNTH-PEDES");
    let before = snapshot(&folder);
    let out = ccma(&[
        "stats",
        "--dataset",
        "SYNTH-PEDES",
        "--root-dir",
        root.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, needle);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(snapshot(&folder), before, "the folder is untouched");
}

#[test]
fn a_synth_folder_without_a_matching_record_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let folder = root.join("SYNTH-PEDES");
    std::fs::create_dir_all(folder.join("imgs")).unwrap();
    std::fs::write(folder.join("reid_raw.json"), b"[]").unwrap();
    std::fs::write(folder.join("thesis.tex"), b"years of work").unwrap();
    assert_refused_untouched(
        root,
        &format!(
            "{} has no readable synth_params.json, so it is not a set ccma generated (it holds imgs, reid_raw.json, thesis.tex)",
            folder.display()
        ),
    );
    // A generation of other parameters where the default one belongs (as older versions wrote).
    std::fs::write(
        folder.join("synth_params.json"),
        br#"{"generator":1,"ids":[120,10,30],"seed":3}"#,
    )
    .unwrap();
    assert_refused_untouched(
        root,
        "holds a SYNTH-PEDES generated with synth_ids [120,10,30] and seed 3",
    );
}
