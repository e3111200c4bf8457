//! `ccma check` through the binary on generated sets in the three layouts: a clean set passes,
//! every planted fault is counted exactly, RSTPReid's first release is named; the file names in
//! circulation (`CUHK-PEDES.json`, `caption_all.json`); `train` and `test` stop before a model is
//! built when an image is missing.
mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;

/// `ccma check --dataset NAME --root-dir ROOT --report REPORT` with `extra` arguments.
fn check(root: &Path, name: &str, report: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "check",
        "--dataset",
        name,
        "--root-dir",
        root.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend(extra);
    ccma(&args)
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "JSON on stdout ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The cells of the table row whose label starts with `label`.
fn table_row(stdout: &str, label: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start_matches('|').trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{stdout}"));
    line.split('|')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Writes `<root>/<name>/<ann>` with `entries` as JSON objects; images are made by the caller.
fn write_annotations(root: &Path, name: &str, ann: &str, entries: &[Value]) {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("imgs")).unwrap();
    std::fs::write(dir.join(ann), serde_json::to_string(entries).unwrap()).unwrap();
}

/// Training ids from 0, as ICFG-PEDES and RSTPReid files have them.
const ZERO_BASED: [(&str, i64, &str, &[&str]); 6] = [
    ("train", 0, "a/1.jpg", &["a man in red", "red shirt man"]),
    ("train", 1, "a/2.jpg", &["a woman in blue"]),
    ("train", 0, "b/3.jpg", &["the man in red again"]),
    (
        "test",
        7,
        "b/4.jpg",
        &["test person one", "another caption"],
    ),
    ("test", 8, "b/5.jpg", &["test person two"]),
    ("val", 9, "b/6.jpg", &["val person"]),
];

#[test]
fn a_clean_set_passes_in_each_layout() {
    let layouts = [
        ("CUHK-PEDES", "reid_raw.json", "file_path", &ENTRIES),
        ("ICFG-PEDES", "ICFG-PEDES.json", "file_path", &ZERO_BASED),
        ("RSTPReid", "data_captions.json", "img_path", &ZERO_BASED),
    ];
    for (name, ann, key, entries) in layouts {
        let root = tempfile::tempdir().unwrap();
        fixture(root.path(), name, ann, key, entries);
        let report = root.path().join("report.tsv");
        let out = check(root.path(), name, &report, &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.lines().last().unwrap().starts_with(&format!(
                "usable: {name} in {} can be trained and tested as it is",
                root.path().join(name).display()
            )),
            "{name}: {text}"
        );
        assert_eq!(
            table_row(&text, "identities"),
            ["identities", "2", "1", "2"]
        );
        assert_eq!(
            table_row(&text, "images missing"),
            ["images missing", "0", "0", "0"]
        );
        assert_eq!(
            table_row(&text, "image height"),
            [
                "image height min / median / max",
                "50 / 50 / 50",
                "50 / 50 / 50",
                "50 / 50 / 50"
            ]
        );
        // A report of nothing: its header lines only.
        assert_eq!(std::fs::read_to_string(&report).unwrap().lines().count(), 2);

        let j = stdout_json(&check(root.path(), name, &report, &["--json"]));
        assert_eq!(j["usable"], true, "{name}: {j}");
        for (split, images, captions) in [("train", 3, 4), ("val", 1, 1), ("test", 2, 3)] {
            let s = &j["splits"][split];
            assert_eq!(
                (s["images"].as_u64(), s["captions"].as_u64()),
                (Some(images), Some(captions)),
                "{name} {split}"
            );
            assert_eq!(s["image_width"], json!([20, 20, 20]));
        }
        // Tiny fixtures are not the published benchmark: a note, not a fault.
        assert!(j["published_differs"][0]
            .as_str()
            .unwrap()
            .starts_with("identities 2 / 1 / 2 (published"));
    }
}

#[test]
fn captions_are_counted_as_truncated_at_text_length() {
    let root = cuhk_fixture();
    let report = root.path().join("report.tsv");
    // Start and end tokens included: "the man in red again" is 7 tokens, every other caption 6 or
    // fewer.
    let j = stdout_json(&check(
        root.path(),
        "CUHK-PEDES",
        &report,
        &["--json", "--set", "text_length=6"],
    ));
    let truncated: Vec<u64> = ["train", "val", "test"]
        .iter()
        .map(|s| j["splits"][s]["truncated_captions"].as_u64().unwrap())
        .collect();
    assert_eq!(truncated, [1, 0, 0]);
    assert_eq!(j["usable"], true, "truncation is a note: {j}");
}

/// A 20x50 JPEG's bytes.
fn jpeg_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(20, 50, image::Rgb([10, 200, 30]))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    bytes
}

