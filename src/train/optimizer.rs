//! Adam (or AdamW) over one flat parameter buffer, with one learning-rate multiplier and one
//! weight decay per parameter group.
//!
//! Every trainable variable is re-pointed (`set_data`) at a slice of one contiguous fp32 buffer;
//! the moments live in two flat buffers of the same layout. The per-parameter rules of METHOD.md
//! section 5 put each parameter in one of at most six groups (rate group x bias decay), each
//! with its multiplier and weight decay. The arithmetic follows `torch.optim.Adam` (L2 decay
//! added to the gradient) and `AdamW`. Two kernels do the update:
//! - [`Kernel::HostLoop`] (the default on the CPU): one fused pass in Rust over the buffers
//!   (parallel chunks), several times faster than tensor operations there;
//! - [`Kernel::Libtorch`] (the default elsewhere, and on the CPU on request): libtorch's fused
//!   Adam (`_fused_adam_` / `_fused_adamw_`, what `torch.optim.Adam(fused=True)` runs), one call
//!   per group over the list of its parameters.
//!
//! A parameter that has no gradient (one no selected loss has reached yet) is skipped, as PyTorch
//! skips a `None` gradient; [`Optimizer::zero_grad`] zeroes gradients in place, as PyTorch's
//! `zero_grad(set_to_none=False)`, with one foreach call (`_foreach_zero_`).
//!
//! The saved state is the two moments, the step count and the groups' rules
//! ([`Optimizer::state_tensors`]); a state of the earlier layout, with a learning-rate multiplier
//! and weight decay per element, still loads.
use crate::config::{OptimSection, OptimizerKind};
use crate::model::param_groups::{param_group, ParamGroup, RateGroup};
use crate::shim;
use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Every parameter group there can be, in the order of the saved rules.
const GROUPS: [ParamGroup; 8] = [
    ParamGroup {
        rate: RateGroup::Base,
        bias_decay: false,
    },
    ParamGroup {
        rate: RateGroup::Base,
        bias_decay: true,
    },
    ParamGroup {
        rate: RateGroup::Bias,
        bias_decay: false,
    },
    ParamGroup {
        rate: RateGroup::Bias,
        bias_decay: true,
    },
    ParamGroup {
        rate: RateGroup::New,
        bias_decay: false,
    },
    ParamGroup {
        rate: RateGroup::New,
        bias_decay: true,
    },
    ParamGroup {
        rate: RateGroup::Tse,
        bias_decay: false,
    },
    ParamGroup {
        rate: RateGroup::Tse,
        bias_decay: true,
    },
];

/// The groups a state saved before the TSE layers' groups existed has rules for (the first ones
/// of [`GROUPS`]).
const EARLIER_GROUPS: i64 = 6;

/// Learning-rate multiplier and weight decay of a parameter group under `cfg`.
fn group_rule(g: ParamGroup, cfg: &OptimSection) -> (f64, f64) {
    let mult = match g.rate {
        RateGroup::Base => 1.0,
        RateGroup::Bias => cfg.bias_lr_factor,
        RateGroup::New => cfg.lr_factor,
        RateGroup::Tse => cfg.tse_lr / cfg.lr,
    };
    let wd = if g.bias_decay {
        cfg.weight_decay_bias
    } else {
        cfg.weight_decay
    };
    (mult, wd)
}

/// Learning-rate multiplier and weight decay of a parameter, by name (the rule is the model's:
/// [`param_group`]).
pub fn param_rule(name: &str, cfg: &OptimSection) -> (f64, f64) {
    group_rule(param_group(name), cfg)
}

/// Which kernel updates the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// One fused pass in Rust over the CPU buffers.
    HostLoop,
    /// libtorch's fused Adam over tensor lists (any device).
    Libtorch,
}

/// A trainable variable and the slice of the flat buffer it views.
struct Param {
    var: Tensor,
    offset: i64,
    numel: i64,
}

/// The parameters that share one rule.
struct Group {
    /// Learning-rate multiplier: a parameter's base rate is `lr` x `mult`.
    mult: f64,
    weight_decay: f64,
    /// Indices into `Optimizer::params`, in name order.
    members: Vec<usize>,
}

