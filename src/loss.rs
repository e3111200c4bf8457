//! Loss terms (METHOD.md section 3), all computed in fp32. `s` is the similarity scale
//! `1 / temperature`; `pids` are [B] i64 person ids; features are [B, D].
use crate::config::{LossSection, LossTerm};
use crate::model::layers::l2_normalize;
use crate::model::{Heads, TrainOutputs};
use tch::{Kind, Tensor};

const EPS: f64 = 1e-8;

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
    let (i, t) = (l2_normalize(f_i), l2_normalize(f_t));
    let y = same_pid(pids);
    let q = &y / y.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let t2i = t.matmul(&i.tr()) * scale;
    matching_kl(&t2i.tr(), &q) + matching_kl(&t2i, &q)
}

/// Symmetric InfoNCE with diagonal targets at scale `s`, mean of the two directions. Scalar f32.
pub fn itc(f_i: &Tensor, f_t: &Tensor, scale: f64) -> Tensor {
    let logits = l2_normalize(f_i).matmul(&l2_normalize(f_t).tr()) * scale;
    let target = Tensor::arange(logits.size()[0], (Kind::Int64, logits.device()));
    (logits.cross_entropy_for_logits(&target) + logits.tr().cross_entropy_for_logits(&target)) / 2.0
}

/// Cross-modal projection matching: unnormalised projections `i · norm(t)`, `t · norm(i)` and
/// `q = y / ‖y_row‖₂`. Scalar f32.
pub fn cmpm(f_i: &Tensor, f_t: &Tensor, pids: &Tensor) -> Tensor {
    let (fi, ft) = (f_i.to_kind(Kind::Float), f_t.to_kind(Kind::Float));
    let y = same_pid(pids);
    let q = &y / y.norm_scalaropt_dim(2, [1], true);
    matching_kl(&fi.matmul(&l2_normalize(&ft).tr()), &q)
        + matching_kl(&ft.matmul(&l2_normalize(&fi).tr()), &q)
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
pub fn imal_terms(
    g_i: &Tensor,
    g_t: &Tensor,
    pids: &Tensor,
    p: &ImalParams,
) -> (Tensor, Tensor, Tensor) {
    let (a, b) = (l2_normalize(g_i), l2_normalize(g_t));
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

/// The loss terms a run trains and their constants.
#[derive(Debug, Clone)]
pub struct LossSpec {
    /// In the order they are summed (and reported).
    pub terms: Vec<LossTerm>,
    pub params: LossSection,
}

impl LossSpec {
    /// The terms `cfg` trains ([`crate::config::Config::losses`]) with its loss constants.
    pub fn of(cfg: &crate::config::Config) -> LossSpec {
        LossSpec {
            terms: cfg.losses(),
            params: cfg.loss.clone(),
        }
    }

    /// The model heads these terms need.
    pub fn heads(&self) -> Heads {
        Heads {
            dca: self.terms.contains(&LossTerm::Imal),
            id: self.terms.contains(&LossTerm::Id),
        }
    }

    /// Whether the MLM branch runs (masked captions are needed).
    pub fn mlm(&self) -> bool {
        self.terms.contains(&LossTerm::Mlm)
    }
}

/// Whether `term` compares samples across the batch (SDM, ITC, CMPM, IMAL), as opposed to a mean
/// of per-sample terms (ID over samples, MLM over masked tokens).
pub fn spans_batch(term: LossTerm) -> bool {
    !matches!(term, LossTerm::Id | LossTerm::Mlm)
}

/// What the batch-spanning terms compare: the features and pids of the whole batch, [B, D] and
/// [B]. In a data-parallel run these are every rank's samples, and only this rank's own rows
/// carry gradients.
pub struct BatchFeatures {
    pub f_i: Tensor,
    pub f_t: Tensor,
    /// DCA features, when the forward ran the DCA heads.
    pub g_i: Option<Tensor>,
    pub g_t: Option<Tensor>,
    pub pids: Tensor,
}

impl BatchFeatures {
    /// The batch of one process: its own outputs.
    pub fn local(out: &TrainOutputs, pids: &Tensor) -> BatchFeatures {
        let copy = |t: &Option<Tensor>| t.as_ref().map(Tensor::shallow_clone);
        BatchFeatures {
            f_i: out.f_i.shallow_clone(),
            f_t: out.f_t.shallow_clone(),
            g_i: copy(&out.g_i),
            g_t: copy(&out.g_t),
            pids: pids.shallow_clone(),
        }
    }
}

/// This process's share of the per-sample means: its samples over the batch's (ID), its masked
/// tokens over the batch's (MLM). Both 1 in a one-process run; across ranks the shares sum to 1,
/// so the ranks' ID and MLM terms add up to the means over the whole batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalShare {
    pub samples: f64,
    pub masked: f64,
}

impl LocalShare {
    pub const WHOLE: LocalShare = LocalShare {
        samples: 1.0,
        masked: 1.0,
    };
}

/// The selected loss terms, in the order of [`LossSpec::terms`].
pub struct LossTerms(pub Vec<(LossTerm, Tensor)>);

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

/// Computes every term of `spec`: the batch-spanning ones on `batch`, ID and MLM on this process's
/// outputs `out` (of a forward run with `spec.heads()` and, when `spec.mlm()`, masked captions)
/// with its `pids`, weighted by its `share`.
pub fn compute(
    spec: &LossSpec,
    batch: &BatchFeatures,
    out: &TrainOutputs,
    pids: &Tensor,
    share: LocalShare,
) -> LossTerms {
    let terms = spec
        .terms
        .iter()
        .map(|&term| {
            let value = match spans_batch(term) {
                true => batch_term(term, &spec.params, batch),
                false => sample_term(term, &spec.params, out, pids, share),
            };
            (term, value)
        })
        .collect();
    LossTerms(terms)
}

/// A batch-spanning term (SDM, ITC, CMPM, IMAL) on the whole batch's features.
pub fn batch_term(term: LossTerm, p: &LossSection, batch: &BatchFeatures) -> Tensor {
    let scale = 1.0 / p.temperature;
    match term {
        LossTerm::Sdm => sdm(&batch.f_i, &batch.f_t, &batch.pids, scale),
        LossTerm::Itc => itc(&batch.f_i, &batch.f_t, scale),
        LossTerm::Cmpm => cmpm(&batch.f_i, &batch.f_t, &batch.pids),
        LossTerm::Imal => imal(
            need(&batch.g_i, "DCA"),
            need(&batch.g_t, "DCA"),
            &batch.pids,
            &ImalParams::from_config(p),
        ),
        LossTerm::Id | LossTerm::Mlm => unreachable!("{term} is a per-sample term"),
    }
}

/// A per-sample term (ID over samples, MLM over masked tokens), weighted, on this process's
/// outputs `out` with its `pids`, times its `share` of the whole batch's mean.
pub fn sample_term(
    term: LossTerm,
    p: &LossSection,
    out: &TrainOutputs,
    pids: &Tensor,
    share: LocalShare,
) -> Tensor {
    match term {
        LossTerm::Id => {
            id(
                need(&out.id_logits_i, "ID"),
                need(&out.id_logits_t, "ID"),
                pids,
            ) * (p.id_loss_weight * share.samples)
        }
        LossTerm::Mlm => {
            mlm(need(&out.mlm_logits, "MLM"), need(&out.mlm_labels, "MLM"))
                * (p.mlm_loss_weight * share.masked)
        }
        _ => unreachable!("{term} spans the batch"),
    }
}

/// An output the forward ran for `what`'s loss.
fn need<'a>(t: &'a Option<Tensor>, what: &str) -> &'a Tensor {
    t.as_ref()
        .unwrap_or_else(|| panic!("the forward did not run the {what} head its loss needs"))
}
