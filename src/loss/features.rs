//! What the terms are computed on: the embedding pairs of a batch by kind, the whole batch's
//! features for the batch-spanning terms, and a process's share of the per-sample means.
use crate::model::{Embedding, TrainOutputs};
use tch::Tensor;

/// Embedding pairs by kind, in [`Embedding::ALL`]'s order: `[image, text]`, [B, D] f32 each.
pub struct Embeddings(pub Vec<(Embedding, [Tensor; 2])>);

impl Embeddings {
    /// Every pair the forward `out` ran, as shallow copies.
    pub fn of(out: &TrainOutputs) -> Embeddings {
        Embeddings::copies(out.embeddings())
    }

    /// The `kind` pair. The forward runs the heads the terms' descriptions need, so a term that
    /// reads a pair its description does not name is a bug: it panics.
    pub fn pair(&self, kind: Embedding) -> [&Tensor; 2] {
        let (_, [i, t]) = self.0.iter().find(|(k, _)| *k == kind).unwrap_or_else(|| {
            panic!("the forward did not run the {kind:?} embeddings a loss needs")
        });
        [i, t]
    }

    /// The `kind` pair when the forward ran it: for a term that reads a pair only when the model
    /// has it (TAL's TSE pair).
    pub fn get(&self, kind: Embedding) -> Option<[&Tensor; 2]> {
        let (_, [i, t]) = self.0.iter().find(|(k, _)| *k == kind)?;
        Some([i, t])
    }

    /// Shallow copies of the pairs.
    pub fn shallow_clone(&self) -> Embeddings {
        Embeddings::copies(self.0.iter().map(|(kind, [i, t])| (*kind, [i, t])))
    }

    fn copies<'a>(pairs: impl Iterator<Item = (Embedding, [&'a Tensor; 2])>) -> Embeddings {
        Embeddings(
            pairs
                .map(|(kind, [i, t])| (kind, [i.shallow_clone(), t.shallow_clone()]))
                .collect(),
        )
    }
}

/// What the batch-spanning terms compare: the embeddings and pids of the whole batch, [B, D] and
/// [B] i64. In a data-parallel run these are every rank's samples, and only this rank's own rows
/// carry gradients.
pub struct BatchFeatures {
    pub embeddings: Embeddings,
    pub pids: Tensor,
    /// [B] f32 the clean division's weight of each sample (`noise_filter: ccd`), else `None`.
    pub weights: Option<Tensor>,
}

/// What a per-sample term is a mean over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// The batch's samples (ID).
    Samples,
    /// The batch's masked caption tokens (MLM).
    MaskedTokens,
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

    /// The share of the mean over `over`.
    pub fn of(self, over: Share) -> f64 {
        match over {
            Share::Samples => self.samples,
            Share::MaskedTokens => self.masked,
        }
    }
}
