//! CCMA's integrated modal alignment loss on the DCA features (METHOD.md section 3): identity-aware
//! cross-modal alignment, intra-modal neighbourhood consistency and a spread regulariser.
use super::features::weighted_mean;
use super::matching::{same_pid, EPS};
use crate::config::LossSection;
use crate::model::layers::l2_normalize;
use tch::{Kind, Tensor};

/// IMAL's constants.
#[derive(Debug, Clone, Copy)]
pub struct ImalParams {
    /// τ of the cross-modal terms (0.5).
    pub temperature: f64,
    /// γ, weight of the intra-modal consistency term (0.05).
    pub gamma: f64,
    /// κ, weight of the spread regulariser (0.005).
    pub kl_weight: f64,
    /// s = 1 / temperature of the intra-modal neighbourhoods (50).
    pub scale: f64,
}

impl ImalParams {
    pub fn from_config(cfg: &LossSection) -> ImalParams {
        ImalParams {
            temperature: cfg.imal_temperature,
            gamma: cfg.imal_gamma,
            kl_weight: cfg.imal_kl_weight,
            scale: 1.0 / cfg.temperature,
        }
    }
}

/// The off-diagonal entries of a square [B, B] matrix as [B, B-1].
fn off_diagonal(m: &Tensor) -> Tensor {
    let b = m.size()[0];
    m.flatten(0, 1)
        .narrow(0, 1, b * b - 1)
        .view([b - 1, b + 1])
        .narrow(1, 0, b)
        .reshape([b, b - 1])
}

/// The three IMAL terms (L_cm, L_im, L_kl) of DCA features `g_i`, `g_t` [B, D]; scalars f32.
/// Each is a mean over rows (an image's, a text's); `w` ([B] f32, 0 or 1, the clean division's)
/// weighs sample i's rows and divides by the pairs with `w = 1` (METHOD.md section 7, "Beyond
/// both"), the other samples still in every row's distributions.
pub fn imal_terms(
    g_i: &Tensor,
    g_t: &Tensor,
    pids: &Tensor,
    p: &ImalParams,
    w: Option<&Tensor>,
) -> (Tensor, Tensor, Tensor) {
    let (a, b) = (l2_normalize(g_i), l2_normalize(g_t));
    let n = a.size()[0];
    let logits = a.matmul(&b.tr()) / p.temperature; // log E
    let not_pos = same_pid(pids).eq(0.0);
    // Identity-aware cross-modal alignment, both directions.
    let cm = |l: &Tensor| {
        let rows = l
            .masked_fill(&not_pos, f64::NEG_INFINITY)
            .logsumexp([1i64].as_slice(), false)
            - l.logsumexp([1i64].as_slice(), false);
        weighted_mean(&rows, w)
    };
    let l_cm = -(cm(&logits) + cm(&logits.tr())) / 2.0;
    // Intra-modal neighbourhood consistency, self excluded.
    let l_im = if n > 1 {
        let na = off_diagonal(&(a.matmul(&a.tr()) * p.scale)).log_softmax(1, Kind::Float);
        let nb = off_diagonal(&(b.matmul(&b.tr()) * p.scale)).log_softmax(1, Kind::Float);
        let kl = |lp: &Tensor, lq: &Tensor| {
            let rows =
                (lp.exp() * (lp - lq)).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
            weighted_mean(&rows, w)
        };
        (kl(&na, &nb) + kl(&nb, &na)) / 2.0
    } else {
        Tensor::zeros([], (Kind::Float, a.device()))
    };
    // Spread regulariser against the uniform u = 1/B².
    let u = 1.0 / (n * n) as f64;
    let spread = |prob: &Tensor| {
        let rows = (u * (u.ln() - (prob + EPS).log())).sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Float,
        );
        weighted_mean(&rows, w)
    };
    let l_kl = (spread(&logits.softmax(1, Kind::Float))
        + spread(&logits.tr().softmax(1, Kind::Float)))
        / 2.0;
    (l_cm, l_im, l_kl)
}

/// `IMAL = L_cm + γ L_im + κ L_kl`, its rows weighted by `w`. Scalar f32.
pub fn imal(
    g_i: &Tensor,
    g_t: &Tensor,
    pids: &Tensor,
    p: &ImalParams,
    w: Option<&Tensor>,
) -> Tensor {
    let (cm, im, kl) = imal_terms(g_i, g_t, pids, p, w);
    cm + im * p.gamma + kl * p.kl_weight
}
