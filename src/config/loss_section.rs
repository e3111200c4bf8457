//! `LossSection`: which loss terms are trained and their constants.
use super::{GlobalCaption, LossNames, LossTerm, NoiseFilter};
use crate::ranges::{check_positive, check_range, invalid};
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Which loss terms are trained and their constants (METHOD.md section 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(non_snake_case)]
pub struct LossSection {
    /// The terms trained (`mlm` among them needs `MLM`).
    pub loss_names: LossNames,
    /// The masking data path: captions are MLM-masked for the MLM branch (and, with
    /// `global_caption: masked`, for the global features too).
    pub MLM: bool,
    pub global_caption: GlobalCaption,
    pub temperature: f64,
    pub id_loss_weight: f64,
    pub mlm_loss_weight: f64,
    pub masked_token_rate: f64,
    pub masked_token_unchanged_rate: f64,
    pub imal_temperature: f64,
    pub imal_gamma: f64,
    pub imal_kl_weight: f64,
    /// TAL's temperature τ and margin m (RDE's `tau`, `margin`).
    pub tau: f64,
    pub margin: f64,
    /// RDE's consensus clean division before every epoch (`ccd`), or none.
    pub noise_filter: NoiseFilter,
    /// Epochs trained on all pairs before the division starts (it runs before every later one).
    pub ccd_warmup: usize,
}

impl Default for LossSection {
    fn default() -> Self {
        LossSection {
            loss_names: "imal".parse().expect("a valid loss set"),
            MLM: true,
            global_caption: GlobalCaption::Masked,
            temperature: 0.02,
            id_loss_weight: 1.0,
            mlm_loss_weight: 1.0,
            masked_token_rate: 0.8,
            masked_token_unchanged_rate: 0.1,
            imal_temperature: 0.5,
            imal_gamma: 0.05,
            imal_kl_weight: 0.005,
            tau: 0.015,
            margin: 0.1,
            noise_filter: NoiseFilter::None,
            ccd_warmup: 0,
        }
    }
}

impl LossSection {
    pub(super) fn validate(&self) -> Result<()> {
        check_positive(&[
            ("temperature", self.temperature),
            ("imal_temperature", self.imal_temperature),
            ("tau", self.tau),
        ])?;
        check_range(&[
            ("id_loss_weight", self.id_loss_weight, 0.0, 1e6),
            ("mlm_loss_weight", self.mlm_loss_weight, 0.0, 1e6),
            ("imal_gamma", self.imal_gamma, 0.0, 1e6),
            ("imal_kl_weight", self.imal_kl_weight, 0.0, 1e6),
            ("margin", self.margin, 0.0, 1e6),
            ("ccd_warmup", self.ccd_warmup as f64, 0.0, 1e6),
            ("masked_token_rate", self.masked_token_rate, 0.0, 1.0),
            (
                "masked_token_unchanged_rate",
                self.masked_token_unchanged_rate,
                0.0,
                1.0 - self.masked_token_rate,
            ),
        ])?;
        if !self.MLM && self.loss_names.terms().contains(&LossTerm::Mlm) {
            invalid!(
                "MLM",
                "false, but `loss_names` {:?} has the mlm term, which needs masked captions (set `MLM: true`, or leave mlm out of `loss_names`; imal includes it)",
                self.loss_names.to_string()
            );
        }
        Ok(())
    }

    /// Whether the global text features see the masked captions.
    pub fn masked_global_captions(&self) -> bool {
        self.MLM && self.global_caption == GlobalCaption::Masked
    }
}
