//! RDE's checkpoints (tests/reference/rde_ref.py writes them with torch.save in RDE's layout):
//! a `best.pth` of RDE's code gives the reference's features for inference and as the start of
//! training, `ccma export --format rde` writes RDE's layout back, and `train --pretrained` from
//! an IRRA-layout `.pth` starts from exactly that model.
mod common;
use ccma::factory::{inference_model, training_model, WeightsSource};
use common::*;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Tensor};

fn generate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    reference("rde_ref.py", &["tse", s(dir.path())]);
    dir
}

fn close(name: &str, ours: &Tensor, want: &Tensor) {
    assert_eq!(ours.size(), want.size(), "{name}");
    let d = max_abs_diff(ours, want);
    assert!(d < 1e-4, "{name}: max abs diff {d}");
}

/// The reference's features from `model`: global, and TSE when `io` has the model's.
fn check_features(what: &str, model: &ccma::model::Ccma, io: &HashMap<String, Tensor>, tse: bool) {
    let _guard = tch::no_grad_guard();
    let (f_i, tse_i) = model.image_embeddings(&io["images"]);
    let (f_t, tse_t) = model.text_embeddings(&io["ids"]);
    close(&format!("{what} f_i"), &f_i, &io["f_i"]);
    close(&format!("{what} f_t"), &f_t, &io["f_t"]);
    assert_eq!(tse_i.is_some(), tse, "{what}");
    if tse {
        close(&format!("{what} tse_i"), &tse_i.unwrap(), &io["tse_i"]);
        close(&format!("{what} tse_t"), &tse_t.unwrap(), &io["tse_t"]);
    }
}

/// RDE's `best.pth` (fp16 weights, BatchNorm statistics, its unused modules and counters) read
/// for inference: a model with TSE whose features are the reference's.
#[test]
fn rdes_best_pth_gives_the_reference_features() {
    let dir = generate();
    let io = load(&dir.path().join("io.safetensors"));
    let source = WeightsSource::Checkpoint(dir.path().join("rde_best.pth"));
    let m = inference_model(&source, Some((64, 32)), Device::Cpu).unwrap();
    assert!(m.model.config.tse);
    check_features("rde_best.pth", &m.model, &io, true);
}

/// A config that trains from `pretrained` at the reference's input size, with `extra` keys.
fn pretrained_config(pretrained: &Path, extra: &[(&str, &str)]) -> ccma::config::Config {
    let sets: Vec<(String, String)> = [
        ("pretrained", s(pretrained)),
        ("img_size", "[64, 32]"),
        ("text_length", "12"),
        ("loss_names", "tal"),
        ("MLM", "false"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    ccma::config::Config::default()
        .with_overrides(&sets)
        .unwrap()
}

/// `train --pretrained` from an IRRA-layout `.pth` (MLLM4Text's and HAM's person-domain models
/// are such files) and from RDE's `best.pth` starts from exactly that model: the step-0 features
/// are the checkpoint's.
#[test]
fn training_starts_from_exactly_the_pretrained_checkpoint() {
    let dir = generate();
    let io = load(&dir.path().join("io.safetensors"));
    let rde: &[(&str, &str)] = &[("tse", "true"), ("select_ratio", "0.5")];
    for (name, tse, extra) in [
        ("irra_best.pth", false, &[][..]),
        ("rde_best.pth", true, rde),
    ] {
        let cfg = pretrained_config(&dir.path().join(name), extra);
        let (_vs, model) = training_model(&cfg, 3, Device::Cpu).unwrap();
        check_features(&format!("train --pretrained {name}"), &model, &io, tse);
    }
}

/// `ccma export --format rde` writes RDE's state dict back: every name RDE's `best.pth` has, the
/// used tensors as read; a model without TSE is refused by name.
#[test]
fn export_writes_rdes_layout_back() {
    let dir = generate();
    let pth = dir.path().join("rde_best.pth");
    let out = dir.path().join("rde.safetensors");
    ccma_ok(&["export", "--format", "rde", s(&pth), s(&out)]);
    let exported = load(&out);
    use ccma::io::pickle::{load_torch_zip, Value};
    let saved = load_torch_zip(&pth).unwrap();
    let Some(Value::Dict(model)) = saved.get("model") else {
        panic!("no state dict under `model`")
    };
    let mut want: Vec<String> = model
        .iter()
        .map(|(k, _)| match k {
            Value::Str(k) => k.clone(),
            other => panic!("{}", other.kind_name()),
        })
        .collect();
    want.sort();
    let mut names: Vec<String> = exported.keys().cloned().collect();
    names.sort();
    assert_eq!(names, want);
    let read = ccma::model::weights::read(&pth).unwrap();
    for (k, t) in &read.tensors {
        assert!(exported[k].equal(t), "{k}");
    }
    let refused = ccma(&[
        "export",
        "--format",
        "rde",
        s(&dir.path().join("irra_best.pth")),
        s(&dir.path().join("irra.safetensors")),
    ]);
    assert_one_line_error(&refused, "no TSE layers");
}
