//! The flat Adam / AdamW (the host loop and libtorch's fused kernel) against torch.optim.Adam /
//! AdamW with per-parameter groups and a parameter that never gets a gradient, the group rules, and
//! save/restore round trips (of this layout and of the earlier per-element one) that continue
//! bit-identically.
mod common;
use ccma::config::{Config, OptimSection};
use ccma::train::optimizer::{param_rule as param_group, Kernel, Optimizer};
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

/// Never part of the loss: no gradient, so left untouched (it also splits the flat buffer into two
/// runs of parameters with gradients).
const NO_GRAD: &str = "cross_attn.in_proj_bias";

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

/// The optimiser settings of the defaults with `pairs` set (`key`, YAML value).
fn optim(pairs: &[(&str, &str)]) -> OptimSection {
    let sets: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::default().with_overrides(&sets).unwrap().optim
}

fn cfg() -> OptimSection {
    optim(&[("lr", "0.01"), ("weight_decay", "0.1"), ("eps", "1e-3")])
}

/// Gradient of step `k` for parameter `name`: fixed pseudo-random values.
fn grad(k: usize, name: &str, shape: &[i64]) -> Tensor {
    values(shape, 1000.0 + k as f64 * 31.0 + name.len() as f64)
}

/// Runs `steps` steps from the optimiser's current state, starting at step index `from`.
fn run(vs: &VarStore, opt: &mut Optimizer, from: usize, steps: usize) {
    let vars = vs.variables();
    for k in from..from + steps {
        opt.zero_grad().unwrap();
        let loss = NAMES
            .iter()
            .filter(|(n, _)| *n != NO_GRAD)
            .map(|(n, s)| (&vars[*n] * grad(k, n, s)).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        loss.backward();
        opt.step().unwrap();
    }
}

#[test]
fn matches_torch_adam_and_adamw_with_per_parameter_groups() {
    for optimizer in ["Adam", "AdamW"] {
        for kernel in [Kernel::HostLoop, Kernel::Libtorch] {
            matches_torch(optimizer, kernel);
        }
    }
}

fn matches_torch(optimizer: &str, kernel: Kernel) {
    let c = OptimSection {
        optimizer: optimizer.parse().unwrap(),
        ..cfg()
    };
    let vs = store(0);
    let init: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (format!("param.{k}"), t.copy()))
        .collect();
    let mut opt = Optimizer::new(&vs, &c);
    opt.set_kernel(kernel).unwrap();
    // A schedule point with an offset, as cosine decay towards a nonzero target_lr gives.
    let rate_of = |base: f64| 0.5 * base + 1e-3;
    opt.set_lr(rate_of);
    let steps = 4;
    run(&vs, &mut opt, 0, steps);
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = init;
    for k in 0..steps {
        for (n, s) in NAMES.iter().filter(|(n, _)| *n != NO_GRAD) {
            tensors.push((format!("grad.{k}.{n}"), grad(k, n, s)));
        }
    }
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    ccma::io::safetensors::save(&inp, &tensors, &Default::default()).unwrap();
    let mut groups: serde_json::Map<String, serde_json::Value> = NAMES
        .iter()
        .map(|(n, _)| {
            let (m, wd) = param_group(n, &c);
            (n.to_string(), serde_json::json!([rate_of(c.lr * m), wd]))
        })
        .collect();
    groups.insert(
        "_".into(),
        serde_json::json!([c.alpha, c.beta, c.eps(), steps]),
    );
    let gpath = dir.path().join("groups.json");
    std::fs::write(&gpath, serde_json::to_string(&groups).unwrap()).unwrap();
    reference(
        "adam_ref.py",
        &[
            inp.to_str().unwrap(),
            out.to_str().unwrap(),
            gpath.to_str().unwrap(),
            optimizer,
        ],
    );
    let want = load(&out);
    for (name, t) in vs.variables() {
        let d = max_abs_diff(&t, &want[&name]);
        assert!(
            d < 1e-6,
            "{optimizer}, {kernel:?}, {name}: max abs diff {d}"
        );
    }
    let untouched = values(&[6], NO_GRAD.len() as f64 * 0.37);
    assert!(vs.variables()[NO_GRAD].equal(&untouched));
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

/// Runs 5 steps in one go, and 2 steps, a save, a restore into another store (through
/// `convert`, which may rewrite the saved state) and 3 more; the parameters must end bit-identical.
fn resumes_bit_identically(c: &OptimSection, convert: impl Fn(&mut HashMap<String, Tensor>)) {
    let vs_a = store(7);
    let mut a = Optimizer::new(&vs_a, c);
    a.set_lr(|b| b);
    run(&vs_a, &mut a, 0, 5);

    let vs_b = store(7);
    let mut b = Optimizer::new(&vs_b, c);
    b.set_lr(|b| b);
    run(&vs_b, &mut b, 0, 2);
    let mut saved: HashMap<String, Tensor> = b
        .state_tensors()
        .into_iter()
        .map(|(k, t)| (k, t.copy()))
        .collect();
    convert(&mut saved);
    let params: HashMap<String, Tensor> = vs_b
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.copy()))
        .collect();
    let mut vs_c = store(99); // different values, overwritten by the restore
    let mut c_opt = Optimizer::new(&vs_c, c);
    let source = std::path::Path::new("saved parameters");
    ccma::model::weights::copy_into(&mut vs_c, &params, &[], &[], (0, 0), source).unwrap();
    c_opt.load_state(&saved).unwrap();
    c_opt.set_lr(|b| b);
    run(&vs_c, &mut c_opt, 2, 3);
    for (name, t) in vs_a.variables() {
        assert!(
            t.equal(&vs_c.variables()[&name]),
            "{name} differs after resuming"
        );
    }
}

