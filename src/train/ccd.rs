//! The consensus clean division before an epoch (`noise_filter: ccd`, docs/METHOD.md section
//! 7): the per-sample TAL of the global (BGE) and the TSE embeddings of every training pair, in
//! the training loader's batches of the epoch, without gradients and with the TSE BatchNorm on
//! its running statistics (eval mode), each divided by its Gaussian mixture, the two verdicts
//! joined by consensus into a weight per pair.
use super::parallel::Ranks;
use crate::config::Config;
use crate::data::loader::TrainLoader;
use crate::loss::division::{consensus, fit_options, quality, verdict, DivisionQuality, Verdict};
use crate::loss::{tal_per_sample, Embeddings};
use crate::model::{BatchNormMode, Ccma, Embedding, Heads};
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// The division of the training pairs before one epoch.
#[derive(Debug, Clone)]
pub struct Division {
    /// [N] 1 for a pair divided clean, 0 otherwise, by training-pair index.
    pub weights: Vec<f32>,
    pub bge: Verdict,
    pub tse: Verdict,
    /// Against the true clean set (every pair, where no noise was injected).
    pub quality: DivisionQuality,
}

/// Each training pair's per-sample TAL of the BGE and of the TSE embeddings, `[2][N]`, from the
/// batches `loader` serves for `epoch`: each on the whole batch's features (every rank's,
/// gathered), as one process computes it, so every rank ends with the same losses.
fn per_sample_losses(
    model: &Ccma,
    loader: &TrainLoader,
    epoch: usize,
    cfg: &Config,
    ranks: &Ranks,
) -> Result<[Vec<f64>; 2]> {
    let n = loader.num_samples();
    let device = ranks.device();
    let heads = Heads {
        tse: true,
        tse_batchnorm: BatchNormMode::Running,
        ..Heads::default()
    };
    let (tau, margin) = (cfg.loss.tau, cfg.loss.margin);
    let mut losses = Tensor::zeros([2, n as i64], (Kind::Float, device));
    for batch in loader.epoch(epoch, 0) {
        let batch = batch?.to_device(device);
        let all = Tensor::from_slice(&batch.slices.all_indices).to_device(device);
        let layout = ranks.layout(&batch);
        tch::no_grad(|| -> Result<()> {
            let out = model.forward_train(&batch.images, &batch.caption_ids, None, heads);
            if out.tse_i.is_none() {
                bail!("the division needs the TSE layers, which this model lacks");
            }
            let whole = ranks.batch_features(Embeddings::of(&out), &layout)?;
            let per_sample = |kind| {
                let [i, t] = whole.embeddings.pair(kind);
                tal_per_sample(i, t, &whole.pids, tau, margin)
            };
            let both = Tensor::stack(
                &[per_sample(Embedding::Global), per_sample(Embedding::Tse)],
                0,
            )
            .to_kind(Kind::Float);
            let _ = losses.index_put_(&[None, Some(all)], &both, false);
            Ok(())
        })?;
    }
    let host = Vec::<f32>::try_from(&losses.reshape([-1]).to_device(tch::Device::Cpu))
        .expect("f32 losses");
    let (bge, tse) = host.split_at(n);
    let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect();
    Ok([f(bge), f(tse)])
}

/// The division before `epoch`: per-sample losses, a mixture per embedding with the settings of
/// `noisy_rate` and the dataset, consensus with a fair coin drawn from the run's seed and the
/// epoch (the same on every rank), and its quality against `truly_clean` ([N]).
pub fn divide(
    model: &Ccma,
    loader: &TrainLoader,
    epoch: usize,
    cfg: &Config,
    ranks: &Ranks,
    truly_clean: &[bool],
) -> Result<Division> {
    let [bge_losses, tse_losses] = per_sample_losses(model, loader, epoch, cfg, ranks)?;
    let rstpreid = cfg.data.dataset_name == crate::config::DatasetName::RstpReid;
    let opts = fit_options(cfg.data.noisy_rate, rstpreid);
    let (bge, tse) = (verdict(&bge_losses, opts), verdict(&tse_losses, opts));
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.run.seed);
    rng.set_stream(epoch as u64);
    let weights = consensus(&bge, &tse, &mut rng);
    let quality = quality(&weights, truly_clean);
    Ok(Division {
        weights,
        bge,
        tse,
        quality,
    })
}
