//! Which embeddings retrieval compares (METHOD.md section 7): the global features (BGE), the
//! token selection embeddings (TSE) of a model with the TSE layers, or the mean of the two
//! cosine similarities (BGE+TSE). Each is the cosine similarity of one matrix of compared
//! features, so the protocol, top-k and galleries work on it unchanged.
use crate::config::Similarity;
use crate::model::layers::l2_normalize;
use crate::UsageError;
use anyhow::{bail, Result};
use std::path::Path;
use tch::Tensor;

/// One side's features in each embedding a model has: BGE [N, D] and, for a model with the TSE
/// layers, TSE [N, 2D] (f32, not normalised).
pub struct Embedded {
    pub bge: Tensor,
    pub tse: Option<Tensor>,
}

impl Embedded {
    /// The features whose cosine similarities are `similarity`'s: the BGE or the TSE features,
    /// or for BGE+TSE both L2-normalised side by side [N, 3D]: each half has unit norm, so the
    /// cosine of two such rows is the mean of the two halves' cosines. Panics for a similarity
    /// that needs the TSE features of a model without them ([`resolve`] refuses it first).
    pub fn compared(&self, similarity: Similarity) -> Tensor {
        let tse = || {
            self.tse
                .as_ref()
                .expect("a similarity that reads TSE is resolved only for a model with TSE")
        };
        match similarity {
            Similarity::Bge => self.bge.shallow_clone(),
            Similarity::Tse => tse().shallow_clone(),
            Similarity::BgeTse => Tensor::cat(&[l2_normalize(&self.bge), l2_normalize(tse())], 1),
        }
    }

    /// The rows of `parts`, in order.
    pub fn concat(parts: &[Embedded]) -> Embedded {
        let cat = |ts: Vec<&Tensor>| Tensor::cat(&ts, 0);
        Embedded {
            bge: cat(parts.iter().map(|p| &p.bge).collect()),
            tse: parts
                .iter()
                .map(|p| p.tse.as_ref())
                .collect::<Option<Vec<_>>>()
                .map(cat),
        }
    }
}

/// The width of `similarity`'s compared features for a model of width `embed_dim`.
pub fn width(similarity: Similarity, embed_dim: i64) -> i64 {
    match similarity {
        Similarity::Bge => embed_dim,
        Similarity::Tse => 2 * embed_dim,
        Similarity::BgeTse => 3 * embed_dim,
    }
}

/// The similarity `configured` (else the model's default: `bge+tse` with the TSE layers, `bge`
/// without) for the model of `weights`, which `has_tse` or not; one that reads TSE features is
/// refused for a model without them.
pub fn resolve(
    configured: Option<Similarity>,
    has_tse: bool,
    weights: &Path,
) -> Result<Similarity> {
    let s = Similarity::or_default(configured, has_tse);
    if s.needs_tse() && !has_tse {
        bail!(UsageError(format!(
            "invalid value for `similarity`: {s}, but the model in {} has no TSE layers (expected bge, or a model with them: `tse: true`)",
            weights.display()
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// BGE+TSE ranks by the mean of the two cosines (within 1e-6), computed apart in f64.
    #[test]
    fn bge_tse_is_the_mean_of_the_two_cosines() {
        tch::manual_seed(3);
        let r = |n: i64, d: i64| Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 2.0;
        let (qb, qt, gb, gt) = (r(4, 8), r(4, 16), r(5, 8), r(5, 16));
        let q = Embedded {
            bge: qb.shallow_clone(),
            tse: Some(qt.shallow_clone()),
        }
        .compared(Similarity::BgeTse);
        let g = Embedded {
            bge: gb.shallow_clone(),
            tse: Some(gt.shallow_clone()),
        }
        .compared(Similarity::BgeTse);
        assert_eq!(q.size(), [4, width(Similarity::BgeTse, 8)]);
        let cos = |a: &Tensor, b: &Tensor| {
            let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
            let n = |x: &Tensor| x.norm_scalaropt_dim(2, [1], true);
            (&a / n(&a)).matmul(&(&b / n(&b)).tr())
        };
        let want = (cos(&qb, &gb) + cos(&qt, &gt)) / 2.0;
        let got = cos(&q, &g);
        let d = (got - want).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn tse_is_refused_by_name_for_a_model_without_it() {
        let p = Path::new("irra.pth");
        for s in [Similarity::Tse, Similarity::BgeTse] {
            let e = resolve(Some(s), false, p).unwrap_err().to_string();
            assert!(e.contains("`similarity`") && e.contains("irra.pth"), "{e}");
        }
        assert_eq!(resolve(None, false, p).unwrap(), Similarity::Bge);
        assert_eq!(resolve(None, true, p).unwrap(), Similarity::BgeTse);
        assert_eq!(
            resolve(Some(Similarity::Bge), true, p).unwrap(),
            Similarity::Bge
        );
    }
}
