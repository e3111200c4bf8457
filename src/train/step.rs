//! One training step, the same for the trainer and the benchmark: forward, losses over the whole
//! (possibly multi-rank) batch, backward, gradient averaging across ranks, a check that every term
//! is finite, optimiser update.
//!
//! The step reads one value back from its device: the loss terms (and the ranks' stop flag), as
//! one tensor, once backward is queued and before the update. Everything else it needs about the
//! batch (masked positions, the ranks' layout) comes from the loader on the host.
use super::optimizer::Optimizer;
use super::parallel::Ranks;
use crate::config::LossTerm;
use crate::data::batch::TrainBatch;
use crate::device::read_to_host;
use crate::dist::group::RankLost;
use crate::loss::{self, LossSpec};
use crate::model::{Ccma, Masked};
use tch::{Kind, Tensor};

/// A loss term that is not finite: the step stops before the update, so the parameters stay as
/// they were.
#[derive(Debug, thiserror::Error)]
#[error("loss term `{term}` is {value}")]
pub struct NonFiniteTerm {
    pub term: LossTerm,
    pub value: f64,
}

/// Why a step did not update the parameters.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    NonFinite(#[from] NonFiniteTerm),
    #[error(transparent)]
    RankLost(#[from] RankLost),
    /// The optimiser's kernel failed.
    #[error(transparent)]
    Update(#[from] anyhow::Error),
}

/// What a step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Each term's value over the whole batch (the same on every rank).
    pub values: Vec<(LossTerm, f64)>,
    /// Samples in the whole batch.
    pub samples: usize,
    /// Whether any rank asked to stop after this step.
    pub stop: bool,
}

/// One step on `batch` (this rank's slice, already on the model's device); the global text
/// features see the masked captions when the config says so (`global_caption`). `poison`
/// replaces the first term's value with NaN, to test the non-finite path; `stop` is this rank's
/// wish to stop after the step (Ctrl-C), which every rank learns with the gradients.
///
/// Rank r backpropagates `world · (Σ batch-spanning terms + Σ its weighted ID and MLM terms)`;
/// averaging the gradients then gives the gradient of the whole batch's loss, as one process
/// would compute it.
pub fn step(
    model: &Ccma,
    opt: &mut Optimizer,
    batch: &TrainBatch,
    spec: &LossSpec,
    ranks: &Ranks,
    poison: bool,
    stop: bool,
) -> Result<StepOutcome, StepError> {
    let layout = ranks.layout(batch);
    let masked = spec.mlm().then_some(Masked {
        ids: &batch.mlm_ids,
        positions: &batch.mlm_positions,
        labels: &batch.mlm_targets,
    });
    let global_ids = match spec.params.masked_global_captions() {
        true => &batch.mlm_ids,
        false => &batch.caption_ids,
    };
    let out = model.forward_train(&batch.images, global_ids, masked, spec.heads());
    let features = ranks.batch_features(&out, &layout)?;
    let terms = loss::compute(spec, &features, &out, &batch.pids, layout.share);
    let world = ranks.world() as f64;
    // What this rank adds to each term's value over the whole batch, then its wish to stop:
    // [terms + 1] f32 on the device.
    let mut shares: Vec<Tensor> = terms
        .0
        .iter()
        .map(|(k, t)| match loss::spans_batch(*k) {
            true => t.detach() / world,
            false => t.detach(),
        })
        .collect();
    if poison {
        shares[0] = shares[0].full_like(f64::NAN);
    }
    let device = shares[0].device();
    shares.push(Tensor::full(
        [],
        f64::from(u8::from(stop)),
        (Kind::Float, device),
    ));
    let shares = Tensor::stack(&shares, 0).to_kind(Kind::Float);
    opt.zero_grad();
    let total = terms.total();
    match ranks.world() {
        1 => total.backward(),
        _ => (total * world).backward(),
    }
    let summed = ranks.reduce(&opt.variables(), &shares)?;
    let mut summed: Vec<f64> = Vec::<f32>::try_from(&read_to_host(&summed))
        .expect("f32 loss values")
        .into_iter()
        .map(f64::from)
        .collect();
    let stop = summed.pop().is_some_and(|s| s > 0.0);
    let values: Vec<(LossTerm, f64)> = terms.0.iter().map(|(k, _)| *k).zip(summed).collect();
    if let Some(&(term, value)) = values.iter().find(|(_, v)| !v.is_finite()) {
        return Err(NonFiniteTerm { term, value }.into());
    }
    opt.step()?;
    Ok(StepOutcome {
        values,
        samples: layout.samples,
        stop,
    })
}
