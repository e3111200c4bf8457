//! The terms that match image and text features across the batch by pid: SDM, ITC and CMPM
//! (METHOD.md section 3). `s` is the similarity scale `1 / temperature`; `pids` are [B] i64
//! person ids; features are [B, D]; every value is a scalar f32. `w` ([B] f32, 0 or 1, the clean
//! division's) weighs sample i's row in each direction and divides by the pairs with `w = 1`
//! (METHOD.md section 7, "Beyond both"); `None` is the plain mean over the rows.
use super::cross_entropy::each;
use super::features::weighted_mean;
use crate::model::layers::l2_normalize;
use tch::{Kind, Tensor};

/// ε of the logarithms of label and spread distributions.
pub(super) const EPS: f64 = 1e-8;

/// [B, B] f32: 1 where the pids match.
pub(super) fn same_pid(pids: &Tensor) -> Tensor {
    pids.unsqueeze(1)
        .eq_tensor(&pids.unsqueeze(0))
        .to_kind(Kind::Float)
}

/// `mean_rows Σ_j softmax(logits)_ij (log_softmax(logits)_ij − log(q_ij + 1e-8))`, the rows
/// weighted by `w`: the KL divergence of the predicted matching distribution from the label
/// distribution `q`.
fn matching_kl(logits: &Tensor, q: &Tensor, w: Option<&Tensor>) -> Tensor {
    let p = logits.softmax(1, Kind::Float);
    let rows = (p * (logits.log_softmax(1, Kind::Float) - (q + EPS).log())).sum_dim_intlist(
        [1i64].as_slice(),
        false,
        Kind::Float,
    );
    weighted_mean(&rows, w)
}

/// Similarity distribution matching (IRRA): both directions, `q = y / Σ_j y`. Scalar f32.
pub fn sdm(f_i: &Tensor, f_t: &Tensor, pids: &Tensor, scale: f64, w: Option<&Tensor>) -> Tensor {
    let (i, t) = (l2_normalize(f_i), l2_normalize(f_t));
    let y = same_pid(pids);
    let q = &y / y.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let t2i = t.matmul(&i.tr()) * scale;
    matching_kl(&t2i.tr(), &q, w) + matching_kl(&t2i, &q, w)
}

/// Symmetric InfoNCE with diagonal targets at scale `s`, mean of the two directions. Scalar f32.
pub fn itc(f_i: &Tensor, f_t: &Tensor, scale: f64, w: Option<&Tensor>) -> Tensor {
    let logits = l2_normalize(f_i).matmul(&l2_normalize(f_t).tr()) * scale;
    let target = Tensor::arange(logits.size()[0], (Kind::Int64, logits.device()));
    let rows = |l: &Tensor| weighted_mean(&each(l, &target), w);
    (rows(&logits) + rows(&logits.tr())) / 2.0
}

/// Cross-modal projection matching: unnormalised projections `i · norm(t)`, `t · norm(i)` and
/// `q = y / ‖y_row‖₂`. Scalar f32.
pub fn cmpm(f_i: &Tensor, f_t: &Tensor, pids: &Tensor, w: Option<&Tensor>) -> Tensor {
    let (fi, ft) = (f_i.to_kind(Kind::Float), f_t.to_kind(Kind::Float));
    let y = same_pid(pids);
    let q = &y / y.norm_scalaropt_dim(2, [1], true);
    matching_kl(&fi.matmul(&l2_normalize(&ft).tr()), &q, w)
        + matching_kl(&ft.matmul(&l2_normalize(&fi).tr()), &q, w)
}
