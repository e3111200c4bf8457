//! `ccma train` / `ccma test` end to end on a small generated TOY-PEDES: the run folder, that it
//! learns, bit-identical resumption, and the faults (NaN loss, Ctrl-C, SIGKILL, a checkpoint write
//! that fails on a full or read-only folder, an image that turns corrupt between epochs).
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small from-scratch model on 120 / 10 / 30 identities (synth_seed 3: generated into
/// `data/TOY-PEDES-120-10-30-s3`; seed 3), 64x32 images, clean global captions and every loss term but
/// IMAL: this 32-wide model barely learns in 6 epochs with IMAL's DCA stacks at IRRA's
/// initialisation, and IMAL at full size is run by `tests/full_size.rs` (and the demo).
fn write_config(dir: &Path, epochs: usize) -> PathBuf {
    let cfg = format!(
        "dataset_name: TOY-PEDES\nroot_dir: {root}\nsynth_ids: [120, 10, 30]\n{MODEL_32}\
         batch_size: 32\ntest_batch_size: 128\nnum_epoch: {epochs}\nlr: 2.0e-3\n{SCRATCH_RECIPE}seed: 3\nsynth_seed: 3\n",
        root = dir.join("data").display()
    );
    let path = dir.join("cfg.yaml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn train(cfg: &Path, run: &Path, env: &[(&str, &str)]) -> std::process::Output {
    train_command(cfg, run, &[])
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `ccma train` started in the background (stderr captured), returned once epoch 1 is recorded.
fn train_past_epoch_1(cfg: &Path, run: &Path) -> std::process::Child {
    let child = train_command(cfg, run, &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !run.join("metrics.jsonl").is_file() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

fn resume(run: &Path) -> std::process::Output {
    ccma(&["train", "--resume", run.to_str().unwrap()])
}

/// `--resume` succeeds and the run folder then records every epoch `1..=epochs` once.
fn resume_finishes_all_epochs(run: &Path, epochs: i64) {
    let out = resume(run);
    assert!(
        out.status.success(),
        "resume: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded: Vec<i64> = metrics(run)
        .iter()
        .map(|r| r["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(recorded, (1..=epochs).collect::<Vec<_>>());
}

#[test]
fn trains_learns_writes_the_run_folder_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 6);
    let run = dir.path().join("run");
    let out = train(&cfg, &run, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "configs.yaml",
        "train_log.txt",
        "best.safetensors",
        "last.safetensors",
        "results.json",
        "metrics.jsonl",
        "curves.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    assert!(std::fs::read_dir(&run).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("events.out.tfevents")));
    let m = metrics(&run);
    assert_eq!(m.len(), 6);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    let best = results["t2i"]["R1"].as_f64().unwrap();
    // 30 test identities with about 2.8 images each: chance R@1 is about 3.3%.
    assert!(best > 10.0, "R@1 {best} should be far above chance (3.3%)");
    let log = std::fs::read_to_string(run.join("train_log.txt")).unwrap();
    assert!(log.contains("epoch 6") && log.contains("best R@1"), "{log}");
    assert!(
        log.contains("global step 1: the forward ran with autocast off"),
        "the first step names its autocast: {log}"
    );

    let t = ccma_json(&[
        "test",
        "--config",
        run.join("configs.yaml").to_str().unwrap(),
        "--json",
        "--i2t",
    ]);
    assert!(
        (t["t2i"]["R1"].as_f64().unwrap() - best).abs() < 1e-9,
        "ccma test reproduces the best R@1"
    );
    assert!(t["i2t"]["R1"].as_f64().is_some());
    let results = std::fs::read_dir(&run).unwrap().flatten().filter(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.starts_with("test_results.best.TOY-PEDES.") && name.ends_with(".json")
    });
    assert_eq!(results.count(), 1, "one test_results file for the one test");

    // Visualisation of test queries, and text search over the test images with a cached gallery.
    let out = ccma(&[
        "test",
        "--config",
        run.join("configs.yaml").to_str().unwrap(),
        "--visualize",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(run.join("visualize")).unwrap().count(), 3);
    let gallery = dir.path().join("data/TOY-PEDES-120-10-30-s3/imgs/synth");
    let sheet = dir.path().join("sheet.png");
    let search = || {
        ccma(&[
            "search",
            "--checkpoint",
            run.join("best.safetensors").to_str().unwrap(),
            "--gallery",
            gallery.to_str().unwrap(),
            "--top-k",
            "5",
            "--out",
            sheet.to_str().unwrap(),
            "--force",
            "a woman wearing a red coat and a black skirt",
        ])
    };
    let out = search();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rank") && text.matches(".jpg").count() == 5,
        "{text}"
    );
    assert!(image::open(&sheet).is_ok());
    assert!(gallery.join(".ccma-cache/gallery.safetensors").is_file());
    let out = search();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gallery features from"),
        "second query uses the cache"
    );
    image::RgbImage::new(10, 30)
        .save(gallery.join("zz_new.jpg"))
        .unwrap();
    let out = search();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is stale"),
        "a changed gallery is re-embedded"
    );

    search_skips_what_it_cannot_read_and_caches_elsewhere(dir.path(), &run, &gallery);
    checkpoint_alone_then_embed_rank_and_search(dir.path(), &run, best);
}

/// `ccma search` leaves out an image it cannot decode (warning and count), caches in the user's
/// cache folder when the gallery's own cannot be written, and refuses a gallery of other width;
/// `ccma embed` refuses an image size the weights cannot serve.
fn search_skips_what_it_cannot_read_and_caches_elsewhere(dir: &Path, run: &Path, gallery: &Path) {
    let ck = run.join("best.safetensors");
    std::fs::write(gallery.join("zz_broken.jpg"), b"not a jpeg").unwrap();
    let user_cache = dir.join("user-cache");
    let search = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ccma"))
            .args([
                "search",
                "--checkpoint",
                ck.to_str().unwrap(),
                "--top-k",
                "3",
            ])
            .args(extra)
            .arg("a man in a blue shirt")
            .env("XDG_CACHE_HOME", &user_cache)
            .output()
            .unwrap()
    };
    let cache_dir = gallery.join(".ccma-cache");
    let readonly = ReadOnly::set(&cache_dir, true).then_some(ReadOnly(&cache_dir));
    let out = search(&["--gallery", gallery.to_str().unwrap()]);
    drop(readonly);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("skipped") && err.contains("zz_broken.jpg"),
        "{err}"
    );
    assert!(
        err.contains("1 of") && err.contains("could not be read"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("zz_broken"));
    assert!(
        err.contains(&format!(
            "gallery features cached in {}",
            user_cache.display()
        )),
        "{err}"
    );
    let out = search(&["--gallery", gallery.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(&format!("gallery features from {}", user_cache.display())));

    let narrow = dir.join("narrow.safetensors");
    let features = tch::Tensor::zeros([2, 8], (tch::Kind::Float, tch::Device::Cpu));
    let meta = std::collections::HashMap::from([(
        "images".to_string(),
        r#"["a.jpg","b.jpg"]"#.to_string(),
    )]);
    ccma::io::safetensors::save(&narrow, &[("image_features".into(), features)], &meta).unwrap();
    assert_one_line_error(
        &search(&["--gallery", narrow.to_str().unwrap()]),
        "has 8-wide features, but the model's are 32-wide",
    );
    let out = ccma(&[
        "embed",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--images",
        gallery.join("zz_new.jpg").to_str().unwrap(),
        "--img-size",
        "8x8",
        "--out",
        dir.join("x.safetensors").to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "image size 8x8 is smaller than the 16-pixel patches");
}

/// The best checkpoint, copied away from its run folder, still evaluates (its model's sizes are in
/// its metadata); `ccma embed` of the test split, ranked by `ccma rank`, gives the same R@1; and the
/// embed output serves as a `ccma search` gallery.
fn checkpoint_alone_then_embed_rank_and_search(dir: &Path, run: &Path, best: f64) {
    let alone = dir.join("alone");
    std::fs::create_dir(&alone).unwrap();
    let ck = alone.join("model.safetensors");
    std::fs::copy(run.join("best.safetensors"), &ck).unwrap();
    let data = dir.join("data");
    let t = ccma_json(&[
        "test",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--dataset",
        "TOY-PEDES",
        "--root-dir",
        data.to_str().unwrap(),
        "--set",
        "synth_ids=[120, 10, 30]",
        "--set",
        "synth_seed=3",
        "--set",
        "img_size=[64, 32]",
        "--set",
        "text_length=40",
        "--json",
    ]);
    assert!(
        (t["t2i"]["R1"].as_f64().unwrap() - best).abs() < 1e-9,
        "{t}"
    );

    let split = embed_split(dir, &ck, &data.join("TOY-PEDES-120-10-30-s3"), "test");
    let e = s(&split.features);
    let (qp, gp) = (s(&split.query_pids), s(&split.gallery_pids));
    let r = ccma_json(&[
        "rank",
        "--queries",
        e,
        "--gallery",
        e,
        "--query-pids",
        qp,
        "--gallery-pids",
        gp,
        "--json",
    ]);
    assert!(
        (r["t2i"]["R1"].as_f64().unwrap() - best).abs() < 1e-9,
        "rank {r} vs test {best}"
    );
    assert_one_line_error(
        &ccma(&["rank", "--queries", e, "--gallery", e]),
        "missing tensor `text_pids` (or give --query-pids FILE)",
    );

    let out = ccma_ok(&[
        "search",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--gallery",
        e,
        "--top-k",
        "3",
        "a man in a blue shirt",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(".jpg").count(), 3, "{text}");
}

/// Runs `a` through, `b` interrupted after global step 4 and resumed, and `c` likewise with its
/// checkpoint rewritten into the earlier layout before resuming: all three end bit-identical.
#[test]
fn resume_after_interrupt_continues_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 2);
    let a = dir.path().join("a");
    assert!(train(&cfg, &a, &[]).status.success());
    for (name, earlier) in [("b", false), ("c", true)] {
        let b = dir.path().join(name);
        // Interrupted in the middle of epoch 1 (a Ctrl-C after global step 4), then resumed.
        let out = train(&cfg, &b, &[("CCMA_INTERRUPT_AT_STEP", "4")]);
        assert_eq!(
            out.status.code(),
            Some(130),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_one_line_error(&out, "interrupted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("resumable checkpoint written"));
        if earlier {
            let cfg = ccma::config::Config::from_file(&b.join("configs.yaml")).unwrap();
            let last = b.join("last.safetensors");
            checkpoint_in_earlier_layout(&last, &last, &cfg.optim);
        }
        let out = resume(&b);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (ma, mb) = (metrics(&a), metrics(&b));
        assert_eq!(ma.len(), 2);
        assert_eq!(
            ma[1]["loss"], mb[1]["loss"],
            "{name}: epoch 2 losses identical after resuming"
        );
        assert_eq!(ma[1]["t2i"], mb[1]["t2i"]);
        assert_eq!(
            std::fs::read(a.join("best.safetensors")).unwrap(),
            std::fs::read(b.join("best.safetensors")).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn nan_loss_stops_with_the_step_and_term_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 3);
    let run = dir.path().join("run");
    // 674 pairs in batches of 32: 22 per epoch, so global step 25 is epoch 2's fourth batch and
    // epoch 1's checkpoints exist by then.
    let out = train(&cfg, &run, &[("CCMA_INJECT_NAN_AT_STEP", "25")]);
    assert_one_line_error(
        &out,
        "loss term `sdm` is NaN at epoch 2, step 3 (global step 25)",
    );
    let best = std::fs::read(run.join("best.safetensors")).unwrap();
    assert!(ccma::io::safetensors::load(&run.join("best.safetensors")).is_ok() && !best.is_empty());
    assert_eq!(metrics(&run).len(), 1, "epoch 1 recorded, nothing after");
    assert!(!std::fs::read_dir(&run).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".tmp")));
}

#[test]
fn sigint_sigterm_and_sigkill_then_resume_finish_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 3);
    for (signal, code) in [("INT", Some(130)), ("TERM", Some(130)), ("KILL", None)] {
        let run = dir.path().join(format!("run-{signal}"));
        // Signal mid-epoch 2.
        let child = train_past_epoch_1(&cfg, &run);
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            code,
            "{signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        resume_finishes_all_epochs(&run, 3);
    }
}

#[test]
fn run_folder_that_holds_a_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 1);
    let run = dir.path().join("run");
    assert!(train(&cfg, &run, &[]).status.success());
    assert_one_line_error(&train(&cfg, &run, &[]), "already holds a run");
    assert_one_line_error(&resume(&dir.path().join("nothing")), "cannot resume");
}

/// A second `ccma train` on a folder a run is using, new or resumed, is refused naming the pid;
/// the lock goes with the process, so the folder resumes once the first stops.
#[test]
fn a_running_folder_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 4);
    let run = dir.path().join("run");
    let child = train_past_epoch_1(&cfg, &run);
    let holder = format!("is in use by another ccma train (pid {})", child.id());
    assert_one_line_error(&train(&cfg, &run, &[]), &holder);
    assert_one_line_error(&resume(&run), &holder);
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait_with_output().unwrap();
    resume_finishes_all_epochs(&run, 4);
}

