//! Where training stands ([`Progress`]) and how a resumable checkpoint keeps it: as string
//! metadata beside the tensors.
use crate::config::LossTerm;
use anyhow::{Context, Result};
use std::collections::HashMap;

/// Where training stands: the next (epoch, step) to run and the best result so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// 1-based epoch to run next.
    pub epoch: usize,
    /// Batches of that epoch already done.
    pub step: usize,
    pub best_r1: f64,
    pub best_epoch: usize,
    pub global_step: usize,
    /// Sum of each loss term over the `step` batches of the epoch already done, so that an epoch
    /// resumed mid-way is recorded with the mean over all of its batches.
    pub epoch_loss: Vec<(LossTerm, f64)>,
}

impl Progress {
    pub fn start() -> Progress {
        Progress {
            epoch: 1,
            step: 0,
            best_r1: -1.0,
            best_epoch: 0,
            global_step: 0,
            epoch_loss: Vec::new(),
        }
    }

    pub(super) fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("epoch".into(), self.epoch.to_string()),
            ("step".into(), self.step.to_string()),
            ("best_r1".into(), format!("{:?}", self.best_r1)),
            ("best_epoch".into(), self.best_epoch.to_string()),
            ("global_step".into(), self.global_step.to_string()),
            (EPOCH_LOSS_KEY.into(), epoch_loss_json(&self.epoch_loss)),
        ])
    }

    pub(super) fn from_metadata(meta: &HashMap<String, String>) -> Result<Progress> {
        let get = |k: &str| {
            meta.get(k)
                .with_context(|| format!("resume state has no `{k}` entry"))
        };
        let num = |k: &str| -> Result<usize> {
            get(k)?
                .parse()
                .with_context(|| format!("resume state `{k}`"))
        };
        Ok(Progress {
            epoch: num("epoch")?,
            step: num("step")?,
            best_r1: get("best_r1")?.parse().context("resume state `best_r1`")?,
            best_epoch: num("best_epoch")?,
            global_step: num("global_step")?,
            epoch_loss: match meta.get(EPOCH_LOSS_KEY) {
                // A state written before the sums were kept: the epoch's mean covers the rest.
                None => Vec::new(),
                Some(json) => parse_epoch_loss(json)
                    .with_context(|| format!("resume state `{EPOCH_LOSS_KEY}` {json:?}"))?,
            },
        })
    }
}

/// The state's entry for [`Progress::epoch_loss`]: a JSON array of `[term name, sum]` pairs in the
/// order of the loss terms (exact: f64s are written in their shortest round-trip form).
const EPOCH_LOSS_KEY: &str = "epoch_loss_sums";

fn epoch_loss_json(sums: &[(LossTerm, f64)]) -> String {
    let pairs: Vec<(String, f64)> = sums.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    serde_json::json!(pairs).to_string()
}

fn parse_epoch_loss(json: &str) -> Result<Vec<(LossTerm, f64)>> {
    let pairs: Vec<(String, f64)> = serde_json::from_str(json)?;
    pairs
        .into_iter()
        .map(|(k, v)| {
            let term = k
                .parse()
                .map_err(|_| anyhow::anyhow!("unknown loss term `{k}`"))?;
            Ok((term, v))
        })
        .collect()
}
