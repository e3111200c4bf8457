//! The gradient cache (`micro_batch`): a step in chunks gives the parameter gradients of the
//! one-pass step, on one process and on 2 ranks (Gloo on the loopback, one thread each), for
//! CCMA's loss set, IRRA's and ITC alone; training in chunks records the losses of one-pass
//! training, resumes bit-identically, and a run resumed with another `micro_batch` continues the
//! same trajectory; the settings that cannot act are refused.
//!
//! Chunks change only the order of float sums (a weight's gradient sums over the batch in one
//! matmul, or chunk by chunk), so gradients agree to [`GRAD_RTOL`] as a whole and [`PARAM_RTOL`]
//! per parameter, and loss records to [`LOSS_RTOL`].
mod common;
use ccma::config::Config;
use ccma::data::batch::{MaskedCaptions, RankSlices, TrainBatch};
use ccma::dist::on_loopback_ranks;
use ccma::loss::LossSpec;
use ccma::train::optimizer::Optimizer;
use ccma::train::parallel::Ranks;
use ccma::train::step::{step, StepOptions, StepOutcome};
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tch::{Device, Tensor};

const GRAD_RTOL: f64 = 1e-5;
const PARAM_RTOL: f64 = 1e-4;
const PARAM_ATOL: f64 = 1e-7;
const LOSS_RTOL: f64 = 1e-5;
/// Samples in the global batch of the step tests.
const BATCH: i64 = 8;
const CLASSES: i64 = 4;

/// A tiny from-scratch model's config with the loss terms `losses`, its batch the tests' `BATCH`.
fn tiny(losses: &str) -> Config {
    let batch = [("batch_size".to_string(), BATCH.to_string())];
    tiny_config(losses).with_overrides(&batch).unwrap()
}

/// Models and batches are drawn one at a time (libtorch's generator is global and the tests run
/// in parallel), so every caller gets the same weights and the same batch.
static BUILD: Mutex<()> = Mutex::new(());

/// The tests' random batch (seed 3).
fn random_batch() -> TrainBatch {
    let _one = BUILD.lock().unwrap();
    tch::manual_seed(3);
    TrainBatch::random(BATCH, (32, 16), 16, CLASSES, Device::Cpu)
}

/// One step of a fresh model (seed 7) on `batch` in chunks of `chunk` as a rank of `ranks`: what
/// the step reports, and the gradient of every parameter that has one, by name (averaged over
/// the ranks).
fn fresh_step(
    cfg: &Config,
    batch: &TrainBatch,
    ranks: &Ranks,
    chunk: Option<usize>,
) -> (StepOutcome, BTreeMap<String, Tensor>) {
    let (vs, model) = {
        let _one = BUILD.lock().unwrap();
        tch::manual_seed(7);
        ccma::factory::training_model(cfg, CLASSES, Device::Cpu).unwrap()
    };
    let mut opt = Optimizer::new(&vs, &cfg.optim);
    let spec = LossSpec::of(cfg);
    let how = StepOptions {
        chunk,
        ..StepOptions::default()
    };
    let outcome = step(&model, &mut opt, batch, &spec, ranks, how).unwrap();
    let grads = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.grad().defined())
        .map(|(k, v)| (k, v.grad().copy()))
        .collect();
    (outcome, grads)
}

/// The gradients of [`fresh_step`].
fn step_gradients(
    cfg: &Config,
    batch: &TrainBatch,
    ranks: &Ranks,
    chunk: Option<usize>,
) -> BTreeMap<String, Tensor> {
    fresh_step(cfg, batch, ranks, chunk).1
}

/// The step's gradients on 2 ranks (each half of `batch`), as rank 0 holds them.
fn two_rank_gradients(
    cfg: &Config,
    batch: &TrainBatch,
    chunk: Option<usize>,
) -> BTreeMap<String, Tensor> {
    let (cfg, parts) = (
        cfg.clone(),
        vec![rank_slice(batch, 0), rank_slice(batch, 1)],
    );
    let timeout = Duration::from_secs(120);
    let mut grads = on_loopback_ranks(parts, "micro-batch-test", timeout, move |group, part| {
        let ranks = Ranks::new(group, BATCH as usize, Device::Cpu);
        step_gradients(&cfg, &part, &ranks, chunk)
    });
    grads.swap_remove(0)
}

