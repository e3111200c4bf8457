//! One training step, the same for the trainer and the benchmark: forward, losses over the whole
//! (possibly multi-rank) batch, backward, gradient averaging across ranks, a check that every term
//! is finite, optimiser update.
//!
//! A step runs in one pass, or, with [`StepOptions::chunk`], in chunks of that many samples by
//! the gradient-cache technique (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size
//! under Memory Limited Setup"): (1) every chunk's global features without activations, (2) the
//! batch-spanning terms on the whole batch's features and their gradients with respect to those
//! features, (3) every chunk again with activations, backpropagating the cached feature gradients
//! together with the chunk's own per-sample terms (ID, MLM). The parameter gradient is the whole
//! batch's, for one extra forward pass, with activations held for one chunk at a time. Nothing in
//! the forward draws randomness (augmentation and masking are the loader's, dropout is refused),
//! so both passes see the same features. This is the exact micro-batch gradient of the
//! `micro_batch` key, whose chunk size for a rank [`super::chunk_size`] resolves.
//!
//! The step reads one value back from its device: the loss terms (and the ranks' stop flag), as
//! one tensor, once backward is queued and before the update. Everything else it needs about the
//! batch (masked positions and counts, the ranks' layout) comes from the loader on the host.
use super::optimizer::Optimizer;
use super::parallel::{BatchLayout, Ranks};
use crate::config::LossTerm;
use crate::data::batch::TrainBatch;
use crate::device::read_to_host;
use crate::dist::group::RankLost;
use crate::loss::{self, Embeddings, LossSpec};
use crate::model::{Ccma, Embedding, Masked, TrainOutputs};
use tch::{Kind, Tensor};

/// A loss term that is not finite: the step stops before the update, so the parameters stay as
/// they were.
#[derive(Debug, thiserror::Error)]
#[error("loss term `{term}` is {value}")]
pub struct NonFiniteTerm {
    pub term: LossTerm,
    pub value: f64,
}

/// Why a step did not update the parameters.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    NonFinite(#[from] NonFiniteTerm),
    #[error(transparent)]
    RankLost(#[from] RankLost),
    /// The optimiser failed (zeroing the gradients, or its update kernel).
    #[error(transparent)]
    Update(#[from] anyhow::Error),
}

/// What a step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Each term's value over the whole batch (the same on every rank).
    pub values: Vec<(LossTerm, f64)>,
    /// Samples in the whole batch.
    pub samples: usize,
    /// Whether any rank asked to stop after this step.
    pub stop: bool,
}

/// How a step runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOptions {
    /// Samples per pass over this rank's batch; `None`, or at least the batch, is one pass.
    pub chunk: Option<usize>,
    /// Replace the first term's value with NaN, to test the non-finite path.
    pub poison: bool,
    /// This rank's wish to stop after the step (Ctrl-C), which every rank learns with the
    /// gradients.
    pub stop: bool,
}

/// One step on `batch` (this rank's slice, already on the model's device); the global text
/// features see the masked captions when the config says so (`global_caption`).
///
/// Rank r backpropagates `world · (Σ batch-spanning terms + Σ its weighted ID and MLM terms)`;
/// averaging the gradients then gives the gradient of the whole batch's loss, as one process
/// would compute it.
pub fn step(
    model: &Ccma,
    opt: &mut Optimizer,
    batch: &TrainBatch,
    spec: &LossSpec,
    ranks: &Ranks,
    how: StepOptions,
) -> Result<StepOutcome, StepError> {
    let layout = ranks.layout(batch);
    let pass = Pass {
        model,
        batch,
        spec,
        ranks,
        layout: &layout,
    };
    opt.zero_grad()?;
    let terms = match how.chunk.filter(|&c| (c as i64) < batch.len()) {
        None => pass.whole()?,
        Some(chunk) => pass.chunked(chunk as i64)?,
    };
    let world = ranks.world() as f64;
    // What this rank adds to each term's value over the whole batch, then its wish to stop:
    // [terms + 1] f32 on the device.
    let mut shares: Vec<Tensor> = terms
        .iter()
        .map(|(k, t)| match loss::spans_batch(*k) {
            true => t / world,
            false => t.shallow_clone(),
        })
        .collect();
    if how.poison {
        shares[0] = shares[0].full_like(f64::NAN);
    }
    let device = shares[0].device();
    let stop = f64::from(u8::from(how.stop));
    shares.push(Tensor::full([], stop, (Kind::Float, device)));
    let shares = Tensor::stack(&shares, 0).to_kind(Kind::Float);
    let summed = ranks.average_gradients(&opt.variables(), &shares)?;
    let mut summed: Vec<f64> = Vec::<f32>::try_from(&read_to_host(&summed))
        .expect("f32 loss values")
        .into_iter()
        .map(f64::from)
        .collect();
    let stop = summed.pop().is_some_and(|s| s > 0.0);
    let values: Vec<(LossTerm, f64)> = terms.iter().map(|(k, _)| *k).zip(summed).collect();
    if let Some(&(term, value)) = values.iter().find(|(_, v)| !v.is_finite()) {
        return Err(NonFiniteTerm { term, value }.into());
    }
    opt.step()?;
    Ok(StepOutcome {
        values,
        samples: layout.samples,
        stop,
    })
}

