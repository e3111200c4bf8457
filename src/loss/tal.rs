//! RDE's triplet alignment loss (TAL; METHOD.md section 7), per sample.
use crate::model::layers::l2_normalize;
use tch::{Kind, Tensor};

/// The bound RDE clamps the sum over negatives at before its log.
const NEGATIVE_SUM_BOUND: f64 = 1e36;

/// TAL of each of B pairs, [B] f32: image features [B, D], text features [B, D] (both
/// L2-normalised here), their pids [B] i64, temperature `tau` and `margin`. With `S = T Iᵀ`
/// (texts × images) and `P(i)` the columns of i's pid, for each row of `S` and of `Sᵀ`:
/// `[m − Σ_{j∈P(i)} α_ij S_ij + τ log min(Σ_{j∉P(i)} exp(S_ij / τ), 1e36)]₊` with
/// `α_i = softmax_{P(i)}(S_i / τ)` held constant; sample i's loss is its text row plus its
/// image row. The sum over negatives is taken as a log-sum-exp (no overflow at any `tau`); a row
/// without negatives (every pid of the batch its own) contributes 0, with a zero gradient, where
/// RDE's log of an empty sum is −∞ and its gradient NaN.
pub fn tal_per_sample(
    image: &Tensor,
    text: &Tensor,
    pids: &Tensor,
    tau: f64,
    margin: f64,
) -> Tensor {
    let (i, t) = (l2_normalize(image), l2_normalize(text));
    let s = t.matmul(&i.tr()); // [B, B], texts × images
    let pids = pids.view([-1, 1]);
    let same = pids.eq_tensor(&pids.tr()); // symmetric
    rows(&s, &same, tau, margin) + rows(&s.tr(), &same, tau, margin)
}

/// The TAL of each row of `s` [B, B] with positives `same` [B, B] bool: [B].
fn rows(s: &Tensor, same: &Tensor, tau: f64, margin: f64) -> Tensor {
    let logits = s / tau;
    let alpha = logits
        .masked_fill(&same.logical_not(), f64::NEG_INFINITY)
        .softmax(-1, Kind::Float)
        .detach();
    let positive = (alpha * s).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let negatives = same.logical_not();
    let any = negatives.any_dim(1, false); // [B]
                                           // A row without negatives takes its logits as they are (finite) and is zeroed below.
    let open = negatives.logical_or(&any.logical_not().unsqueeze(1));
    let lse = logits
        .masked_fill(&open.logical_not(), f64::NEG_INFINITY)
        .logsumexp([1i64].as_slice(), false)
        .clamp_max(NEGATIVE_SUM_BOUND.ln());
    let loss = (-positive + lse * tau + margin).clamp_min(0.0);
    loss.where_self(&any, &loss.zeros_like())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// A hand-computed case: two pairs of different pids with orthogonal features matched to
    /// themselves. Row i: S_ii = 1, the one negative S_ij = 0, so
    /// ℓ = [m − 1 + τ·log(exp(0))]₊ = [m − 1]₊ = 0 at m = 0.1; at m = 1.5, 0.5 per row, 1 per
    /// sample.
    #[test]
    fn matches_a_hand_computed_case() {
        let f = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let pids = Tensor::from_slice(&[0i64, 1]);
        let l = tal_per_sample(&f, &f, &pids, 0.015, 0.1);
        assert_eq!(Vec::<f32>::try_from(&l).unwrap(), vec![0.0, 0.0]);
        let l = tal_per_sample(&f, &f, &pids, 0.015, 1.5);
        let v = Vec::<f32>::try_from(&l).unwrap();
        assert!(v.iter().all(|x| (x - 1.0).abs() < 1e-6), "{v:?}");
    }

    /// A batch of one identity has no negatives: every sample's loss is 0 and its gradient
    /// finite (zero), not NaN.
    #[test]
    fn a_batch_without_negatives_gives_zero_not_nan() {
        let opts = (Kind::Float, Device::Cpu);
        let image = Tensor::randn([3, 4], opts).set_requires_grad(true);
        let text = Tensor::randn([3, 4], opts).set_requires_grad(true);
        let pids = Tensor::from_slice(&[7i64, 7, 7]);
        let l = tal_per_sample(&image, &text, &pids, 0.015, 0.1);
        assert_eq!(Vec::<f32>::try_from(&l).unwrap(), vec![0.0; 3]);
        l.sum(Kind::Float).backward();
        for g in [image.grad(), text.grad()] {
            assert_eq!(g.abs().max().double_value(&[]), 0.0);
        }
    }

    /// A tiny `tau` whose exp(S/τ) overflows f32 still gives a finite loss and gradient.
    #[test]
    fn a_tiny_tau_stays_finite() {
        let opts = (Kind::Float, Device::Cpu);
        let image = Tensor::randn([4, 8], opts).set_requires_grad(true);
        let text = Tensor::randn([4, 8], opts).set_requires_grad(true);
        let pids = Tensor::from_slice(&[0i64, 1, 2, 3]);
        let l = tal_per_sample(&image, &text, &pids, 1e-4, 0.1);
        assert!(l.isfinite().all().int64_value(&[]) == 1);
        l.sum(Kind::Float).backward();
        assert!(image.grad().isfinite().all().int64_value(&[]) == 1);
    }
}