/// Rank `rank`'s half of `batch` as the loader of a 2-rank run gives it (with both ranks'
/// sizes, masked counts and pids), its tensors copies (so that a thread may own it).
fn rank_slice(batch: &TrainBatch, rank: i64) -> TrainBatch {
    let half = BATCH / 2;
    let b = batch.narrow(rank * half, half);
    TrainBatch {
        images: b.images.copy(),
        caption_ids: b.caption_ids.copy(),
        masked: b.masked.as_ref().map(|m| MaskedCaptions {
            ids: m.ids.copy(),
            positions: m.positions.copy(),
            targets: m.targets.copy(),
            per_sample: m.per_sample.clone(),
        }),
        pids: b.pids.copy(),
        indices: b.indices.clone(),
        weights: batch.weights.clone(),
        slices: RankSlices {
            sizes: vec![half, half],
            all_masked: batch.slices.all_masked.clone(),
            all_pids: Some(batch.pids.copy()),
            all_indices: batch.indices.clone(),
        },
    }
}

/// `got` equals `want` as a whole to [`GRAD_RTOL`] (the norm of the difference of all gradients
/// over the norm of all gradients), and every parameter's gradient to [`PARAM_RTOL`] of its own
/// norm plus [`PARAM_ATOL`] (a gradient that is a small sum of cancelling terms, such as the
/// classifier bias's, carries the rounding of those terms, and one that is zero in exact
/// arithmetic, such as an attention's key bias, is that rounding alone).
fn assert_same_gradients(
    want: &BTreeMap<String, Tensor>,
    got: &BTreeMap<String, Tensor>,
    what: &str,
) {
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{what}: the same parameters have gradients"
    );
    assert!(want.len() > 10, "{what}: {} gradients", want.len());
    let (mut diff2, mut norm2) = (0.0, 0.0);
    for (name, w) in want {
        let norm = w.norm().double_value(&[]);
        let diff = (w - &got[name]).norm().double_value(&[]);
        assert!(
            diff <= PARAM_RTOL * norm + PARAM_ATOL,
            "{what}: {name} differs by {diff} (norm {norm})"
        );
        diff2 += diff * diff;
        norm2 += norm * norm;
    }
    let rel = (diff2 / norm2).sqrt();
    assert!(
        rel <= GRAD_RTOL,
        "{what}: the gradients differ by {rel} relative"
    );
}

/// The one-pass gradients of `batch` on one process, after checking that chunks of each of
/// `chunks` on one process, and 2 ranks with each of `rank_chunks`, give them; `what` names the
/// case in messages.
fn one_pass_agreed(
    cfg: &Config,
    batch: &TrainBatch,
    chunks: &[usize],
    rank_chunks: &[Option<usize>],
    what: &str,
) -> BTreeMap<String, Tensor> {
    let single = Ranks::single(Device::Cpu);
    let whole = step_gradients(cfg, batch, &single, None);
    for &chunk in chunks {
        let got = step_gradients(cfg, batch, &single, Some(chunk));
        assert_same_gradients(&whole, &got, &format!("{what}, chunks of {chunk}"));
    }
    for &chunk in rank_chunks {
        let got = two_rank_gradients(cfg, batch, chunk);
        assert_same_gradients(
            &whole,
            &got,
            &format!("{what}, 2 ranks, chunks of {chunk:?}"),
        );
    }
    whole
}

#[test]
fn chunked_steps_give_the_one_pass_gradients_on_one_process_and_on_two_ranks() {
    let batch = random_batch();
    for losses in ["imal", "sdm+id+mlm", "itc"] {
        let ranks = [None, Some(1), Some(3)];
        one_pass_agreed(
            &tiny(losses),
            &batch,
            &[1, 3, BATCH as usize],
            &ranks,
            losses,
        );
    }
}

/// The clean division's weights on the batch (`noise_filter: ccd`) on RDE's TAL alone and on
/// CCMA's set with it (every batch-spanning term's rows, ID's samples and MLM's tokens weighted):
/// chunks and 2 ranks give the one-pass gradients, and the weights act (pairs of weight 0 change
/// them).
#[test]
fn weighted_steps_agree_in_chunks_and_on_two_ranks() {
    let mut batch = random_batch();
    let sets = [("tse".to_string(), "true".to_string())];
    for losses in ["tal", "imal+tal"] {
        let cfg = tiny(losses).with_overrides(&sets).unwrap();
        batch.weights = None;
        let unweighted = step_gradients(&cfg, &batch, &Ranks::single(Device::Cpu), None);
        batch.weights = Some(vec![1., 0., 1., 1., 0., 1., 0., 1.]);
        let what = format!("weighted {losses}");
        let whole = one_pass_agreed(&cfg, &batch, &[1, 3], &[None, Some(3)], &what);
        let moved: f64 = whole
            .iter()
            .map(|(k, g)| max_abs_diff(g, &unweighted[k]))
            .fold(0.0, f64::max);
        assert!(moved > 1e-6, "{losses}: the weights act: {moved}");
    }
}

