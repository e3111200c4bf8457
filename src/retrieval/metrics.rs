//! The retrieval protocol (METHOD.md section 4): CMC R@1/5/10, mAP and mINP, all x100.
//!
//! Only the ranks of each query's true matches are needed: with the 0-based ranks
//! `r_1 < ... < r_P` of its `P` matches, `R@k` is `r_1 < k`, `AP = mean_m m / (r_m + 1)` and
//! `INP = P / (r_P + 1)`. Queries are processed in chunks: one similarity block `[chunk, Ng]`
//! at a time comes from a matrix product, then each of its rows is scored on the CPU (rows in
//! parallel): the match similarities are gathered from the gallery positions of the query's pid
//! and sorted, and a match's rank comes from the number of items at or above it, counted with one
//! vectorised pass over the row per match (or, for a query with many matches, one pass that bins
//! every item by how many matches lie at or below it). Neither a full sort nor the whole
//! `Nq x Ng` matrix is ever built. Ties count against the query: an item that is not a match
//! and has exactly the same similarity as a match ranks before it, so a model whose features are
//! all equal scores the worst, not 100; tied matches take consecutive ranks among themselves.
use crate::model::layers::l2_normalize;
use crate::UsageError;
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Tensor};

/// Protocol results; rates in percent. Written as `{"R1", "R5", "R10", "mAP", "mINP"}` (plus
/// `excluded` when nonzero).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetrievalMetrics {
    #[serde(rename = "R1")]
    pub r1: f64,
    #[serde(rename = "R5")]
    pub r5: f64,
    #[serde(rename = "R10")]
    pub r10: f64,
    #[serde(rename = "mAP")]
    pub map: f64,
    #[serde(rename = "mINP")]
    pub minp: f64,
    /// Queries scored.
    #[serde(skip)]
    pub num_queries: usize,
    /// Queries left out because no gallery item has their pid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub excluded: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Upper bound on the elements of one similarity block `[chunk, Ng]` (f32: 32 MiB).
const BLOCK_ELEMENTS: i64 = 1 << 23;

/// One query's protocol values: the 1-based rank of its first true match and its AP and INP
/// (fractions, not percent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryScore {
    pub rank: u64,
    pub ap: f64,
    pub inp: f64,
}

impl QueryScore {
    /// Whether a true match is among the first `k` items.
    pub fn hit(&self, k: u64) -> bool {
        self.rank <= k
    }
}

/// Up to this many matches, a query's ranks come from one vectorised counting pass over its row
/// per match; above it, from one binning pass with a binary search per item.
const COUNTING_MAX_MATCHES: usize = 48;

/// For each match similarity of `descending` [P] (sorted, highest first), the number of items of
/// `row` [Ng] at or above it (the match itself included).
fn items_at_or_above(row: &[f32], descending: &[f32]) -> Vec<u64> {
    let p = descending.len();
    if p <= COUNTING_MAX_MATCHES {
        // Tiles of the row small enough to stay in the L1 cache across the P passes.
        let mut at_or_above = vec![0u64; p];
        for tile in row.chunks(2048) {
            for (a, &s) in at_or_above.iter_mut().zip(descending) {
                *a += count_at_or_above(tile, s);
            }
        }
        return at_or_above;
    }
    // bins[k]: items with exactly k matches at or below them. Items at or above the m-th match
    // are those with at least p - m matches at or below them.
    let mut bins = vec![0u64; p + 1];
    let lowest = descending[p - 1];
    for &x in row {
        if x >= lowest {
            bins[p - descending.partition_point(|&s| s > x)] += 1;
        }
    }
    let mut at_or_above = 0;
    (0..p)
        .map(|m| {
            at_or_above += bins[p - m];
            at_or_above
        })
        .collect()
}