/// `saved` rewritten into the earlier per-element layout by the rules of `c`.
fn to_earlier(saved: &mut HashMap<String, Tensor>, c: &OptimSection) {
    let params: Vec<(String, i64)> = NAMES
        .iter()
        .map(|(n, s)| (n.to_string(), s.iter().product()))
        .collect();
    to_earlier_layout(saved, "", &params, c);
}

#[test]
fn save_and_restore_continues_bit_identically() {
    let c = cfg();
    resumes_bit_identically(&c, |_| {});
    let state: Vec<String> = {
        let vs = store(1);
        let mut keys: Vec<String> = Optimizer::new(&vs, &c)
            .state_tensors()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(state, ["exp_avg", "exp_avg_sq", "group_rules", "step"]);
}

#[test]
fn a_state_of_the_earlier_per_element_layout_resumes_bit_identically() {
    let c = cfg();
    resumes_bit_identically(&c, |saved| to_earlier(saved, &c));
}

/// A state saved under other learning-rate multipliers is refused, in either layout; other
/// weight decays are taken from the config.
#[test]
fn a_state_of_other_rate_rules_is_refused() {
    let c = cfg();
    let other = OptimSection {
        lr_factor: c.lr_factor * 2.0,
        ..c.clone()
    };
    let vs = store(3);
    let saved = |cfg: &OptimSection, earlier: bool| {
        let mut s: HashMap<String, Tensor> = Optimizer::new(&store(3), cfg)
            .state_tensors()
            .into_iter()
            .collect();
        if earlier {
            to_earlier(&mut s, cfg);
        }
        s
    };
    for earlier in [false, true] {
        let err = Optimizer::new(&vs, &c)
            .load_state(&saved(&other, earlier))
            .unwrap_err()
            .to_string();
        assert!(err.contains("other learning-rate rules"), "{err}");
        let decay = OptimSection {
            weight_decay: 0.5,
            ..c.clone()
        };
        Optimizer::new(&vs, &c)
            .load_state(&saved(&decay, earlier))
            .unwrap();
    }
}

/// The learning rate of every parameter group at every epoch, for each schedule mode and warm-up
/// method, against a torch LRScheduler over torch.optim.Adam's groups (tests/reference/schedule_ref.py).
#[test]
fn schedule_matches_reference_per_group_per_epoch() {
    use ccma::train::schedule::group_lr;
    let dir = tempfile::tempdir().unwrap();
    for mode in ["cosine", "step", "exp", "poly", "linear"] {
        for warmup in ["linear", "constant"] {
            let c = optim(&[
                ("lr", "2e-3"),
                ("lrscheduler", mode),
                ("warmup_method", warmup),
                ("num_epoch", "12"),
                ("warmup_epochs", "3"),
                ("warmup_factor", "0.2"),
                ("milestones", "[5, 9]"),
                ("target_lr", "1e-4"),
                ("power", "0.5"),
            ]);
            // One group per distinct multiplier of METHOD.md's rules (lr_factor 5, bias 2, 1).
            let bases: Vec<f64> = ["visual.conv1.weight", "ln_final.bias", "classifier.weight"]
                .iter()
                .map(|n| c.lr * param_group(n, &c).0)
                .collect();
            let settings = serde_json::json!({
                "bases": bases, "lrscheduler": mode, "num_epoch": c.num_epoch,
                "warmup_epochs": c.warmup_epochs, "warmup_factor": c.warmup_factor,
                "warmup_method": warmup, "milestones": c.milestones, "gamma": c.gamma,
                "target_lr": c.target_lr, "power": c.power,
            });
            let path = dir.path().join("settings.json");
            std::fs::write(&path, settings.to_string()).unwrap();
            let want: Vec<Vec<f64>> =
                serde_json::from_str(&reference("schedule_ref.py", &[path.to_str().unwrap()]))
                    .unwrap();
            for (e, row) in want.iter().enumerate() {
                for (b, want) in bases.iter().zip(row) {
                    let ours = group_lr(&c, e + 1, *b);
                    assert!(
                        (ours - want).abs() <= 1e-15 + 1e-12 * want.abs(),
                        "{mode}/{warmup} epoch {} base {b}: ours {ours}, reference {want}",
                        e + 1
                    );
                }
            }
        }
    }
}