/// The passes of a step in chunks of `chunk` samples on `batch`, on this process alone and
/// without an update (the gradients are zeroed after): what `micro_batch: auto` measures.
pub fn probe(
    model: &Ccma,
    opt: &mut Optimizer,
    batch: &TrainBatch,
    spec: &LossSpec,
    chunk: usize,
) -> Result<(), StepError> {
    let ranks = Ranks::single(batch.images.device());
    let layout = ranks.layout(batch);
    let pass = Pass {
        model,
        batch,
        spec,
        ranks: &ranks,
        layout: &layout,
    };
    opt.zero_grad()?;
    pass.chunked(chunk as i64)?;
    opt.zero_grad()?;
    Ok(())
}

/// The forward and backward passes of one step: they leave the parameters' gradients of
/// `world ·` this rank's part of the loss, and return each term's value on this rank (detached,
/// in `spec`'s order).
struct Pass<'a> {
    model: &'a Ccma,
    batch: &'a TrainBatch,
    spec: &'a LossSpec,
    ranks: &'a Ranks,
    layout: &'a BatchLayout,
}

impl Pass<'_> {
    fn world(&self) -> f64 {
        self.ranks.world() as f64
    }

    /// The caption ids [B, L] the global text features see.
    fn global_ids(&self) -> &Tensor {
        match (
            self.spec.params.masked_global_captions(),
            &self.batch.masked,
        ) {
            (true, Some(masked)) => &masked.ids,
            _ => &self.batch.caption_ids,
        }
    }

    /// The training forward with every head the terms need, on samples `start..start + len`.
    fn forward(&self, start: i64, len: i64) -> TrainOutputs {
        let whole = start == 0 && len == self.batch.len();
        let narrowed;
        let part = match whole {
            true => self.batch,
            false => {
                narrowed = self.batch.narrow(start, len);
                &narrowed
            }
        };
        let masked = match (self.spec.mlm(), &part.masked) {
            (true, Some(m)) => Some(Masked {
                ids: &m.ids,
                positions: &m.positions,
                labels: &m.targets,
            }),
            _ => None,
        };
        let ids = self.global_ids().narrow(0, start, len);
        self.model
            .forward_train(&part.images, &ids, masked, self.spec.heads())
    }

    /// The whole batch in one pass.
    fn whole(&self) -> Result<Vec<(LossTerm, Tensor)>, RankLost> {
        let out = self.forward(0, self.batch.len());
        let features = self
            .ranks
            .batch_features(Embeddings::of(&out), self.layout)?;
        let terms = loss::compute(
            self.spec,
            &features,
            &out,
            &self.batch.pids,
            &self.layout.share(0, self.batch.len()),
        );
        match self.ranks.world() {
            1 => terms.total().backward(),
            _ => (terms.total() * self.world()).backward(),
        }
        Ok(detached(terms.0))
    }

    /// The batch in chunks of `chunk` samples (the last one smaller), by the gradient cache.
    fn chunked(&self, chunk: i64) -> Result<Vec<(LossTerm, Tensor)>, RankLost> {
        let n = self.batch.len();
        let chunks: Vec<(i64, i64)> = (0..n)
            .step_by(chunk as usize)
            .map(|start| (start, chunk.min(n - start)))
            .collect();
        // 1. The embeddings the batch-spanning terms read, of every chunk, without activations:
        // leaves [n, D].
        let heads = self.spec.batch_heads();
        let parts: Vec<TrainOutputs> = tch::no_grad(|| {
            chunks
                .iter()
                .map(|&(start, len)| {
                    let images = self.batch.images.narrow(0, start, len);
                    let ids = self.global_ids().narrow(0, start, len);
                    self.model.forward_train(&images, &ids, None, heads)
                })
                .collect()
        });
        let cached = EmbeddingCache::cat(&parts);
        // 2. The batch-spanning terms on the whole batch, and their gradients w.r.t. the features.
        let features = self.ranks.batch_features(cached.leaves(), self.layout)?;
        let mut values: Vec<(LossTerm, Tensor)> = Vec::new();
        let mut spanning: Option<Tensor> = None;
        for &term in &self.spec.terms {
            if let Some(t) = loss::batch_term(term, &self.spec.params, &features) {
                values.push((term, t.detach()));
                spanning = Some(spanning.map_or_else(|| t.shallow_clone(), |s| s + &t));
            }
        }
        if let Some(total) = spanning {
            (total * self.world()).backward();
        }
        let grads = cached.grads();
        // 3. Every chunk again with activations: the cached feature gradients and the chunk's
        // per-sample terms, as the chunk's share of the batch's means.
        let mut sample_values: Vec<(LossTerm, Tensor)> = Vec::new();
        for &(start, len) in &chunks {
            let out = self.forward(start, len);
            let part = self.batch.narrow(start, len);
            let share = self.layout.share(start, len);
            let mut surrogate: Option<Tensor> = None;
            let mut add = |t: Tensor| {
                surrogate = Some(
                    surrogate
                        .take()
                        .map_or_else(|| t.shallow_clone(), |s| s + &t),
                );
            };
            for (kind, grad) in &grads {
                let pair = out
                    .embedding(*kind)
                    .expect("the second pass runs every head of the first");
                for (f, g) in pair.into_iter().zip(grad) {
                    if let Some(g) = g {
                        add((f * g.narrow(0, start, len)).sum(Kind::Float));
                    }
                }
            }
            let sample_terms = self.spec.terms.iter().filter_map(|&term| {
                loss::sample_term(term, &self.spec.params, &out, &part.pids, &share)
                    .map(|t| (term, t))
            });
            for (k, (term, t)) in sample_terms.enumerate() {
                match sample_values.get_mut(k) {
                    Some((_, sum)) => *sum += t.detach(),
                    None => sample_values.push((term, t.detach())),
                }
                add(t * self.world());
            }
            if let Some(s) = surrogate {
                s.backward();
            }
        }
        // In `spec`'s order.
        let mut sample_values = sample_values.into_iter();
        Ok(self
            .spec
            .terms
            .iter()
            .map(|&term| match loss::spans_batch(term) {
                true => values.remove(0),
                false => sample_values.next().expect("a value per per-sample term"),
            })
            .collect())
    }
}

