//! The three benchmark annotation formats on small fixture sets, and one test per data fault.
mod common;
use ccma::config::DatasetName;
use ccma::data::annotations::load;
use common::*;
use std::path::Path;

#[test]
fn cuhk_pedes_subtracts_one_from_train_ids() {
    let root = cuhk_fixture();
    let ds = load(DatasetName::CuhkPedes, &root.path().join("CUHK-PEDES")).unwrap();
    assert_eq!(ds.num_classes, 2);
    assert_eq!(ds.train.len(), 4);
    let pids: Vec<i64> = ds.train.iter().map(|s| s.pid).collect();
    assert_eq!(pids, vec![0, 0, 1, 0]);
    let image_ids: Vec<i64> = ds.train.iter().map(|s| s.image_id).collect();
    assert_eq!(
        image_ids,
        vec![0, 0, 1, 2],
        "image_id counts images in file order"
    );
    assert_eq!(ds.test.image_pids, vec![7, 8]);
    assert_eq!(ds.test.caption_pids, vec![7, 7, 8]);
    assert_eq!(ds.test.captions[1], "another caption");
    assert_eq!(ds.val.image_paths.len(), 1);
    assert!(ds.train[0].image.ends_with("CUHK-PEDES/imgs/a/1.jpg"));
}

#[test]
fn icfg_pedes_keeps_ids_and_accepts_both_file_names() {
    for ann in ["ICFG-PEDES.json", "ICFG_PEDES.json"] {
        let root = tempfile::tempdir().unwrap();
        let entries = zero_based_train_ids();
        fixture(root.path(), "ICFG-PEDES", ann, "file_path", &entries);
        let ds = load(DatasetName::IcfgPedes, &root.path().join("ICFG-PEDES")).unwrap();
        assert_eq!(
            ds.train.iter().map(|s| s.pid).collect::<Vec<_>>(),
            vec![0, 0, 1, 0],
            "{ann}"
        );
        assert_eq!(ds.test.image_paths.len(), 2);
    }
}

#[test]
fn rstpreid_reads_img_path() {
    let root = tempfile::tempdir().unwrap();
    let entries = zero_based_train_ids();
    fixture(
        root.path(),
        "RSTPReid",
        "data_captions.json",
        "img_path",
        &entries,
    );
    let ds = load(DatasetName::RstpReid, &root.path().join("RSTPReid")).unwrap();
    assert_eq!(ds.num_classes, 2);
    assert_eq!(ds.val.captions, vec!["val person"]);
}

/// `ENTRIES` with the 0-based training ids that ICFG-PEDES and RSTPReid files carry.
fn zero_based_train_ids() -> Vec<(&'static str, i64, &'static str, &'static [&'static str])> {
    ENTRIES
        .iter()
        .map(|&(s, id, p, c)| (s, if s == "train" { id - 1 } else { id }, p, c))
        .collect()
}

fn err_of(name: DatasetName, root: &Path) -> String {
    format!("{:#}", load(name, &root.join(name.name())).unwrap_err())
}

/// A CUHK-PEDES fixture whose annotation file is `text`.
fn with_annotation(text: &str) -> (tempfile::TempDir, String) {
    let root = cuhk_fixture();
    std::fs::write(root.path().join("CUHK-PEDES/reid_raw.json"), text).unwrap();
    let e = err_of(DatasetName::CuhkPedes, root.path());
    (root, e)
}

#[test]
fn data_faults_are_named() {
    let root = tempfile::tempdir().unwrap();
    assert!(err_of(DatasetName::CuhkPedes, root.path()).contains("dataset folder"));
    std::fs::create_dir_all(root.path().join("ICFG-PEDES")).unwrap();
    let e = err_of(DatasetName::IcfgPedes, root.path());
    assert!(
        e.contains("expected ICFG-PEDES.json or ICFG_PEDES.json"),
        "{e}"
    );

    let (_r, e) = with_annotation("[{\"split\": \"train\",\n \"id\": 1,, }]");
    assert!(e.contains("invalid JSON at line 2, column"), "{e}");
    let (_r, e) = with_annotation(r#"[{"split": "train", "id": 1, "captions": ["x"]}]"#);
    assert!(e.contains("entry 0: missing key `file_path`"), "{e}");
    let (_r, e) = with_annotation(
        r#"[{"split": "train", "id": "one", "file_path": "a/1.jpg", "captions": ["x"]}]"#,
    );
    assert!(e.contains("entry 0: `id` must be an integer"), "{e}");
    let (_r, e) =
        with_annotation(r#"[{"split": "train", "id": 1, "file_path": "a/1.jpg", "captions": []}]"#);
    assert!(e.contains("entry 0: `captions` is empty"), "{e}");
    let (_r, e) = with_annotation(
        r#"[{"split": "train", "id": 1, "file_path": "a/1.jpg", "captions": ["ok", "  "]}]"#,
    );
    assert!(e.contains("entry 0: captions[1] is empty"), "{e}");
    let (_r, e) = with_annotation(
        r#"[{"split": "train", "id": 1, "file_path": "/etc/passwd", "captions": ["x"]}]"#,
    );
    assert!(e.contains("is absolute"), "{e}");
    let (_r, e) = with_annotation(
        r#"[{"split": "train", "id": 1, "file_path": "../../secret.jpg", "captions": ["x"]}]"#,
    );
    assert!(e.contains("escapes imgs/"), "{e}");
    let (_r, e) = with_annotation(
        r#"[{"split": "train", "id": 1, "file_path": "a/1.jpg", "captions": ["x"]}, {"split": "train", "id": 3, "file_path": "a/2.jpg", "captions": ["y"]}]"#,
    );
    assert!(e.contains("training pids must be exactly 0..N-1"), "{e}");
    let (_r, e) = with_annotation(
        r#"[{"split": "train", "id": 1, "file_path": "a/1.jpg", "captions": ["x"]}, {"split": "test", "id": 3, "file_path": "gone/9.jpg", "captions": ["y"]}, {"split": "test", "id": 3, "file_path": "gone/10.jpg", "captions": ["y"]}]"#,
    );
    assert!(
        e.contains("2 of 3 images are missing") && e.contains("gone/9.jpg"),
        "{e}"
    );
}

#[test]
fn stats_prints_the_split_table_and_faults_are_one_line() {
    let root = cuhk_fixture();
    let out = ccma(&[
        "stats",
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        root.path().to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("| train | 2   | 3      | 4        |"),
        "{text}"
    );
    assert!(
        text.contains("| test  | 2   | 2      | 3        |"),
        "{text}"
    );
    let out = ccma(&[
        "stats",
        "--dataset",
        "RSTPReid",
        "--root-dir",
        root.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "dataset folder");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn corrupt_image_is_named_when_first_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    fixture(&root, "CUHK-PEDES", "reid_raw.json", "file_path", &ENTRIES);
    std::fs::write(
        root.join("CUHK-PEDES/imgs/a/2.jpg"),
        b"\xff\xd8\xff garbage",
    )
    .unwrap();
    let cfg = tiny_cuhk_config(dir.path(), &root);
    let run = dir.path().join("run");
    let out = train_command(&cfg, &run, &[]).output().unwrap();
    assert_one_line_error(&out, "a/2.jpg");
}
