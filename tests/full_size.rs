//! The real sizes end to end on the CPU, so that nothing about them is first met on a GPU: a
//! full-size random CLIP ViT-B/16 in OpenAI's TorchScript layout (14x14 grid, 12 x 512 text,
//! fp16), loaded at 384x128 by the paper's config (CUHK-PEDES settings, the IMAL loss set), trained
//! for one epoch of one or two steps at batch 4 on a tiny generated set, evaluated, then tested from
//! its checkpoint; its resumable state is three times the parameters' size.
mod common;
use common::*;

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
        "SYNTH-PEDES",
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
    // The resumable state: parameters, two Adam moments and a few numbers (3x the parameters).
    let state = std::fs::metadata(run.join("last.safetensors")).unwrap().len() as f64;
    let params: usize = ck.values().map(|t| t.numel() * 4).sum();
    let ratio = state / params as f64;
    assert!((3.0..=3.1).contains(&ratio), "last.safetensors is {ratio:.3}x the parameters");
}