/// Each term's value, detached from the graph.
fn detached(terms: Vec<(LossTerm, Tensor)>) -> Vec<(LossTerm, Tensor)> {
    terms.into_iter().map(|(k, t)| (k, t.detach())).collect()
}

/// The embeddings of a batch computed without activations, by kind, as leaves that collect the
/// gradients of the batch-spanning terms: each pair the first pass ran, [n, D] each.
struct EmbeddingCache(Embeddings);

impl EmbeddingCache {
    /// The chunks' embeddings, concatenated in order.
    fn cat(parts: &[TrainOutputs]) -> EmbeddingCache {
        let pairs = parts[0]
            .embeddings()
            .map(|(kind, _)| {
                let side = |s: usize| {
                    let pieces: Vec<&Tensor> = parts
                        .iter()
                        .map(|p| p.embedding(kind).expect("every chunk runs the same heads")[s])
                        .collect();
                    Tensor::cat(&pieces, 0).detach().set_requires_grad(true)
                };
                (kind, [side(0), side(1)])
            })
            .collect();
        EmbeddingCache(Embeddings(pairs))
    }

    /// The leaves, as shallow copies.
    fn leaves(&self) -> Embeddings {
        self.0.shallow_clone()
    }

    /// Each embedding's gradients, where a batch-spanning term reached it.
    fn grads(&self) -> Vec<(Embedding, [Option<Tensor>; 2])> {
        self.0
             .0
            .iter()
            .map(|(kind, pair)| {
                let grad = |t: &Tensor| Some(t.grad()).filter(Tensor::defined);
                (*kind, [grad(&pair[0]), grad(&pair[1])])
            })
            .collect()
    }
}
