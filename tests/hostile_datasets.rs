//! `check`, `train`, `test` and `stats` on hostile dataset files, through the binary: an 8 GiB
//! sparse image is refused unread, annotation files too large or not a list of entries are
//! refused in one line before they are read whole, and control characters in the files' text
//! (image paths) never reach the terminal, the error line, `train_log.txt` or the `.tsv` raw.
mod common;
use common::*;
use std::path::Path;
use std::process::Output;

/// The one line of stderr of a refused command, asserting exit code `code`.
fn refused(out: &Output, code: i32, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_one_line_error(out, needle);
}

/// Asserts that `text` holds no raw escape character or NUL.
fn no_raw_controls(what: &str, text: &[u8]) {
    assert!(
        !text.contains(&0x1b) && !text.contains(&0),
        "{what} holds raw control characters: {}",
        String::from_utf8_lossy(text)
    );
}

#[test]
fn an_8_gib_sparse_image_is_counted_unreadable_not_read() {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    let huge = std::fs::File::create(root.path().join("CUHK-PEDES/imgs/b/5.jpg")).unwrap();
    huge.set_len(8 << 30).unwrap();
    let report = dir.path().join("check.tsv");
    let out = ccma(&["check", "--config", s(&cfg), "--report", s(&report)]);
    refused(&out, 1, "not usable");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 images unreadable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = std::fs::read_to_string(&report).unwrap();
    assert!(
        listing.contains("unreadable\ttest\t4\tb/5.jpg\tlarger than the 64 MiB limit\n"),
        "{listing}"
    );
}

/// The annotation file of the fixture under `root`.
fn annotation(root: &Path) -> std::path::PathBuf {
    root.join("CUHK-PEDES/reid_raw.json")
}

#[test]
fn annotation_files_are_bounded_and_read_into_entries() {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    let ck = dir.path().join("model.safetensors");
    tiny_checkpoint(&cfg, &ck, |t| t);
    let ann = annotation(root.path());
    let report = dir.path().join("check.tsv");
    let run = dir.path().join("run");
    let commands: [Vec<&str>; 4] = [
        vec!["check", "--config", s(&cfg), "--report", s(&report)],
        vec!["train", "--config", s(&cfg), "--run-dir", s(&run)],
        vec!["test", "--config", s(&cfg), "--checkpoint", s(&ck)],
        vec!["stats", "--config", s(&cfg)],
    ];

    // A 1 GiB file (sparse: nothing is written) is refused by its size, unread.
    std::fs::File::create(&ann)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    for args in &commands {
        refused(
            &ccma(args),
            2,
            "has 1073741824 bytes, over the 256 MiB limit for annotation files",
        );
    }
    // A 30 MB list of numbers is refused at its first entry.
    let zeros = format!("[{}0]", "0,".repeat(15 << 20));
    std::fs::write(&ann, zeros).unwrap();
    for args in &commands {
        refused(&ccma(args), 2, "reid_raw.json entry 0: expected an object");
    }
    // Entries of the wrong shape are named by index and key; bad JSON by line and column.
    std::fs::write(
        &ann,
        r#"[{"split": "train", "id": 1, "file_path": "a/1.jpg", "captions": ["a"]},
            {"split": "train", "id": 2, "file_path": "a/2.jpg", "captions": "one"}]"#,
    )
    .unwrap();
    refused(
        &ccma(&commands[3]),
        2,
        "entry 1: `captions` must be a list of strings",
    );
    std::fs::write(
        &ann,
        r#"[{"split": "train", "id": 1, "file_path": "a/1.jpg", "captions": ["a"]}] trailing"#,
    )
    .unwrap();
    refused(&ccma(&commands[3]), 2, "invalid JSON at line 1, column");
    assert!(!run.join("train_log.txt").exists());
}

#[test]
fn control_characters_from_files_are_escaped_wherever_printed() {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    // A training image whose name clears the screen and sets the window title, and does not
    // decode: the check lists it, training stops at it.
    let evil = "b/\x1b[2J\x1b]0;owned\x07.jpg";
    let ann = annotation(root.path());
    let text = std::fs::read_to_string(&ann)
        .unwrap()
        .replace("b/3.jpg", "b/\\u001b[2J\\u001b]0;owned\\u0007.jpg");
    std::fs::write(&ann, &text).unwrap();
    std::fs::write(
        root.path().join("CUHK-PEDES/imgs").join(evil),
        b"not an image",
    )
    .unwrap();

    let run = dir.path().join("run");
    let out = train_command(&cfg, &run, &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\\u{1b}[2J\\u{1b}]0;owned\\u{7}.jpg"), "{err}");
    no_raw_controls("train's stderr", &out.stderr);
    let log = std::fs::read(run.join("train_log.txt")).unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("\\u{1b}[2J"),
        "{}",
        String::from_utf8_lossy(&log)
    );
    no_raw_controls("train_log.txt", &log);

    // A test image whose name holds a NUL (so it cannot exist): missing, listed escaped.
    std::fs::write(&ann, text.replace("b/5.jpg", "b/\\u0000.jpg")).unwrap();
    let report = dir.path().join("check.tsv");
    let out = ccma(&["check", "--config", s(&cfg), "--report", s(&report)]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("\\u{1b}[2J"), "{table}");
    no_raw_controls("check's table", &out.stdout);
    no_raw_controls("check's stderr", &out.stderr);
    let listing = std::fs::read(&report).unwrap();
    no_raw_controls("check's report", &listing);
    let listing = String::from_utf8_lossy(&listing);
    assert!(
        listing.contains("\\u{1b}]0;owned\\u{7}.jpg\t") && listing.contains("b/\\u{0}.jpg"),
        "{listing}"
    );
}
