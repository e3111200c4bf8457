//! What the terms are computed on: the embedding pairs of a batch by kind, the whole batch's
//! features for the batch-spanning terms, and a process's share of the per-sample means.
use crate::model::{Embedding, TrainOutputs};
use tch::{Kind, Tensor};

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

/// One part of the batch (a process's slice, or a chunk of it) for the per-sample terms: the
/// weights of its units (samples for ID, masked caption tokens for MLM) and its share of the
/// whole batch's weighted count of them. A part's term is its weighted mean times its share, so
/// the parts (ranks, chunks) add up to `Σ_batch w_u v_u / Σ_batch w_u`; without a clean division
/// every `w` is 1 and that is the mean over the whole batch.
#[derive(Debug)]
pub struct LocalShare {
    /// [n] f32 the clean division's weight (0 or 1) of each of the part's samples; `None`: all 1.
    pub sample_weights: Option<Tensor>,
    /// [m] f32 the weight of each of the part's masked caption tokens (its pair's); `None`: all 1.
    pub token_weights: Option<Tensor>,
    /// The part's weighted samples over the whole batch's (0 where the batch has none).
    pub samples: f64,
    /// The part's weighted masked tokens over the whole batch's (0 where the batch has none).
    pub masked: f64,
}

impl LocalShare {
    /// The whole batch, unweighted: per-sample terms are plain means (the unit tests' share).
    #[cfg(test)]
    pub(crate) fn whole() -> LocalShare {
        LocalShare {
            sample_weights: None,
            token_weights: None,
            samples: 1.0,
            masked: 1.0,
        }
    }

    /// The weights of the part's units of `over`, and the part's share of the batch's.
    pub fn of(&self, over: Share) -> (Option<&Tensor>, f64) {
        match over {
            Share::Samples => (self.sample_weights.as_ref(), self.samples),
            Share::MaskedTokens => (self.token_weights.as_ref(), self.masked),
        }
    }
}

/// The mean of `values` [N] f32 weighted by `weights` [N] (0 or 1): `Σ w_u v_u / max(Σ w_u, 1)`,
/// so 0 where no weight is 1; the plain mean without weights. On the device (nothing is read
/// back).
pub fn weighted_mean(values: &Tensor, weights: Option<&Tensor>) -> Tensor {
    match weights {
        None => values.mean(Kind::Float),
        Some(w) => (values * w).sum(Kind::Float) / w.sum(Kind::Float).clamp_min(1.0),
    }
}
