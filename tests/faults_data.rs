//! Data faults through the binary: TOY-PEDES generations that never touch what they did not
//! write, image links out of the dataset, annotation encodings, a misspelt test split, ties in the
//! protocol, and a checkpoint whose features are not finite.
mod common;
use common::*;
use std::path::Path;
use std::process::Output;
use tch::{Kind, Tensor};

/// `ccma stats` of TOY-PEDES under `root` with `synth_ids` (and the default synth_seed 1), run by
/// `run` ([`ccma`] or [`ccma_ok`]).
fn synth_stats(root: &Path, synth_ids: &str, run: fn(&[&str]) -> Output) -> Output {
    run(&[
        "stats",
        "--dataset",
        "TOY-PEDES",
        "--root-dir",
        root.to_str().unwrap(),
        "--set",
        &format!("synth_ids={synth_ids}"),
    ])
}

#[test]
fn synth_generations_with_other_parameters_keep_each_other_and_user_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let out = synth_stats(&root, "[4, 1, 2]", ccma_ok);
    let first = root.join("TOY-PEDES-4-1-2-s1");
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
        text.contains("TOY-PEDES-3-1-2-s1") && text.contains("| train | 3 "),
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
        ["TOY-PEDES-3-1-2-s1", "TOY-PEDES-4-1-2-s1"],
        "no partial folder is left"
    );
}

/// Runs `ccma stats` on `<root>/TOY-PEDES` with the default parameters; asserts one error line
/// containing `needle` and the folder unchanged.
fn assert_refused_untouched(root: &Path, needle: &str) {
    let folder = root.join("TOY-PEDES");
    let before = snapshot(&folder);
    let out = ccma(&[
        "stats",
        "--dataset",
        "TOY-PEDES",
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
    let folder = root.join("TOY-PEDES");
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
        br#"{"generator":1,"ids":[120,10,30],"synth_seed":3}"#,
    )
    .unwrap();
    assert_refused_untouched(
        root,
        "holds a TOY-PEDES generated with synth_ids [120,10,30] and synth_seed 3",
    );
}

/// `ccma stats` of the CUHK-PEDES set under `root`, run by `run` ([`ccma`] or [`ccma_ok`]).
fn cuhk_stats(root: &Path, run: fn(&[&str]) -> Output) -> Output {
    run(&[
        "stats",
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        root.to_str().unwrap(),
    ])
}

#[test]
fn image_links_must_stay_inside_imgs() {
    let root = cuhk_fixture();
    let imgs = root.path().join("CUHK-PEDES/imgs");
    // A link to another image inside imgs/ is fine.
    std::fs::remove_file(imgs.join("a/2.jpg")).unwrap();
    std::os::unix::fs::symlink("1.jpg", imgs.join("a/2.jpg")).unwrap();
    cuhk_stats(root.path(), ccma_ok);
    // A link (entry 4's image) to a file outside the dataset is refused.
    let secret = root.path().join("secret.jpg");
    image(&secret);
    std::fs::remove_file(imgs.join("b/5.jpg")).unwrap();
    std::os::unix::fs::symlink("../../../secret.jpg", imgs.join("b/5.jpg")).unwrap();
    let out = cuhk_stats(root.path(), ccma);
    assert_one_line_error(
        &out,
        &format!(
            "reid_raw.json entry 4: file_path \"b/5.jpg\" leads out of {} through a link: {} resolves to {}",
            imgs.display(),
            imgs.join("b/5.jpg").display(),
            secret.canonicalize().unwrap().display()
        ),
    );
    assert_eq!(out.status.code(), Some(2));
    // imgs/ itself may be a link (e.g. to another disk) when what it holds stays inside it.
    std::fs::remove_file(imgs.join("b/5.jpg")).unwrap();
    image(&imgs.join("b/5.jpg"));
    let elsewhere = root.path().join("disk2-imgs");
    std::fs::rename(&imgs, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &imgs).unwrap();
    cuhk_stats(root.path(), ccma_ok);
}

#[test]
fn annotation_bom_is_accepted_and_invalid_utf8_is_named_by_offset() {
    let root = cuhk_fixture();
    let ann = root.path().join("CUHK-PEDES/reid_raw.json");
    let json = std::fs::read(&ann).unwrap();
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend(&json);
    std::fs::write(&ann, &with_bom).unwrap();
    let out = cuhk_stats(root.path(), ccma_ok);
    assert!(String::from_utf8_lossy(&out.stdout).contains("| test  | 2   | 2      | 3        |"));

    // A Latin-1 "é" in a caption, after the BOM.
    let at = with_bom.windows(7).position(|w| w == b"val per").unwrap();
    with_bom[at + 1] = 0xE9;
    std::fs::write(&ann, &with_bom).unwrap();
    let out = cuhk_stats(root.path(), ccma);
    assert_one_line_error(
        &out,
        &format!(
            "{}: invalid UTF-8 at byte offset {} (expected UTF-8 JSON)",
            ann.display(),
            at + 1
        ),
    );
    assert_eq!(out.status.code(), Some(2));
}

/// The fixture with its test entries' split spelt `tset`.
fn misspelt_test_split() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let entries: Vec<_> = ENTRIES
        .iter()
        .map(|&(s, id, p, c)| (if s == "test" { "tset" } else { s }, id, p, c))
        .collect();
    fixture(
        root.path(),
        "CUHK-PEDES",
        "reid_raw.json",
        "file_path",
        &entries,
    );
    root
}

