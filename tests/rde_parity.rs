//! RDE's pieces against an independent PyTorch reference written from METHOD.md section 7
//! (tests/reference/rde_ref.py): the per-sample TAL and its gradient, and the token selection
//! embedding layers of a tiny model in eval and train BatchNorm mode.
mod common;
use ccma::model::clip::ClipConfig;
use ccma::model::{BatchNormMode, Ccma, Heads, ModelConfig};
use common::*;
use tch::{Device, Kind, Tensor};

/// TAL per sample (and the gradient of a weighted sum of it) for batches with repeated pids,
/// within 1e-5 (relative to values of order 1) of the reference in float64.
#[test]
fn tal_per_sample_matches_the_reference() {
    for (seed, pids) in [
        (0, vec![0i64, 0, 1, 2, 2, 2, 3, 4]),
        (1, vec![5, 1, 5, 1, 1, 0, 2, 2, 3, 3, 3, 4]),
    ] {
        tch::manual_seed(seed);
        let b = pids.len() as i64;
        let opts = (Kind::Float, Device::Cpu);
        let image = Tensor::randn([b, 16], opts);
        let text = Tensor::randn([b, 16], opts);
        let weights = Tensor::rand([b], opts);
        let pids = Tensor::from_slice(&pids);
        let dir = tempfile::tempdir().unwrap();
        let (inp, out) = (dir.path().join("in.st"), dir.path().join("out.st"));
        save(
            &inp,
            &[
                ("image", &image),
                ("text", &text),
                ("pids", &pids),
                ("weights", &weights),
            ],
        );
        // A margin large enough that some samples are active and a temperature of RDE's.
        for (tau, margin) in [(0.015, 0.1), (0.1, 1.0)] {
            reference(
                "rde_ref.py",
                &[
                    "tal",
                    s(&inp),
                    s(&out),
                    &tau.to_string(),
                    &margin.to_string(),
                ],
            );
            let want = load(&out);
            let (i, t) = (
                image.detach().set_requires_grad(true),
                text.detach().set_requires_grad(true),
            );
            let per = ccma::loss::tal_per_sample(&i, &t, &pids, tau, margin);
            assert_eq!(per.size(), [b]);
            let d = max_abs_diff(&per, &want["tal"]);
            assert!(d < 1e-5, "tau {tau} margin {margin}: TAL max abs diff {d}");
            assert!(
                want["tal"].gt(0.0).any().int64_value(&[]) == 1,
                "the case has active samples"
            );
            (per * &weights).sum(Kind::Float).backward();
            for (name, x) in [("image", &i), ("text", &t)] {
                let d = max_abs_diff(&x.grad(), &want[&format!("grad.{name}")]);
                assert!(
                    d < 1e-5,
                    "tau {tau}: gradient w.r.t. {name}: max abs diff {d}"
                );
            }
        }
    }
}

/// The reference's tiny model, its weights copied in by name.
fn tiny_model(dir: &std::path::Path) -> (tch::nn::VarStore, Ccma) {
    let sizes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let n = |k: &str| sizes[k].as_i64().unwrap();
    let clip = ClipConfig {
        embed_dim: n("embed_dim"),
        image_size: (n("height"), n("width")),
        vision_width: n("vision_width"),
        vision_layers: n("vision_layers"),
        vision_heads: n("vision_heads"),
        patch_size: n("patch"),
        stride: n("patch"),
        context_length: n("context_length"),
        vocab_size: n("vocab_size"),
        text_width: n("text_width"),
        text_heads: n("text_heads"),
        text_layers: n("text_layers"),
    };
    let cfg = ModelConfig {
        clip,
        tse: true,
        select_ratio: sizes["select_ratio"].as_f64().unwrap(),
        ..ModelConfig::vit_b16((n("height"), n("width")), 3)
    };
    cfg.validate().unwrap();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model = Ccma::new(&vs.root(), &cfg);
    let vars = vs.variables();
    let weights = load(&dir.join("model.safetensors"));
    tch::no_grad(|| {
        for (name, t) in &weights {
            let var = vars
                .get(name)
                .unwrap_or_else(|| panic!("{name} is not ours"));
            var.shallow_clone().copy_(t);
        }
    });
    for name in vars.keys() {
        let ours = name.starts_with("base_model.")
            || name.starts_with("visul_emb_layer.")
            || name.starts_with("texual_emb_layer.");
        assert_eq!(weights.contains_key(name), ours, "{name}");
    }
    (vs, model)
}

