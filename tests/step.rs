//! The training step's reproduction switch `global_caption`: with `masked` (IRRA's and CCMA's
//! published behaviour) the global text features see the MLM-masked caption, with `clean` the
//! caption itself; checked against the model run by hand on each.
use ccma::config::{Config, LossTerm};
use ccma::data::batch::TrainBatch;
use ccma::loss::{sdm, LossSpec};
use ccma::train::optimizer::Optimizer;
use ccma::train::parallel::Ranks;
use ccma::train::step::{step, StepOptions};
use tch::Device;

/// A tiny model, the same for every call (same seed), with its optimiser.
fn model(cfg: &Config) -> (ccma::model::Ccma, Optimizer) {
    tch::manual_seed(7);
    let (vs, model) = ccma::factory::training_model(cfg, 4, Device::Cpu).unwrap();
    let opt = Optimizer::new(&vs, &cfg.optim);
    (model, opt)
}

#[test]
fn global_caption_chooses_what_the_global_features_see() {
    let sets: Vec<(String, String)> = [
        ("embed_dim", "32"),
        ("vision_width", "32"),
        ("vision_layers", "1"),
        ("vision_heads", "1"),
        ("transformer_width", "32"),
        ("transformer_layers", "1"),
        ("transformer_heads", "1"),
        ("cmt_depth", "1"),
        ("dca_heads", "4"),
        ("img_size", "[32, 16]"),
        ("text_length", "16"),
        ("loss_names", "sdm+mlm"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let base = Config::default().with_overrides(&sets).unwrap();
    tch::manual_seed(3);
    let batch = TrainBatch::random(6, (32, 16), 16, 4, Device::Cpu);
    assert!(
        !batch.mlm_ids.equal(&batch.caption_ids),
        "the batch has masked tokens"
    );
    let sdm_of = |mode: &str| {
        let cfg = Config {
            loss: ccma::config::LossSection {
                global_caption: mode.parse().unwrap(),
                ..base.loss.clone()
            },
            ..base.clone()
        };
        let spec = LossSpec {
            terms: cfg.losses(),
            params: cfg.loss.clone(),
        };
        let (model, mut opt) = model(&cfg);
        let ranks = Ranks::single(Device::Cpu);
        let out = step(&model, &mut opt, &batch, &spec, &ranks, StepOptions::default()).unwrap();
        out.values
            .iter()
            .find(|(t, _)| *t == LossTerm::Sdm)
            .unwrap()
            .1
    };
    let by_hand = |ids: &tch::Tensor| {
        let (model, _) = model(&base);
        let _guard = tch::no_grad_guard();
        let out = model.forward_train(&batch.images, ids, None, Default::default());
        sdm(&out.f_i, &out.f_t, &batch.pids, 1.0 / base.loss.temperature).double_value(&[])
    };
    let (masked, clean) = (sdm_of("masked"), sdm_of("clean"));
    assert!((masked - by_hand(&batch.mlm_ids)).abs() < 1e-5, "{masked}");
    assert!(
        (clean - by_hand(&batch.caption_ids)).abs() < 1e-5,
        "{clean}"
    );
    assert!(
        (masked - clean).abs() > 1e-4,
        "the two modes differ: {masked} vs {clean}"
    );
}
