//! One training step, the same for the trainer and the benchmark: forward, losses, a check that
//! every term is finite, backward, optimiser update.
use super::optimizer::Optimizer;
use crate::config::LossTerm;
use crate::data::batch::TrainBatch;
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

/// One step on `batch` (already on the model's device); the global text features see the
/// masked captions when the config says so (`global_caption`). Returns each term's value, read back to
/// the host (which also waits for the device). `poison` replaces the first term's value with NaN
/// after the forward, to test the non-finite path.
pub fn step(
    model: &Ccma,
    opt: &mut Optimizer,
    batch: &TrainBatch,
    spec: &LossSpec,
    poison: bool,
) -> Result<Vec<(LossTerm, f64)>, NonFiniteTerm> {
    let masked = spec.mlm().then_some((&batch.mlm_ids, &batch.mlm_labels));
    let global_ids = match spec.params.masked_global_captions() {
        true => &batch.mlm_ids,
        false => &batch.caption_ids,
    };
    let out = model.forward_train(&batch.images, global_ids, masked, spec.heads());
    let terms = loss::compute(spec, &out, &batch.pids);
    let mut values: Vec<(LossTerm, f64)> = terms
        .0
        .iter()
        .map(|(k, t)| (*k, t.double_value(&[])))
        .collect();
    if poison {
        values[0].1 = f64::NAN;
    }
    if let Some(&(term, value)) = values.iter().find(|(_, v)| !v.is_finite()) {
        return Err(NonFiniteTerm { term, value });
    }
    opt.zero_grad();
    terms.total().backward();
    opt.step();
    Ok(values)
}
