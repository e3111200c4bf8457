//! Each loss term described once: whether it spans the batch or is a mean of per-sample terms
//! (and over what), its formula, what it reads from a training forward, and its weight key.
//! CCMA's published set, what `imal` in `loss_names` stands for, is [`LossTerm::CCMA`], written
//! out where `loss_names` is read.
//!
//! A new term is a [`LossTerm`] entry, an entry in [`describe`] and its function; the compiler
//! asks for the rest.
use super::cross_entropy::{id, mlm};
use super::features::{BatchFeatures, Share};
use super::imal::{imal, ImalParams};
use super::matching::{cmpm, itc, sdm};
use super::tal::tal_per_sample;
use crate::config::{LossSection, LossTerm};
use crate::model::{Embedding, TrainOutputs};
use tch::Tensor;

/// A batch-spanning term's value (unweighted, scalar f32) on the whole batch's features.
pub type BatchFormula = fn(&LossSection, &BatchFeatures) -> Tensor;

/// A per-sample term's mean (unweighted by its key, scalar f32) over the units of a forward's
/// outputs, with their pids [B] i64 and the clean division's weights of those units, if any
/// ([`Share`]'s units: [B] for samples, [M] for masked tokens).
pub type SampleFormula = fn(&TrainOutputs, &Tensor, Option<&Tensor>) -> Tensor;

/// How a term's value is formed over a batch, with its formula.
#[derive(Clone, Copy)]
pub enum Reach {
    /// The term compares samples across the whole batch (every rank's): it is computed once, on
    /// the batch's features.
    Batch(BatchFormula),
    /// The term is a mean of per-sample terms over [`Share`]: each process (and each chunk of a
    /// chunked step) computes it on its own forward's outputs and adds its share of the mean.
    PerSample(Share, SampleFormula),
}

/// What a term reads from a training forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// An embedding pair (the global features always run; others need their heads, and the TSE
    /// pair runs only in a model with the TSE layers).
    Embedding(Embedding),
    /// The ID classifier's logits.
    IdHead,
    /// The cross-modal MLM branch's logits (it needs masked captions, `MLM: true`).
    MlmBranch,
}

/// The config key that weighs a term, and how to read it.
#[derive(Clone, Copy)]
pub struct Weight {
    pub key: &'static str,
    pub of: fn(&LossSection) -> f64,
}

/// One loss term.
#[derive(Clone, Copy)]
pub struct Description {
    pub reach: Reach,
    pub needs: &'static [Need],
    /// The term's weight, if it has one (the value is multiplied by it).
    pub weight: Option<Weight>,
}

/// The description of `term`.
pub fn describe(term: LossTerm) -> Description {
    const GLOBAL: &[Need] = &[Need::Embedding(Embedding::Global)];
    match term {
        LossTerm::Itc => Description {
            reach: Reach::Batch(|p, b| {
                let [i, t] = b.embeddings.pair(Embedding::Global);
                itc(i, t, 1.0 / p.temperature, b.weights.as_ref())
            }),
            needs: GLOBAL,
            weight: None,
        },
        LossTerm::Sdm => Description {
            reach: Reach::Batch(|p, b| {
                let [i, t] = b.embeddings.pair(Embedding::Global);
                sdm(i, t, &b.pids, 1.0 / p.temperature, b.weights.as_ref())
            }),
            needs: GLOBAL,
            weight: None,
        },
        LossTerm::Cmpm => Description {
            reach: Reach::Batch(|_, b| {
                let [i, t] = b.embeddings.pair(Embedding::Global);
                cmpm(i, t, &b.pids, b.weights.as_ref())
            }),
            needs: GLOBAL,
            weight: None,
        },
        LossTerm::Id => Description {
            reach: Reach::PerSample(Share::Samples, |out, pids, w| {
                id(
                    need(&out.id_logits_i, "ID"),
                    need(&out.id_logits_t, "ID"),
                    pids,
                    w,
                )
            }),
            needs: &[Need::IdHead],
            weight: Some(Weight {
                key: "id_loss_weight",
                of: |p| p.id_loss_weight,
            }),
        },
        LossTerm::Mlm => Description {
            reach: Reach::PerSample(Share::MaskedTokens, |out, _, w| {
                mlm(
                    need(&out.mlm_logits, "MLM"),
                    need(&out.mlm_labels, "MLM"),
                    w,
                )
            }),
            needs: &[Need::MlmBranch],
            weight: Some(Weight {
                key: "mlm_loss_weight",
                of: |p| p.mlm_loss_weight,
            }),
        },
        LossTerm::Imal => Description {
            reach: Reach::Batch(|p, b| {
                let [g_i, g_t] = b.embeddings.pair(Embedding::Dca);
                imal(
                    g_i,
                    g_t,
                    &b.pids,
                    &ImalParams::from_config(p),
                    b.weights.as_ref(),
                )
            }),
            needs: &[Need::Embedding(Embedding::Dca)],
            weight: None,
        },
        LossTerm::Tal => Description {
            reach: Reach::Batch(tal),
            needs: &[
                Need::Embedding(Embedding::Global),
                Need::Embedding(Embedding::Tse),
            ],
            weight: None,
        },
    }
}