/// A CUHK-PEDES set with one of every fault planted (see the comments), and its root.
fn faulty_cuhk_set() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let imgs = root.path().join("CUHK-PEDES/imgs");
    for p in [
        "a/1.jpg", "a/2.jpg", "a/3.jpg", "a/4.jpg", "b/4.jpg", "b/5.jpg",
    ] {
        image(&imgs.join(p));
    }
    let secret = root.path().join("secret.jpg");
    image(&secret);
    std::os::unix::fs::symlink(&secret, imgs.join("b/link.jpg")).unwrap();
    std::fs::write(imgs.join("b/zero.jpg"), b"").unwrap();
    let jpeg = jpeg_bytes();
    std::fs::write(imgs.join("b/trunc.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::create_dir(imgs.join("b/dir.jpg")).unwrap();
    mkfifo(&imgs.join("b/fifo.jpg"));
    let long = vec!["red"; 100].join(" ");
    let e = |split: &str, id: i64, path: &str, caps: &[&str]| json!({ "split": split, "id": id, "file_path": path, "captions": caps });
    let entries = [
        e("train", 1, "a/1.jpg", &["a man in red", "red shirt man"]),
        e("train", 2, "a/2.jpg", &["a woman in blue"]),
        e("train", 1, "a/gone.jpg", &["missing"]),
        e(
            "train",
            2,
            "train_query/p1.jpg",
            &["missing, folder absent"],
        ),
        e("train", 1, "../outside.jpg", &["escapes imgs/"]),
        e("test", 7, "b/link.jpg", &["a link out of imgs/"]),
        e("test", 7, "b/zero.jpg", &["zero bytes"]),
        e("test", 8, "b/trunc.jpg", &["truncated JPEG"]),
        e("test", 8, "b/dir.jpg", &["a directory"]),
        e("val", 9, "b/fifo.jpg", &["a FIFO"]),
        e("train", 1, "a/1.jpg", &["a duplicate of entry 0"]),
        e("train", 2, "a/3.jpg", &[long.as_str()]),
        e("test", 7, "b/4.jpg", &["ok", "  "]),
        e("test", 8, "b/5.jpg", &["one", "two", "three"]),
        e("train", 5, "a/4.jpg", &["pid 4 of 3 training ids"]),
    ];
    write_annotations(root.path(), "CUHK-PEDES", "reid_raw.json", &entries);
    root
}

#[test]
fn every_planted_fault_is_counted_exactly() {
    let root = faulty_cuhk_set();
    let report = root.path().join("report.tsv");
    let out = check(root.path(), "CUHK-PEDES", &report, &["--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = stdout_json(&out);
    let expect = [
        (
            "train",
            [
                ("ids", 3),
                ("images", 8),
                ("captions", 9),
                ("missing", 2),
                ("outside_imgs", 1),
                ("duplicate_image_paths", 1),
                ("truncated_captions", 1),
                ("train_ids_not_0_to_n_minus_1", 1),
            ],
        ),
        (
            "val",
            [
                ("ids", 1),
                ("images", 1),
                ("captions", 1),
                ("not_a_regular_file", 1),
                ("missing", 0),
                ("outside_imgs", 0),
                ("undecodable", 0),
                ("empty_captions", 0),
            ],
        ),
        (
            "test",
            [
                ("ids", 2),
                ("images", 6),
                ("captions", 9),
                ("outside_imgs", 1),
                ("undecodable", 2),
                ("not_a_regular_file", 1),
                ("empty_captions", 1),
                ("images_with_more_than_2_captions", 1),
            ],
        ),
    ];
    for (split, counts) in expect {
        for (key, n) in counts {
            assert_eq!(j["splits"][split][key], n, "{split} {key}: {j}");
        }
    }
    // Everything not planted is zero.
    let planted: usize = ["train", "val", "test"]
        .iter()
        .flat_map(|s| j["splits"][s].as_object().unwrap().iter())
        .filter(|(k, _)| {
            !["ids", "images", "captions", "image_height", "image_width"].contains(&k.as_str())
        })
        .map(|(_, v)| v.as_u64().unwrap() as usize)
        .sum();
    assert_eq!(planted, 13);
    assert_eq!(j["absent_folders"], json!([["train_query", 1]]));
    assert_eq!(j["usable"], false);
    // Only the decodable images have sizes: a/1.jpg (twice), a/2.jpg, a/3.jpg, a/4.jpg.
    assert_eq!(j["splits"]["train"]["image_height"], json!([50, 50, 50]));
    assert_eq!(j["splits"]["val"]["image_height"], Value::Null);

    // The last line says why, naming the report, which lists every finding.
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("error: not usable: CUHK-PEDES in ")
            && last.contains("2 images missing, 2 images outside imgs/, 2 not regular files (folders, FIFOs), 2 images undecodable, 1 empty captions, 1 train ids not 0..N-1;")
            && last.ends_with(&format!("every problem is listed in {}", report.display())),
        "{err}"
    );
    let listing = std::fs::read_to_string(&report).unwrap();
    let count = |key: &str| {
        listing
            .lines()
            .filter(|l| l.starts_with(&format!("{key}\t")))
            .count()
    };
    for (key, n) in [
        ("missing", 2),
        ("outside_imgs", 2),
        ("not_a_regular_file", 2),
        ("undecodable", 2),
        ("empty_captions", 1),
        ("truncated_captions", 1),
        ("images_with_more_than_2_captions", 1),
        ("duplicate_image_paths", 1),
        ("train_ids_not_0_to_n_minus_1", 1),
    ] {
        assert_eq!(count(key), n, "{key} in\n{listing}");
    }
    assert_eq!(listing.lines().count(), 2 + 13);
    assert!(
        listing.contains("not_a_regular_file\tval\t9\tb/fifo.jpg\ta FIFO\n"),
        "{listing}"
    );
    assert!(
        listing.contains("not_a_regular_file\ttest\t8\tb/dir.jpg\ta directory\n"),
        "{listing}"
    );
    assert!(
        listing.contains("duplicate_image_paths\ttrain\t10\ta/1.jpg\tthe image of entry 0\n"),
        "{listing}"
    );

    // The table says the same, with the first few named.
    let out = check(root.path(), "CUHK-PEDES", &report, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        table_row(&text, "images undecodable"),
        ["images undecodable", "0", "0", "2"]
    );
    assert_eq!(
        table_row(&text, "not regular files"),
        ["not regular files (folders, FIFOs)", "0", "1", "1"]
    );
    assert_eq!(
        table_row(&text, "train ids"),
        ["train ids not 0..N-1", "1", "-", "-"]
    );
    assert!(
        text.contains("images missing (2): entry 2 \"a/gone.jpg\": "),
        "{text}"
    );
    assert!(
        text.contains("imgs/ has no folder train_query/, which 1 missing images are under"),
        "{text}"
    );
}

#[test]
fn a_report_file_not_written_by_check_is_never_replaced() {
    let root = cuhk_fixture();
    let report = root.path().join("notes.txt");
    std::fs::write(&report, "my notes\n").unwrap();
    let out = check(root.path(), "CUHK-PEDES", &report, &[]);
    assert_one_line_error(&out, "the file exists and was not written by `ccma check`");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "my notes\n");
}

/// An RSTPReid set of 4,101 identities with one image each (hard links of one JPEG), split as
/// `train` / `val` identities and the rest test.
fn rstpreid_set(train: i64, val: i64) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let imgs = root.path().join("RSTPReid/imgs");
    image(&imgs.join("0.jpg"));
    let entries: Vec<Value> = (0..4_101)
        .map(|id| {
            let path = format!("{id}.jpg");
            if id > 0 {
                std::fs::hard_link(imgs.join("0.jpg"), imgs.join(&path)).unwrap();
            }
            let split = match id {
                i if i < train => "train",
                i if i < train + val => "val",
                _ => "test",
            };
            json!({ "split": split, "id": id, "img_path": path, "captions": ["a person walking", "someone"] })
        })
        .collect();
    write_annotations(root.path(), "RSTPReid", "data_captions.json", &entries);
    root
}

