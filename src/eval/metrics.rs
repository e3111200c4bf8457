//! The retrieval protocol (METHOD.md section 4): CMC R@1/5/10, mAP and mINP, all x100.
//!
//! Only the ranks of each query's true matches are needed: with the 0-based ranks
//! `r_1 < ... < r_P` of its `P` matches, `R@k` is `r_1 < k`, `AP = mean_m m / (r_m + 1)` and
//! `INP = P / (r_P + 1)`. Queries are processed in chunks: one similarity block
//! `[chunk, Ng]` at a time, the match similarities taken out with `topk`, and each match's rank
//! counted as the number of gallery items with a strictly greater similarity, in one pass over
//! the row (a binary search of each item among the sorted matches, then a histogram). Neither a
//! full sort nor the whole `Nq x Ng` matrix is ever built. Ties: an item with exactly the same similarity
//! as a match ranks after it (with float features exact ties have probability zero); tied matches
//! take consecutive ranks.
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// Protocol results; rates in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalMetrics {
    pub r1: f64,
    pub r5: f64,
    pub r10: f64,
    pub map: f64,
    pub minp: f64,
    /// Queries scored.
    pub num_queries: usize,
    /// Queries left out because no gallery item has their pid.
    pub excluded: usize,
}

/// Upper bound on the elements of one similarity block `[chunk, Ng]` (f32 plus an i64 bin each).
const BLOCK_ELEMENTS: i64 = 1 << 23;

/// L2-normalises the rows of `x` [N, D] (f32).
fn normalise(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Float);
    &x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

/// Scores `queries` [Nq, D] against `gallery` [Ng, D] (f32, any device; both L2-normalised
/// here). `query_pids` [Nq] and `gallery_pids` [Ng] decide the matches. Queries whose pid is not
/// in the gallery are excluded and counted (with a warning).
pub fn evaluate(
    queries: &Tensor,
    gallery: &Tensor,
    query_pids: &[i64],
    gallery_pids: &[i64],
) -> Result<RetrievalMetrics> {
    let (nq, ng) = (queries.size()[0], gallery.size()[0]);
    if nq as usize != query_pids.len() || ng as usize != gallery_pids.len() {
        bail!(
            "{nq} queries with {} pids, {ng} gallery items with {} pids",
            query_pids.len(),
            gallery_pids.len()
        );
    }
    if nq == 0 || ng == 0 {
        bail!("nothing to evaluate: {nq} queries, {ng} gallery items");
    }
    let device = gallery.device();
    let g = normalise(gallery);
    let q = normalise(&queries.to_device(device));
    let gp = Tensor::from_slice(gallery_pids).to_device(device);
    let qp = Tensor::from_slice(query_pids).to_device(device);
    let chunk = (BLOCK_ELEMENTS / ng).clamp(1, 4096);
    let (mut r1, mut r5, mut r10, mut ap, mut inp) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let mut scored = 0usize;
    let mut start = 0i64;
    while start < nq {
        let len = chunk.min(nq - start);
        let sim = q.narrow(0, start, len).matmul(&g.tr()); // [c, Ng]
        let is_match = qp
            .narrow(0, start, len)
            .unsqueeze(1)
            .eq_tensor(&gp.unsqueeze(0)); // [c, Ng]
        let n_match: Vec<i64> =
            Vec::<i64>::try_from(is_match.sum_dim_intlist([1i64].as_slice(), false, Kind::Int64))?;
        let p = n_match.iter().copied().max().unwrap_or(0).max(1);
        // Match similarities in descending order; non-matches pushed to -inf (ignored below).
        let (match_sim, _) = sim
            .masked_fill(&is_match.logical_not(), f64::NEG_INFINITY)
            .topk(p, 1, true, true);
        // Count, in one pass over the row, how many gallery items beat each match: every item
        // is binned by how many matches lie strictly below it; the items above the m-th
        // smallest match are those in bins m+1 and higher.
        let ascending = match_sim.flip([1]); // -inf padding first
        let bins = sim.searchsorted(&ascending, false, false, "left", None::<Tensor>); // [c, Ng] in 0..=p
        let counts = Tensor::zeros([len, p + 1], (Kind::Int64, sim.device())).scatter_add(
            1,
            &bins,
            &Tensor::ones_like(&bins),
        );
        let above = counts.flip([1]).cumsum(1, Kind::Int64).flip([1]); // above[k] = items in bins >= k
        let greater = above.narrow(1, 1, p).flip([1]); // [c, p], matches in descending order
        let greater: Vec<i64> = Vec::<i64>::try_from(greater.reshape([-1]))?;
        for (i, &n) in n_match.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let mut prev = -1i64;
            let mut ap_sum = 0.0;
            for m in 0..n as usize {
                let rank = greater[i * p as usize + m].max(prev + 1); // 0-based
                ap_sum += (m + 1) as f64 / (rank + 1) as f64;
                if m == 0 {
                    r1 += (rank < 1) as u8 as f64;
                    r5 += (rank < 5) as u8 as f64;
                    r10 += (rank < 10) as u8 as f64;
                }
                prev = rank;
            }
            ap += ap_sum / n as f64;
            inp += n as f64 / (prev + 1) as f64;
            scored += 1;
        }
        start += len;
    }
    let excluded = nq as usize - scored;
    if excluded > 0 {
        tracing::warn!("{excluded} of {nq} queries have no match in the gallery (pid absent): excluded from every metric");
    }
    if scored == 0 {
        bail!("no query has a match in the gallery: no query pid occurs among the gallery pids");
    }
    let pct = |x: f64| 100.0 * x / scored as f64;
    Ok(RetrievalMetrics {
        r1: pct(r1),
        r5: pct(r5),
        r10: pct(r10),
        map: pct(ap),
        minp: pct(inp),
        num_queries: scored,
        excluded,
    })
}