/// The number of items of `row` at or above `s`, with the widest vector unit the CPU has.
fn count_at_or_above(row: &[f32], s: f32) -> u64 {
    #[inline(always)]
    fn count(row: &[f32], s: f32) -> u64 {
        row.iter().map(|&x| (x >= s) as u32).sum::<u32>() as u64
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn count_avx512(row: &[f32], s: f32) -> u64 {
            count(row, s)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn count_avx2(row: &[f32], s: f32) -> u64 {
            count(row, s)
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { count_avx512(row, s) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { count_avx2(row, s) };
        }
    }
    count(row, s)
}

/// One query's values from its similarity `row` [Ng] and the gallery positions of its matches
/// (`matches`, non-empty).
fn score_row(row: &[f32], matches: &[usize]) -> QueryScore {
    let mut descending: Vec<f32> = matches.iter().map(|&j| row[j]).collect();
    descending.sort_unstable_by(|a, b| b.total_cmp(a));
    let p = descending.len();
    // 0-based ranks, from the lowest match up: a match ranks after every other item at or above
    // it (rank = count - 1), except that tied matches take consecutive ranks ending there.
    let mut ranks = items_at_or_above(row, &descending);
    let mut next = u64::MAX;
    for r in ranks.iter_mut().rev() {
        next = (*r - 1).min(next - 1);
        *r = next;
    }
    let ap: f64 = ranks
        .iter()
        .enumerate()
        .map(|(m, &r)| (m + 1) as f64 / (r + 1) as f64)
        .sum();
    QueryScore {
        rank: ranks[0] + 1,
        ap: ap / p as f64,
        inp: p as f64 / (ranks[p - 1] + 1) as f64,
    }
}

/// Scores `queries` [Nq, D] against `gallery` [Ng, D] (f32, any device; both L2-normalised
/// here). `query_pids` [Nq] and `gallery_pids` [Ng] decide the matches. Queries whose pid is not
/// in the gallery are excluded and counted (with a warning). The metrics are the means of
/// [`score_queries`]'s values, as [`RetrievalMetrics::from_scores`] takes them.
pub fn evaluate(
    queries: &Tensor,
    gallery: &Tensor,
    query_pids: &[i64],
    gallery_pids: &[i64],
) -> Result<RetrievalMetrics> {
    RetrievalMetrics::from_scores(score_queries(queries, gallery, query_pids, gallery_pids)?)
}

/// One block of whole rows of a query-by-gallery similarity matrix.
pub struct SimilarityBlock<'a> {
    /// The block [len, Ng] (CPU, f32, contiguous).
    pub tensor: &'a Tensor,
    /// Its `len * Ng` cosine similarities, row after row.
    pub values: &'a [f32],
    /// The pids of its queries [len].
    pub pids: &'a [i64],
}

/// The gallery positions of each pid.
pub type Positions = HashMap<i64, Vec<usize>>;

/// Walks the cosine similarities of `queries` [Nq, D] to `gallery` [Ng, D] (f32, any device; both
/// L2-normalised here) in blocks of whole rows (32 MiB, 4,096 rows at most), in query order,
/// handing `visit` each block with the gallery positions of every pid of `gallery_pids` [Ng]
/// (its error ends the walk).
/// `query_pids` [Nq] and `gallery_pids` must fit the rows; an empty gallery is refused.
pub fn similarity_blocks(
    queries: &Tensor,
    gallery: &Tensor,
    query_pids: &[i64],
    gallery_pids: &[i64],
    mut visit: impl FnMut(SimilarityBlock, &Positions) -> Result<()>,
) -> Result<()> {
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
    let mut positions = Positions::new();
    for (j, &pid) in gallery_pids.iter().enumerate() {
        positions.entry(pid).or_default().push(j);
    }
    let device = gallery.device();
    let gallery_t = l2_normalize(gallery).tr().contiguous(); // [D, Ng]
    let q = l2_normalize(&queries.to_device(device));
    let chunk = (BLOCK_ELEMENTS / ng).clamp(1, 4096);
    let mut start = 0i64;
    while start < nq {
        let len = chunk.min(nq - start);
        let block = q
            .narrow(0, start, len)
            .mm(&gallery_t)
            .to_device(Device::Cpu)
            .contiguous(); // [len, Ng]
                           // SAFETY: `block` is a contiguous CPU f32 tensor of len * ng elements that outlives this
                           // borrow and is not written while it is read.
        let values = unsafe {
            std::slice::from_raw_parts(block.data_ptr() as *const f32, (len * ng) as usize)
        };
        let pids = &query_pids[start as usize..(start + len) as usize];
        visit(
            SimilarityBlock {
                tensor: &block,
                values,
                pids,
            },
            &positions,
        )?;
        start += len;
    }
    Ok(())
}

/// Each query's values, in query order: `queries` [Nq, D] against `gallery` [Ng, D] (f32, any
/// device; both L2-normalised here), matched by `query_pids` [Nq] and `gallery_pids` [Ng]; `None`
/// for a query whose pid is not in the gallery.
pub fn score_queries(
    queries: &Tensor,
    gallery: &Tensor,
    query_pids: &[i64],
    gallery_pids: &[i64],
) -> Result<Vec<Option<QueryScore>>> {
    let (nq, ng) = (queries.size()[0], gallery.size()[0]);
    if nq == 0 || ng == 0 {
        bail!("nothing to evaluate: {nq} queries, {ng} gallery items");
    }
    let mut scores = Vec::with_capacity(nq as usize);
    let clock = std::time::Instant::now();
    let mut ranking_s = 0f64;
    similarity_blocks(
        queries,
        gallery,
        query_pids,
        gallery_pids,
        |block, positions| {
            let ranking = std::time::Instant::now();
            let mut block_scores = Vec::with_capacity(block.pids.len());
            block
                .values
                .par_chunks(ng as usize)
                .zip(block.pids.par_iter())
                .map(|(row, pid)| positions.get(pid).map(|m| score_row(row, m)))
                .collect_into_vec(&mut block_scores);
            scores.append(&mut block_scores);
            ranking_s += ranking.elapsed().as_secs_f64();
            Ok(())
        },
    )?;
    let product_s = clock.elapsed().as_secs_f64() - ranking_s;
    tracing::debug!("{nq} x {ng}: similarity products {product_s:.3} s, ranking {ranking_s:.3} s");
    Ok(scores)
}

impl RetrievalMetrics {
    /// The protocol's means (in percent) of per-query `scores`, summed in query order; a `None`
    /// (a query whose pid is not in the gallery) is excluded and counted, with a warning.
    pub fn from_scores(scores: impl IntoIterator<Item = Option<QueryScore>>) -> Result<Self> {
        let (mut hits, mut ap, mut inp) = ([0u64; 3], 0f64, 0f64);
        let (mut queries, mut excluded) = (0usize, 0usize);
        for s in scores {
            let Some(s) = s else {
                excluded += 1;
                continue;
            };
            for (h, k) in hits.iter_mut().zip([1, 5, 10]) {
                *h += s.hit(k) as u64;
            }
            ap += s.ap;
            inp += s.inp;
            queries += 1;
        }
        if excluded > 0 {
            tracing::warn!("{excluded} of {} queries have no match in the gallery (pid absent): excluded from every metric", queries + excluded);
        }
        if queries == 0 {
            bail!(
                "no query has a match in the gallery: no query pid occurs among the gallery pids"
            );
        }
        let pct = |x: f64| 100.0 * x / queries as f64;
        Ok(RetrievalMetrics {
            r1: pct(hits[0] as f64),
            r5: pct(hits[1] as f64),
            r10: pct(hits[2] as f64),
            map: pct(ap),
            minp: pct(inp),
            num_queries: queries,
            excluded,
        })
    }
}

/// One line of a per-query file (JSON lines): `{"query": 0, "caption": "a man in red", "pid": 7,
/// "rank": 3, "AP": 0.5, "INP": 0.25}`: the query's 0-based index in its split, its caption and
/// person id, the 1-based rank of its first true match, its AP and INP (fractions). The metrics
/// reported with such a file are [`RetrievalMetrics::from_scores`] of its records, in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRecord {
    pub query: usize,
    pub caption: String,
    pub pid: i64,
    pub rank: u64,
    #[serde(rename = "AP")]
    pub ap: f64,
    #[serde(rename = "INP")]
    pub inp: f64,
}

