//! Data-parallel training through the binary, on the CPU with 2 ranks over Gloo on the loopback:
//! both launch ways, agreement between the ranks (bit-identical parameters, checked against a
//! digest of the checkpoint computed in Python) and with the one-process run of the same global
//! batch under both samplers, a killed rank (with the launcher and without) and a hung one, Ctrl-C,
//! resumption on 2 and on 1 process, `ccma bench` as a rank, and the settings that are refused.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The one-process and the 2-rank runs may differ by the order of float sums (the gradient of a
/// weight sums over the batch in one matmul, or over two half-batches): epoch-1 loss terms agree
/// to this relative error, and the parameters after 2 epochs (28 Adam steps) to this absolute
/// error. Measured: 1e-7 relative and 3e-6 absolute.
const LOSS_RTOL: f64 = 1e-6;
const PARAM_ATOL: f64 = 2e-5;

/// The digests rank 0 logged for `epoch`, one per rank.
fn logged_digests(run: &Path, epoch: usize) -> Vec<String> {
    let log = std::fs::read_to_string(run.join("train_log.txt")).unwrap();
    let prefix =
        format!("epoch {epoch}: parameters bit-identical on all 2 ranks (digests by rank: ");
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.split_once(&prefix))
        .unwrap_or_else(|| panic!("no digest line for epoch {epoch}:\n{log}"))
        .1;
    line.trim_end_matches(')')
        .split(", ")
        .map(str::to_string)
        .collect()
}

/// The digest of the parameters in a run's resumable state, by the Python reference.
fn state_digest(run: &Path) -> String {
    reference(
        "digest_ref.py",
        &[run.join("last.safetensors").to_str().unwrap()],
    )
    .trim()
    .to_string()
}

/// Trains `cfg` on 2 ranks into `<dir>/two`, then as one process into `<dir>/one`.
fn train_two_ranks_and_one_process(cfg: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let (two, one) = (dir.join("two"), dir.join("one"));
    succeeded(
        &train_command(cfg, &two, &["--nproc-per-node", "2"])
            .output()
            .unwrap(),
        "2 ranks",
    );
    succeeded(
        &train_command(cfg, &one, &[]).output().unwrap(),
        "1 process",
    );
    (two, one)
}

#[test]
fn the_identity_sampler_feeds_two_ranks_the_batches_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config_with(dir.path(), 1, "sampler: identity\nnum_instance: 4\n");
    let (two, one) = train_two_ranks_and_one_process(&cfg, dir.path());
    assert_losses_agree(
        &metrics(&two)[..1],
        &metrics(&one)[..1],
        LOSS_RTOL,
        "2 ranks",
    );
}

#[test]
fn two_ranks_agree_with_each_other_and_with_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 2);
    let (two, one) = train_two_ranks_and_one_process(&cfg, dir.path());
    // Every rank's own digest of its parameters equals the digest of the saved state.
    let digest = state_digest(&two);
    assert_eq!(logged_digests(&two, 2), [digest.clone(), digest]);
    assert_eq!(metrics(&two).len(), 2);
    assert_losses_agree(
        &metrics(&two)[..1],
        &metrics(&one)[..1],
        LOSS_RTOL,
        "2 ranks",
    );
    let (p2, p1) = (
        load(&two.join("last.safetensors")),
        load(&one.join("last.safetensors")),
    );
    let mut compared = 0;
    for (name, t1) in p1.iter().filter(|(k, _)| !k.starts_with("optimizer.")) {
        let d = max_abs_diff(t1, &p2[name]);
        assert!(
            d <= PARAM_ATOL,
            "{name}: one process and 2 ranks differ by {d}"
        );
        compared += 1;
    }
    assert!(compared > 50, "{compared} parameters compared");
    // Only rank 0 wrote: one log, one metrics line per epoch, one best checkpoint.
    assert!(two.join("best.safetensors").is_file() && two.join("results.json").is_file());
}

/// RDE's recipe with the clean division (`noise_filter: ccd`) at noise 0.5: 2 ranks divide the
/// pairs as one process does (the same precision, recall and clean fraction) and record its
/// `tal` loss.
#[test]
fn two_ranks_divide_the_pairs_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 1);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "loss_names: imal\n",
        "loss_names: tal\nMLM: false\ntse: true\nnoise_filter: ccd\nnoisy_rate: 0.5\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let (two, one) = train_two_ranks_and_one_process(&cfg, dir.path());
    let (two, one) = (&metrics(&two)[0], &metrics(&one)[0]);
    for key in ["ccd_precision", "ccd_recall", "ccd_clean_fraction"] {
        let v = one[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {one}"));
        assert_eq!(
            two[key].as_f64(),
            Some(v),
            "{key}: 2 ranks {two}, one process {one}"
        );
    }
    let (l2, l1) = (
        two["loss"]["tal"].as_f64().unwrap(),
        one["loss"]["tal"].as_f64().unwrap(),
    );
    assert!(
        (l2 - l1).abs() <= LOSS_RTOL * l1.abs(),
        "tal: 2 ranks {l2}, one process {l1}"
    );
}

