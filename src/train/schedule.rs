//! Learning-rate schedule per epoch: warm-up, then cosine (or step, exp, poly, linear), with
//! IRRA's semantics. Epochs are 1-based; epoch `e` uses the scheduler position `e - 1`.
use crate::config::{OptimSection, Scheduler, WarmupMethod};

/// The learning rate at (1-based) `epoch` of the parameters with the default group's base rate
/// (`lr`), the rate that is logged.
pub fn lr_at(cfg: &OptimSection, epoch: usize) -> f64 {
    group_lr(cfg, epoch, cfg.lr)
}

/// The learning rate at (1-based) `epoch` of a parameter group whose base rate is `base`
/// (`lr` × the group's multiplier). Affine in `base` in every mode.
pub fn group_lr(cfg: &OptimSection, epoch: usize, base: f64) -> f64 {
    let e = epoch.saturating_sub(1) as f64;
    let warm = cfg.warmup_epochs as f64;
    if e < warm {
        let factor = match cfg.warmup_method {
            WarmupMethod::Constant => cfg.warmup_factor,
            WarmupMethod::Linear => {
                let alpha = e / warm;
                cfg.warmup_factor * (1.0 - alpha) + alpha
            }
        };
        return base * factor;
    }
    let ratio = (e - warm) / (cfg.num_epoch as f64 - warm).max(1.0);
    match cfg.lrscheduler {
        Scheduler::Step => {
            let passed = cfg.milestones.iter().filter(|&&m| (m as f64) <= e).count();
            base * cfg.gamma.powi(passed as i32)
        }
        Scheduler::Exp => base * cfg.power.powf(ratio),
        Scheduler::Linear => base * (1.0 - ratio),
        Scheduler::Poly => cfg.target_lr + (base - cfg.target_lr) * cfg.power.powf(1.0 - ratio),
        Scheduler::Cosine => {
            cfg.target_lr
                + (base - cfg.target_lr) * 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_hand_values() {
        let cfg = OptimSection::default(); // lr 1e-5, 5 warm-up epochs from 0.1, cosine to 0 at 60
        assert!((lr_at(&cfg, 1) - 1e-6).abs() < 1e-18);
        assert!((lr_at(&cfg, 3) - 1e-5 * (0.1 * 0.6 + 0.4)).abs() < 1e-18);
        assert!((lr_at(&cfg, 6) - 1e-5).abs() < 1e-18);
        assert!(
            (lr_at(&cfg, 33) - 1e-5 * 0.5 * (1.0 + (std::f64::consts::PI * 27.0 / 55.0).cos()))
                .abs()
                < 1e-18
        );
    }
}