/// A run that fails to start (weights that do not exist) leaves no `configs.yaml`, its error is
/// in the folder's log, and a new run can use the folder; relative paths are recorded absolute.
#[test]
fn a_failed_start_blocks_nothing_and_paths_are_recorded_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 1);
    let out = train_command(&cfg, Path::new("run"), &[])
        .current_dir(dir.path())
        .args(["--pretrained", "missing.pt"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "missing.pt do not exist");
    let run = dir.path().join("run");
    assert!(!run.join("configs.yaml").exists());
    let log = std::fs::read_to_string(run.join("train_log.txt")).unwrap();
    assert!(
        log.contains("error: ") && log.contains("missing.pt do not exist"),
        "{log}"
    );
    let out = train_command(&cfg, Path::new("run"), &[])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = std::fs::read_to_string(run.join("configs.yaml")).unwrap();
    assert!(
        saved.contains(&format!("run_dir: {}", run.display())),
        "{saved}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\x1b'),
        "no colour codes off a terminal"
    );
}

/// Resuming removes the temporary files an interrupted checkpoint write left (and nothing else),
/// may add epochs (recorded in configs.yaml), refuses fewer epochs than done, and applies an
/// edited `weight_decay`, saying so.
#[test]
fn resume_cleans_up_may_add_epochs_and_applies_edits() {
    let dir = tempfile::tempdir().unwrap();
    let run = stopped_run(dir.path());
    for f in [
        ".last.safetensors.tmp424242",
        ".best.safetensors.tmp7",
        "notes.tmp5",
    ] {
        std::fs::write(run.join(f), b"x").unwrap();
    }
    let config = run.join("configs.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|l| match l.starts_with("weight_decay:") {
            true => "weight_decay: 0.001".to_string(),
            false => l.to_string(),
        })
        .collect();
    std::fs::write(&config, edited.join("\n")).unwrap();
    let out = ccma_ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--num-epoch",
        "3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("weight decay differs from the resumed state's"),
        "{err}"
    );
    assert!(
        !run.join(".last.safetensors.tmp424242").exists()
            && !run.join(".best.safetensors.tmp7").exists()
    );
    assert!(
        run.join("notes.tmp5").exists(),
        "a file ccma did not write stays"
    );
    let recorded: Vec<i64> = metrics(&run)
        .iter()
        .map(|r| r["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(recorded, vec![1, 2, 3]);
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("num_epoch: 3"));
    let out = ccma(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--num-epoch",
        "2",
    ]);
    assert_one_line_error(
        &out,
        "num_epoch 2 is fewer than the 3 epochs this run has done",
    );
}