/// A batch whose pairs all have weight 0 steps with every term 0, not NaN, in one pass and in
/// chunks, and leaves no gradient but zeros.
#[test]
fn a_batch_without_clean_pairs_steps_with_zero_terms() {
    let mut batch = random_batch();
    batch.weights = Some(vec![0.; BATCH as usize]);
    let sets = [("tse".to_string(), "true".to_string())];
    let cfg = tiny("imal+tal").with_overrides(&sets).unwrap();
    for chunk in [None, Some(3)] {
        let (out, grads) = fresh_step(&cfg, &batch, &Ranks::single(Device::Cpu), chunk);
        assert_eq!(out.values.len(), 7, "{out:?}");
        assert!(out.values.iter().all(|(_, v)| *v == 0.0), "{out:?}");
        for (name, g) in grads {
            assert_eq!(g.abs().max().double_value(&[]), 0.0, "{name}");
        }
    }
}

#[test]
fn training_in_chunks_records_the_one_pass_losses_and_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 2);
    let run = |name: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = train_command(&cfg, &dir.path().join(name), extra);
        cmd.envs(env.iter().copied());
        cmd.output().unwrap()
    };
    let (one, chunked) = (dir.path().join("one"), dir.path().join("chunked"));
    succeeded(&run("one", &[], &[]), "train");
    let log = succeeded(&run("chunked", &["--micro-batch", "3"], &[]), "train");
    assert!(
        log.contains("micro_batch 3: every step passes this rank's 16 samples in 6 chunks"),
        "{log}"
    );
    assert_losses_agree(&metrics(&chunked), &metrics(&one), LOSS_RTOL, "in chunks");
    // Interrupted after global step 4, resumed with the same chunks: bit-identical.
    let again = dir.path().join("again");
    let out = run(
        "again",
        &["--micro-batch", "3"],
        &[("CCMA_INTERRUPT_AT_STEP", "4")],
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    succeeded(&resume(&again, &[]), "resume");
    assert_eq!(metrics(&chunked)[1]["loss"], metrics(&again)[1]["loss"]);
    assert_eq!(
        std::fs::read(chunked.join("best.safetensors")).unwrap(),
        std::fs::read(again.join("best.safetensors")).unwrap()
    );
    // A one-pass run interrupted and resumed in chunks of 5 continues the same trajectory.
    let switched = dir.path().join("switched");
    let out = run("switched", &[], &[("CCMA_INTERRUPT_AT_STEP", "4")]);
    assert_eq!(out.status.code(), Some(130));
    let log = succeeded(&resume(&switched, &["--micro-batch", "5"]), "resume");
    assert!(log.contains("micro_batch none -> 5"), "{log}");
    assert_losses_agree(
        &metrics(&switched),
        &metrics(&one),
        LOSS_RTOL,
        "chunks switched on resume",
    );
    let saved = std::fs::read_to_string(switched.join("configs.yaml")).unwrap();
    assert!(saved.contains("micro_batch: 5"), "{saved}");
}

/// `ccma train --resume run` with `extra` flags.
fn resume(run: &Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ccma"))
        .args(["train", "--resume", run.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn micro_batch_settings_that_cannot_act_are_refused_and_a_large_one_is_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 1);
    let refused = |extra: &[&str], needle: &str| {
        let run = dir.path().join("refused");
        let out = train_command(&cfg, &run, extra).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert_one_line_error(&out, needle);
        assert!(
            !run.join("configs.yaml").exists(),
            "nothing written for {extra:?}"
        );
    };
    refused(
        &["--micro-batch", "0"],
        "invalid value for `micro_batch`: 0 (expected at least 1 sample per pass",
    );
    refused(
        &["--set", "micro_batch=some"],
        "invalid value for `micro_batch`: \"some\" (expected a number of samples or auto)",
    );
    refused(
        &["--micro-batch", "auto", "--device", "cpu"],
        "micro_batch auto sizes the chunks to a CUDA card's free memory, but this run is on Cpu",
    );
    let out = train_command(&cfg, &dir.path().join("large"), &["--micro-batch", "16"])
        .output()
        .unwrap();
    let log = succeeded(&out, "train");
    assert!(
        log.contains("micro_batch 16 is at least this rank's 16 samples: every step is one pass"),
        "{log}"
    );
}

#[test]
fn bench_runs_the_step_in_chunks_with_the_loss_set_asked_for() {
    let out = ccma_ok(&[
        "bench",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--micro-batch",
        "1",
        "--loss-names",
        "sdm+id+mlm",
        "--device",
        "cpu",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&r["chunk"], &r["loss_names"]),
        (&serde_json::json!(1), &serde_json::json!("sdm+id+mlm")),
        "{r}"
    );
    // The full-size model's parameters and Adam moments alone take over 1 GiB.
    assert!(r["peak_rss_gib"].as_f64().unwrap() > 1.0, "{r}");
}
