//! Adam (or AdamW) over one flat parameter buffer with per-element learning rates and weight
//! decays, so a step is about ten tensor operations whatever the number of parameters.
//!
//! Every trainable variable is re-pointed (`set_data`) at a slice of one contiguous fp32 buffer;
//! gradients are gathered with one `cat`; the moments live in two flat buffers. The per-parameter
//! rules of METHOD.md section 5 become two per-element vectors (learning-rate multiplier and weight
//! decay). The arithmetic follows `torch.optim.Adam` (L2 decay added to the gradient) operation
//! for operation.
use crate::config::Config;
use anyhow::{bail, Result};
use std::collections::HashMap;
use tch::{nn::VarStore, Kind, Tensor};

/// Learning-rate multiplier and weight decay of a parameter, by name, in METHOD.md's order:
/// randomly initialised modules (`cross*`, `dca_*`) × lr_factor; any bias × bias_lr_factor with
/// weight_decay_bias; `classifier` and `mlm_head` × lr_factor.
pub fn param_group(name: &str, cfg: &Config) -> (f64, f64) {
    let (mut mult, mut wd) = (1.0, cfg.weight_decay);
    if name.contains("cross") || name.starts_with("dca_") {
        mult = cfg.lr_factor;
    }
    if name.contains("bias") {
        mult = cfg.bias_lr_factor;
        wd = cfg.weight_decay_bias;
    }
    if name.contains("classifier") || name.contains("mlm_head") {
        mult = cfg.lr_factor;
    }
    (mult, wd)
}

pub struct Optimizer {
    /// Trainable variables in name order, each a view into `flat`.
    params: Vec<(String, Tensor)>,
    flat: Tensor,
    lr_mult: Tensor,
    weight_decay: Tensor,
    /// lr_mult × the current base learning rate.
    lr: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    decoupled: bool,
}

impl Optimizer {
    pub fn new(vs: &VarStore, cfg: &Config) -> Result<Optimizer> {
        let decoupled = match cfg.optimizer.as_str() {
            "Adam" => false,
            "AdamW" => true,
            other => bail!(crate::UsageError(format!(
                "invalid value for `optimizer`: {other:?} (expected Adam or AdamW)"
            ))),
        };
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
                    .map(|(_, t)| t.detach().reshape([-1]))
                    .collect::<Vec<_>>(),
                0,
            )
        });
        let (mut mults, mut wds) = (Vec::new(), Vec::new());
        let mut offset = 0;
        for (name, t) in vars.iter_mut() {
            let n = t.numel() as i64;
            let (m, wd) = param_group(name, cfg);
            mults.push(Tensor::full([n], m, (Kind::Float, device)));
            wds.push(Tensor::full([n], wd, (Kind::Float, device)));
            t.set_data(&flat.narrow(0, offset, n).view(t.size().as_slice()));
            offset += n;
        }
        let flat = flat.set_requires_grad(false);
        let lr_mult = Tensor::cat(&mults, 0);
        Ok(Optimizer {
            params: vars,
            lr: lr_mult.zeros_like(),
            lr_mult,
            weight_decay: Tensor::cat(&wds, 0),
            exp_avg: flat.zeros_like(),
            exp_avg_sq: flat.zeros_like(),
            flat,
            step: 0,
            beta1: cfg.alpha,
            beta2: cfg.beta,
            eps: cfg.eps,
            decoupled,
        })
    }

    /// Sets the base learning rate (each parameter gets base × its multiplier).
    pub fn set_lr(&mut self, base: f64) {
        self.lr = &self.lr_mult * base;
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    /// One Adam step over all parameters.
    pub fn step(&mut self) {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, p)| {
                    let g = p.grad();
                    if g.defined() {
                        g.reshape([-1])
                    } else {
                        Tensor::zeros([p.numel() as i64], (Kind::Float, p.device()))
                    }
                })
                .collect();
            let mut g = Tensor::cat(&grads, 0);
            self.step += 1;
            if self.decoupled {
                let _ = self.flat.g_mul_(&(1.0 - &self.lr * &self.weight_decay));
            } else {
                g = g.addcmul(&self.flat, &self.weight_decay);
            }
            let _ = self.exp_avg.lerp_(&g, 1.0 - self.beta1);
            let _ = self
                .exp_avg_sq
                .g_mul_scalar_(self.beta2)
                .g_add_(&(g.square() * (1.0 - self.beta2)));
            let bc1 = 1.0 - self.beta1.powi(self.step as i32);
            let bc2 = 1.0 - self.beta2.powi(self.step as i32);
            let denom = (self.exp_avg_sq.sqrt() / bc2.sqrt()) + self.eps;
            let _ = self
                .flat
                .addcmul_(&(&self.exp_avg / denom), &(&self.lr * (-1.0 / bc1)));
        });
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

    /// Restores a state written by [`Optimizer::state_tensors`] for the same model and config.
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
            self.weight_decay
                .copy_(&get("weight_decay")?.to_device(self.exp_avg.device()));
            Ok::<_, anyhow::Error>(())
        })?;
        self.step = get("step")?.int64_value(&[0]);
        Ok(())
    }
}