/// Training that would train nothing is refused before any step.
#[test]
fn a_sampler_that_cannot_fill_a_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 1);
    let run = dir.path().join("run");
    let out = train_command(&cfg, &run, &[])
        .args([
            "--set",
            "sampler=identity",
            "--set",
            "num_instance=4",
            "--set",
            "synth_ids=[2, 1, 3]",
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, "the identity sampler cannot fill one batch of 32");
    assert!(!run.join("last.safetensors").exists());
}

/// A 2-epoch run stopped by a Ctrl-C in epoch 2 (global step 25): best and state checkpoints on disk.
fn stopped_run(dir: &Path) -> PathBuf {
    let cfg = write_config(dir, 2);
    let run = dir.join("run");
    let out = train(&cfg, &run, &[("CCMA_INTERRUPT_AT_STEP", "25")]);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

/// The checkpoints of a run folder, byte for byte.
fn checkpoints(run: &Path) -> Vec<Vec<u8>> {
    ["best.safetensors", "last.safetensors"]
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect()
}

/// A resumed run whose first write (results.json or a checkpoint) failed: non-zero exit, one line
/// naming the file and the cause, both checkpoints as they were, no temporary file left, and it still resumes.
fn assert_write_failed_cleanly(
    run: &Path,
    out: &std::process::Output,
    before: &[Vec<u8>],
    cause: &str,
) {
    assert_one_line_error(out, cause);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(" failed (previous content kept)"), "{err}");
    assert_eq!(checkpoints(run), before, "checkpoints unchanged");
    assert!(!std::fs::read_dir(run).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".tmp")));
    resume_finishes_all_epochs(run, 2);
}