pub struct Optimizer {
    /// Trainable variables in name order, each a view into `flat`.
    params: Vec<Param>,
    /// The groups that have members, in the order of [`GROUPS`].
    groups: Vec<Group>,
    /// [6, 2] f64: (multiplier, weight decay) of every group of [`GROUPS`], as saved.
    rules: Tensor,
    flat: Tensor,
    /// `lr`: a parameter's base rate is `lr` × its multiplier.
    lr: f64,
    /// The current rate of a parameter with base rate `b` is `lr_slope * b + lr_intercept`.
    lr_slope: f64,
    lr_intercept: f64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: i64,
    /// [] f32 on the parameters' device: the step number, for libtorch's kernel.
    step_count: Tensor,
    beta1: f64,
    beta2: f64,
    eps: f64,
    decoupled: bool,
    kernel: Kernel,
}

/// Elements per parallel task of the fused CPU step.
const FUSED_CHUNK: usize = 1 << 16;

/// One Adam step's scalars. As in PyTorch, the scalars are worked out in f64 and enter the f32
/// arithmetic rounded to f32.
#[derive(Clone, Copy)]
struct StepScalars {
    /// A parameter's rate is `(mult * lr) * lr_slope + lr_intercept`.
    lr: f64,
    lr_slope: f64,
    lr_intercept: f64,
    /// 1 - beta1^t.
    bc1: f64,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    /// sqrt(1 - beta2^t).
    bc2_sqrt: f32,
    eps: f32,
    decoupled: bool,
}

impl StepScalars {
    /// Updates the parameters `p`, moments `m`, `v` in place from the gradients `g` (all the same
    /// length) with learning-rate multiplier `mult` and weight decay `wd`, in the order of
    /// `torch.optim.Adam` / `AdamW`'s single-tensor step. The rules enter as f32, as the
    /// per-element buffers of the earlier layout held them.
    fn apply(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], mult: f32, wd: f32) {
        let s = *self;
        let lr = (mult as f64 * s.lr) * s.lr_slope + s.lr_intercept;
        for i in 0..p.len() {
            let mut grad = g[i];
            if s.decoupled {
                p[i] *= (1.0 - lr * wd as f64) as f32;
            } else {
                grad += wd * p[i];
            }
            m[i] += s.one_minus_beta1 * (grad - m[i]);
            v[i] = v[i] * s.beta2 + s.one_minus_beta2 * grad * grad;
            let denom = v[i].sqrt() / s.bc2_sqrt + s.eps;
            p[i] += (-lr / s.bc1) as f32 * (m[i] / denom);
        }
    }
}

/// The address of element `offset` of a contiguous f32 CPU tensor.
fn f32_ptr(t: &Tensor, offset: i64) -> *mut f32 {
    (t.data_ptr() as *mut f32).wrapping_add(offset as usize)
}

/// The step over one parameter `p` of group `g` (gradient `grad`) in a single pass over its
/// elements, in parallel chunks, in the optimiser's flat buffers: the parameters and the two
/// moments.
fn step_host_loop(
    s: &StepScalars,
    g: &Group,
    p: &Param,
    grad: &Tensor,
    [flat, exp_avg, exp_avg_sq]: [&mut Tensor; 3],
) {
    let grad = grad.to_kind(Kind::Float).contiguous();
    let len = grad.numel();
    // SAFETY: `flat`, the moments and `grad` are distinct contiguous f32 CPU buffers (the host
    // loop is only chosen on the CPU) of at least `p.offset + len` (resp. `len`) elements, the
    // first three borrowed mutably here and nothing else touching them.
    let (pv, m, v, gv) = unsafe {
        use std::slice::{from_raw_parts, from_raw_parts_mut};
        (
            from_raw_parts_mut(f32_ptr(flat, p.offset), len),
            from_raw_parts_mut(f32_ptr(exp_avg, p.offset), len),
            from_raw_parts_mut(f32_ptr(exp_avg_sq, p.offset), len),
            from_raw_parts(f32_ptr(&grad, 0), len),
        )
    };
    let (mult, wd) = (g.mult as f32, g.weight_decay as f32);
    pv.par_chunks_mut(FUSED_CHUNK)
        .zip(m.par_chunks_mut(FUSED_CHUNK))
        .zip(v.par_chunks_mut(FUSED_CHUNK))
        .zip(gv.par_chunks(FUSED_CHUNK))
        .for_each(|(((p, m), v), g)| s.apply(p, m, v, g, mult, wd));
}

