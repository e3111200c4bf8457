//! Each query's own outcome under the retrieval protocol: the rank of its first true match and its
//! best gallery items, what a failure analysis shows query by query. Ranks follow the tie rule of
//! [`super::metrics`]: a non-match with the same similarity as a match ranks before it, so the
//! share of queries whose first match has rank 1 (5, 10) is that module's R@1 (R@5, R@10).
use crate::model::layers::l2_normalize;
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// One query's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutcome {
    /// 1-based rank of its best-ranked true match: one more than the non-matches at or above it.
    pub first_match: usize,
    /// Its best gallery rows, best first: (row, cosine similarity).
    pub top: Vec<(usize, f64)>,
}

/// Upper bound on the elements of one similarity block `[chunk, Ng]` (f32: 32 MiB).
const BLOCK_ELEMENTS: i64 = 1 << 23;

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
    let (nq, ng) = (queries.size()[0], gallery.size()[0]);
    if nq as usize != query_pids.len() || ng as usize != gallery_pids.len() {
        bail!(
            "{nq} queries with {} pids, {ng} gallery items with {} pids",
            query_pids.len(),
            gallery_pids.len()
        );
    }
    if ng == 0 {
        bail!("an empty gallery: nothing to rank");
    }
    let mut positions: HashMap<i64, Vec<usize>> = HashMap::new();
    for (j, &pid) in gallery_pids.iter().enumerate() {
        positions.entry(pid).or_default().push(j);
    }
    let device = gallery.device();
    let gallery_t = l2_normalize(gallery).tr().contiguous(); // [D, Ng]
    let q = l2_normalize(&queries.to_device(device));
    let k = top.min(ng as usize) as i64;
    let chunk = (BLOCK_ELEMENTS / ng).max(1);
    let mut out = Vec::with_capacity(nq as usize);
    let mut start = 0i64;
    while start < nq {
        let len = chunk.min(nq - start);
        let block = q
            .narrow(0, start, len)
            .mm(&gallery_t)
            .to_device(Device::Cpu)
            .contiguous(); // [len, Ng]
        let (values, indices) = block.topk(k, 1, true, true);
        let values = Vec::<f64>::try_from(values.to_kind(Kind::Double).reshape([-1]))?;
        let indices = Vec::<i64>::try_from(indices.reshape([-1]))?;
        let sim = Vec::<f32>::try_from(block.reshape([-1]))?;
        let pids = &query_pids[start as usize..(start + len) as usize];
        let k = k as usize;
        out.par_extend(
            sim.par_chunks(ng as usize)
                .zip(pids.par_iter())
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
        start += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::metrics::evaluate;

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
