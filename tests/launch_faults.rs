//! Launcher, rendezvous, interrupt and resume faults through the binary, on the CPU with 2 ranks
//! over Gloo on the loopback: a launcher killed mid-run (each rank stops once, with a resumable
//! checkpoint, whatever repeats of SIGTERM follow, and the resumed run ends as the one never
//! stopped), a SIGTERM to the launcher, ranks of another run given the same MASTER_PORT, the epoch
//! loss of epochs resumed mid-way and at their last batch, and a resume state that does not fit
//! the run's patch grid. The ranks wait at a step (`CCMA_PARK_AT_STEP`) until they are signalled,
//! so nothing depends on timing.
mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Stdio};

/// The relative agreement of epoch losses between a resumed and an uninterrupted run.
const LOSS_RTOL: f64 = 1e-6;

/// A launcher's stderr (its ranks write there too), read line by line.
struct Stderr {
    lines: BufReader<ChildStderr>,
    text: String,
}

impl Stderr {
    fn of(child: &mut Child) -> Stderr {
        Stderr {
            lines: BufReader::new(child.stderr.take().unwrap()),
            text: String::new(),
        }
    }

    /// Reads on until `n` lines read since the start contain `needle`, and returns those lines;
    /// panics, showing what was read, if the stream ends first.
    fn until(&mut self, needle: &str, n: usize) -> Vec<String> {
        loop {
            let found: Vec<String> = self
                .text
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_string)
                .collect();
            if found.len() >= n {
                return found;
            }
            let mut line = String::new();
            let read = self.lines.read_line(&mut line).unwrap();
            assert!(read > 0, "no {n} lines with {needle:?}:\n{}", self.text);
            self.text.push_str(&line);
        }
    }

    /// Everything, read to the end (when every writer has closed it).
    fn rest(mut self) -> String {
        std::io::Read::read_to_string(&mut self.lines, &mut self.text).unwrap();
        self.text
    }
}

/// A 2-rank launcher of `cfg` into `run` whose ranks park before global step `park`.
fn parked_launcher(cfg: &Path, run: &Path, park: usize) -> (Child, Stderr) {
    let mut launcher = train_command(cfg, run, &["--nproc-per-node", "2"])
        .env("CCMA_PARK_AT_STEP", park.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Stderr::of(&mut launcher);
    (launcher, stderr)
}

/// The pids in the ranks' `rank R (pid P) parked before global step N` lines, by rank.
fn parked_pids(stderr: &mut Stderr, step: usize) -> Vec<i32> {
    let mut pids = vec![0; 2];
    for line in stderr.until(&format!("parked before global step {step}"), 2) {
        let (rank, rest) = line
            .split_once("rank ")
            .unwrap()
            .1
            .split_once(" (pid ")
            .unwrap();
        pids[rank.parse::<usize>().unwrap()] = rest.split_once(')').unwrap().0.parse().unwrap();
    }
    pids
}

fn assert_no_panic(text: &str) {
    assert!(
        !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
        "{text}"
    );
}

#[test]
fn a_killed_launcher_stops_each_rank_once_with_a_resumable_checkpoint() {
    // The ranks are re-parented to this process when their launcher dies, so it can wait for
    // them (and their pids stay theirs until it does).
    // SAFETY: sets a flag of this process.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 2);
    let (run, whole) = (dir.path().join("run"), dir.path().join("whole"));
    // Parked before the 6th batch of epoch 2 (15 batches an epoch).
    let (mut launcher, mut stderr) = parked_launcher(&cfg, &run, 20);
    let pids = parked_pids(&mut stderr, 20);
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    stderr.until("the launcher ended: finishing the current step", 2);
    // SIGTERM again, as a second re-parenting would send it, while the ranks finish their step.
    for &pid in &pids {
        // SAFETY: signalling a process this test waits for (not reaped yet).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }
    let text = stderr.rest();
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for a child of this process.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 130,
            "pid {pid} ended with status {status:#x}:\n{text}"
        );
    }
    assert_no_panic(&text);
    assert!(
        text.contains("interrupted at epoch 2, step 6: resumable checkpoint written"),
        "{text}"
    );
    assert_eq!(
        text.matches("finishing the current step").count(),
        2,
        "one request per rank: {text}"
    );
    assert_eq!(metrics(&run).len(), 1, "epoch 1 recorded, epoch 2 not");
    // Resumed, the run ends as the one never stopped: the same epoch losses (epoch 2 over all of
    // its batches) and bit-identical parameters.
    ccma_ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--nproc-per-node",
        "2",
    ]);
    succeeded(
        &train_command(&cfg, &whole, &["--nproc-per-node", "2"])
            .output()
            .unwrap(),
        "the uninterrupted run",
    );
    assert_losses_agree(&metrics(&run), &metrics(&whole), LOSS_RTOL, "resumed");
    let (a, b) = (
        load(&run.join("last.safetensors")),
        load(&whole.join("last.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for (name, t) in &b {
        assert!(t.equal(&a[name]), "{name} differs after the resume");
    }
}

#[test]
fn another_runs_ranks_on_the_same_master_port_are_refused_and_sigterm_stops_the_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 1);
    let (run, other) = (dir.path().join("run"), dir.path().join("other"));
    let port = free_port();
    let (mut launcher, mut stderr) = {
        let mut cmd = train_command(&cfg, &run, &["--nproc-per-node", "2"]);
        cmd.env("MASTER_PORT", &port)
            .env("CCMA_PARK_AT_STEP", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = Stderr::of(&mut child);
        (child, stderr)
    };
    parked_pids(&mut stderr, 3);
    // Ranks of another run, started on the port the parked run's rank 0 serves.
    let stranger = |rank: usize| {
        let out = env_rank(train_command(&cfg, &other, &[]), rank, &port)
            .wait_with_output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    assert_one_line_error(
        &stranger(1),
        &format!("MASTER_PORT={port} on 127.0.0.1 is the rendezvous of another run (run "),
    );
    assert_one_line_error(
        &stranger(0),
        &format!("MASTER_PORT={port}: rank 0 cannot serve the rendezvous store on it (address already in use)"),
    );
    assert!(!other.join("configs.yaml").exists());
    // SIGTERM to the launcher reaches each rank once: they stop after the same step, rank 0
    // writes the checkpoint, and the run resumes to its end.
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let text = stderr.rest();
    assert_eq!(launcher.wait().unwrap().code(), Some(130), "{text}");
    assert_no_panic(&text);
    assert_eq!(
        text.matches("SIGTERM: finishing the current step").count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("interrupted at epoch 1, step 4: resumable checkpoint written"),
        "{text}"
    );
    ccma_ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--nproc-per-node",
        "2",
    ]);
    assert_eq!(metrics(&run).len(), 1);
}

