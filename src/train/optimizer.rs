//! Adam (or AdamW) over one flat parameter buffer with per-element learning rates and weight
//! decays.
//!
//! Every trainable variable is re-pointed (`set_data`) at a slice of one contiguous fp32 buffer;
//! the moments live in two flat buffers. The per-parameter rules of METHOD.md section 5 become two
//! per-element vectors (learning-rate multiplier and weight decay). The arithmetic follows
//! `torch.optim.Adam` (L2 decay added to the gradient) and `AdamW` operation for operation. On the
//! CPU a step is one fused pass in Rust over the buffers (parallel chunks), several times faster
//! than tensor operations there; elsewhere it is about ten tensor operations on the flat buffers,
//! whatever the number of parameters. A parameter that has no gradient (one no selected loss has
//! reached yet) is skipped, as PyTorch skips a `None` gradient; [`Optimizer::zero_grad`] zeroes
//! gradients in place, as PyTorch's `zero_grad(set_to_none=False)`.
use crate::config::{OptimSection, OptimizerKind};
use crate::model::param_groups::{param_group, RateGroup};
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Learning-rate multiplier and weight decay of a parameter, by name (the rule is the model's:
/// [`param_group`]).
pub fn param_rule(name: &str, cfg: &OptimSection) -> (f64, f64) {
    let g = param_group(name);
    let mult = match g.rate {
        RateGroup::Base => 1.0,
        RateGroup::Bias => cfg.bias_lr_factor,
        RateGroup::New => cfg.lr_factor,
    };
    let wd = if g.bias_decay {
        cfg.weight_decay_bias
    } else {
        cfg.weight_decay
    };
    (mult, wd)
}

/// A trainable variable and the slice of the flat buffer it views.
struct Param {
    var: Tensor,
    offset: i64,
    numel: i64,
}

pub struct Optimizer {
    /// Trainable variables in name order, each a view into `flat`.
    params: Vec<Param>,
    flat: Tensor,
    lr_mult: Tensor,
    weight_decay: Tensor,
    /// `lr`: a parameter's base rate is `lr` × its multiplier.
    lr: f64,
    /// The current rate of a parameter with base rate `b` is `lr_slope * b + lr_intercept`.
    lr_slope: f64,
    lr_intercept: f64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    decoupled: bool,
    /// Step with one fused pass in Rust (CPU buffers) instead of tensor operations.
    fused: bool,
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
    /// Updates the parameters `p`, moments `m`, `v` in place from the gradients `g` with per-element
    /// learning-rate multipliers `mult` and weight decays `wd` (all the same length), in the order of
    /// `torch.optim.Adam` / `AdamW`'s single-tensor step.
    fn apply(
        &self,
        p: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        g: &[f32],
        mult: &[f32],
        wd: &[f32],
    ) {
        let s = *self;
        for i in 0..p.len() {
            let lr = (mult[i] as f64 * s.lr) * s.lr_slope + s.lr_intercept;
            let mut grad = g[i];
            if s.decoupled {
                p[i] *= (1.0 - lr * wd[i] as f64) as f32;
            } else {
                grad += wd[i] * p[i];
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
        let (mut mults, mut wds, mut params) = (Vec::new(), Vec::new(), Vec::new());
        let mut offset = 0;
        for (name, mut var) in vars {
            let numel = var.numel() as i64;
            let (m, wd) = param_rule(&name, cfg);
            mults.push(Tensor::full([numel], m, (Kind::Float, device)));
            wds.push(Tensor::full([numel], wd, (Kind::Float, device)));
            var.set_data(&flat.narrow(0, offset, numel).view(var.size().as_slice()));
            params.push(Param { var, offset, numel });
            offset += numel;
        }
        let flat = flat.set_requires_grad(false);
        Optimizer {
            params,
            lr_mult: Tensor::cat(&mults, 0),
            weight_decay: Tensor::cat(&wds, 0),
            lr: cfg.lr,
            lr_slope: 0.0,
            lr_intercept: 0.0,
            exp_avg: flat.zeros_like(),
            exp_avg_sq: flat.zeros_like(),
            flat,
            step: 0,
            beta1: cfg.alpha,
            beta2: cfg.beta,
            eps: cfg.eps(),
            decoupled,
            fused: device == Device::Cpu,
        }
    }

    /// Sets the learning rates from the schedule: `rate_of(b)` is the current rate of a parameter
    /// whose base rate is `b` (`lr` × its multiplier); it must be affine in `b`, as every mode of
    /// [`crate::train::schedule::group_lr`] is.
    pub fn set_lr(&mut self, rate_of: impl Fn(f64) -> f64) {
        self.lr_intercept = rate_of(0.0);
        self.lr_slope = rate_of(1.0) - self.lr_intercept;
    }

    /// Chooses the fused CPU step (the default on the CPU) or tensor operations (any device).
    pub fn set_fused(&mut self, fused: bool) -> Result<()> {
        if fused && self.flat.device() != Device::Cpu {
            bail!("the fused optimiser step runs on the CPU only");
        }
        self.fused = fused;
        Ok(())
    }

    /// The trainable variables, in name order.
    pub fn variables(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.var.shallow_clone()).collect()
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for p in self.params.iter_mut() {
            p.var.zero_grad();
        }
    }

    /// One Adam step over the parameters that have a gradient (like `torch.optim.Adam`, a
    /// parameter without one is left as it is, moments included).
    pub fn step(&mut self) {
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
        tch::no_grad(|| {
            if self.fused {
                for p in &self.params {
                    let g = p.var.grad();
                    if g.defined() {
                        self.step_fused(&s, p.offset, &g);
                    }
                }
            } else {
                for (offset, grads) in self.runs_with_gradients() {
                    self.step_tensor_ops(&s, offset, &grads);
                }
            }
        });
    }

    /// Maximal runs of consecutive parameters that have a gradient: (offset in `flat`, their
    /// gradients flattened, f32), so that the tensor-operation step is a few operations per run.
    fn runs_with_gradients(&self) -> Vec<(i64, Vec<Tensor>)> {
        let mut runs: Vec<(i64, Vec<Tensor>)> = Vec::new();
        let mut end = -1;
        for p in &self.params {
            let g = p.var.grad();
            if !g.defined() {
                continue;
            }
            let g = g.to_kind(Kind::Float).contiguous().reshape([-1]);
            match runs.last_mut() {
                Some((_, grads)) if end == p.offset => grads.push(g),
                _ => runs.push((p.offset, vec![g])),
            }
            end = p.offset + p.numel;
        }
        runs
    }

    /// The step over one parameter (at `offset` in `flat`, gradient `grad`) in a single pass over
    /// its elements, in parallel chunks.
    fn step_fused(&self, s: &StepScalars, offset: i64, grad: &Tensor) {
        let grad = grad.to_kind(Kind::Float).contiguous();
        let len = grad.numel() as i64;
        // SAFETY: `flat`, the moments, the per-element rules and `grad` are distinct contiguous
        // f32 CPU buffers (`fused` is only set on the CPU) of at least `offset + len` (resp. `len`)
        // elements; nothing else touches them during the step.
        let len = len as usize;
        let (p, m, v, mult, wd, g) = unsafe {
            use std::slice::{from_raw_parts, from_raw_parts_mut};
            (
                from_raw_parts_mut(f32_ptr(&self.flat, offset), len),
                from_raw_parts_mut(f32_ptr(&self.exp_avg, offset), len),
                from_raw_parts_mut(f32_ptr(&self.exp_avg_sq, offset), len),
                from_raw_parts(f32_ptr(&self.lr_mult, offset), len),
                from_raw_parts(f32_ptr(&self.weight_decay, offset), len),
                from_raw_parts(f32_ptr(&grad, 0), len),
            )
        };
        p.par_chunks_mut(FUSED_CHUNK)
            .zip(m.par_chunks_mut(FUSED_CHUNK))
            .zip(v.par_chunks_mut(FUSED_CHUNK))
            .zip(g.par_chunks(FUSED_CHUNK))
            .zip(mult.par_chunks(FUSED_CHUNK).zip(wd.par_chunks(FUSED_CHUNK)))
            .for_each(|((((p, m), v), g), (mult, wd))| s.apply(p, m, v, g, mult, wd));
    }

    /// The step over one run as whole-tensor operations (any device).
    fn step_tensor_ops(&self, s: &StepScalars, offset: i64, grads: &[Tensor]) {
        let mut g = Tensor::cat(grads, 0);
        let len = g.numel() as i64;
        let mut p = self.flat.narrow(0, offset, len);
        let mut m = self.exp_avg.narrow(0, offset, len);
        let mut v = self.exp_avg_sq.narrow(0, offset, len);
        let lr = self.lr_mult.narrow(0, offset, len) * (self.lr * s.lr_slope) + s.lr_intercept;
        let wd = self.weight_decay.narrow(0, offset, len);
        if s.decoupled {
            let _ = p.g_mul_(&(1.0 - &lr * &wd));
        } else {
            g = g.addcmul(&p, &wd);
        }
        let _ = m.lerp_(&g, 1.0 - self.beta1);
        let _ = v
            .g_mul_scalar_(self.beta2)
            .g_add_(&(g.square() * (1.0 - self.beta2)));
        let denom = (v.sqrt() / s.bc2_sqrt as f64) + self.eps;
        let _ = p.addcmul_(&(&m / denom), &(lr * (-1.0 / s.bc1)));
    }

    /// The state to save: moments, step count and the hyper-parameters that must match.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            ("exp_avg".into(), self.exp_avg.shallow_clone()),
            ("exp_avg_sq".into(), self.exp_avg_sq.shallow_clone()),
            ("step".into(), Tensor::from_slice(&[self.step])),
            ("lr_mult".into(), self.lr_mult.shallow_clone()),
            ("weight_decay".into(), self.weight_decay.shallow_clone()),
        ]
    }

    /// Restores a state written by [`Optimizer::state_tensors`] for the same model. The weight
    /// decays stay those of the config this optimiser was built with (an edited
    /// `weight_decay` acts from the resumed step on, and is logged).
    pub fn load_state(&mut self, named: &HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str| {
            named
                .get(k)
                .ok_or_else(|| anyhow::anyhow!("missing optimizer state `{k}`"))
        };
        for (k, own) in [
            ("exp_avg", &self.exp_avg),
            ("lr_mult", &self.lr_mult),
            ("weight_decay", &self.weight_decay),
        ] {
            if get(k)?.size() != own.size() {
                bail!(
                    "optimizer state `{k}` has shape {:?}, this model needs {:?}",
                    get(k)?.size(),
                    own.size()
                );
            }
        }
        if !get("lr_mult")?
            .to_device(self.lr_mult.device())
            .equal(&self.lr_mult)
        {
            bail!("optimizer state was written with other learning-rate rules (lr_factor / bias_lr_factor)");
        }
        tch::no_grad(|| {
            self.exp_avg
                .copy_(&get("exp_avg")?.to_device(self.exp_avg.device()));
            self.exp_avg_sq
                .copy_(&get("exp_avg_sq")?.to_device(self.exp_avg.device()));
            Ok::<_, anyhow::Error>(())
        })?;
        let saved_wd = get("weight_decay")?.to_device(self.weight_decay.device());
        if !saved_wd.equal(&self.weight_decay) {
            tracing::warn!(
                "weight decay differs from the resumed state's: the config's applies from here on"
            );
        }
        self.step = get("step")?.int64_value(&[0]);
        Ok(())
    }
}
