//! The consensus clean division's mixture against scikit-learn's `GaussianMixture` started from
//! the same initialisation, and the clean verdict against RDE's `split_prob` on its posteriors
//! (tests/reference/mixture_ref.py).
mod common;
use ccma::loss::division::{fit_options, normalise, verdict, Verdict};
use ccma::loss::mixture::{FitOptions, Mixture};
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Per-sample-loss-like values: a clean majority around `clean_mean`, a noisy share around
/// `noisy_mean`, with a long tail.
fn losses(n: usize, noisy: f64, clean_mean: f64, noisy_mean: f64, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let centre = if rng.gen_bool(noisy) {
                noisy_mean
            } else {
                clean_mean
            };
            let spread: f64 = (0..4).map(|_| rng.gen::<f64>() - 0.5).sum();
            (centre + spread * 0.3).max(0.0) + rng.gen::<f64>().powi(8) * 2.0
        })
        .collect()
}

/// Relative agreement within `tol` (absolute below 1).
fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

#[test]
fn the_mixture_matches_scikit_learn_from_the_same_initialisation() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (losses(2000, 0.2, 1.0, 3.0, 1), fit_options(0.2, false)),
        (losses(2000, 0.5, 1.0, 2.0, 2), fit_options(0.5, false)),
        (losses(500, 0.8, 0.5, 2.5, 3), fit_options(0.8, false)),
        (losses(300, 0.0, 1.0, 1.0, 4), fit_options(0.0, true)),
        (
            losses(1000, 0.3, 1.0, 1.3, 5),
            FitOptions {
                max_iter: 3,
                tol: 0.0,
                reg_covar: 1e-3,
            },
        ),
    ];
    for (n, (raw, opts)) in cases.into_iter().enumerate() {
        let x = normalise(&raw).unwrap();
        let init = Mixture::initial(&x, opts.reg_covar);
        let path = dir.path().join(format!("case{n}.json"));
        let case = serde_json::json!({
            "x": x, "weights": init.weights, "means": init.means, "variances": init.variances,
            "max_iter": opts.max_iter, "tol": opts.tol, "reg_covar": opts.reg_covar,
        });
        std::fs::write(&path, case.to_string()).unwrap();
        let theirs: serde_json::Value =
            serde_json::from_str(&reference("mixture_ref.py", &[s(&path)])).unwrap();
        let (ours, iterations) = init.fit(&x, opts);
        let list = |key: &str| -> Vec<f64> { serde_json::from_value(theirs[key].clone()).unwrap() };
        assert_eq!(
            iterations as u64,
            theirs["n_iter"].as_u64().unwrap(),
            "case {n}"
        );
        // Tolerance 1e-9 relative: the same arithmetic, summed in another order.
        for (key, v) in [
            ("weights", ours.weights),
            ("means", ours.means),
            ("variances", ours.variances),
        ] {
            for (a, b) in v.iter().zip(list(key)) {
                assert!(
                    close(*a, b, 1e-9),
                    "case {n} {key}: {v:?} vs {:?}",
                    list(key)
                );
            }
        }
        let p = ours.low_posterior(&x);
        for (i, (a, b)) in p.iter().zip(list("posterior")).enumerate() {
            assert!((a - b).abs() <= 1e-9, "case {n} pair {i}: {a} vs {b}");
        }
        let clean: Vec<bool> = serde_json::from_value(theirs["clean"].clone()).unwrap();
        match verdict(&raw, opts) {
            Verdict::Fitted { clean: ours, .. } => assert_eq!(ours, clean, "case {n}"),
            Verdict::NoSpread { .. } => panic!("case {n} not fitted"),
        }
    }
}
