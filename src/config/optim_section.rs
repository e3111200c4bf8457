//! `OptimSection`: the optimiser and the learning-rate schedule.
use super::{OptimizerKind, Scheduler, WarmupMethod};
use crate::ranges::{check_positive, check_range, invalid};
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// The optimiser and the learning-rate schedule (METHOD.md section 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimSection {
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub bias_lr_factor: f64,
    pub lr_factor: f64,
    /// The learning rate of RDE's TSE layers, absolute (not a multiple of `lr`).
    pub tse_lr: f64,
    pub weight_decay: f64,
    pub weight_decay_bias: f64,
    pub alpha: f64,
    pub beta: f64,
    /// Adam's epsilon; none = IRRA's for the optimiser (1e-3 for Adam, 1e-8 for AdamW).
    pub eps: Option<f64>,
    pub num_epoch: usize,
    pub milestones: Vec<usize>,
    pub gamma: f64,
    pub warmup_factor: f64,
    pub warmup_epochs: usize,
    pub warmup_method: WarmupMethod,
    pub lrscheduler: Scheduler,
    pub target_lr: f64,
    pub power: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            optimizer: OptimizerKind::Adam,
            lr: 1e-5,
            bias_lr_factor: 2.0,
            lr_factor: 5.0,
            tse_lr: 1e-3,
            weight_decay: 4e-5,
            weight_decay_bias: 0.0,
            alpha: 0.9,
            beta: 0.999,
            eps: None,
            num_epoch: 60,
            milestones: vec![20, 50],
            gamma: 0.1,
            warmup_factor: 0.1,
            warmup_epochs: 5,
            warmup_method: WarmupMethod::Linear,
            lrscheduler: Scheduler::Cosine,
            target_lr: 0.0,
            power: 0.9,
        }
    }
}

impl OptimSection {
    /// The epsilon in effect: `eps`, else IRRA's for the optimiser.
    pub fn eps(&self) -> f64 {
        self.eps.unwrap_or(match self.optimizer {
            OptimizerKind::Adam => 1e-3,
            OptimizerKind::AdamW => 1e-8,
        })
    }

    pub(super) fn validate(&self) -> Result<()> {
        check_positive(&[
            ("lr", self.lr),
            ("lr_factor", self.lr_factor),
            ("bias_lr_factor", self.bias_lr_factor),
            ("tse_lr", self.tse_lr),
            ("gamma", self.gamma),
            ("power", self.power),
            ("eps", self.eps()),
        ])?;
        check_range(&[
            ("num_epoch", self.num_epoch as f64, 1.0, 1e6),
            ("weight_decay", self.weight_decay, 0.0, 1e6),
            ("weight_decay_bias", self.weight_decay_bias, 0.0, 1e6),
            ("warmup_epochs", self.warmup_epochs as f64, 0.0, 1e6),
            ("target_lr", self.target_lr, 0.0, 1e6),
        ])?;
        for (key, v) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(0.0..1.0).contains(&v) {
                invalid!(key, "{v} (expected 0 <= value < 1)");
            }
        }
        if !(self.warmup_factor > 0.0 && self.warmup_factor <= 1.0) {
            invalid!(
                "warmup_factor",
                "{} (expected 0 < value <= 1)",
                self.warmup_factor
            );
        }
        if self.milestones.windows(2).any(|w| w[0] >= w[1]) {
            invalid!(
                "milestones",
                "{:?} (expected increasing epochs)",
                self.milestones
            );
        }
        Ok(())
    }
}
