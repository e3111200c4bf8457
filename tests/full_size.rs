//! The real sizes end to end on the CPU, so that nothing about them is first met on a GPU: a
//! full-size random CLIP ViT-B/16 in OpenAI's TorchScript layout (14x14 grid, 12 x 512 text,
//! fp16), loaded at 384x128 by the paper's config (CUHK-PEDES settings, the IMAL loss set), trained
//! for one epoch of one or two steps at batch 4 on a tiny generated set, evaluated, then tested from
//! its checkpoint; and the full-size resumable state: three times the parameters' size, resumed
//! bit-identically, in this layout and in the earlier per-element one.
mod common;
use ccma::config::Config;
use ccma::train::checkpoint::{restore_resumable, resumable_tensors};
use ccma::train::optimizer::Optimizer;
use common::*;
use std::collections::HashMap;
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

#[test]
fn paper_config_at_full_size_trains_a_step_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("ViT-B-16.pt");
    reference("full_size_clip.py", &[archive.to_str().unwrap()]);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/cuhk-pedes.yaml");
    let run = dir.path().join("run");
    let data = dir.path().join("data");
    ccma_ok(&[
        "train",
        "--config",
        config,
        "--dataset",
        "TOY-PEDES",
        "--root-dir",
        data.to_str().unwrap(),
        "--set",
        "synth_ids=[1, 1, 3]",
        "--set",
        "test_batch_size=16",
        "--batch-size",
        "4",
        "--num-epoch",
        "1",
        "--pretrained",
        archive.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    let log = std::fs::read_to_string(run.join("train_log.txt")).unwrap();
    assert!(log.contains("losses itc+sdm+cmpm+id+mlm+imal"), "{log}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    let r1 = results["t2i"]["R1"].as_f64().unwrap();
    let t = ccma_json(&[
        "test",
        "--config",
        run.join("configs.yaml").to_str().unwrap(),
        "--json",
    ]);
    assert!(
        (t["t2i"]["R1"].as_f64().unwrap() - r1).abs() < 1e-9,
        "{t} vs {results}"
    );
    // The checkpoint holds the full-size model at 384x128: a 24x8 grid.
    let ck = load(&run.join("best.safetensors"));
    assert_eq!(
        ck["base_model.visual.positional_embedding"].size(),
        [24 * 8 + 1, 768]
    );
    assert_eq!(ck["base_model.token_embedding.weight"].size(), [49408, 512]);
    // The resumable state the trainer wrote: parameters, two Adam moments and a few numbers.
    let state = std::fs::metadata(run.join("last.safetensors"))
        .unwrap()
        .len() as f64;
    let params: usize = ck
        .values()
        .map(|t| t.numel() * t.kind().elt_size_in_bytes())
        .sum();
    let ratio = state / params as f64;
    assert!(
        (3.0..=3.1).contains(&ratio),
        "last.safetensors is {ratio:.3}x the parameters"
    );
}

/// The paper's full-size model (CUHK-PEDES's 11,003 identities) from scratch, seeded, with its
/// optimiser.
fn full_size(cfg: &Config, seed: i64) -> (VarStore, Optimizer, (i64, i64)) {
    tch::manual_seed(seed);
    let (vs, model) = ccma::factory::training_model(cfg, 11_003, Device::Cpu).unwrap();
    let mut opt = Optimizer::new(&vs, &cfg.optim);
    opt.set_lr(|base| base);
    (vs, opt, model.config.clip.grid())
}

/// `n` optimiser steps on the loss sum(p^2) / 2 over every trainable parameter (gradient p).
fn steps(vs: &VarStore, opt: &mut Optimizer, n: usize) {
    for _ in 0..n {
        opt.zero_grad().unwrap();
        let loss = vs
            .trainable_variables()
            .iter()
            .map(|p| p.square().sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap()
            * 0.5;
        loss.backward();
        opt.step().unwrap();
    }
}

/// A fresh model restored from `path` and stepped twice: its parameters equal `want`'s bit for
/// bit.
fn resumes_to(cfg: &Config, path: &Path, want: &HashMap<String, Tensor>) {
    let (mut vs, mut opt, grid) = full_size(cfg, 99);
    let (tensors, _) = ccma::io::safetensors::load(path).unwrap();
    restore_resumable(&mut vs, &mut opt, tensors, grid, path).unwrap();
    steps(&vs, &mut opt, 2);
    let got = vs.variables();
    assert_eq!(got.len(), want.len());
    for (name, t) in want {
        assert!(t.equal(&got[name]), "{}: {name} differs", path.display());
    }
}

/// The resumable state of the full-size model as the trainer writes it: at most 3.1x the
/// parameters' bytes; three steps in one go equal one step, a save, a restore into another model
/// and two more, bit for bit, from this layout and from the earlier per-element one.
#[test]
fn full_size_resumable_state_is_three_times_the_parameters_and_resumes_bit_identically() {
    let cfg = Config::default();
    let dir = tempfile::tempdir().unwrap();
    let want: HashMap<String, Tensor> = {
        let (vs, mut opt, _) = full_size(&cfg, 7);
        steps(&vs, &mut opt, 3);
        vs.variables()
            .into_iter()
            .map(|(k, t)| (k, t.copy()))
            .collect()
    };
    let state = dir.path().join("last.safetensors");
    let params = {
        let (vs, mut opt, _) = full_size(&cfg, 7);
        steps(&vs, &mut opt, 1);
        ccma::io::safetensors::save(&state, &resumable_tensors(&vs, &opt), &HashMap::new())
            .unwrap();
        vs.variables()
            .values()
            .map(|t| t.numel() * t.kind().elt_size_in_bytes())
            .sum::<usize>()
    };
    let ratio = std::fs::metadata(&state).unwrap().len() as f64 / params as f64;
    assert!(
        (3.0..=3.1).contains(&ratio),
        "the resumable state is {ratio:.3}x the parameters"
    );
    resumes_to(&cfg, &state, &want);
    // The same state in the earlier layout: five parameter-sized tensors.
    let earlier = dir.path().join("earlier.safetensors");
    checkpoint_in_earlier_layout(&state, &earlier, &cfg.optim);
    std::fs::remove_file(&state).unwrap();
    let ratio = std::fs::metadata(&earlier).unwrap().len() as f64 / params as f64;
    assert!(
        ratio > 4.9,
        "the earlier layout is {ratio:.3}x the parameters"
    );
    resumes_to(&cfg, &earlier, &want);
}