/// RDE's batch loss: the sum over the batch's samples (not the mean) of the per-sample TAL of
/// the global features, plus that of the TSE features when the model has them, each sample's
/// times its clean-division weight where the run divides its pairs (`Σ_i w_i ℓ_i`).
fn tal(p: &LossSection, b: &BatchFeatures) -> Tensor {
    let per_sample = |[i, t]: [&Tensor; 2]| tal_per_sample(i, t, &b.pids, p.tau, p.margin);
    let mut total = per_sample(b.embeddings.pair(Embedding::Global));
    if let Some(pair) = b.embeddings.get(Embedding::Tse) {
        total += per_sample(pair);
    }
    if let Some(w) = &b.weights {
        total *= w;
    }
    total.sum(tch::Kind::Float)
}

/// An output the forward ran for `what`'s loss (the heads follow the descriptions, so a missing
/// one is a bug).
fn need<'a>(t: &'a Option<Tensor>, what: &str) -> &'a Tensor {
    t.as_ref()
        .unwrap_or_else(|| panic!("the forward did not run the {what} head its loss needs"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LossNames};
    use crate::loss::{batch_term, sample_term, Embeddings, LocalShare, LossSpec};
    use crate::model::{BatchNormMode, Heads};
    use tch::{Device, Kind};
    use LossTerm::*;

    /// Each term's kind, what it reads and its weight key, as METHOD.md sections 3 and 7 have
    /// them.
    #[test]
    fn each_term_is_described_as_the_method_has_it() {
        let global: &[Need] = &[Need::Embedding(Embedding::Global)];
        let dca: &[Need] = &[Need::Embedding(Embedding::Dca)];
        let both: &[Need] = &[
            Need::Embedding(Embedding::Global),
            Need::Embedding(Embedding::Tse),
        ];
        let table = [
            (Itc, None, global, None),
            (Sdm, None, global, None),
            (Cmpm, None, global, None),
            (
                Id,
                Some(Share::Samples),
                &[Need::IdHead][..],
                Some("id_loss_weight"),
            ),
            (
                Mlm,
                Some(Share::MaskedTokens),
                &[Need::MlmBranch][..],
                Some("mlm_loss_weight"),
            ),
            (Imal, None, dca, None),
            (Tal, None, both, None),
        ];
        assert_eq!(table.len(), LossTerm::ALL.len());
        for (term, over, need, weight) in table {
            let d = describe(term);
            let kind = match d.reach {
                Reach::Batch(_) => None,
                Reach::PerSample(over, _) => Some(over),
            };
            assert_eq!(kind, over, "{term}");
            assert_eq!(crate::loss::spans_batch(term), over.is_none(), "{term}");
            assert_eq!(d.needs, need, "{term}");
            assert_eq!(d.weight.map(|w| w.key), weight, "{term}");
        }
    }

    /// The heads follow the descriptions: CCMA's set runs the DCA stacks, the ID classifier and
    /// the MLM branch, the first pass of its chunked step only the DCA stacks; IRRA's sdm+id
    /// runs the ID classifier, and nothing in that first pass.
    #[test]
    fn the_heads_are_those_the_terms_need() {
        let heads = |h: Heads| (h.dca, h.id);
        let rde = LossSpec {
            terms: vec![Tal],
            params: LossSection::default(),
            tse_batchnorm: BatchNormMode::Running,
        };
        assert_eq!((rde.heads().tse, rde.batch_heads().tse), (true, true));
        assert_eq!(heads(rde.heads()), (false, false));
        assert!(!rde.mlm());
        let ccma = LossSpec::of(&Config::default());
        assert_eq!(ccma.terms, LossTerm::CCMA);
        assert_eq!(heads(ccma.heads()), (true, true));
        assert_eq!(heads(ccma.batch_heads()), (true, false));
        assert!(ccma.mlm());
        let irra = LossSpec {
            terms: vec![Sdm, Id],
            params: LossSection::default(),
            tse_batchnorm: BatchNormMode::Running,
        };
        assert_eq!(heads(irra.heads()), (false, true));
        assert_eq!(heads(irra.batch_heads()), (false, false));
        assert!(!irra.mlm());
    }

    /// Outputs of 4 samples with only `heads` (and the MLM branch when `mlm`), random.
    fn outputs(heads: Heads, mlm: bool) -> TrainOutputs {
        let f = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let some = |on: bool, shape: &[i64]| on.then(|| f(shape));
        TrainOutputs {
            f_i: f(&[4, 8]),
            f_t: f(&[4, 8]),
            g_i: some(heads.dca, &[4, 8]),
            g_t: some(heads.dca, &[4, 8]),
            tse_i: some(heads.tse, &[4, 16]),
            tse_t: some(heads.tse, &[4, 16]),
            id_logits_i: some(heads.id, &[4, 3]),
            id_logits_t: some(heads.id, &[4, 3]),
            mlm_logits: some(mlm, &[5, 10]),
            mlm_labels: mlm.then(|| Tensor::from_slice(&[1i64, 4, 9, 2, 2])),
        }
    }

    /// Every term computes, to a finite scalar, from a forward that ran only the heads its
    /// description needs.
    #[test]
    fn each_term_computes_from_what_its_description_needs() {
        let pids = Tensor::from_slice(&[0i64, 1, 0, 2]);
        for &term in LossTerm::ALL {
            let spec = LossSpec {
                terms: vec![term],
                params: LossSection::default(),
                tse_batchnorm: BatchNormMode::Running,
            };
            let out = outputs(spec.heads(), spec.mlm());
            let batch = BatchFeatures {
                embeddings: Embeddings::of(&out),
                pids: pids.shallow_clone(),
                weights: None,
            };
            let p = &spec.params;
            let value = batch_term(term, p, &batch)
                .or_else(|| sample_term(term, p, &out, &pids, &LocalShare::whole()))
                .unwrap();
            assert_eq!(value.size(), Vec::<i64>::new(), "{term}");
            assert!(value.double_value(&[]).is_finite(), "{term}");
        }
    }

    /// The defaults with `pairs` set, validated.
    fn set(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        let sets: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cfg = Config::default().with_overrides(&sets)?;
        cfg.validate().map(|()| cfg)
    }

    /// The config reads each weight key into what the description weighs by and refuses a
    /// negative one, and refuses a term that needs the MLM branch without masked captions.
    #[test]
    fn the_config_checks_what_the_descriptions_need() {
        for &term in LossTerm::ALL {
            let d = describe(term);
            if let Some(w) = d.weight {
                assert_eq!(
                    (w.of)(&set(&[(w.key, "0.25")]).unwrap().loss),
                    0.25,
                    "{term}"
                );
                let refused = format!("{:#}", set(&[(w.key, "-1")]).unwrap_err());
                assert!(refused.contains(w.key), "{term}: {refused}");
            }
            let names: LossNames = term.name().parse().unwrap();
            let masks = names
                .terms()
                .iter()
                .any(|&t| describe(t).needs.contains(&Need::MlmBranch));
            let unmasked = set(&[("loss_names", term.name()), ("MLM", "false")]);
            assert_eq!(unmasked.is_err(), masks, "{term}");
        }
    }
}