#[test]
fn epochs_resumed_mid_way_and_after_their_last_batch_record_the_loss_of_all_their_batches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 2);
    let (run, whole) = (dir.path().join("run"), dir.path().join("whole"));
    let run_s = run.to_str().unwrap();
    // Stopped after 7 of epoch 1's 15 batches, then after its last one (global step 15).
    let out = train_command(&cfg, &run, &[])
        .env("CCMA_INTERRUPT_AT_STEP", "7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ccma"))
        .args(["train", "--resume", run_s])
        .env("CCMA_INTERRUPT_AT_STEP", "15")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !run.join("metrics.jsonl").exists(),
        "epoch 1 not recorded yet"
    );
    ccma_ok(&["train", "--resume", run_s]);
    succeeded(
        &train_command(&cfg, &whole, &[]).output().unwrap(),
        "the uninterrupted run",
    );
    assert_losses_agree(&metrics(&run), &metrics(&whole), LOSS_RTOL, "resumed");
}

#[test]
fn a_resume_state_that_does_not_fit_the_runs_grid_is_named_with_the_grid() {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    let run = dir.path().join("run");
    succeeded(&train_command(&cfg, &run, &[]).output().unwrap(), "train");
    // 32x16 images in 16-pixel patches: a 2x1 grid and a class token, 3 positions; the state
    // gets 4, which is no class token plus a square grid.
    let state = run.join("last.safetensors");
    let (tensors, meta) = ccma::io::safetensors::load(&state).unwrap();
    let key = "base_model.visual.positional_embedding";
    let tensors: Vec<(String, tch::Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| match k == key {
            true => (
                k,
                tch::Tensor::zeros([4, 16], (tch::Kind::Float, tch::Device::Cpu)),
            ),
            false => (k, t),
        })
        .collect();
    ccma::io::safetensors::save(&state, &tensors, &meta).unwrap();
    let out = ccma(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--num-epoch",
        "2",
    ]);
    assert_one_line_error(&out, "the model's 2x1 grid needs 3 positions");
    assert_one_line_error(&out, key);
}