#[test]
fn checkpoint_write_on_a_full_disk_fails_cleanly() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let run = stopped_run(dir.path());
    let before = checkpoints(&run);
    // A 1 MiB file-size limit makes the kernel refuse the multi-MiB checkpoint write part-way
    // (EFBIG, as a full disk refuses with ENOSPC); logs and pictures stay under it.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccma"));
    cmd.args(["train", "--resume", run.to_str().unwrap()]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_write_failed_cleanly(&run, &out, &before, "File too large");
}

/// Makes a folder read-only for this process (`chmod` for a user, `chattr +i` for root, whom
/// permissions do not stop) and back again on drop.
struct ReadOnly<'a>(&'a Path);

impl ReadOnly<'_> {
    fn set(dir: &Path, on: bool) -> bool {
        use std::os::unix::fs::PermissionsExt;
        if unsafe { libc::geteuid() } == 0 {
            let flag = if on { "+i" } else { "-i" };
            Command::new("chattr")
                .arg(flag)
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success())
        } else {
            let mode = if on { 0o555 } else { 0o755 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).is_ok()
        }
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        ReadOnly::set(self.0, false);
    }
}

#[test]
fn checkpoint_write_in_a_read_only_folder_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let run = stopped_run(dir.path());
    let before = checkpoints(&run);
    let out = {
        let _guard = ReadOnly(&run);
        if !ReadOnly::set(&run, true) || std::fs::write(run.join("probe"), b"").is_ok() {
            eprintln!("skipped: this user cannot make a read-only folder (needs chattr as root)");
            return;
        }
        resume(&run)
    };
    assert_write_failed_cleanly(&run, &out, &before, "cannot create");
}

#[test]
fn image_corrupt_between_epochs_stops_with_its_name_and_resumes_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 3);
    let run = dir.path().join("run");
    let child = train_past_epoch_1(&cfg, &run);
    // After epoch 1: every image turns into a JPEG marker followed by junk.
    let images: Vec<(PathBuf, Vec<u8>)> =
        std::fs::read_dir(dir.path().join("data/TOY-PEDES-120-10-30-s3/imgs/synth"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, b"\xFF\xD8 corrupt").unwrap();
                (p, bytes)
            })
            .collect();
    let out = child.wait_with_output().unwrap();
    assert_one_line_error(&out, "cannot decode image");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("imgs/synth/"),
        "names the file"
    );
    assert!(ccma::io::safetensors::load(&run.join("best.safetensors")).is_ok());
    let done = metrics(&run).len();
    assert!((1..3).contains(&done), "stopped after epoch {done}");
    for (p, bytes) in images {
        std::fs::write(p, bytes).unwrap();
    }
    resume_finishes_all_epochs(&run, 3);
}
