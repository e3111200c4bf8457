//! The consensus clean division of RDE (docs/METHOD.md section 7, CCD) on per-sample losses:
//! min-max normalisation, a two-component Gaussian mixture per embedding, the clean verdict by
//! the posterior of the smaller-mean component, the consensus of two verdicts as weights, and the
//! division's precision and recall against a known clean set. Pure functions of their inputs.
use super::mixture::{FitOptions, Mixture};
use rand::Rng;

/// The mixture's settings (METHOD.md 7): `max_iter 100, tol 1e-4, reg_covar 1e-6` under heavy
/// noise (`noisy_rate > 0.4`) or on RSTPReid, `10, 1e-2, 5e-4` otherwise.
pub fn fit_options(noisy_rate: f64, rstpreid: bool) -> FitOptions {
    match noisy_rate > 0.4 || rstpreid {
        true => FitOptions {
            max_iter: 100,
            tol: 1e-4,
            reg_covar: 1e-6,
        },
        false => FitOptions {
            max_iter: 10,
            tol: 1e-2,
            reg_covar: 5e-4,
        },
    }
}

/// `losses` min-max normalised to `[0, 1]`; `None` when they have no spread (all equal, or
/// fewer than two), or one is not finite.
pub fn normalise(losses: &[f64]) -> Option<Vec<f64>> {
    if losses.iter().any(|l| !l.is_finite()) {
        return None;
    }
    let lo = losses.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = hi - lo;
    (range > 0.0 && range.is_finite()).then(|| losses.iter().map(|l| (l - lo) / range).collect())
}

/// One embedding's verdict on the pairs.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Clean iff the posterior of the smaller-mean component exceeds the threshold ([`split`]).
    Fitted { clean: Vec<bool>, iterations: usize },
    /// The losses had no spread (or were not all finite): the mixture cannot separate them, and
    /// every pair counts as clean.
    NoSpread { pairs: usize },
}

impl Verdict {
    /// Whether pair `i` is clean by this verdict.
    pub fn is_clean(&self, i: usize) -> bool {
        match self {
            Verdict::Fitted { clean, .. } => clean[i],
            Verdict::NoSpread { .. } => true,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Verdict::Fitted { clean, .. } => clean.len(),
            Verdict::NoSpread { pairs } => *pairs,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// In words, for the log: "81.20% clean, 7 EM iterations" or "no spread: all clean".
    pub fn describe(&self) -> String {
        match self {
            Verdict::Fitted { clean, iterations } => format!(
                "{:.2}% clean, {iterations} EM iterations",
                100.0 * clean.iter().filter(|&&c| c).count() as f64 / clean.len().max(1) as f64
            ),
            Verdict::NoSpread { .. } => "losses without spread: all clean".to_string(),
        }
    }
}

/// Clean iff `p > 0.5`; when every `p` exceeds 0.5, the threshold becomes the 1%-quantile of `p`
/// (the value at index `⌊n/100⌋` of the sorted `p`), so that some pairs are held out (RDE's
/// `split_prob`).
pub fn split(p: &[f64]) -> Vec<bool> {
    let mut threshold = 0.5;
    if p.iter().all(|&v| v > threshold) && !p.is_empty() {
        let mut sorted = p.to_vec();
        sorted.sort_by(f64::total_cmp);
        threshold = sorted[p.len() / 100];
    }
    p.iter().map(|&v| v > threshold).collect()
}

/// The verdict of one embedding's per-sample losses: normalised, a mixture fitted from
/// [`Mixture::initial`] with `opts`, [`split`] on the posterior of its smaller-mean component.
pub fn verdict(losses: &[f64], opts: FitOptions) -> Verdict {
    let Some(x) = normalise(losses) else {
        return Verdict::NoSpread {
            pairs: losses.len(),
        };
    };
    let (mixture, iterations) = Mixture::initial(&x, opts.reg_covar).fit(&x, opts);
    Verdict::Fitted {
        clean: split(&mixture.low_posterior(&x)),
        iterations,
    }
}

/// The consensus of two verdicts over the same pairs, as weights: clean by both → 1, by neither
/// → 0, by exactly one → a fair coin from `rng` (drawn in pair order, one draw per such pair).
pub fn consensus<R: Rng>(a: &Verdict, b: &Verdict, rng: &mut R) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "verdicts over different pairs");
    (0..a.len())
        .map(|i| match (a.is_clean(i), b.is_clean(i)) {
            (true, true) => 1.0,
            (false, false) => 0.0,
            (true, false) | (false, true) => f32::from(u8::from(rng.gen_bool(0.5))),
        })
        .collect()
}

