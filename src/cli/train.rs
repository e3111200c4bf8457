//! `ccma train`.
use super::args::{ConfigArgs, DeviceArg};
use super::flags::{self, Flags, TrainScope};
use crate::config::Config;
use crate::dist::Launch;
use crate::train::parallel::choose_backend;
use crate::train::{Faults, RankFault, Start};
use crate::UsageError;
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Train a model into a run folder.
///
/// The run folder holds configs.yaml, checkpoints, logs and results. IRRA's spellings of its
/// train.py flags are taken too (`--batch_size 64 --MLM --img_aug --lr 1e-5`).
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub flags: Flags<TrainScope>,
    /// Continue a run folder from its last saved step, with its own configs.yaml (--num-epoch may
    /// change the number of epochs, --micro-batch the passes of a step).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Data-parallel on this machine: start N ranks (processes) over the loopback, as torchrun
    /// --nproc-per-node does; `batch_size` stays the global batch.
    #[arg(long, value_name = "N")]
    pub nproc_per_node: Option<usize>,
}

/// How `--resume RUN_DIR` starts: the run keeps its own configs.yaml, which only the flags that
/// [`flags::SETTINGS`] lets `--resume` take may change.
fn resumed(a: &TrainArgs, dir: &Path) -> Result<Start> {
    let given = [
        &a.config.dataset.given,
        &a.device.flags.given,
        &a.flags.given,
    ];
    let refused = match (&a.config.config, a.config.set.is_empty()) {
        (Some(_), _) => Some("--config".to_string()),
        (None, false) => Some("--set".to_string()),
        (None, true) => given
            .iter()
            .flat_map(|g| g.iter())
            .find(|g| !g.flag.on_resume)
            .map(|g| format!("--{}", g.flag.long)),
    };
    if let Some(flag) = refused {
        bail!(UsageError(format!(
            "--resume continues a run with the configs.yaml in its folder: only {} may change it, not {flag}",
            flags::resume_flags()
        )));
    }
    // The values as the config's types read them.
    let asked = Config::default().with_overrides(&a.flags.pairs())?;
    Start::resume(
        dir,
        a.flags.has("num_epoch").then_some(asked.optim.num_epoch),
        asked.run.micro_batch,
    )
}

/// Faults the tests inject through the environment: `CCMA_INJECT_NAN_AT_STEP=N` (the first loss
/// term is NaN at global step N), `CCMA_INTERRUPT_AT_STEP=N` (Ctrl-C after N global steps),
/// `CCMA_PARK_AT_STEP=N` (every rank waits before global step N until it is interrupted) and
/// `CCMA_RANK_FAULT=kill:R:N` or `stall:R:N` (rank R kills itself, or stops answering, before
/// global step N).
fn faults_from_env() -> Faults {
    let step = |var: &str| std::env::var(var).ok()?.parse().ok();
    let rank_fault = std::env::var("CCMA_RANK_FAULT").ok().and_then(|v| {
        let mut parts = v.split(':');
        let kill = match parts.next()? {
            "kill" => true,
            "stall" => false,
            _ => return None,
        };
        Some(RankFault {
            kill,
            rank: parts.next()?.parse().ok()?,
            step: parts.next()?.parse().ok()?,
        })
    });
    Faults {
        nan_at_step: step("CCMA_INJECT_NAN_AT_STEP"),
        interrupt_after_step: step("CCMA_INTERRUPT_AT_STEP"),
        park_at_step: step("CCMA_PARK_AT_STEP"),
        rank_fault,
    }
}

/// The data-parallel keys act only when ranks communicate; a new one-process run refuses them.
fn check_dist_keys(cfg: &Config, launched: bool) -> Result<()> {
    if !launched && !cfg.run.dist_defaults() {
        bail!(UsageError(format!(
            "dist_backend {} / dist_timeout {} apply to data-parallel runs; this is one process: launch with --nproc-per-node N or torchrun, or drop them",
            cfg.run.dist_backend, cfg.run.dist_timeout
        )));
    }
    Ok(())
}

/// A paper config names a backbone (`pretrain_choice`); training it from random weights is
/// refused unless the config says so (an empty `pretrain_choice`).
fn check_pretrained(cfg: &Config) -> Result<()> {
    let choice = &cfg.model.pretrain_choice;
    if !choice.is_empty() && cfg.model.pretrained.is_none() {
        bail!(UsageError(format!(
            "`pretrain_choice` is {choice:?} but no weights were given: pass --pretrained FILE (OpenAI's ViT-B-16.pt, a Hugging Face CLIP folder or an IRRA best.pth), or set `pretrain_choice: ''` to train from scratch on purpose"
        )));
    }
    Ok(())
}

pub fn run(a: TrainArgs) -> Result<()> {
    let start = match &a.resume {
        Some(dir) => resumed(&a, dir)?,
        None => Start::New(Box::new(
            a.config
                .resolve(None, &[&a.device.flags.given, &a.flags.given])?,
        )),
    };
    let launch = match a.nproc_per_node {
        Some(_) => super::launch::check_not_nested().map(|()| None)?,
        None => Launch::from_env()?,
    };
    if let Start::New(cfg) = &start {
        check_pretrained(cfg)?;
        check_dist_keys(cfg, launch.is_some() || a.nproc_per_node.is_some())?;
    }
    // The images exist before a model is built (and before any rank starts).
    super::preflight::require_images(start.config())?;
    if let Some(n) = a.nproc_per_node {
        // What every rank would refuse, refused once here, before any is started.
        let cfg = start.config();
        let device = cfg.run.device.resolve_for_rank(0)?;
        super::launch::check_nproc(n, device)?;
        choose_backend(cfg, device)?;
        return super::launch::run(n);
    }
    crate::train::run(start, faults_from_env(), launch)?;
    Ok(())
}