/// The TSE features of a tiny model in eval mode (captions of 1, 6 and 10 words and one with
/// none) and in train BatchNorm mode (and the running statistics after it), within 1e-4 of the
/// reference; a caption with no word tokens gets the zero vector, not NaN.
#[test]
fn tse_layers_match_the_reference_in_eval_and_train_mode() {
    let dir = tempfile::tempdir().unwrap();
    reference("rde_ref.py", &["tse", s(dir.path())]);
    let io = load(&dir.path().join("io.safetensors"));
    let (vs, model) = tiny_model(dir.path());
    let close = |name: &str, ours: &Tensor, want: &Tensor| {
        assert_eq!(ours.size(), want.size(), "{name}");
        let d = max_abs_diff(ours, want);
        assert!(d < 1e-4, "{name}: max abs diff {d}");
    };
    tch::no_grad(|| {
        let tse_i = model.image_tse_features(&io["images"]).unwrap();
        let tse_t = model.text_tse_features(&io["ids"]).unwrap();
        close("eval tse_i", &tse_i, &io["tse_i"]);
        close("eval tse_t", &tse_t, &io["tse_t"]);
        assert_eq!(tse_t.get(3).abs().max().double_value(&[]), 0.0);
        let heads = Heads {
            tse: true,
            tse_batchnorm: BatchNormMode::Batch,
            ..Default::default()
        };
        let out = model.forward_train(&io["train_images"], &io["train_ids"], None, heads);
        close(
            "train tse_i",
            out.tse_i.as_ref().unwrap(),
            &io["train_tse_i"],
        );
        close(
            "train tse_t",
            out.tse_t.as_ref().unwrap(),
            &io["train_tse_t"],
        );
    });
    let vars = vs.variables();
    for (key, want) in io.iter().filter(|(k, _)| k.starts_with("after.")) {
        close(key, &vars[key.trim_start_matches("after.")], want);
    }
}

/// A training forward of a model with TSE, on a caption with no word tokens among others: the
/// features, the TAL and its gradients are finite.
#[test]
fn a_caption_without_words_trains_without_nan() {
    let dir = tempfile::tempdir().unwrap();
    reference("rde_ref.py", &["tse", s(dir.path())]);
    let io = load(&dir.path().join("io.safetensors"));
    let (vs, model) = tiny_model(dir.path());
    for mode in [BatchNormMode::Running, BatchNormMode::Batch] {
        let heads = Heads {
            tse: true,
            tse_batchnorm: mode,
            ..Default::default()
        };
        let out = model.forward_train(&io["images"], &io["ids"], None, heads);
        let pids = Tensor::from_slice(&[0i64, 1, 2, 0]);
        let [i, t] = [out.tse_i.as_ref().unwrap(), out.tse_t.as_ref().unwrap()];
        let loss = ccma::loss::tal_per_sample(i, t, &pids, 0.015, 0.5)
            + ccma::loss::tal_per_sample(&out.f_i, &out.f_t, &pids, 0.015, 0.5);
        loss.sum(Kind::Float).backward();
        for (name, var) in vs.variables() {
            let mut g = var.grad();
            if g.defined() {
                assert_eq!(g.isfinite().all().int64_value(&[]), 1, "{mode:?}: {name}");
                let _ = g.zero_();
            }
        }
    }
}
