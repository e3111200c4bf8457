//! The consensus clean division's mixture against scikit-learn's `GaussianMixture` started from
//! the same initialisation, and the clean verdict against RDE's `split_prob` on its posteriors
//! (tests/reference/mixture_ref.py).
mod common;
use ccma::config::{LossSection, LossTerm};
use ccma::loss::division::{fit_options, normalise, verdict, Verdict};
use ccma::loss::mixture::{FitOptions, Mixture};
use ccma::loss::{batch_term, tal_per_sample, BatchFeatures, Embeddings};
use ccma::model::Embedding;
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

/// TAL's batch loss with the division's weights is `Σ_i w_i ℓ_i`: by hand on two orthogonal
/// pairs of different pids (each ℓ = [m − 1]₊ per direction: 1 at m = 1.5), and on a random
/// batch against the per-sample losses of BGE and TSE.
#[test]
fn weighted_tal_is_the_weighted_sum_of_the_per_sample_losses() {
    let p = LossSection {
        margin: 1.5,
        ..LossSection::default()
    };
    let f = tch::Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
    let pairs = |w: Option<&[f32]>, emb: Vec<(Embedding, [tch::Tensor; 2])>, pids: &[i64]| {
        let b = BatchFeatures {
            embeddings: Embeddings(emb),
            pids: tch::Tensor::from_slice(pids),
            weights: w.map(tch::Tensor::from_slice),
        };
        batch_term(LossTerm::Tal, &p, &b).unwrap().double_value(&[])
    };
    let global = || vec![(Embedding::Global, [f.copy(), f.copy()])];
    assert!((pairs(None, global(), &[0, 1]) - 2.0).abs() < 1e-6);
    assert!((pairs(Some(&[1.0, 0.0]), global(), &[0, 1]) - 1.0).abs() < 1e-6);
    assert_eq!(pairs(Some(&[0.0, 0.0]), global(), &[0, 1]), 0.0);

    tch::manual_seed(5);
    let r = |d| tch::Tensor::randn([6, d], (tch::Kind::Float, tch::Device::Cpu));
    let (gi, gt, ti, tt) = (r(8), r(8), r(16), r(16));
    let pids = [0i64, 1, 0, 2, 3, 1];
    let w = [1.0f32, 0.0, 1.0, 1.0, 0.0, 1.0];
    let per = |i: &tch::Tensor, t: &tch::Tensor| {
        let l = tal_per_sample(i, t, &tch::Tensor::from_slice(&pids), p.tau, p.margin);
        Vec::<f32>::try_from(&l).unwrap()
    };
    let (bge, tse) = (per(&gi, &gt), per(&ti, &tt));
    let expected: f64 = (0..6)
        .map(|i| f64::from(w[i]) * f64::from(bge[i] + tse[i]))
        .sum();
    let got = pairs(
        Some(&w),
        vec![(Embedding::Global, [gi, gt]), (Embedding::Tse, [ti, tt])],
        &pids,
    );
    assert!(
        (got - expected).abs() <= 1e-5 * expected.abs().max(1.0),
        "{got} vs {expected}"
    );
}
