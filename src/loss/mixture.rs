//! A two-component 1-D Gaussian mixture fitted by EM, with scikit-learn's `GaussianMixture`
//! semantics (`n_components=2`, full covariance, which in 1-D is one variance per component):
//! `reg_covar` added to every variance, EM stopped when the mean log-likelihood (the lower
//! bound) changes by less than `tol` or after `max_iter` iterations, a component's mass
//! `Σ resp + 10·ε`. The initialisation is ours and deterministic ([`Mixture::initial`]); given the
//! same initialisation (`weights_init`, `means_init`, `precisions_init`), scikit-learn fits the
//! same mixture (tests/reference/mixture_ref.py).

/// When EM stops and how the variances are regularised (scikit-learn's keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    pub max_iter: usize,
    pub tol: f64,
    pub reg_covar: f64,
}

/// The mixture's parameters: component weights (summing to 1), means and variances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixture {
    pub weights: [f64; 2],
    pub means: [f64; 2],
    pub variances: [f64; 2],
}

/// `log N(x; mean, var)`.
fn log_gaussian(x: f64, mean: f64, var: f64) -> f64 {
    let d = x - mean;
    -0.5 * ((2.0 * std::f64::consts::PI).ln() + var.ln() + d * d / var)
}

impl Mixture {
    /// The initialisation: equal weights; the means of the lower and the upper half of the
    /// sorted values (the first half has `⌊n/2⌋` values, at least one); both variances the
    /// values' variance plus `reg_covar`. `x` must not be empty.
    pub fn initial(x: &[f64], reg_covar: f64) -> Mixture {
        let mut sorted = x.to_vec();
        sorted.sort_by(f64::total_cmp);
        let split = (sorted.len() / 2).max(1).min(sorted.len());
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (low, high) = sorted.split_at(split);
        let high = if high.is_empty() { low } else { high };
        let m = mean(&sorted);
        let var = sorted.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / sorted.len() as f64;
        Mixture {
            weights: [0.5, 0.5],
            means: [mean(low), mean(high)],
            variances: [var + reg_covar; 2],
        }
    }

    /// The E-step at `x`: each value's responsibilities `[n][2]`, and the mean log-likelihood.
    fn expect(&self, x: &[f64]) -> (Vec<[f64; 2]>, f64) {
        let mut total = 0.0;
        let resp = x
            .iter()
            .map(|&v| {
                let l: [f64; 2] = std::array::from_fn(|k| {
                    self.weights[k].ln() + log_gaussian(v, self.means[k], self.variances[k])
                });
                let top = l[0].max(l[1]);
                let norm = top + ((l[0] - top).exp() + (l[1] - top).exp()).ln();
                total += norm;
                [(l[0] - norm).exp(), (l[1] - norm).exp()]
            })
            .collect();
        (resp, total / x.len() as f64)
    }

    /// The M-step from responsibilities `resp` at `x`.
    fn maximise(x: &[f64], resp: &[[f64; 2]], reg_covar: f64) -> Mixture {
        let nk: [f64; 2] =
            std::array::from_fn(|k| resp.iter().map(|r| r[k]).sum::<f64>() + 10.0 * f64::EPSILON);
        let means: [f64; 2] =
            std::array::from_fn(|k| x.iter().zip(resp).map(|(v, r)| r[k] * v).sum::<f64>() / nk[k]);
        let variances: [f64; 2] = std::array::from_fn(|k| {
            let s: f64 = x
                .iter()
                .zip(resp)
                .map(|(v, r)| r[k] * (v - means[k]) * (v - means[k]))
                .sum();
            s / nk[k] + reg_covar
        });
        let total = nk[0] + nk[1];
        Mixture {
            weights: [nk[0] / total, nk[1] / total],
            means,
            variances,
        }
    }

    /// EM from `self` on `x` (not empty, finite) as `GaussianMixture.fit` runs it: the fitted
    /// mixture and the iterations run.
    pub fn fit(self, x: &[f64], opts: FitOptions) -> (Mixture, usize) {
        let mut m = self;
        let mut bound = f64::NEG_INFINITY;
        for iter in 1..=opts.max_iter {
            let (resp, log_likelihood) = m.expect(x);
            m = Mixture::maximise(x, &resp, opts.reg_covar);
            let change = log_likelihood - bound;
            bound = log_likelihood;
            if change.abs() < opts.tol {
                return (m, iter);
            }
        }
        (m, opts.max_iter)
    }

    /// The posterior of the component with the smaller mean (the first on a tie) at each value
    /// of `x`: `predict_proba(x)[:, argmin(means)]`.
    pub fn low_posterior(&self, x: &[f64]) -> Vec<f64> {
        let low = usize::from(self.means[1] < self.means[0]);
        self.expect(x).0.iter().map(|r| r[low]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: FitOptions = FitOptions {
        max_iter: 100,
        tol: 1e-8,
        reg_covar: 1e-6,
    };

    /// Two well-separated clusters: the fit finds their sizes, means and variances.
    #[test]
    fn separated_clusters_are_found() {
        let low: Vec<f64> = (0..300)
            .map(|i| 0.1 + 0.02 * ((i % 11) as f64 - 5.0) / 5.0)
            .collect();
        let high: Vec<f64> = (0..100)
            .map(|i| 0.8 + 0.02 * ((i % 7) as f64 - 3.0) / 3.0)
            .collect();
        let x: Vec<f64> = low.iter().chain(&high).copied().collect();
        let (m, _) = Mixture::initial(&x, OPTS.reg_covar).fit(&x, OPTS);
        let (l, h) = if m.means[0] < m.means[1] {
            (0, 1)
        } else {
            (1, 0)
        };
        assert!((m.weights[l] - 0.75).abs() < 1e-6, "{m:?}");
        assert!(
            (m.means[l] - 0.1).abs() < 1e-3 && (m.means[h] - 0.8).abs() < 1e-3,
            "{m:?}"
        );
        let p = m.low_posterior(&x);
        assert!(p[..300].iter().all(|&p| p > 0.999) && p[300..].iter().all(|&p| p < 0.001));
    }

    #[test]
    fn the_initialisation_splits_at_the_median() {
        let m = Mixture::initial(&[3.0, 0.0, 1.0, 2.0], 0.5);
        assert_eq!(m.means, [0.5, 2.5]);
        assert_eq!(m.variances, [1.25 + 0.5; 2]);
        let one = Mixture::initial(&[2.0], 0.1);
        assert_eq!(one.means, [2.0, 2.0]);
    }
}
