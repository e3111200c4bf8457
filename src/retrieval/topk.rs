//! The best gallery entries for queries by cosine similarity: the gallery's rows scaled to unit
//! length once ([`CosineIndex`]), then ranked for each query's features, or for sentences a model
//! embeds ([`best_rows`]).
use super::encode::{embed_captions, EncodeOptions};
use super::features::require_finite_output;
use crate::model::layers::l2_normalize;
use crate::model::Ccma;
use anyhow::Result;
use std::path::Path;
use tch::{Kind, Tensor};

/// Gallery features with every row scaled to unit length, ranked against any number of queries.
pub struct CosineIndex {
    /// [N, D], each row of norm 1.
    rows: Tensor,
}

impl CosineIndex {
    /// The index of `gallery` [N, D] (f32). Its rows are finite (a NaN row would rank first):
    /// model outputs pass [`require_finite_output`], files and caches are checked on reading.
    pub fn new(gallery: &Tensor) -> CosineIndex {
        CosineIndex {
            rows: l2_normalize(gallery),
        }
    }

    /// The `k` best rows for `query` [1, D] (finite): (row, cosine similarity), best first; fewer
    /// when the gallery is smaller.
    pub fn top_k(&self, query: &Tensor, k: usize) -> Vec<(usize, f64)> {
        let scores = self
            .rows
            .matmul(&l2_normalize(query).to_device(self.rows.device()).tr())
            .squeeze_dim(1);
        let k = k.min(scores.size()[0] as usize) as i64;
        let (values, indices) = scores.topk(k, 0, true, true);
        let values: Vec<f64> =
            Vec::<f64>::try_from(values.to_kind(Kind::Double)).unwrap_or_default();
        let indices: Vec<i64> = Vec::<i64>::try_from(indices).unwrap_or_default();
        indices
            .into_iter()
            .map(|i| i as usize)
            .zip(values)
            .collect()
    }
}

/// The `k` best rows of `index` for each `(sentence, k)` of `queries`, the sentences embedded by
/// `model` (read from `weights`) as one batch: (row, cosine similarity), best first. Non-finite
/// query features are an error.
pub fn best_rows(
    model: &Ccma,
    weights: &Path,
    opts: &EncodeOptions,
    index: &CosineIndex,
    queries: &[(String, usize)],
) -> Result<Vec<Vec<(usize, f64)>>> {
    let texts: Vec<String> = queries.iter().map(|(q, _)| q.clone()).collect();
    let embedded = embed_captions(model, &texts, opts)?.to_device(tch::Device::Cpu);
    require_finite_output(&[&embedded], weights, "the query")?;
    Ok(queries
        .iter()
        .enumerate()
        .map(|(i, &(_, k))| index.top_k(&embedded.narrow(0, i as i64, 1), k))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_first_by_cosine() {
        let g = Tensor::from_slice(&[1f32, 0., 0., 1., 1., 1.]).view([3, 2]);
        let q = Tensor::from_slice(&[2f32, 0.1]).view([1, 2]);
        let hits = CosineIndex::new(&g).top_k(&q, 5);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 2, 1]);
        assert!((hits[0].1 - 2.0 / (4.01f64).sqrt()).abs() < 1e-6);
    }

    /// One index ranks query after query exactly as the gallery normalised afresh for each query
    /// did (the scores bit for bit), and as a plain cosine in f64 does (the order).
    #[test]
    fn one_index_ranks_every_query_as_a_fresh_normalisation_did() {
        tch::manual_seed(7);
        let gallery = Tensor::randn([300, 64], (Kind::Float, tch::Device::Cpu)) * 3.0;
        let queries = Tensor::randn([20, 64], (Kind::Float, tch::Device::Cpu));
        let index = CosineIndex::new(&gallery);
        let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&gallery).unwrap();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        for q in 0..20 {
            let query = queries.narrow(0, q, 1);
            let hits = index.top_k(&query, 10);
            // Before: the whole gallery normalised for this query.
            let fresh = l2_normalize(&gallery)
                .matmul(&l2_normalize(&query).tr())
                .squeeze_dim(1);
            let (values, indices) = fresh.topk(10, 0, true, true);
            let before: Vec<(usize, f64)> = Vec::<i64>::try_from(indices)
                .unwrap()
                .into_iter()
                .map(|i| i as usize)
                .zip(Vec::<f64>::try_from(values.to_kind(Kind::Double)).unwrap())
                .collect();
            assert_eq!(hits, before, "query {q}");
            // A plain cosine in f64, fully sorted.
            let qv: Vec<f32> = Vec::<f32>::try_from(query.squeeze_dim(0)).unwrap();
            let mut cos: Vec<(usize, f64)> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let dot: f64 = r.iter().zip(&qv).map(|(a, b)| *a as f64 * *b as f64).sum();
                    (i, dot / (norm(r) * norm(&qv)))
                })
                .collect();
            cos.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (hit, want) in hits.iter().zip(&cos) {
                assert_eq!(hit.0, want.0, "query {q}");
                assert!((hit.1 - want.1).abs() < 1e-5, "query {q}: {hit:?} {want:?}");
            }
        }
    }
}
