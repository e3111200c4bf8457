//! The loss terms (METHOD.md section 3), all computed in fp32 on the model's typed outputs, and
//! the set a run trains.
//!
//! `terms.rs` describes each term once (batch-spanning or per-sample, what it reads, its weight
//! key); the formulas are in `matching.rs` (SDM, ITC, CMPM), `imal.rs` (IMAL), `tal.rs` (RDE's
//! TAL) and `cross_entropy.rs` (ID, MLM); `features.rs` holds what the terms are computed on.
//! RDE's consensus clean division of the pairs by their per-sample losses is `division.rs`, on
//! the two-component Gaussian mixture of `mixture.rs`.
mod cross_entropy;
pub mod division;
mod features;
mod imal;
mod matching;
pub mod mixture;
mod tal;
mod terms;

pub use cross_entropy::{id, mlm};
pub use features::{BatchFeatures, Embeddings, LocalShare, Share};
pub use imal::{imal, imal_terms, ImalParams};
pub use matching::{cmpm, itc, sdm};
pub use tal::tal_per_sample;
pub use terms::{describe, BatchFormula, Description, Need, Reach, SampleFormula, Weight};

use crate::config::{Config, LossSection, LossTerm};
use crate::model::{BatchNormMode, Heads, TrainOutputs};
use tch::Tensor;

/// The loss terms a run trains and their constants.
#[derive(Debug, Clone)]
pub struct LossSpec {
    /// In the order they are summed (and reported).
    pub terms: Vec<LossTerm>,
    pub params: LossSection,
    /// The statistics the TSE BatchNorm uses in the training forward.
    pub tse_batchnorm: BatchNormMode,
}

impl LossSpec {
    /// The terms `cfg` trains ([`Config::losses`]) with its loss constants.
    pub fn of(cfg: &Config) -> LossSpec {
        LossSpec {
            terms: cfg.losses(),
            params: cfg.loss.clone(),
            tse_batchnorm: cfg.model.tse_batchnorm.mode(),
        }
    }

    /// The model heads these terms need, the TSE BatchNorm in the `tse_batchnorm` mode.
    pub fn heads(&self) -> Heads {
        self.heads_for(self.terms.iter().copied())
    }

    /// The model heads the batch-spanning terms need: what the first pass of a chunked step runs.
    pub fn batch_heads(&self) -> Heads {
        self.heads_for(self.terms.iter().copied().filter(|&t| spans_batch(t)))
    }

    /// The heads that produce what `terms` read.
    fn heads_for(&self, terms: impl Iterator<Item = LossTerm>) -> Heads {
        let none = Heads {
            tse_batchnorm: self.tse_batchnorm,
            ..Heads::default()
        };
        terms
            .flat_map(|t| describe(t).needs)
            .fold(none, |heads, need| match need {
                Need::Embedding(kind) => heads.with(*kind),
                Need::IdHead => Heads { id: true, ..heads },
                Need::MlmBranch => heads,
            })
    }

    /// Whether the MLM branch runs (masked captions are needed).
    pub fn mlm(&self) -> bool {
        self.terms
            .iter()
            .any(|&t| describe(t).needs.contains(&Need::MlmBranch))
    }
}

/// Whether `term` compares samples across the batch, as opposed to a mean of per-sample terms.
pub fn spans_batch(term: LossTerm) -> bool {
    match describe(term).reach {
        Reach::Batch(_) => true,
        Reach::PerSample(..) => false,
    }
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

/// Computes every term of `spec`: the batch-spanning ones on `batch`, the per-sample ones on this
/// process's outputs `out` (of a forward run with `spec.heads()` and, when `spec.mlm()`, masked
/// captions) with its `pids`, as its `share` of the batch.
pub fn compute(
    spec: &LossSpec,
    batch: &BatchFeatures,
    out: &TrainOutputs,
    pids: &Tensor,
    share: &LocalShare,
) -> LossTerms {
    let p = &spec.params;
    let terms = spec
        .terms
        .iter()
        .map(|&term| {
            let d = describe(term);
            let value = match d.reach {
                Reach::Batch(formula) => on_batch(formula, d.weight, p, batch),
                Reach::PerSample(over, formula) => {
                    on_samples(over, formula, d.weight, p, out, pids, share)
                }
            };
            (term, value)
        })
        .collect();
    LossTerms(terms)
}

/// A batch-spanning `term` on the whole batch's features, weighted; `None` for a per-sample term.
pub fn batch_term(term: LossTerm, p: &LossSection, batch: &BatchFeatures) -> Option<Tensor> {
    let d = describe(term);
    match d.reach {
        Reach::Batch(formula) => Some(on_batch(formula, d.weight, p, batch)),
        Reach::PerSample(..) => None,
    }
}

/// A per-sample `term` on this process's outputs `out` with its `pids`, weighted, as its `share`
/// of the whole batch's mean; `None` for a batch-spanning term.
pub fn sample_term(
    term: LossTerm,
    p: &LossSection,
    out: &TrainOutputs,
    pids: &Tensor,
    share: &LocalShare,
) -> Option<Tensor> {
    let d = describe(term);
    match d.reach {
        Reach::Batch(_) => None,
        Reach::PerSample(over, formula) => {
            Some(on_samples(over, formula, d.weight, p, out, pids, share))
        }
    }
}

/// A batch-spanning term's value, times its weight if it has one.
fn on_batch(
    formula: BatchFormula,
    weight: Option<Weight>,
    p: &LossSection,
    batch: &BatchFeatures,
) -> Tensor {
    let value = formula(p, batch);
    match weight {
        Some(w) => value * (w.of)(p),
        None => value,
    }
}

/// A per-sample term's (division-weighted) mean over this part's units times its weight (1
/// without one) and this part's share of the batch.
fn on_samples(
    over: Share,
    formula: SampleFormula,
    weight: Option<Weight>,
    p: &LossSection,
    out: &TrainOutputs,
    pids: &Tensor,
    share: &LocalShare,
) -> Tensor {
    let weight = weight.map_or(1.0, |w| (w.of)(p));
    let (units, part) = share.of(over);
    formula(out, pids, units) * (weight * part)
}
