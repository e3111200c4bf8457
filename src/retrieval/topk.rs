//! The best gallery entries for one query by cosine similarity.
use crate::model::layers::l2_normalize;
use tch::{Kind, Tensor};

/// The `k` best rows of `gallery` [N, D] for `query` [1, D]: (row, cosine similarity), best
/// first; fewer when the gallery is smaller. Both are finite (a NaN row would rank first): model
/// outputs pass [`super::features::require_finite_output`], files and caches are checked on
/// reading.
pub fn top_k(gallery: &Tensor, query: &Tensor, k: usize) -> Vec<(usize, f64)> {
    let scores = l2_normalize(gallery)
        .matmul(&l2_normalize(query).to_device(gallery.device()).tr())
        .squeeze_dim(1);
    let k = k.min(scores.size()[0] as usize) as i64;
    let (values, indices) = scores.topk(k, 0, true, true);
    let values: Vec<f64> = Vec::<f64>::try_from(values.to_kind(Kind::Double)).unwrap_or_default();
    let indices: Vec<i64> = Vec::<i64>::try_from(indices).unwrap_or_default();
    indices
        .into_iter()
        .map(|i| i as usize)
        .zip(values)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_first_by_cosine() {
        let g = Tensor::from_slice(&[1f32, 0., 0., 1., 1., 1.]).view([3, 2]);
        let q = Tensor::from_slice(&[2f32, 0.1]).view([1, 2]);
        let hits = top_k(&g, &q, 5);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 2, 1]);
        assert!((hits[0].1 - 2.0 / (4.01f64).sqrt()).abs() < 1e-6);
    }
}
