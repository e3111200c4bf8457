//! Loss terms (METHOD.md section 3), all computed in fp32. `s` is the similarity scale
//! `1 / temperature`; `pids` are [B] i64 person ids; features are [B, D].
use crate::config::Config;
use crate::model::TrainOutputs;
use tch::{Kind, Tensor};

const EPS: f64 = 1e-8;

fn norm(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Float);
    &x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

/// [B, B] f32: 1 where the pids match.
fn same_pid(pids: &Tensor) -> Tensor {
    pids.unsqueeze(1)
        .eq_tensor(&pids.unsqueeze(0))
        .to_kind(Kind::Float)
}

/// `mean_rows Σ_j softmax(logits)_ij (log_softmax(logits)_ij − log(q_ij + 1e-8))`: the KL
/// divergence of the predicted matching distribution from the label distribution `q`.
fn matching_kl(logits: &Tensor, q: &Tensor) -> Tensor {
    let p = logits.softmax(1, Kind::Float);
    (p * (logits.log_softmax(1, Kind::Float) - (q + EPS).log()))
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .mean(Kind::Float)
}

/// Similarity distribution matching (IRRA): both directions, `q = y / Σ_j y`. Scalar f32.
pub fn sdm(f_i: &Tensor, f_t: &Tensor, pids: &Tensor, scale: f64) -> Tensor {
    let (i, t) = (norm(f_i), norm(f_t));
    let y = same_pid(pids);
    let q = &y / y.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let t2i = t.matmul(&i.tr()) * scale;
    matching_kl(&t2i.tr(), &q) + matching_kl(&t2i, &q)
}

/// Symmetric InfoNCE with diagonal targets at scale `s`, mean of the two directions. Scalar f32.
pub fn itc(f_i: &Tensor, f_t: &Tensor, scale: f64) -> Tensor {
    let logits = norm(f_i).matmul(&norm(f_t).tr()) * scale;
    let target = Tensor::arange(logits.size()[0], (Kind::Int64, logits.device()));
    (logits.cross_entropy_for_logits(&target) + logits.tr().cross_entropy_for_logits(&target)) / 2.0
}

/// Cross-modal projection matching: unnormalised projections `i · norm(t)`, `t · norm(i)` and
/// `q = y / ‖y_row‖₂`. Scalar f32.
pub fn cmpm(f_i: &Tensor, f_t: &Tensor, pids: &Tensor) -> Tensor {
    let (fi, ft) = (f_i.to_kind(Kind::Float), f_t.to_kind(Kind::Float));
    let y = same_pid(pids);
    let q = &y / y.norm_scalaropt_dim(2, [1], true);
    matching_kl(&fi.matmul(&norm(&ft).tr()), &q) + matching_kl(&ft.matmul(&norm(&fi).tr()), &q)
}

/// Mean of the cross-entropies of image and text ID logits [B, C] against `pids`. Scalar f32.
pub fn id(logits_i: &Tensor, logits_t: &Tensor, pids: &Tensor) -> Tensor {
    (logits_i.to_kind(Kind::Float).cross_entropy_for_logits(pids)
        + logits_t.to_kind(Kind::Float).cross_entropy_for_logits(pids))
        / 2.0
}