#[test]
fn torchrun_variables_launch_the_same_run_and_a_killed_rank_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 2);
    let (flag, env, killed) = (
        dir.path().join("flag"),
        dir.path().join("env"),
        dir.path().join("killed"),
    );
    succeeded(
        &train_command(&cfg, &flag, &["--nproc-per-node", "2"])
            .output()
            .unwrap(),
        "--nproc-per-node",
    );
    let port = free_port();
    let ranks: Vec<_> = (0..2)
        .map(|r| env_rank(train_command(&cfg, &env, &[]), r, &port))
        .collect();
    for (r, child) in ranks.into_iter().enumerate() {
        succeeded(&child.wait_with_output().unwrap(), &format!("rank {r}"));
    }
    // The same computation either way: identical loss records and bit-identical parameters.
    let strip =
        |m: Vec<serde_json::Value>| m.into_iter().map(|r| r["loss"].clone()).collect::<Vec<_>>();
    assert_eq!(strip(metrics(&env)), strip(metrics(&flag)));
    assert_eq!(state_digest(&env), state_digest(&flag));

    // Rank 1 is killed in epoch 2 (global step 20): rank 0 stops on its own, naming it.
    let port = free_port();
    let t0 = Instant::now();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            let mut cmd = train_command(&cfg, &killed, &[]);
            cmd.env("CCMA_RANK_FAULT", "kill:1:20");
            env_rank(cmd, r, &port)
        })
        .collect();
    let outs: Vec<Output> = ranks
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "the survivor took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&outs[1].status),
        Some(9)
    );
    assert_one_line_error(&outs[0], "rank 1 stopped answering");
    assert_one_line_error(&outs[0], "its last checkpoint is whole: resume the run in");
    assert_eq!(metrics(&killed).len(), 1, "epoch 1 recorded, epoch 2 not");
    // Resumed on 2 ranks, the run ends bit-identical to the run that was never stopped.
    ccma_ok(&[
        "train",
        "--resume",
        killed.to_str().unwrap(),
        "--nproc-per-node",
        "2",
    ]);
    assert_eq!(metrics(&killed).len(), 2);
    assert_eq!(state_digest(&killed), state_digest(&flag));
}

#[test]
fn the_launcher_names_a_killed_rank_and_one_process_resumes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 2);
    let run = dir.path().join("run");
    let t0 = Instant::now();
    let out = train_command(&cfg, &run, &["--nproc-per-node", "2"])
        .env("CCMA_RANK_FAULT", "kill:1:20")
        .output()
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t0.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 2, "rank 0's line and the launcher's: {err}");
    assert!(lines[0].contains("rank 1 stopped answering"), "{err}");
    assert!(
        lines[1].contains("rank 1 (pid ") && lines[1].contains("was killed by signal 9 (SIGKILL)"),
        "{err}"
    );
    // The checkpoint of epoch 1 is whole; one process (N = 2 -> M = 1) finishes the run.
    ccma_ok(&["train", "--resume", run.to_str().unwrap()]);
    let m = metrics(&run);
    assert_eq!(
        m.iter()
            .map(|r| r["epoch"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn a_rank_that_hangs_is_named_once_dist_timeout_passes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 2);
    let run = dir.path().join("run");
    let port = free_port();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            let mut cmd = train_command(&cfg, &run, &["--set", "dist_timeout=5"]);
            cmd.env("CCMA_RANK_FAULT", "stall:1:3");
            env_rank(cmd, r, &port)
        })
        .collect();
    let mut ranks = ranks.into_iter();
    let (rank0, mut rank1) = (ranks.next().unwrap(), ranks.next().unwrap());
    let t0 = Instant::now();
    let out = rank0.wait_with_output().unwrap();
    let waited = t0.elapsed();
    rank1.kill().unwrap();
    rank1.wait().unwrap();
    assert_one_line_error(&out, "rank 1 stopped answering");
    assert!(
        waited < Duration::from_secs(60),
        "rank 0 stopped after {waited:?}"
    );
}

