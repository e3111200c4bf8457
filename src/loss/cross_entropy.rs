//! The per-sample terms, cross-entropies of a head's logits (METHOD.md section 3): ID over the
//! samples, MLM over the masked tokens. Every value is a scalar f32.
use tch::{Kind, Tensor};

/// Mean of the cross-entropies of image and text ID logits [B, C] against `pids` [B] i64.
pub fn id(logits_i: &Tensor, logits_t: &Tensor, pids: &Tensor) -> Tensor {
    (logits_i.to_kind(Kind::Float).cross_entropy_for_logits(pids)
        + logits_t.to_kind(Kind::Float).cross_entropy_for_logits(pids))
        / 2.0
}

/// Cross-entropy of MLM logits [M, V] at the masked positions against labels [M] i64; 0 when
/// M = 0.
pub fn mlm(logits: &Tensor, labels: &Tensor) -> Tensor {
    if labels.numel() == 0 {
        return Tensor::zeros([], (Kind::Float, logits.device()));
    }
    logits.to_kind(Kind::Float).cross_entropy_for_logits(labels)
}