/// The metrics as `{"R1":..,"R5":..,"R10":..,"mAP":..,"mINP":..}` (plus `excluded` when nonzero).
pub fn to_json(m: &RetrievalMetrics) -> serde_json::Value {
    let mut v =
        serde_json::json!({ "R1": m.r1, "R5": m.r5, "R10": m.r10, "mAP": m.map, "mINP": m.minp });
    if m.excluded > 0 {
        v["excluded"] = serde_json::json!(m.excluded);
    }
    v
}

/// The `task R1 R5 R10 mAP mINP` table, 3 decimals.
pub fn table(rows: &[(&str, &RetrievalMetrics)]) -> String {
    let mut t = prettytable::Table::new();
    t.set_titles(prettytable::row!["task", "R1", "R5", "R10", "mAP", "mINP"]);
    for (task, m) in rows {
        t.add_row(prettytable::row![
            task,
            format!("{:.3}", m.r1),
            format!("{:.3}", m.r5),
            format!("{:.3}", m.r10),
            format!("{:.3}", m.map),
            format!("{:.3}", m.minp)
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queries and gallery as 2-d unit vectors at given angles: similarity = cos(difference).
    fn at(angles: &[f64]) -> Tensor {
        let v: Vec<f32> = angles
            .iter()
            .flat_map(|a| [a.cos() as f32, a.sin() as f32])
            .collect();
        Tensor::from_slice(&v).view([angles.len() as i64, 2])
    }

    #[test]
    fn hand_computed_case() {
        // One query at angle 0; gallery at 0.1 (pid 2), 0.2 (pid 1), 0.3 (pid 2), 0.4 (pid 1), 0.5 (pid 3).
        // Ranks of pid 1's matches: 1 and 3 (0-based). AP = (1/2 + 2/4) / 2 = 0.5; INP = 2/4.
        let g = at(&[0.1, 0.2, 0.3, 0.4, 0.5]);
        let m = evaluate(&at(&[0.0]), &g, &[1], &[2, 1, 2, 1, 3]).unwrap();
        assert_eq!((m.r1, m.r5, m.r10), (0.0, 100.0, 100.0));
        assert!(
            (m.map - 50.0).abs() < 1e-9 && (m.minp - 50.0).abs() < 1e-9,
            "{m:?}"
        );
        // A second query whose match is first; a third whose pid is absent.
        let m = evaluate(&at(&[0.0, 0.5, 1.0]), &g, &[1, 3, 9], &[2, 1, 2, 1, 3]).unwrap();
        assert_eq!((m.num_queries, m.excluded), (2, 1));
        assert!(
            (m.r1 - 50.0).abs() < 1e-9
                && (m.map - 75.0).abs() < 1e-9
                && (m.minp - 75.0).abs() < 1e-9,
            "{m:?}"
        );
    }

    #[test]
    fn tied_matches_take_consecutive_ranks() {
        // Two identical gallery matches first: AP = (1/1 + 2/2)/2 = 1.
        let m = evaluate(&at(&[0.0]), &at(&[0.1, 0.1, 0.7]), &[4], &[4, 4, 5]).unwrap();
        assert_eq!((m.r1, m.map, m.minp), (100.0, 100.0, 100.0));
    }

    #[test]
    fn chunking_does_not_change_results() {
        tch::manual_seed(0);
        let q = Tensor::randn([300, 16], (Kind::Float, tch::Device::Cpu));
        let g = Tensor::randn([200, 16], (Kind::Float, tch::Device::Cpu));
        let qp: Vec<i64> = (0..300).map(|i| i % 50).collect();
        let gp: Vec<i64> = (0..200).map(|i| i % 60).collect();
        let all = evaluate(&q, &g, &qp, &gp).unwrap();
        let parts: Vec<RetrievalMetrics> = [(0, 100), (100, 200), (200, 300)]
            .iter()
            .map(|&(a, b)| {
                evaluate(&q.narrow(0, a, b - a), &g, &qp[a as usize..b as usize], &gp).unwrap()
            })
            .collect();
        let mean = |f: fn(&RetrievalMetrics) -> f64| parts.iter().map(f).sum::<f64>() / 3.0;
        assert!(
            (all.map - mean(|m| m.map)).abs() < 1e-9 && (all.minp - mean(|m| m.minp)).abs() < 1e-9
        );
        assert!((all.r1 - mean(|m| m.r1)).abs() < 1e-9);
    }

    #[test]
    fn bad_shapes_and_no_matches_are_errors() {
        let g = at(&[0.1]);
        assert!(evaluate(&at(&[0.0]), &g, &[1, 2], &[1]).is_err());
        let e = evaluate(&at(&[0.0]), &g, &[5], &[1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no query has a match"), "{e}");
    }
}