#[test]
fn a_misspelt_test_split_stops_train_and_test_before_any_work() {
    let root = misspelt_test_split();
    let needle = format!(
        "{}: no entries with split \"test\" (entries per split found: \"train\" 3, \"tset\" 2, \"val\" 1; needed: \"train\" and \"test\")",
        root.path().join("CUHK-PEDES/reid_raw.json").display()
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    let run = dir.path().join("run");
    let out = train_command(&cfg, &run, &[]).output().unwrap();
    assert_one_line_error(&out, &needle);
    assert_eq!(out.status.code(), Some(2));
    let checkpoints = std::fs::read_dir(&run)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(checkpoints, 0, "no checkpoint written");

    let out = ccma(&[
        "test",
        "--checkpoint",
        dir.path().join("never-read.safetensors").to_str().unwrap(),
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        root.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "no entries with split \"test\"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("needed: \"test\")"));
}

#[test]
fn equal_features_rank_last_not_first() {
    let dir = tempfile::tempdir().unwrap();
    let pids: Vec<i64> = (0..10).map(|i| i % 5).collect();
    let zeros = Tensor::zeros([10, 8], (Kind::Float, tch::Device::Cpu));
    let f = dir.path().join("zeros.safetensors");
    save(
        &f,
        &[("features", &zeros), ("pids", &Tensor::from_slice(&pids))],
    );
    let f = f.to_str().unwrap();
    let m = ccma_json(&["rank", "--queries", f, "--gallery", f, "--i2t", "--json"]);
    // Each query's 2 matches tie with the 8 other items and take the last ranks, 8 and 9.
    for task in ["t2i", "i2t"] {
        let v = |k: &str| m[task][k].as_f64().unwrap();
        assert_eq!((v("R1"), v("R5"), v("R10")), (0.0, 0.0, 100.0), "{m}");
        assert!(
            (v("mAP") - 100.0 * (1.0 / 9.0 + 2.0 / 10.0) / 2.0).abs() < 1e-4,
            "{m}"
        );
        assert!((v("mINP") - 20.0).abs() < 1e-4, "{m}");
    }
}

#[test]
fn a_checkpoint_with_nan_weights_is_refused_by_test() {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("model.safetensors");
    tiny_checkpoint(&tiny_cuhk_config(dir.path(), root.path()), &ck, |t| {
        t.fill(f64::NAN)
    });
    let out = ccma(&[
        "test",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        root.path().to_str().unwrap(),
    ]);
    // 2 test images and 3 captions, 16 features each.
    assert_one_line_error(
        &out,
        &format!(
            "{}: the model gives 80 NaN or infinite feature values on the CUHK-PEDES test split",
            ck.display()
        ),
    );
    assert_eq!(out.status.code(), Some(2));
    let written = std::fs::read_dir(dir.path()).unwrap().flatten();
    assert!(
        !written
            .into_iter()
            .any(|e| e.file_name().to_string_lossy().starts_with("test_results")),
        "no test results written"
    );
}