impl Optimizer {
    pub fn new(vs: &VarStore, cfg: &OptimSection) -> Optimizer {
        let decoupled = cfg.optimizer == OptimizerKind::AdamW;
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let device = vs.device();
        let flat = tch::no_grad(|| {
            Tensor::cat(
                &vars
                    .iter()
                    .map(|(_, t)| t.detach().to_kind(Kind::Float).reshape([-1]))
                    .collect::<Vec<_>>(),
                0,
            )
        });
        let mut groups: Vec<(ParamGroup, Group)> = Vec::new();
        let mut params = Vec::new();
        let mut offset = 0;
        for (i, (name, mut var)) in vars.into_iter().enumerate() {
            let numel = var.numel() as i64;
            let key = param_group(&name);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.members.push(i),
                None => {
                    let (mult, weight_decay) = group_rule(key, cfg);
                    groups.push((
                        key,
                        Group {
                            mult,
                            weight_decay,
                            members: vec![i],
                        },
                    ));
                }
            }
            var.set_data(&flat.narrow(0, offset, numel).view(var.size().as_slice()));
            params.push(Param { var, offset, numel });
            offset += numel;
        }
        groups.sort_by_key(|(k, _)| GROUPS.iter().position(|g| g == k));
        let rules: Vec<f64> = GROUPS
            .iter()
            .flat_map(|g| {
                let (m, wd) = group_rule(*g, cfg);
                [m, wd]
            })
            .collect();
        let flat = flat.set_requires_grad(false);
        Optimizer {
            params,
            groups: groups.into_iter().map(|(_, g)| g).collect(),
            rules: Tensor::from_slice(&rules).view([GROUPS.len() as i64, 2]),
            lr: cfg.lr,
            lr_slope: 0.0,
            lr_intercept: 0.0,
            exp_avg: flat.zeros_like(),
            exp_avg_sq: flat.zeros_like(),
            step_count: Tensor::zeros([], (Kind::Float, device)),
            flat,
            step: 0,
            beta1: cfg.alpha,
            beta2: cfg.beta,
            eps: cfg.eps(),
            decoupled,
            kernel: match device {
                Device::Cpu => Kernel::HostLoop,
                _ => Kernel::Libtorch,
            },
        }
    }

    /// Sets the learning rates from the schedule: `rate_of(b)` is the current rate of a parameter
    /// whose base rate is `b` (`lr` × its multiplier); it must be affine in `b`, as every mode of
    /// [`crate::train::schedule::group_lr`] is.
    pub fn set_lr(&mut self, rate_of: impl Fn(f64) -> f64) {
        self.lr_intercept = rate_of(0.0);
        self.lr_slope = rate_of(1.0) - self.lr_intercept;
    }

    /// Chooses the kernel (the host loop runs on the CPU only).
    pub fn set_kernel(&mut self, kernel: Kernel) -> Result<()> {
        if kernel == Kernel::HostLoop && self.flat.device() != Device::Cpu {
            bail!("the host-loop optimiser step runs on the CPU only");
        }
        self.kernel = kernel;
        Ok(())
    }

    /// The trainable variables, in name order.
    pub fn variables(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.var.shallow_clone()).collect()
    }

    /// Zeroes every gradient in place with one foreach call over those that exist (a parameter
    /// without one stays without).
    pub fn zero_grad(&mut self) -> Result<()> {
        let mut grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.var.grad())
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return Ok(());
        }
        let ptrs: Vec<*mut std::ffi::c_void> =
            grads.iter_mut().map(|g| g.as_mut_ptr().cast()).collect();
        // SAFETY: a list of live tensors, alive until the call returns; the shim only borrows them.
        shim::call(
            |err| unsafe { shim::ccma_foreach_zero(ptrs.as_ptr(), ptrs.len() as i64, err) },
            |ok| *ok == 0,
        )
        .map(|_| ())
        .map_err(|e| anyhow!("zeroing the gradients failed: {e}"))
    }

    /// One Adam step over the parameters that have a gradient (like `torch.optim.Adam`, a
    /// parameter without one is left as it is, moments included).
    pub fn step(&mut self) -> Result<()> {
        self.step += 1;
        let s = StepScalars {
            lr: self.lr,
            lr_slope: self.lr_slope,
            lr_intercept: self.lr_intercept,
            bc1: 1.0 - self.beta1.powi(self.step as i32),
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            bc2_sqrt: (1.0 - self.beta2.powi(self.step as i32)).sqrt() as f32,
            eps: self.eps as f32,
            decoupled: self.decoupled,
        };
        let kernel = self.kernel;
        tch::no_grad(|| match kernel {
            Kernel::HostLoop => {
                let Optimizer {
                    groups,
                    params,
                    flat,
                    exp_avg,
                    exp_avg_sq,
                    ..
                } = self;
                for g in groups.iter() {
                    for &i in &g.members {
                        let p = &params[i];
                        let grad = p.var.grad();
                        if grad.defined() {
                            let buffers = [&mut *flat, &mut *exp_avg, &mut *exp_avg_sq];
                            step_host_loop(&s, g, p, &grad, buffers);
                        }
                    }
                }
                Ok(())
            }
            Kernel::Libtorch => {
                let _ = self.step_count.fill_(self.step as f64);
                self.groups.iter().try_for_each(|g| self.step_libtorch(g))
            }
        })
    }

    /// The step over the members of group `g` that have a gradient: one call of libtorch's fused
    /// Adam over their lists of parameters, gradients and moments (flattened f32 views).
    fn step_libtorch(&self, g: &Group) -> Result<()> {
        let mut lists: [Vec<Tensor>; 4] = Default::default();
        for &i in &g.members {
            let p = &self.params[i];
            let grad = p.var.grad();
            if !grad.defined() {
                continue;
            }
            lists[0].push(self.flat.narrow(0, p.offset, p.numel));
            lists[1].push(grad.to_kind(Kind::Float).reshape([-1]));
            lists[2].push(self.exp_avg.narrow(0, p.offset, p.numel));
            lists[3].push(self.exp_avg_sq.narrow(0, p.offset, p.numel));
        }
        if lists[0].is_empty() {
            return Ok(());
        }
        let mut ptrs: Vec<Vec<*mut std::ffi::c_void>> = lists
            .iter_mut()
            .map(|l| l.iter_mut().map(|t| t.as_mut_ptr().cast()).collect())
            .collect();
        let lr = (g.mult * self.lr) * self.lr_slope + self.lr_intercept;
        let n = ptrs[0].len() as i64;
        let mut step_count = self.step_count.shallow_clone();
        let step = step_count.as_mut_ptr().cast();
        // SAFETY: four lists of `n` live tensors and one step tensor, all alive until the call
        // returns; the shim only borrows them.
        shim::call(
            |err| unsafe {
                shim::ccma_fused_adam(
                    ptrs[0].as_mut_ptr(),
                    ptrs[1].as_mut_ptr(),
                    ptrs[2].as_mut_ptr(),
                    ptrs[3].as_mut_ptr(),
                    n,
                    step,
                    lr,
                    self.beta1,
                    self.beta2,
                    g.weight_decay,
                    self.eps,
                    i32::from(self.decoupled),
                    err,
                )
            },
            |ok| *ok == 0,
        )
        .map(|_| ())
        .map_err(|e| anyhow!("the fused Adam step failed: {e}"))
    }

    /// The state to save: the moments (flat, in name order), the step count and the groups'
    /// rules ([8, 2] f64, multiplier and weight decay of each possible group).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            ("exp_avg".into(), self.exp_avg.shallow_clone()),
            ("exp_avg_sq".into(), self.exp_avg_sq.shallow_clone()),
            ("step".into(), Tensor::from_slice(&[self.step])),
            ("group_rules".into(), self.rules.shallow_clone()),
        ]
    }

    /// Restores a state written by [`Optimizer::state_tensors`] for the same model, or by the
    /// earlier layout (per-element `lr_mult` and `weight_decay`). The weight decays stay those of
    /// the config this optimiser was built with (an edited `weight_decay` acts from the resumed
    /// step on, and is logged); other learning-rate rules are refused.
    pub fn load_state(&mut self, named: &HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str| {
            named
                .get(k)
                .ok_or_else(|| anyhow!("missing optimizer state `{k}`"))
        };
        for k in ["exp_avg", "exp_avg_sq"] {
            if get(k)?.size() != self.exp_avg.size() {
                bail!(
                    "optimizer state `{k}` has shape {:?}, this model needs {:?}",
                    get(k)?.size(),
                    self.exp_avg.size()
                );
            }
        }
        let (same_rates, same_decays) = match named.get("group_rules") {
            Some(rules) => self.compare_rules(rules)?,
            None => self.compare_per_element(get("lr_mult")?, get("weight_decay")?)?,
        };
        if !same_rates {
            bail!("optimizer state was written with other learning-rate rules (lr_factor / bias_lr_factor)");
        }
        if !same_decays {
            tracing::warn!(
                "weight decay differs from the resumed state's: the config's applies from here on"
            );
        }
        let step = get("step")?;
        if step.kind() != Kind::Int64 || step.size() != [1] {
            bail!("optimizer state `step` is not one i64");
        }
        tch::no_grad(|| {
            self.exp_avg
                .copy_(&get("exp_avg")?.to_device(self.exp_avg.device()));
            self.exp_avg_sq
                .copy_(&get("exp_avg_sq")?.to_device(self.exp_avg.device()));
            Ok::<_, anyhow::Error>(())
        })?;
        self.step = step.int64_value(&[0]);
        Ok(())
    }

    /// (Same multipliers, same weight decays) of saved `group_rules` and this optimiser's.
    /// A state saved before the TSE groups existed has the first [`EARLIER_GROUPS`] rows.
    fn compare_rules(&self, saved: &Tensor) -> Result<(bool, bool)> {
        let rows = GROUPS.len() as i64;
        let shape_ok = matches!(saved.size()[..], [r, 2] if r == rows || r == EARLIER_GROUPS);
        if !shape_ok || saved.kind() != Kind::Double {
            bail!(
                "optimizer state `group_rules` is {:?} {:?}, expected [{rows}, 2] (or an earlier [{EARLIER_GROUPS}, 2]) f64",
                saved.kind(),
                saved.size()
            );
        }
        let ours = self.rules.narrow(0, 0, saved.size()[0]);
        let same = |col: i64| saved.select(1, col).equal(&ours.select(1, col));
        Ok((same(0), same(1)))
    }

    /// (Same multipliers, same weight decays) of the earlier layout's per-element buffers (f32,
    /// one entry per parameter element in name order) and this optimiser's groups.
    fn compare_per_element(&self, lr_mult: &Tensor, wd: &Tensor) -> Result<(bool, bool)> {
        for (k, t) in [("lr_mult", lr_mult), ("weight_decay", wd)] {
            if t.size() != self.exp_avg.size() || t.kind() != Kind::Float {
                bail!(
                    "optimizer state `{k}` is {:?} {:?}, this model needs Float {:?}",
                    t.kind(),
                    t.size(),
                    self.exp_avg.size()
                );
            }
        }
        let (mut rates, mut decays) = (true, true);
        for g in &self.groups {
            for &i in &g.members {
                let p = &self.params[i];
                let all_are = |t: &Tensor, v: f64| {
                    let slice = t.narrow(0, p.offset, p.numel);
                    slice.eq(v as f32 as f64).all().int64_value(&[]) != 0
                };
                rates &= all_are(lr_mult, g.mult);
                decays &= all_are(wd, g.weight_decay);
            }
        }
        Ok((rates, decays))
    }
}