#[test]
fn ctrl_c_stops_every_rank_with_a_resumable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 40);
    let run = dir.path().join("run");
    let launcher = train_command(&cfg, &run, &["--nproc-per-node", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !run.join("metrics.jsonl").is_file() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(launcher.id() as i32, libc::SIGINT) };
    let out = launcher.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("resumable checkpoint written"), "{err}");
    let done = metrics(&run).len();
    assert!(done < 40, "stopped early: {done} epochs");
    ccma_ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--num-epoch",
        &(done + 1).to_string(),
        "--nproc-per-node",
        "2",
    ]);
    assert_eq!(metrics(&run).len(), done + 1);
}

#[test]
fn data_parallel_settings_that_cannot_act_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 1);
    let cfg_s = cfg.to_str().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let train = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccma"));
        cmd.args(["train", "--config", cfg_s, "--run-dir", run_s])
            .args(extra)
            .envs(env.iter().copied());
        cmd.output().unwrap()
    };
    for (extra, env, needle) in [
        (
            &["--nproc-per-node", "0"][..],
            &[][..],
            "--nproc-per-node 0",
        ),
        (
            &["--nproc-per-node", "2"],
            &[("WORLD_SIZE", "2")][..],
            "WORLD_SIZE is already set",
        ),
        (
            &[],
            &[
                ("WORLD_SIZE", "2"),
                ("RANK", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "29500"),
            ][..],
            "RANK=2 is not below WORLD_SIZE=2",
        ),
        (
            &[],
            &[
                ("WORLD_SIZE", "2"),
                ("RANK", "0"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "127.0.0.1"),
            ][..],
            "MASTER_PORT is not set",
        ),
        (
            &[
                "--nproc-per-node",
                "2",
                "--set",
                "dist_backend=nccl",
                "--device",
                "cpu",
            ],
            &[],
            "dist_backend nccl carries CUDA tensors",
        ),
        (
            &["--set", "dist_backend=gloo"],
            &[],
            "apply to data-parallel runs",
        ),
        (
            &["--set", "dist_timeout=0", "--nproc-per-node", "2"],
            &[],
            "dist_timeout",
        ),
        (
            &["--nproc-per-node", "2", "--device", "cuda:1"],
            &[],
            "each rank uses cuda:LOCAL_RANK",
        ),
    ] {
        let out = train(extra, env);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?} {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_one_line_error(&out, needle);
        assert!(
            !run.join("configs.yaml").exists(),
            "{extra:?}: nothing written"
        );
    }
    // More ranks than the machine has CPUs: refused before any rank is started.
    let cores = std::thread::available_parallelism().unwrap().get();
    let n = (cores + 1).to_string();
    let out = train(&["--nproc-per-node", &n], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_error(
        &out,
        &format!("--nproc-per-node {n}: expected 1 to {cores} (at most one rank per CPU; this machine has {cores})"),
    );
    assert!(!run.join("configs.yaml").exists());
}

#[test]
fn bench_measures_the_step_plain_and_as_a_rank_of_one() {
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ccma"))
            .args([
                "bench",
                "--batch-size",
                "2",
                "--steps",
                "1",
                "--device",
                "cpu",
                "--json",
            ])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        succeeded(&out, "bench");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(r["step_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["autocast"], "off", "no autocast on the CPU: {r}");
        r["ranks"].as_i64().unwrap()
    };
    assert_eq!(run(&[]), 1);
    let port = free_port();
    let one = [
        ("WORLD_SIZE", "1"),
        ("RANK", "0"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", port.as_str()),
    ];
    assert_eq!(run(&one), 1);
}

/// `ccma bench` on 2 ranks: every rank steps on its slice of one random global batch with the
/// layout of both slices, and counts both ranks' samples.
#[test]
fn bench_runs_on_two_ranks_over_the_global_batch() {
    let port = free_port();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccma"));
            cmd.args([
                "bench",
                "--batch-size",
                "2",
                "--steps",
                "1",
                "--device",
                "cpu",
                "--json",
            ]);
            env_rank_with_stdout(cmd, r, &port, Stdio::piped())
        })
        .collect();
    for (r, child) in ranks.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        succeeded(&out, &format!("rank {r}"));
        let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (&b["ranks"], &b["batch_size"], &b["samples_per_step"]),
            (
                &serde_json::json!(2),
                &serde_json::json!(2),
                &serde_json::json!(4)
            ),
            "rank {r}: {b}"
        );
        let (ms, per_s) = (
            b["step_ms"].as_f64().unwrap(),
            b["samples_per_s"].as_f64().unwrap(),
        );
        assert!((per_s * ms / 1e3 - 4.0).abs() < 1e-9, "rank {r}: {b}");
    }
}