impl QueryRecord {
    /// Why this record contradicts itself, or the size `gallery` of the gallery it was ranked in
    /// (when known), under the protocol: `None` when it does not. With its first true match at
    /// rank r of G items and m true matches (m <= G - r + 1): 1 <= r <= G; AP and INP in (0, 1],
    /// and below 1 when r > 1 (a miss precedes the first match); AP >= 1 / (r (G - r + 1)) (the
    /// first match alone adds 1/r to m precisions); INP >= 1 / G.
    pub fn contradiction(&self, gallery: Option<u64>) -> Option<String> {
        let (r, ap, inp) = (self.rank, self.ap, self.inp);
        let unit = |v: f64| v > 0.0 && v <= 1.0;
        if r == 0 || !unit(ap) || !unit(inp) {
            return Some("expected rank >= 1, AP and INP in (0, 1]".into());
        }
        if r > 1 && (ap >= 1.0 || inp >= 1.0) {
            return Some(format!(
                "AP and INP are 1 only when the first match is at rank 1, not {r}"
            ));
        }
        let g = gallery?;
        if r > g {
            return Some(format!("rank beyond the {g} gallery items"));
        }
        // A relative margin for the rounding of the sums that gave AP and INP.
        let least = |bound: f64| bound * (1.0 - 1e-9);
        if ap < least(1.0 / (r as f64 * (g - r + 1) as f64)) {
            return Some(format!(
                "AP below 1 / (rank x matches) for any number of matches in {g} gallery items"
            ));
        }
        if inp < least(1.0 / g as f64) {
            return Some(format!(
                "INP below 1 / {g}, the least for {g} gallery items"
            ));
        }
        None
    }

