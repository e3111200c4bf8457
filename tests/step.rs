//! The training step's reproduction switch `global_caption`: with `masked` (IRRA's and CCMA's
//! published behaviour) the global text features see the MLM-masked caption, with `clean` the
//! caption itself; checked against the model run by hand on each. And the step's reads from its
//! device: one per step.
mod common;
use ccma::config::{Config, LossTerm};
use ccma::data::batch::TrainBatch;
use ccma::loss::{sdm, LossSpec};
use ccma::train::optimizer::Optimizer;
use ccma::train::parallel::Ranks;
use ccma::train::step::{step, StepOptions};
use common::tiny_config;
use tch::Device;

/// A tiny model, the same for every call (same seed), with its optimiser.
/// Held by each test here: they seed libtorch's one global generator, which tests running side
/// by side would otherwise draw from in turns.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn model(cfg: &Config) -> (ccma::model::Ccma, Optimizer) {
    tch::manual_seed(7);
    let (vs, model) = ccma::factory::training_model(cfg, 4, Device::Cpu).unwrap();
    let opt = Optimizer::new(&vs, &cfg.optim);
    (model, opt)
}

/// Every term of IRRA and CCMA in one step on one process: the step reads its device once (the
/// loss values, once backward is queued), and reports every term, finite.
#[test]
fn a_step_reads_its_device_once() {
    let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = tiny_config("sdm+itc+cmpm+id+mlm+imal");
    let spec = LossSpec::of(&cfg);
    tch::manual_seed(5);
    let batch = TrainBatch::random(6, (32, 16), 16, 4, Device::Cpu);
    let (model, mut opt) = model(&cfg);
    let ranks = Ranks::single(Device::Cpu);
    for _ in 0..2 {
        let before = ccma::device::host_reads();
        let out = step(
            &model,
            &mut opt,
            &batch,
            &spec,
            &ranks,
            StepOptions::default(),
        )
        .unwrap();
        assert_eq!(
            ccma::device::host_reads() - before,
            1,
            "device reads in one step"
        );
        let terms: Vec<LossTerm> = out.values.iter().map(|(t, _)| *t).collect();
        assert_eq!(terms, spec.terms);
        assert!(
            out.values.iter().all(|(_, v)| v.is_finite()),
            "{:?}",
            out.values
        );
        assert_eq!((out.samples, out.stop), (6, false));
    }
}

#[test]
fn global_caption_chooses_what_the_global_features_see() {
    let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let base = tiny_config("sdm+mlm");
    tch::manual_seed(3);
    let batch = TrainBatch::random(6, (32, 16), 16, 4, Device::Cpu);
    let masked_ids = &batch.masked.as_ref().expect("a random batch is masked").ids;
    assert!(
        !masked_ids.equal(&batch.caption_ids),
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
        let spec = LossSpec::of(&cfg);
        let (model, mut opt) = model(&cfg);
        let ranks = Ranks::single(Device::Cpu);
        let out = step(
            &model,
            &mut opt,
            &batch,
            &spec,
            &ranks,
            StepOptions::default(),
        )
        .unwrap();
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
        sdm(
            &out.f_i,
            &out.f_t,
            &batch.pids,
            1.0 / base.loss.temperature,
            None,
        )
        .double_value(&[])
    };
    let (masked, clean) = (sdm_of("masked"), sdm_of("clean"));
    assert!((masked - by_hand(masked_ids)).abs() < 1e-5, "{masked}");
    assert!(
        (clean - by_hand(&batch.caption_ids)).abs() < 1e-5,
        "{clean}"
    );
    assert!(
        (masked - clean).abs() > 1e-4,
        "the two modes differ: {masked} vs {clean}"
    );
}
