//! `RunSection`: where a run goes and how it is driven.
use super::{DistBackend, MatmulPrecision, MicroBatch};
use crate::device::DeviceSpec;
use crate::ranges::{check_range, invalid};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where a run goes and how it is driven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSection {
    /// Experiment name, the suffix of the run folder.
    pub name: String,
    /// Runs go to `<output_dir>/<dataset_name>/<YYYYmmdd_HHMMSS>_<name>/`.
    pub output_dir: PathBuf,
    /// Explicit run folder (overrides the generated one).
    pub run_dir: Option<PathBuf>,
    pub device: DeviceSpec,
    pub seed: u64,
    /// Log the epoch's running losses every this many steps of an epoch.
    pub log_period: usize,
    /// Evaluate on the test split every this many epochs (and after the last).
    pub eval_period: usize,
    /// The c10d backend of a data-parallel run: `auto` is NCCL on CUDA, Gloo on the CPU.
    pub dist_backend: DistBackend,
    /// Seconds a data-parallel collective (and the rendezvous) may wait for the other ranks.
    pub dist_timeout: u64,
    /// Samples per pass of a training step; none = the whole (rank's) batch in one pass. With
    /// chunks, the step caches the batch's features and their gradients (the gradient-cache
    /// technique), so the gradient stays the whole batch's.
    pub micro_batch: Option<MicroBatch>,
    /// Float32 matmul precision on CUDA (docs/REPRODUCTION.md); the CPU always computes in fp32.
    pub matmul_precision: MatmulPrecision,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            name: "ccma".into(),
            output_dir: "logs".into(),
            run_dir: None,
            device: DeviceSpec::Auto,
            seed: 1,
            log_period: 100,
            eval_period: 1,
            dist_backend: DistBackend::Auto,
            dist_timeout: DEFAULT_DIST_TIMEOUT,
            micro_batch: None,
            matmul_precision: MatmulPrecision::High,
        }
    }
}

/// `dist_timeout` when not set: 30 minutes, as PyTorch's process groups default to.
pub const DEFAULT_DIST_TIMEOUT: u64 = 1800;

impl RunSection {
    /// Whether the data-parallel keys keep their defaults (they act only when ranks communicate).
    pub fn dist_defaults(&self) -> bool {
        self.dist_backend == DistBackend::Auto && self.dist_timeout == DEFAULT_DIST_TIMEOUT
    }
}

impl RunSection {
    pub(super) fn validate(&self) -> Result<()> {
        let n = &self.name;
        let one_component =
            !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\\', '\0']);
        if !one_component {
            invalid!(
                "name",
                "{n:?} (expected a plain name: one folder name, without `/`, `\\` or `..`)"
            );
        }
        check_range(&[
            ("log_period", self.log_period as f64, 1.0, 1e9),
            ("eval_period", self.eval_period as f64, 1.0, 1e9),
            ("dist_timeout", self.dist_timeout as f64, 1.0, 1e7),
        ])?;
        if self.micro_batch == Some(MicroBatch::Size(0)) {
            invalid!(
                "micro_batch",
                "0 (expected at least 1 sample per pass, auto, or no micro_batch for one pass)"
            );
        }
        Ok(())
    }
}
