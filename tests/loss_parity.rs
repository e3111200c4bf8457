//! Loss values and gradients against the independent PyTorch reference (tests/reference/loss_ref.py),
//! unweighted and with the clean division's weights on every term (METHOD.md section 7, "Beyond
//! both"). Tolerance: 1e-5 relative on values (absolute below 1), 1e-5 absolute on gradients.
mod common;
use ccma::loss;
use common::*;
use tch::{Kind, Tensor};

/// The terms of random features of a batch with `pids` (drawn from `seed`) against the reference,
/// with the division's `weights` of its samples when given (the 9 masked tokens belong to samples
/// 0, 0, 1, 2, 2, 2, 3, 4 and 5).
fn check(pids: &[i64], seed: i64, weights: Option<&[f32]>) {
    tch::manual_seed(seed);
    let b = pids.len() as i64;
    let opts = (Kind::Float, tch::Device::Cpu);
    let mut inputs: Vec<(&str, Tensor)> = vec![
        ("f_i", Tensor::randn([b, 16], opts)),
        ("f_t", Tensor::randn([b, 16], opts)),
        ("g_i", Tensor::randn([b, 16], opts)),
        ("g_t", Tensor::randn([b, 16], opts)),
        ("logits_i", Tensor::randn([b, 6], opts)),
        ("logits_t", Tensor::randn([b, 6], opts)),
        ("mlm_logits", Tensor::randn([9, 30], opts)),
        (
            "mlm_labels",
            Tensor::randint_low(1, 30, [9], (Kind::Int64, tch::Device::Cpu)),
        ),
        ("pids", Tensor::from_slice(pids)),
    ];
    let owners = [0usize, 0, 1, 2, 2, 2, 3, 4, 5];
    let w = weights.map(Tensor::from_slice);
    let mlm_w = weights.map(|w| Tensor::from_slice(&owners.map(|s| w[s])));
    if let (Some(w), Some(mlm_w)) = (&w, &mlm_w) {
        inputs.push(("w", w.shallow_clone()));
        inputs.push(("mlm_w", mlm_w.shallow_clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    save(
        &inp,
        &inputs.iter().map(|(k, t)| (*k, t)).collect::<Vec<_>>(),
    );
    let scale = 1.0 / 0.07;
    reference(
        "loss_ref.py",
        &[
            inp.to_str().unwrap(),
            out.to_str().unwrap(),
            &scale.to_string(),
        ],
    );
    let want = load(&out);
    let get = |k: &str| {
        inputs
            .iter()
            .find(|(n, _)| *n == k)
            .unwrap()
            .1
            .detach()
            .set_requires_grad(true)
    };
    let pids_t = Tensor::from_slice(pids);
    let params = loss::ImalParams {
        temperature: 0.5,
        gamma: 0.05,
        kl_weight: 0.005,
        scale,
    };
    type Term = Box<dyn Fn(&[Tensor]) -> Tensor>;
    let copies = || {
        (
            pids_t.shallow_clone(),
            w.as_ref().map(Tensor::shallow_clone),
        )
    };
    let terms: Vec<(&str, Vec<&str>, Term)> = vec![
        ("sdm", vec!["f_i", "f_t"], {
            let (p, w) = copies();
            Box::new(move |x| loss::sdm(&x[0], &x[1], &p, scale, w.as_ref()))
        }),
        ("itc", vec!["f_i", "f_t"], {
            let (_, w) = copies();
            Box::new(move |x| loss::itc(&x[0], &x[1], scale, w.as_ref()))
        }),
        ("cmpm", vec!["f_i", "f_t"], {
            let (p, w) = copies();
            Box::new(move |x| loss::cmpm(&x[0], &x[1], &p, w.as_ref()))
        }),
        ("id", vec!["logits_i", "logits_t"], {
            let (p, w) = copies();
            Box::new(move |x| loss::id(&x[0], &x[1], &p, w.as_ref()))
        }),
        ("mlm", vec!["mlm_logits"], {
            let l = inputs[7].1.shallow_clone();
            Box::new(move |x| loss::mlm(&x[0], &l, mlm_w.as_ref()))
        }),
        ("imal", vec!["g_i", "g_t"], {
            let (p, w) = copies();
            Box::new(move |x| loss::imal(&x[0], &x[1], &p, &params, w.as_ref()))
        }),
    ];
    for (name, wrt, f) in terms {
        let xs: Vec<Tensor> = wrt.iter().map(|k| get(k)).collect();
        let value = f(&xs);
        let want_v = want[name].double_value(&[0]);
        let tol = 1e-5 * want_v.abs().max(1.0);
        assert!(
            (value.double_value(&[]) - want_v).abs() < tol,
            "{name}: {} vs {want_v}",
            value.double_value(&[])
        );
        value.backward();
        for (k, x) in wrt.iter().zip(&xs) {
            let d = max_abs_diff(&x.grad(), &want[&format!("{name}.grad.{k}")]);
            assert!(d < 1e-5, "{name} gradient w.r.t. {k}: max abs diff {d}");
        }
    }
}

#[test]
fn losses_match_reference_with_repeated_pids() {
    check(&[0, 0, 1, 2, 2, 2, 3, 4], 0, None);
    check(&[5, 1, 5, 1, 1, 0, 2, 2, 3, 3, 3, 4], 1, None);
}

/// Weights of 0 and 1 gate each sample's rows (and its masked tokens), and divide by the pairs
/// of weight 1.
#[test]
fn weighted_losses_match_reference() {
    check(
        &[0, 0, 1, 2, 2, 2, 3, 4],
        0,
        Some(&[1., 0., 1., 1., 0., 0., 1., 1.]),
    );
    check(
        &[5, 1, 5, 1, 1, 0, 2, 2, 3, 3, 3, 4],
        1,
        Some(&[0., 1., 1., 1., 1., 1., 1., 0., 1., 1., 1., 0.]),
    );
}

/// A batch whose pairs all have weight 0 contributes 0 to every term, with zero (not NaN)
/// gradients.
#[test]
fn a_batch_without_clean_pairs_gives_zero_terms_and_gradients() {
    let opts = (Kind::Float, tch::Device::Cpu);
    let f = || Tensor::randn([4, 8], opts).set_requires_grad(true);
    let (a, b) = (f(), f());
    let pids = Tensor::from_slice(&[0i64, 0, 1, 2]);
    let w = Tensor::zeros([4], opts);
    let p = loss::ImalParams {
        temperature: 0.5,
        gamma: 0.05,
        kl_weight: 0.005,
        scale: 50.0,
    };
    let w = Some(&w);
    for (name, value) in [
        ("sdm", loss::sdm(&a, &b, &pids, 10.0, w)),
        ("itc", loss::itc(&a, &b, 10.0, w)),
        ("cmpm", loss::cmpm(&a, &b, &pids, w)),
        ("imal", loss::imal(&a, &b, &pids, &p, w)),
        ("id", loss::id(&a, &b, &pids, w)),
    ] {
        assert_eq!(value.double_value(&[]), 0.0, "{name}");
        let grads = Tensor::run_backward(&[value], &[&a, &b], false, false);
        for g in grads {
            assert_eq!(g.abs().max().double_value(&[]), 0.0, "{name}");
        }
    }
    let logits = Tensor::randn([5, 10], opts).set_requires_grad(true);
    let labels = Tensor::from_slice(&[1i64, 4, 9, 2, 2]);
    let value = loss::mlm(&logits, &labels, Some(&Tensor::zeros([5], opts)));
    assert_eq!(value.double_value(&[]), 0.0, "mlm");
    value.backward();
    assert_eq!(logits.grad().abs().max().double_value(&[]), 0.0, "mlm");
}

#[test]
fn imal_with_one_sample_has_no_intra_modal_term() {
    let g = Tensor::randn([1, 8], (Kind::Float, tch::Device::Cpu));
    let p = loss::ImalParams {
        temperature: 0.5,
        gamma: 0.05,
        kl_weight: 0.005,
        scale: 50.0,
    };
    let (cm, im, _) = loss::imal_terms(&g, &g, &Tensor::from_slice(&[3i64]), &p, None);
    assert_eq!(im.double_value(&[]), 0.0);
    assert!(
        cm.double_value(&[]).abs() < 1e-6,
        "one pair, one positive: log 1 = 0"
    );
}
