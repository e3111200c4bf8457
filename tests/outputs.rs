//! What `ccma` writes, through the binary: a new run only in a new, empty or ccma-made folder
//! (temporaries removed only where ccma made them, and only its own); no output that is an input,
//! lies in a folder the command reads, or exists without `--force`; `ccma test` results that
//! record their data and settings, one file per data and settings, never written into a folder
//! a `ccma train` is using; and a stdout closed by its reader ends a command quietly.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Asserts `args` is refused with one line containing `needle`, exit code 2, and that nothing
/// under `dirs` changed.
fn refused_untouched(dirs: &[&Path], args: &[&str], needle: &str) {
    let before: Vec<_> = dirs.iter().map(|d| snapshot(d)).collect();
    let out = ccma(args);
    assert_one_line_error(&out, needle);
    assert_eq!(out.status.code(), Some(2), "ccma {}", args.join(" "));
    let after: Vec<_> = dirs.iter().map(|d| snapshot(d)).collect();
    assert!(after == before, "ccma {} wrote something", args.join(" "));
}

/// A dataset (`ENTRIES` as CUHK-PEDES), its tiny config, and an untrained checkpoint of it at
/// `<dir>/ck/model.safetensors`.
struct Setup {
    root: tempfile::TempDir,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    ck: PathBuf,
}

fn setup() -> Setup {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    std::fs::create_dir(dir.path().join("ck")).unwrap();
    let ck = dir.path().join("ck/model.safetensors");
    tiny_checkpoint(&cfg, &ck, |t| t);
    Setup { root, dir, cfg, ck }
}

#[test]
fn a_new_run_never_goes_into_a_folder_of_files_ccma_did_not_write() {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    for (name, text) in [
        (".draft.txt.tmp3", "a note"),
        (".best.safetensors.tmp9", "their temporary"),
        ("best.safetensors", "their model"),
        ("results.json", "{\"their\": 1}"),
        ("metrics.jsonl", "{\"epoch\": 40}\n"),
    ] {
        std::fs::write(theirs.join(name), text).unwrap();
    }
    let args = ["train", "--config", s(&cfg), "--run-dir", s(&theirs)];
    refused_untouched(&[&theirs], &args, "holds files ccma did not write");

    // A new (or empty) folder takes a run.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ccma_ok(&["train", "--config", s(&cfg), "--run-dir", s(&empty)]);
    assert!(empty.join("best.safetensors").is_file());
}

