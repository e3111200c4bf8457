//! The flat Adam against torch.optim.Adam with per-parameter groups, the group rules, and a
//! save/restore round trip that continues bit-identically.
mod common;
use ccma::config::Config;
use ccma::train::optimizer::{param_group, Optimizer};
use common::*;
use std::collections::HashMap;
use tch::{nn::VarStore, Device, Kind, Tensor};

const NAMES: [(&str, &[i64]); 6] = [
    ("base_model.visual.conv1.weight", &[4, 3]),
    ("base_model.ln_final.bias", &[5]),
    ("cross_attn.in_proj_bias", &[6]),
    ("mlm_head.fc.bias", &[3]),
    ("classifier.weight", &[2, 4]),
    ("dca_image.0.q_proj.weight", &[3, 3]),
];

/// Deterministic pseudo-random values (tests run in parallel, so no global generator).
fn values(shape: &[i64], salt: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f64 * 12.9898 + salt * 78.233).sin() * 43758.5453).fract() as f32 * 2.0)
        .collect();
    Tensor::from_slice(&v).view(shape)
}

fn store(seed: i64) -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    for (name, shape) in NAMES {
        let (path, leaf) = name.rsplit_once('.').unwrap();
        let p = path.split('.').fold(vs.root(), |p, part| p / part);
        let mut v = p.var(leaf, shape, tch::nn::Init::Const(0.0));
        tch::no_grad(|| v.copy_(&values(shape, seed as f64 + name.len() as f64 * 0.37)));
    }
    vs
}

fn cfg() -> Config {
    Config::default()
        .with_overrides(&[
            ("lr".into(), "0.01".into()),
            ("weight_decay".into(), "0.1".into()),
            ("eps".into(), "1e-3".into()),
        ])
        .unwrap()
}

/// Gradient of step `k` for parameter `name`: fixed pseudo-random values.
fn grad(k: usize, name: &str, shape: &[i64]) -> Tensor {
    values(shape, 1000.0 + k as f64 * 31.0 + name.len() as f64)
}

/// Runs `steps` steps from the optimiser's current state, starting at step index `from`.
fn run(vs: &VarStore, opt: &mut Optimizer, from: usize, steps: usize) {
    let vars = vs.variables();
    for k in from..from + steps {
        opt.zero_grad();
        let loss = NAMES
            .iter()
            .map(|(n, s)| (&vars[*n] * grad(k, n, s)).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        loss.backward();
        opt.step();
    }
}

#[test]
fn matches_torch_adam_with_per_parameter_groups() {
    let c = cfg();
    let vs = store(0);
    let init: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (format!("param.{k}"), t.copy()))
        .collect();
    let mut opt = Optimizer::new(&vs, &c).unwrap();
    opt.set_lr(c.lr);
    let steps = 4;
    run(&vs, &mut opt, 0, steps);
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = init;
    for k in 0..steps {
        for (n, s) in NAMES {
            tensors.push((format!("grad.{k}.{n}"), grad(k, n, s)));
        }
    }
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    ccma::train::checkpoint::save(&inp, &tensors, &Default::default()).unwrap();
    let mut groups: serde_json::Map<String, serde_json::Value> = NAMES
        .iter()
        .map(|(n, _)| {
            let (m, wd) = param_group(n, &c);
            (n.to_string(), serde_json::json!([c.lr * m, wd]))
        })
        .collect();
    groups.insert(
        "_".into(),
        serde_json::json!([c.alpha, c.beta, c.eps, steps]),
    );
    let gpath = dir.path().join("groups.json");
    std::fs::write(&gpath, serde_json::to_string(&groups).unwrap()).unwrap();
    reference(
        "adam_ref.py",
        &[
            inp.to_str().unwrap(),
            out.to_str().unwrap(),
            gpath.to_str().unwrap(),
        ],
    );
    let want = load(&out);
    for (name, t) in vs.variables() {
        let d = max_abs_diff(&t, &want[&name]);
        assert!(d < 1e-6, "{name}: max abs diff {d}");
    }
}

#[test]
fn group_rules_follow_the_method() {
    let c = cfg(); // lr_factor 5, bias_lr_factor 2, weight_decay 0.1, weight_decay_bias 0
    let want: HashMap<&str, (f64, f64)> = HashMap::from([
        ("base_model.visual.conv1.weight", (1.0, 0.1)),
        ("base_model.ln_final.bias", (2.0, 0.0)),
        ("cross_attn.in_proj_bias", (2.0, 0.0)),
        (
            "cross_modal_transformer.resblocks.0.mlp.c_fc.weight",
            (5.0, 0.1),
        ),
        ("mlm_head.fc.bias", (5.0, 0.0)),
        ("classifier.weight", (5.0, 0.1)),
        ("dca_image.0.q_proj.weight", (5.0, 0.1)),
        ("dca_text.0.out_proj.bias", (2.0, 0.0)),
        ("ln_pre_t.weight", (1.0, 0.1)),
    ]);
    for (name, expected) in want {
        assert_eq!(param_group(name, &c), expected, "{name}");
    }
}

#[test]
fn save_and_restore_continues_bit_identically() {
    let c = cfg();
    let vs_a = store(7);
    let mut a = Optimizer::new(&vs_a, &c).unwrap();
    a.set_lr(c.lr);
    run(&vs_a, &mut a, 0, 5);

    let vs_b = store(7);
    let mut b = Optimizer::new(&vs_b, &c).unwrap();
    b.set_lr(c.lr);
    run(&vs_b, &mut b, 0, 2);
    let saved: HashMap<String, Tensor> = b
        .state_tensors()
        .into_iter()
        .map(|(k, t)| (k, t.copy()))
        .collect();
    let params: HashMap<String, Tensor> = vs_b
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.copy()))
        .collect();
    let mut vs_c = store(99); // different values, overwritten by the restore
    let mut c_opt = Optimizer::new(&vs_c, &c).unwrap();
    ccma::model::copy_named(&mut vs_c, &params).unwrap();
    c_opt.load_state(&saved).unwrap();
    c_opt.set_lr(c.lr);
    run(&vs_c, &mut c_opt, 2, 3);
    for (name, t) in vs_a.variables() {
        assert!(
            t.equal(&vs_c.variables()[&name]),
            "{name} differs after resuming"
        );
    }
}
