//! Each query's own outcome under the retrieval protocol: the rank of its first true match and its
//! best gallery items, what a failure analysis shows query by query. Ranks follow the tie rule of
//! [`super::metrics`]: a non-match with the same similarity as a match ranks before it, so the
//! share of queries whose first match has rank 1 (5, 10) is that module's R@1 (R@5, R@10).
use super::metrics::similarity_blocks;
use anyhow::Result;
use rayon::prelude::*;
use tch::{Kind, Tensor};

/// One query's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutcome {
    /// 1-based rank of its best-ranked true match: one more than the non-matches at or above it.
    pub first_match: usize,
    /// Its best gallery rows, best first: (row, cosine similarity).
    pub top: Vec<(usize, f64)>,
}

/// The outcome of every query of `queries` [Nq, D] against `gallery` [Ng, D] (f32, any device;
/// both L2-normalised here), with its `top` best rows; `query_pids` [Nq] and `gallery_pids` [Ng]
/// decide the matches. `None` for a query whose pid is not in the gallery.
pub fn query_outcomes(
    queries: &Tensor,
    gallery: &Tensor,
    query_pids: &[i64],
    gallery_pids: &[i64],
    top: usize,
) -> Result<Vec<Option<QueryOutcome>>> {
    let ng = gallery_pids.len();
    let k = top.min(ng);
    let mut out = Vec::with_capacity(query_pids.len());
    similarity_blocks(
        queries,
        gallery,
        query_pids,
        gallery_pids,
        |block, positions| {
            let (values, indices) = block.tensor.topk(k as i64, 1, true, true);
            let values = Vec::<f64>::try_from(values.to_kind(Kind::Double).reshape([-1]))?;
            let indices = Vec::<i64>::try_from(indices.reshape([-1]))?;
            out.par_extend(
                block
                    .values
                    .par_chunks(ng)
                    .zip(block.pids.par_iter())
                    .enumerate()
                    .map(|(r, (row, pid))| {
                        let matches = positions.get(pid)?;
                        let best = matches
                            .iter()
                            .map(|&j| row[j])
                            .fold(f32::NEG_INFINITY, f32::max);
                        let at_or_above = row.iter().filter(|&&x| x >= best).count();
                        let tied_matches = matches.iter().filter(|&&j| row[j] == best).count();
                        let top = (0..k)
                            .map(|c| (indices[r * k + c] as usize, values[r * k + c]))
                            .collect();
                        Some(QueryOutcome {
                            first_match: at_or_above - tied_matches + 1,
                            top,
                        })
                    }),
            );
            Ok(())
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::metrics::evaluate;
    use tch::Device;

    #[test]
    fn shares_of_first_ranks_are_the_protocol_recalls() {
        tch::manual_seed(3);
        let q = Tensor::randn([200, 8], (Kind::Float, Device::Cpu));
        let g = Tensor::randn([90, 8], (Kind::Float, Device::Cpu));
        let qp: Vec<i64> = (0..200).map(|i| i % 35).collect();
        let gp: Vec<i64> = (0..90).map(|i| i % 30).collect();
        let m = evaluate(&q, &g, &qp, &gp).unwrap();
        let out = query_outcomes(&q, &g, &qp, &gp, 10).unwrap();
        let scored: Vec<&QueryOutcome> = out.iter().flatten().collect();
        assert_eq!(
            (scored.len(), out.len() - scored.len()),
            (m.num_queries, m.excluded)
        );
        for (k, want) in [(1, m.r1), (5, m.r5), (10, m.r10)] {
            let hits = scored.iter().filter(|o| o.first_match <= k).count();
            assert!((100.0 * hits as f64 / scored.len() as f64 - want).abs() < 1e-9);
        }
        assert!(
            out[30].is_none() && out[0].is_some(),
            "pids 30..35 are absent"
        );
        assert!(scored.iter().all(|o| o.top.len() == 10));
    }

    #[test]
    fn ties_count_against_the_query_and_top_is_best_first() {
        // Similarities 1, 0.5, 0.5, 0 to the query along the x axis; the match (pid 4) is row 2,
        // tied with the non-match row 1, which ranks before it.
        let g = Tensor::from_slice(&[
            1f32,
            0.,
            0.5,
            0.75f32.sqrt(),
            0.5,
            -(0.75f32.sqrt()),
            0.,
            1.,
        ])
        .view([4, 2]);
        let q = Tensor::from_slice(&[2f32, 0.]).view([1, 2]);
        let out = query_outcomes(&q, &g, &[4], &[1, 2, 4, 3], 3).unwrap();
        let o = out[0].as_ref().unwrap();
        assert_eq!(o.first_match, 3);
        assert_eq!(o.top[0].0, 0);
        assert!((o.top[0].1 - 1.0).abs() < 1e-6 && (o.top[2].1 - 0.5).abs() < 1e-6);
        // A match at the top takes rank 1; two tied matches behind a non-match, rank 2.
        let out = query_outcomes(&q, &g, &[4], &[4, 2, 2, 4], 2).unwrap();
        assert_eq!(out[0].as_ref().unwrap().first_match, 1);
        let out = query_outcomes(&q, &g, &[2], &[4, 2, 2, 4], 2).unwrap();
        assert_eq!(out[0].as_ref().unwrap().first_match, 2);
    }
}