/// How a division compares with the true clean set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DivisionQuality {
    /// Truly clean among the pairs divided clean; `None` when none was.
    pub precision: Option<f64>,
    /// Divided clean among the truly clean pairs; `None` when none is.
    pub recall: Option<f64>,
    /// Pairs divided clean, over all pairs.
    pub clean_fraction: f64,
}

/// The quality of `weights` (1 = divided clean) against `truly_clean`, pair by pair.
pub fn quality(weights: &[f32], truly_clean: &[bool]) -> DivisionQuality {
    assert_eq!(weights.len(), truly_clean.len());
    let divided = weights.iter().filter(|&&w| w > 0.5).count();
    let truth = truly_clean.iter().filter(|&&c| c).count();
    let both = weights
        .iter()
        .zip(truly_clean)
        .filter(|(&w, &c)| w > 0.5 && c)
        .count();
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    DivisionQuality {
        precision: ratio(both, divided),
        recall: ratio(both, truth),
        clean_fraction: ratio(divided, weights.len()).unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn losses_without_spread_fall_back_to_all_clean() {
        for losses in [vec![], vec![0.3], vec![2.0; 50], vec![1.0, f64::NAN]] {
            let v = verdict(&losses, fit_options(0.2, false));
            assert_eq!(
                v,
                Verdict::NoSpread {
                    pairs: losses.len()
                }
            );
            assert!((0..losses.len()).all(|i| v.is_clean(i)));
        }
        assert_eq!(normalise(&[1.0, 3.0, 2.0]).unwrap(), [0.0, 1.0, 0.5]);
    }

    #[test]
    fn low_losses_are_clean_and_high_ones_are_not() {
        let mut losses: Vec<f64> = (0..80).map(|i| 1.0 + 0.01 * (i % 9) as f64).collect();
        losses.extend((0..20).map(|i| 5.0 + 0.01 * (i % 5) as f64));
        for opts in [fit_options(0.2, false), fit_options(0.5, false)] {
            let Verdict::Fitted { clean, .. } = verdict(&losses, opts) else {
                panic!("not fitted")
            };
            assert!(clean[..80].iter().all(|&c| c) && clean[80..].iter().all(|&c| !c));
        }
    }

    /// Every p above 0.5: the 1%-quantile becomes the threshold (strictly above it is clean).
    #[test]
    fn the_threshold_rule() {
        assert_eq!(split(&[0.2, 0.6, 0.5, 0.9]), [false, true, false, true]);
        let p: Vec<f64> = (0..300).map(|i| 0.6 + 0.001 * i as f64).collect();
        let clean = split(&p);
        // sorted[3] = 0.603: the four smallest are held out.
        assert_eq!(clean.iter().filter(|&&c| !c).count(), 4);
        assert!(clean[4..].iter().all(|&c| c));
        assert_eq!(split(&[0.7]), [false]);
    }

    #[test]
    fn consensus_agreement_decides_and_disagreement_is_a_fair_coin() {
        let a = Verdict::Fitted {
            clean: vec![true, false, true, false],
            iterations: 1,
        };
        let b = Verdict::Fitted {
            clean: vec![true, false, false, true],
            iterations: 1,
        };
        let w = consensus(&a, &b, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(&w[..2], [1.0, 0.0]);
        assert!(w[2..].iter().all(|&x| x == 0.0 || x == 1.0));
        // 10,000 disagreements: heads within 4 standard deviations (4 · 50) of 5,000.
        let n = 10_000;
        let a = Verdict::Fitted {
            clean: vec![true; n],
            iterations: 1,
        };
        let b = Verdict::NoSpread { pairs: n };
        assert_eq!(
            consensus(&a, &b, &mut ChaCha8Rng::seed_from_u64(2)),
            vec![1.0; n]
        );
        let none = Verdict::Fitted {
            clean: vec![false; n],
            iterations: 1,
        };
        let w = consensus(&a, &none, &mut ChaCha8Rng::seed_from_u64(3));
        let heads = w.iter().filter(|&&x| x == 1.0).count() as f64;
        assert!((heads - 5000.0).abs() <= 200.0, "{heads}");
    }

    #[test]
    fn precision_and_recall_against_the_clean_set() {
        let q = quality(
            &[1.0, 1.0, 0.0, 0.0, 1.0],
            &[true, false, true, false, true],
        );
        assert_eq!(q.precision, Some(2.0 / 3.0));
        assert_eq!(q.recall, Some(2.0 / 3.0));
        assert_eq!(q.clean_fraction, 0.6);
        let none = quality(&[0.0, 0.0], &[false, false]);
        assert_eq!(
            (none.precision, none.recall, none.clean_fraction),
            (None, None, 0.0)
        );
    }
}