/// In a folder ccma made (here one whose run failed to start) a new run removes the temporary
/// files of ccma's own writes and nothing else, however alike its name.
#[test]
fn only_ccma_s_own_temporaries_are_removed_and_only_in_its_folders() {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    let run = dir.path().join("run");
    let train = |extra: &[&str]| train_command(&cfg, &run, extra).output().unwrap();
    assert_one_line_error(&train(&["--pretrained", "missing.pt"]), "missing.pt");
    let own = [".last.safetensors.tmp424242", ".configs.yaml.tmp7"];
    let theirs = [
        ".notes.txt.tmp5",
        ".best.safetensors.tmpx",
        "results.json.tmp3",
    ];
    for name in own.iter().chain(&theirs) {
        std::fs::write(run.join(name), b"x").unwrap();
    }
    let out = train(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in own {
        assert!(!run.join(name).exists(), "{name} is ccma's and stale");
    }
    for name in theirs {
        assert!(run.join(name).exists(), "{name} is not ccma's");
    }
}

#[test]
fn export_never_replaces_its_source_nor_an_existing_file_without_force() {
    let Setup { dir, cfg, .. } = setup();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let best = run.join("best.safetensors");
    // 64 wide with one head, as IRRA's code builds that width (width / 64 heads).
    let wide = dir.path().join("wide.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text
        .replace("vision_width: 16", "vision_width: 64")
        .replace("transformer_width: 16", "transformer_width: 64");
    std::fs::write(&wide, text).unwrap();
    tiny_checkpoint(&wide, &best, |t| t);
    for force in [&[][..], &["--force"]] {
        let mut args = vec!["export", "--format", "irra", s(&run), s(&best)];
        args.extend(force);
        refused_untouched(&[dir.path()], &args, "an input of this command");
    }
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "mine").unwrap();
    let args = ["export", "--format", "irra", s(&run), s(&notes)];
    refused_untouched(&[dir.path()], &args, "already exists: pass --force");
    ccma_ok(&["export", "--format", "irra", s(&run), s(&notes), "--force"]);
    assert!(load(&notes).keys().any(|k| k.starts_with("base_model.")));
}

#[test]
fn embed_never_replaces_an_input_nor_writes_into_an_image_folder() {
    let Setup { root, dir, ck, .. } = setup();
    let imgs = root.path().join("CUHK-PEDES/imgs");
    let photo = imgs.join("a/1.jpg");
    let captions = dir.path().join("captions.txt");
    std::fs::write(&captions, "a man in red\n").unwrap();
    let embed = |out: &Path, force: bool| {
        let mut args = vec!["embed", "--checkpoint", s(&ck), "--captions", s(&captions)];
        args.extend([
            "--images",
            s(&photo),
            "--image-dir",
            s(&imgs),
            "--out",
            s(out),
        ]);
        args.extend(force.then_some("--force"));
        args.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    let run = |out: &Path, force: bool, needle: &str| {
        let args = embed(out, force);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused_untouched(&[dir.path(), root.path()], &args, needle);
    };
    for input in [&ck, &captions, &photo] {
        run(input, true, "an input of this command");
    }
    run(
        &imgs.join("feats.safetensors"),
        true,
        "a folder this command reads",
    );
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "mine").unwrap();
    run(&notes, false, "already exists: pass --force");
    let args = embed(&notes, true);
    ccma_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(load(&notes)["text_features"].size()[0], 1);
}

#[test]
fn search_never_draws_over_a_gallery_photo_nor_an_existing_file_without_force() {
    let Setup { root, dir, ck, .. } = setup();
    let imgs = root.path().join("CUHK-PEDES/imgs");
    let search = |gallery: &Path, out: &Path, force: bool| {
        let mut args = vec!["search", "--checkpoint", s(&ck), "--gallery", s(gallery)];
        args.extend(["--top-k", "2", "--out", s(out)]);
        args.extend(force.then_some("--force"));
        args.push("a man in red");
        args.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    let refused = |args: Vec<String>, needle: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused_untouched(&[dir.path(), root.path()], &args, needle);
    };
    let photo = imgs.join("a/1.jpg");
    refused(search(&imgs, &photo, true), "a folder this command reads");
    refused(
        search(&imgs, &imgs.join("sheet.png"), false),
        "a folder this command reads",
    );
    assert!(
        !imgs.join(".ccma-cache").exists(),
        "no gallery cache written"
    );
    refused(search(&imgs, &ck, true), "an input of this command");

    // A feature file's images are inputs too, wherever they lie.
    let feats = dir.path().join("feats.safetensors");
    ccma_ok(&[
        "embed",
        "--checkpoint",
        s(&ck),
        "--images",
        s(&photo),
        "--out",
        s(&feats),
    ]);
    refused(search(&feats, &photo, true), "an input of this command");
    refused(search(&feats, &feats, true), "an input of this command");
    let sheet = dir.path().join("sheet.png");
    std::fs::write(&sheet, "their picture").unwrap();
    refused(
        search(&feats, &sheet, false),
        "already exists: pass --force",
    );
    let args = search(&feats, &sheet, true);
    ccma_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(image::open(&sheet).is_ok());
}

/// The `test_results.*.json` files beside `checkpoint`, by name.
fn test_results(checkpoint: &Path) -> BTreeMap<String, serde_json::Value> {
    std::fs::read_dir(checkpoint.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("test_results") && n.ends_with(".json"))
        .map(|n| {
            let text = std::fs::read_to_string(checkpoint.with_file_name(&n)).unwrap();
            (n, serde_json::from_str(&text).unwrap())
        })
        .collect()
}

/// `ccma test --checkpoint ck` on CUHK-PEDES under `root`, as JSON.
fn test_json(ck: &Path, root: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["test", "--checkpoint", s(ck), "--dataset", "CUHK-PEDES"];
    args.extend(["--root-dir", s(root), "--json"]);
    args.extend(extra);
    ccma_json(&args)
}

#[test]
fn test_results_record_their_data_and_settings_and_keep_one_file_each() {
    let Setup {
        root,
        dir: _dir,
        ck,
        ..
    } = setup();
    let other = cuhk_fixture();
    let printed = test_json(&ck, root.path(), &[]);
    test_json(&ck, other.path(), &[]);
    let set = ["--set", "img_size=[32, 16]", "--set", "text_length=12"];
    test_json(&ck, root.path(), &set);
    let results = test_results(&ck);
    assert_eq!(results.len(), 3, "{:?}", results.keys());
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap().display().to_string();
    let mut seen = Vec::new();
    for (name, r) in &results {
        let settings = &r["settings"];
        // The name: checkpoint stem, dataset, and the first 8 hex digits of the SHA-256 of the
        // recorded settings as compact JSON.
        use sha2::Digest;
        let digest = sha2::Sha256::digest(settings.to_string().as_bytes());
        let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(name, &format!("test_results.model.CUHK-PEDES.{tag}.json"));
        assert_eq!(r["checkpoint"], canonical(&ck));
        assert_eq!(settings["dataset_name"], "CUHK-PEDES");
        assert_eq!(settings["split"], "test");
        assert_eq!(settings["img_size"], serde_json::json!([32, 16]));
        assert_eq!(
            settings["dataset_dir"],
            format!("{}/CUHK-PEDES", settings["root_dir"].as_str().unwrap())
        );
        assert!(
            r["t2i"]["R1"].is_number() && r["test_batch_size"].is_number(),
            "{r}"
        );
        seen.push((
            settings["root_dir"].as_str().unwrap().to_string(),
            settings["text_length"].as_i64().unwrap(),
        ));
        if seen.last().unwrap() == &(canonical(root.path()), 16) {
            assert_eq!(r["t2i"], printed["t2i"], "the file holds what was printed");
        }
    }
    seen.sort();
    let mut expected = vec![
        (canonical(root.path()), 12),
        (canonical(root.path()), 16),
        (canonical(other.path()), 16),
    ];
    expected.sort();
    assert_eq!(seen, expected);
}

/// A run folder whose lock a `ccma train` holds (here: this test, as the kernel lock is all
/// that marks it) is refused by `ccma test`, before any work and with nothing written.
#[test]
fn test_writes_nothing_into_a_run_folder_in_training() {
    let Setup { root, dir, ck, .. } = setup();
    let lock = std::fs::File::create(ck.with_file_name(".ccma.lock")).unwrap();
    (&lock).write_all(b"4242").unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file this test owns; released when it is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut args = vec!["test", "--checkpoint", s(&ck), "--dataset", "CUHK-PEDES"];
    args.extend(["--root-dir", s(root.path())]);
    refused_untouched(&[dir.path()], &args, "is in use by ccma train (pid 4242)");
    drop(lock);
    ccma_ok(&args);
    assert_eq!(test_results(&ck).len(), 1);
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly_after_its_files() {
    let Setup { root, dir, cfg, ck } = setup();
    with_closed_stdout(&["info"], "");
    with_closed_stdout(&["tokenize"], &"a man in a red coat\n".repeat(2000));
    with_closed_stdout(&["stats", "--config", s(&cfg)], "");
    let report = dir.path().join("check.tsv");
    for json in [false, true] {
        let mut args = vec!["check", "--config", s(&cfg), "--report", s(&report)];
        args.extend(json.then_some("--json"));
        with_closed_stdout(&args, "");
        assert!(report.is_file(), "the report written before printing");
    }
    let mut args = vec!["test", "--checkpoint", s(&ck), "--dataset", "CUHK-PEDES"];
    args.extend(["--root-dir", s(root.path()), "--json"]);
    with_closed_stdout(&args, "");
    assert_eq!(
        test_results(&ck).len(),
        1,
        "results written before printing"
    );
    let imgs = root.path().join("CUHK-PEDES/imgs");
    let sheet = dir.path().join("sheet.png");
    let mut args = vec!["search", "--checkpoint", s(&ck), "--gallery", s(&imgs)];
    args.extend(["--out", s(&sheet), "a man in red"]);
    with_closed_stdout(&args, "");
    assert!(
        image::open(&sheet).is_ok(),
        "the sheet written before printing"
    );
    let feats = dir.path().join("feats.safetensors");
    let pids = tch::Tensor::from_slice(&[1i64, 2, 1]);
    let features = tch::Tensor::eye(3, (tch::Kind::Float, tch::Device::Cpu));
    save(&feats, &[("features", &features), ("pids", &pids)]);
    with_closed_stdout(
        &["rank", "--queries", s(&feats), "--gallery", s(&feats)],
        "",
    );
}
