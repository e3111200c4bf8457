//! The per-sample terms, cross-entropies of a head's logits (METHOD.md section 3): ID over the
//! samples, MLM over the masked tokens. Each is the mean over one part of the batch, its units
//! weighted by `w` (0 or 1, the clean division's; `None`: all 1) as [`weighted_mean`] weighs them.
//! Every value is a scalar f32.
use super::features::weighted_mean;
use tch::{Kind, Reduction, Tensor};

/// Each row's cross-entropy of `logits` [N, C] against `labels` [N] i64: [N] f32.
pub(super) fn each(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
        labels,
        None,
        Reduction::None,
        -100,
        0.0,
    )
}

/// Mean of the cross-entropies of image and text ID logits [B, C] against `pids` [B] i64, each
/// sample's weighted by `w` [B].
pub fn id(logits_i: &Tensor, logits_t: &Tensor, pids: &Tensor, w: Option<&Tensor>) -> Tensor {
    (weighted_mean(&each(logits_i, pids), w) + weighted_mean(&each(logits_t, pids), w)) / 2.0
}

/// Cross-entropy of MLM logits [M, V] at the masked positions against labels [M] i64, each
/// token's weighted by `w` [M]; 0 when M = 0.
pub fn mlm(logits: &Tensor, labels: &Tensor, w: Option<&Tensor>) -> Tensor {
    if labels.numel() == 0 {
        return Tensor::zeros([], (Kind::Float, logits.device()));
    }
    weighted_mean(&each(logits, labels), w)
}