/// Cross-entropy of MLM logits [M, V] at the masked positions against labels [M]; 0 when M = 0.
pub fn mlm(logits: &Tensor, labels: &Tensor) -> Tensor {
    if labels.numel() == 0 {
        return Tensor::zeros([], (Kind::Float, logits.device()));
    }
    logits.to_kind(Kind::Float).cross_entropy_for_logits(labels)
}

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
    pub fn from_config(cfg: &Config) -> ImalParams {
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
pub fn imal_terms(
    g_i: &Tensor,
    g_t: &Tensor,
    pids: &Tensor,
    p: &ImalParams,
) -> (Tensor, Tensor, Tensor) {
    let (a, b) = (norm(g_i), norm(g_t));
    let n = a.size()[0];
    let logits = a.matmul(&b.tr()) / p.temperature; // log E
    let not_pos = same_pid(pids).eq(0.0);
    // Identity-aware cross-modal alignment, both directions.
    let cm = |l: &Tensor| {
        (l.masked_fill(&not_pos, f64::NEG_INFINITY)
            .logsumexp([1i64].as_slice(), false)
            - l.logsumexp([1i64].as_slice(), false))
        .mean(Kind::Float)
    };
    let l_cm = -(cm(&logits) + cm(&logits.tr())) / 2.0;
    // Intra-modal neighbourhood consistency, self excluded.
    let l_im = if n > 1 {
        let na = off_diagonal(&(a.matmul(&a.tr()) * p.scale)).log_softmax(1, Kind::Float);
        let nb = off_diagonal(&(b.matmul(&b.tr()) * p.scale)).log_softmax(1, Kind::Float);
        let kl = |lp: &Tensor, lq: &Tensor| {
            (lp.exp() * (lp - lq))
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
                .mean(Kind::Float)
        };
        (kl(&na, &nb) + kl(&nb, &na)) / 2.0
    } else {
        Tensor::zeros([], (Kind::Float, a.device()))
    };
    // Spread regulariser against the uniform u = 1/B².
    let u = 1.0 / (n * n) as f64;
    let spread = |prob: &Tensor| {
        (u * (u.ln() - (prob + EPS).log()))
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
            .mean(Kind::Float)
    };
    let l_kl = (spread(&logits.softmax(1, Kind::Float))
        + spread(&logits.tr().softmax(1, Kind::Float)))
        / 2.0;
    (l_cm, l_im, l_kl)
}

/// `IMAL = L_cm + γ L_im + κ L_kl`. Scalar f32.
pub fn imal(g_i: &Tensor, g_t: &Tensor, pids: &Tensor, p: &ImalParams) -> Tensor {
    let (cm, im, kl) = imal_terms(g_i, g_t, pids, p);
    cm + im * p.gamma + kl * p.kl_weight
}

/// The selected loss terms by name, in the order of `Config::losses`.
pub struct LossTerms(pub Vec<(String, Tensor)>);

impl LossTerms {
    /// Sum of all terms (scalar f32).
    pub fn total(&self) -> Tensor {
        self.0
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .reduce(|a, b| a + b)
            .expect("at least one loss term")
    }
}

/// Computes every loss `cfg` selects from the model's outputs.
pub fn compute(cfg: &Config, out: &TrainOutputs, pids: &Tensor) -> LossTerms {
    let scale = 1.0 / cfg.temperature;
    let need = |t: &Option<Tensor>, what: &str| -> Tensor {
        t.as_ref()
            .unwrap_or_else(|| panic!("the model did not produce {what}"))
            .shallow_clone()
    };
    let terms = cfg
        .losses()
        .into_iter()
        .map(|name| {
            let value = match name.as_str() {
                "sdm" => sdm(&out.f_i, &out.f_t, pids, scale),
                "itc" => itc(&out.f_i, &out.f_t, scale),
                "cmpm" => cmpm(&out.f_i, &out.f_t, pids),
                "id" => {
                    id(
                        &need(&out.id_logits_i, "ID logits"),
                        &need(&out.id_logits_t, "ID logits"),
                        pids,
                    ) * cfg.id_loss_weight
                }
                "mlm" => {
                    mlm(
                        &need(&out.mlm_logits, "MLM logits"),
                        &need(&out.mlm_labels, "MLM labels"),
                    ) * cfg.mlm_loss_weight
                }
                "imal" => imal(
                    &need(&out.g_i, "DCA features"),
                    &need(&out.g_t, "DCA features"),
                    pids,
                    &ImalParams::from_config(cfg),
                ),
                other => unreachable!("loss names are validated: {other}"),
            };
            (name, value)
        })
        .collect();
    LossTerms(terms)
}