#[test]
fn rstpreid_first_release_split_is_named_and_the_fix_passes() {
    let root = rstpreid_set(3_901, 100);
    let report = root.path().join("report.tsv");
    let out = check(root.path(), "RSTPReid", &report, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let j = stdout_json(&out);
    let fix = j["faulty_release"].as_str().unwrap();
    assert!(
        fix.contains("3,901 / 100 / 100 identities instead of 3,701 / 200 / 200")
            && fix.contains("RSTPReid-Dataset issue 2"),
        "{fix}"
    );
    assert_eq!(j["blockers"], json!(["a known faulty release"]));

    let root = rstpreid_set(3_701, 200);
    let out = check(root.path(), "RSTPReid", &report, &["--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = stdout_json(&out);
    assert_eq!(j["faulty_release"], Value::Null);
    assert_eq!(
        j["published_differs"],
        json!([
            "200 test images (published 1000)",
            "400 test captions (published 2000)"
        ])
    );
}

#[test]
fn cuhk_pedes_json_is_read_as_reid_raw_json() {
    let root = tempfile::tempdir().unwrap();
    fixture(
        root.path(),
        "CUHK-PEDES",
        "CUHK-PEDES.json",
        "file_path",
        &ENTRIES,
    );
    let report = root.path().join("report.tsv");
    let j = stdout_json(&check(root.path(), "CUHK-PEDES", &report, &["--json"]));
    assert!(j["annotation"]
        .as_str()
        .unwrap()
        .ends_with("CUHK-PEDES/CUHK-PEDES.json"));
    assert_eq!(j["usable"], true);
}

/// `caption_all.json` (no `split`) with `ids` images per identity range: train ids 1-11003,
/// val 11004-12003, test 12004-13003, every entry naming the one image.
fn caption_all(root: &Path, test_images: usize) {
    image(&root.join("CUHK-PEDES/imgs/a/1.jpg"));
    let mut entries: Vec<Value> = (1..=12_003)
        .map(|id| json!({ "id": id, "file_path": "a/1.jpg", "captions": ["a person", "walking"] }))
        .collect();
    entries.extend((0..test_images).map(|k| {
        json!({ "id": 12_004 + (k % 1_000), "file_path": "a/1.jpg", "captions": ["a person", "walking"] })
    }));
    write_annotations(root, "CUHK-PEDES", "caption_all.json", &entries);
}

#[test]
fn caption_all_json_gets_the_split_derived_only_when_it_has_the_published_sizes() {
    let root = tempfile::tempdir().unwrap();
    caption_all(root.path(), 3_074);
    let out = ccma_ok(&[
        "stats",
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        root.path().to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        table_row(&text, "train"),
        ["train", "11003", "11003", "22006"]
    );
    assert_eq!(table_row(&text, "val"), ["val", "1000", "1000", "2000"]);
    assert_eq!(table_row(&text, "test"), ["test", "1000", "3074", "6148"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the standard split was derived from the person ids"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let root = tempfile::tempdir().unwrap();
    caption_all(root.path(), 3_000);
    let out = ccma(&[
        "stats",
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        root.path().to_str().unwrap(),
    ]);
    assert_one_line_error(
        &out,
        "caption_all.json: entries have no `split`: this is CUHK-PEDES's caption_all.json, not reid_raw.json",
    );
    assert_one_line_error(
        &out,
        "cannot be derived from this file: the id ranges give 11003 / 1000 / 1000 identities and 3000 test images instead of the published 11003 / 1000 / 1000 and 3074",
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn train_and_test_stop_before_the_model_when_an_image_is_missing() {
    let root = cuhk_fixture();
    std::fs::remove_file(root.path().join("CUHK-PEDES/imgs/b/4.jpg")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(work.path(), root.path());
    let run = work.path().join("run");
    let out = train_command(&cfg, &run, &[]).output().unwrap();
    let needle = format!(
        "reid_raw.json: 1 of 6 images are missing, outside imgs/ or not regular files (train 0, val 0, test 1), e.g. {} (missing); `ccma check --dataset CUHK-PEDES --root-dir {}` reports every problem",
        root.path().join("CUHK-PEDES/imgs/b/4.jpg").display(),
        root.path().display()
    );
    assert_one_line_error(&out, &needle);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !run.exists(),
        "no run folder, no model: the check came first"
    );
    // `test` checks before it reads the checkpoint (which does not exist here).
    let out = ccma(&[
        "test",
        "--checkpoint",
        work.path().join("none.safetensors").to_str().unwrap(),
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        root.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &needle);
}