    pub fn score(&self) -> QueryScore {
        QueryScore {
            rank: self.rank,
            ap: self.ap,
            inp: self.inp,
        }
    }
}

/// The largest per-query file read: 256 MiB, far above a benchmark's (CUHK-PEDES's 6,156 test
/// queries take under 1 MiB).
pub const MAX_QUERY_FILE_BYTES: u64 = 256 << 20;

/// Writes `records` to `path` as JSON lines, atomically (floats in their shortest exact form).
pub fn write_query_records(path: &Path, records: &[QueryRecord]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    crate::io::write_atomic(path, text.as_bytes())
}

/// The records of a per-query file, each checked: queries numbered in increasing order, none
/// contradicting itself or the size `gallery` of the gallery it was ranked in, when known
/// ([`QueryRecord::contradiction`]). Errors are usage errors naming the file and line.
pub fn read_query_records(path: &Path, gallery: Option<u64>) -> Result<Vec<QueryRecord>> {
    let text = crate::io::text::read_text(path, "per-query file", MAX_QUERY_FILE_BYTES)?;
    let mut records: Vec<QueryRecord> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |m: String| UsageError(format!("{} line {}: {m}", path.display(), i + 1));
        if line.trim().is_empty() {
            continue;
        }
        let r: QueryRecord = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "{e} (expected {{\"query\", \"caption\", \"pid\", \"rank\", \"AP\", \"INP\"}})"
            ))
        })?;
        if records.last().is_some_and(|last| last.query >= r.query) {
            bail!(bad(format!(
                "query {} does not follow query {} (expected increasing query numbers)",
                r.query,
                records[records.len() - 1].query
            )));
        }
        if let Some(why) = r.contradiction(gallery) {
            bail!(bad(format!(
                "rank {}, AP {}, INP {}: {why}",
                r.rank, r.ap, r.inp
            )));
        }
        records.push(r);
    }
    if records.is_empty() {
        bail!(UsageError(format!(
            "per-query file {} has no records",
            path.display()
        )));
    }
    Ok(records)
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
    use tch::Kind;

    /// Queries and gallery as 2-d unit vectors at given angles: similarity = cos(difference).
    fn at(angles: &[f64]) -> Tensor {
        let v: Vec<f32> = angles
            .iter()
            .flat_map(|a| [a.cos() as f32, a.sin() as f32])
            .collect();
        Tensor::from_slice(&v).view([angles.len() as i64, 2])
    }

    /// The bounds by hand, in a gallery of 10: the first match at rank 1 of ten matches, every one
    /// of them at the top, gives AP = 1 and INP = 1; at rank 1 with the other nine at the bottom
    /// the least AP is 1/10 (1/r over m = 10 matches); at rank 4 at most 7 matches fit, so AP is
    /// at least 1 / (4 x 7).
    #[test]
    fn contradictions_are_the_protocols_bounds() {
        let rec = |rank: u64, ap: f64, inp: f64| QueryRecord {
            query: 0,
            caption: String::new(),
            pid: 1,
            rank,
            ap,
            inp,
        };
        assert_eq!(rec(1, 1.0, 1.0).contradiction(Some(10)), None);
        assert_eq!(rec(1, 0.1, 0.1).contradiction(Some(10)), None);
        assert!(rec(1, 0.099, 0.1).contradiction(Some(10)).is_some());
        assert_eq!(rec(4, 1.0 / 28.0, 0.1).contradiction(Some(10)), None);
        assert!(rec(4, 1.0 / 29.0, 0.1).contradiction(Some(10)).is_some());
        assert!(rec(4, 0.5, 0.09).contradiction(Some(10)).is_some());
        assert!(rec(11, 0.05, 0.1).contradiction(Some(10)).is_some());
        assert!(rec(2, 1.0, 0.5).contradiction(None).is_some());
        assert_eq!(rec(11, 0.05, 0.1).contradiction(None), None);
        assert!(rec(0, 0.5, 0.5).contradiction(None).is_some());
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
    fn counting_and_binning_agree_with_brute_force() {
        tch::manual_seed(1);
        // Values on a coarse grid, so that items tie with matches and matches with each other.
        let row: Vec<f32> =
            Vec::try_from((Tensor::randn([500], (Kind::Float, tch::Device::Cpu)) * 4.0).round())
                .unwrap();
        for p in [1, 7, COUNTING_MAX_MATCHES, COUNTING_MAX_MATCHES + 1, 200] {
            let mut descending: Vec<f32> = row.iter().step_by(500 / p).take(p).copied().collect();
            descending.sort_unstable_by(|a, b| b.total_cmp(a));
            let brute: Vec<u64> = descending
                .iter()
                .map(|&s| row.iter().filter(|&&x| x >= s).count() as u64)
                .collect();
            assert_eq!(items_at_or_above(&row, &descending), brute, "{p} matches");
        }
    }

    #[test]
    fn tied_matches_take_consecutive_ranks_and_tied_items_rank_first() {
        // Two identical gallery matches first: AP = (1/1 + 2/2)/2 = 1.
        let m = evaluate(&at(&[0.0]), &at(&[0.1, 0.1, 0.7]), &[4], &[4, 4, 5]).unwrap();
        assert_eq!((m.r1, m.map, m.minp), (100.0, 100.0, 100.0));
        // A non-match tied with them ranks before both: ranks 1 and 2, AP = (1/2 + 2/3)/2.
        let m = evaluate(
            &at(&[0.0]),
            &at(&[0.1, 0.1, -0.1, 0.7]),
            &[4],
            &[4, 4, 5, 5],
        )
        .unwrap();
        assert_eq!(m.r1, 0.0);
        assert!(
            (m.map - 100.0 * (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-9,
            "{m:?}"
        );
        assert!((m.minp - 100.0 * 2.0 / 3.0).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn equal_features_score_the_worst_not_the_best() {
        // Every similarity is 0: each query's P matches take the last P of Ng ranks.
        let zeros = Tensor::zeros([4, 8], (Kind::Float, tch::Device::Cpu));
        let m = evaluate(&zeros, &zeros.narrow(0, 0, 4), &[0, 1, 2, 3], &[0, 1, 2, 3]).unwrap();
        assert_eq!((m.r1, m.r5, m.r10), (0.0, 100.0, 100.0));
        assert!(
            (m.map - 25.0).abs() < 1e-9 && (m.minp - 25.0).abs() < 1e-9,
            "{m:?}"
        );
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
