//! The paired bootstrap over queries: how much of a difference between two evaluations of the
//! same queries is resampling noise.
//!
//! Each resample draws `n` query indices with replacement, the same for both evaluations, and
//! takes each metric's difference of means over them. The indices come from PCG64 (PCG XSL RR
//! 128/64, the generator of `rand_pcg::Pcg64` and of numpy's `PCG64`) made by
//! `Pcg64::new(seed, STREAM)`; each index is `floor(u * n / 2^64)` of the next 64-bit output `u`,
//! resample after resample, so any other implementation can draw the very same resamples. The
//! interval is the 2.5th to 97.5th percentile of the resampled differences, by the
//! median-unbiased rule (Hyndman and Fan's type 8, numpy's `method="median_unbiased"`).
use super::metrics::{QueryScore, RetrievalMetrics};
use anyhow::Result;
use rand::RngCore;
use statrs::statistics::{Data, OrderStatistics};

/// The stream `Pcg64::new` is given (PCG's default stream, as `rand_pcg` documents it).
pub const STREAM: u128 = 0x0a02_bdbf_7bb3_c0a7_ac28_fa16_a64a_bf96;

/// A metric's name and its value for one query.
pub type Metric = (&'static str, fn(&QueryScore) -> f64);

/// The metrics, each with its per-query value in percent (R@k: 100 for a hit, else 0).
pub const METRICS: [Metric; 5] = [
    ("R1", |q| 100.0 * q.hit(1) as u8 as f64),
    ("R5", |q| 100.0 * q.hit(5) as u8 as f64),
    ("R10", |q| 100.0 * q.hit(10) as u8 as f64),
    ("mAP", |q| 100.0 * q.ap),
    ("mINP", |q| 100.0 * q.inp),
];

/// One metric's B - A with its 95% interval, in points.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Difference {
    pub metric: &'static str,
    #[serde(rename = "A")]
    pub a: f64,
    #[serde(rename = "B")]
    pub b: f64,
    /// B - A.
    pub diff: f64,
    pub low: f64,
    pub high: f64,
}

impl Difference {
    /// Whether the interval lies wholly on one side of 0.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// The resample indices in [0, n) drawn by `rng`, `n` of them.
fn resample(rng: &mut rand_pcg::Pcg64, n: usize, out: &mut Vec<usize>) {
    out.clear();
    out.extend((0..n).map(|_| ((rng.next_u64() as u128 * n as u128) >> 64) as usize));
}

/// Each metric's difference B - A between the scores `a` and `b` of the same `n` queries (in the
/// same order), with the 95% interval of `resamples` paired resamples drawn from `seed`. The
/// differences are those of [`RetrievalMetrics::from_scores`]; -0 is written as 0.
pub fn paired_bootstrap(
    a: &[QueryScore],
    b: &[QueryScore],
    resamples: usize,
    seed: u64,
) -> Result<Vec<Difference>> {
    anyhow::ensure!(
        a.len() == b.len() && !a.is_empty() && resamples > 0,
        "paired bootstrap of {} and {} queries with {resamples} resamples",
        a.len(),
        b.len()
    );
    let n = a.len();
    let (ma, mb) = (
        RetrievalMetrics::from_scores(a.iter().copied().map(Some))?,
        RetrievalMetrics::from_scores(b.iter().copied().map(Some))?,
    );
    let at = |m: &RetrievalMetrics, k: usize| [m.r1, m.r5, m.r10, m.map, m.minp][k];
    // Per metric, each query's B - A.
    let deltas: Vec<Vec<f64>> = METRICS
        .iter()
        .map(|(_, value)| {
            a.iter()
                .zip(b)
                .map(|(qa, qb)| value(qb) - value(qa))
                .collect()
        })
        .collect();
    let mut stats = vec![Vec::with_capacity(resamples); METRICS.len()];
    let mut rng = rand_pcg::Pcg64::new(seed as u128, STREAM);
    let mut idx = Vec::with_capacity(n);
    let bar = crate::report::progress::bar(resamples, "{msg} [{bar:30}] {pos}/{len} eta {eta}");
    bar.set_message("resamples");
    for _ in 0..resamples {
        resample(&mut rng, n, &mut idx);
        for (d, s) in deltas.iter().zip(stats.iter_mut()) {
            s.push(idx.iter().map(|&i| d[i]).sum::<f64>() / n as f64);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(METRICS
        .iter()
        .zip(stats)
        .enumerate()
        .map(|(k, ((metric, _), s))| {
            let mut data = Data::new(s);
            Difference {
                metric,
                a: at(&ma, k),
                b: at(&mb, k),
                diff: at(&mb, k) - at(&ma, k) + 0.0,
                low: data.quantile(0.025) + 0.0,
                high: data.quantile(0.975) + 0.0,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(ranks: &[u64]) -> Vec<QueryScore> {
        ranks
            .iter()
            .map(|&rank| QueryScore {
                rank,
                ap: 1.0 / rank as f64,
                inp: 0.5 / rank as f64,
            })
            .collect()
    }

    #[test]
    fn the_same_scores_differ_by_zero_with_a_zero_interval() {
        let a = scores(&[1, 3, 7, 12, 2]);
        for d in paired_bootstrap(&a, &a, 200, 5).unwrap() {
            assert_eq!((d.diff, d.low, d.high), (0.0, 0.0, 0.0), "{d:?}");
            assert!(!d.excludes_zero());
            assert_eq!(d.diff.to_string(), "0");
        }
    }

    #[test]
    fn a_uniform_gain_is_found_and_resamples_follow_the_seed() {
        // B ranks every query first, A none: R@1 +100 on every resample.
        let (a, b) = (scores(&[2; 40]), scores(&[1; 40]));
        let d = paired_bootstrap(&a, &b, 100, 0).unwrap();
        assert_eq!(
            (d[0].metric, d[0].diff, d[0].low, d[0].high),
            ("R1", 100.0, 100.0, 100.0)
        );
        assert!(d[0].excludes_zero());
        assert_eq!(d[1].diff, 0.0, "R@5 is a hit for both");
        // Mixed ranks: the interval moves with the seed, and is the same for the same seed.
        let a = scores(&(1..=40).collect::<Vec<_>>());
        let b = scores(&(1..=40).rev().collect::<Vec<_>>());
        let one = paired_bootstrap(&a, &b, 100, 1).unwrap();
        assert_eq!(one, paired_bootstrap(&a, &b, 100, 1).unwrap());
        assert_ne!(one, paired_bootstrap(&a, &b, 100, 2).unwrap());
    }
}
