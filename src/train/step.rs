//! One training step, the same for the trainer and the benchmark: forward, losses over the whole
//! (possibly multi-rank) batch, backward, gradient averaging across ranks, a check that every term
//! is finite, optimiser update.
use super::optimizer::Optimizer;
use super::parallel::Ranks;
use crate::config::LossTerm;
use crate::data::batch::TrainBatch;
use crate::dist::group::RankLost;
use crate::loss::{self, LossSpec};
use crate::model::Ccma;

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
    let layout = ranks.layout(batch)?;
    let masked = spec.mlm().then_some((&batch.mlm_ids, &batch.mlm_labels));
    let global_ids = match spec.params.masked_global_captions() {
        true => &batch.mlm_ids,
        false => &batch.caption_ids,
    };
    let out = model.forward_train(&batch.images, global_ids, masked, spec.heads());
    let features = ranks.batch_features(&out, &layout)?;
    let terms = loss::compute(spec, &features, &out, &batch.pids, layout.share);
    let world = ranks.world() as f64;
    // What this rank adds to each term's value over the whole batch.
    let mut shares: Vec<f64> = terms
        .0
        .iter()
        .map(|(k, t)| match loss::spans_batch(*k) {
            true => t.double_value(&[]) / world,
            false => t.double_value(&[]),
        })
        .collect();
    if poison {
        shares[0] = f64::NAN;
    }
    shares.push(if stop { 1.0 } else { 0.0 });
    opt.zero_grad();
    let total = terms.total();
    match ranks.world() {
        1 => total.backward(),
        _ => (total * world).backward(),
    }
    let mut summed = ranks.reduce(&opt.variables(), &shares)?;
    let stop = summed.pop().is_some_and(|s| s > 0.0);
    let values: Vec<(LossTerm, f64)> = terms.0.iter().map(|(k, _)| *k).zip(summed).collect();
    if let Some(&(term, value)) = values.iter().find(|(_, v)| !v.is_finite()) {
        return Err(NonFiniteTerm { term, value }.into());
    }
    opt.step();
    Ok(StepOutcome {
        values,
        samples: layout.samples,
        stop,
    })
}
