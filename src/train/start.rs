//! How a training command starts: a new run or a resumed one ([`Start`]), the run folder opened by
//! rank 0 and handed to the other ranks, then the trainer to the end ([`run`]).
use super::faults::Faults;
use super::interrupt;
use super::parallel::Ranks;
use super::progress::Progress;
use super::run_dir::RunDir;
use super::trainer::Trainer;
use crate::config::{Config, MicroBatch};
use crate::dist::Launch;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// How a training command starts.
pub enum Start {
    /// A new run with this config.
    New(Box<Config>),
    /// Continue the run in `dir` from its last saved step, with its own `configs.yaml` (`cfg`, as
    /// read from there); only the number of epochs may change (to at least the epochs already
    /// done).
    Resume {
        dir: PathBuf,
        cfg: Box<Config>,
        num_epoch: Option<usize>,
        /// Another `micro_batch`: the same trajectory in other passes.
        micro_batch: Option<MicroBatch>,
    },
}

impl Start {
    /// Resuming the run in `dir`: its `configs.yaml` is read here, once.
    pub fn resume(
        dir: &Path,
        num_epoch: Option<usize>,
        micro_batch: Option<MicroBatch>,
    ) -> Result<Start> {
        let cfg = Config::from_file(&RunDir::config_to_resume(dir)?)?;
        Ok(Start::Resume {
            dir: dir.to_path_buf(),
            cfg: Box::new(cfg),
            num_epoch,
            micro_batch,
        })
    }

    /// The config the run starts from: a new run's, or a resumed run's `configs.yaml` as written
    /// (before `num_epoch` or `micro_batch` change it).
    pub fn config(&self) -> &Config {
        match self {
            Start::New(cfg) | Start::Resume { cfg, .. } => cfg,
        }
    }
}

/// `ccma train`: creates (or reopens) and locks the run folder, logs into it, and trains to the
/// end. A new run's `configs.yaml` (with absolute paths) is written once the model and data are
/// ready, so a run that fails to start leaves a folder that a new run can use; a run that never
/// saved a step resumes from its start.
///
/// With a `launch` (torchrun's variables), this process is one rank of a data-parallel run: the
/// ranks meet first, rank 0 opens the run folder and tells the others where it is, and only rank 0
/// writes there.
pub fn run(start: Start, faults: Faults, launch: Option<Launch>) -> Result<Progress> {
    let (mut cfg, resume, num_epoch, micro_batch) = match &start {
        Start::Resume {
            cfg,
            num_epoch,
            micro_batch,
            ..
        } => (cfg.as_ref().clone(), true, *num_epoch, *micro_batch),
        Start::New(cfg) => {
            let cwd = std::env::current_dir().context("cannot read the current folder")?;
            (cfg.clone().with_absolute_paths(&cwd), false, None, None)
        }
    };
    let ranks = match &launch {
        Some(l) => Ranks::connect(l, &cfg)?,
        None => Ranks::single(cfg.run.device.resolve()?),
    };
    super::chunk_size::check_device(micro_batch.or(cfg.run.micro_batch), ranks.device())?;
    let run = open_run_folder(&start, &cfg, &ranks)?;
    if ranks.is_main() {
        crate::logging::set_log_file(&run.log())
            .with_context(|| format!("cannot open {}", run.log().display()))?;
        tracing::info!("run folder {}", run.dir.display());
    }
    interrupt::install_handler()?;
    let changed = num_epoch.is_some_and(|n| n != cfg.optim.num_epoch)
        || micro_batch.is_some_and(|m| Some(m) != cfg.run.micro_batch);
    if let Some(n) = num_epoch {
        tracing::info!("num_epoch {} -> {n}", cfg.optim.num_epoch);
        cfg.optim.num_epoch = n;
    }
    if let Some(m) = micro_batch {
        let was = cfg.run.micro_batch.map_or("none".into(), |m| m.to_string());
        tracing::info!("micro_batch {was} -> {m}");
        cfg.run.micro_batch = Some(m);
    }
    cfg.validate()?;
    if ranks.is_main() {
        tracing::info!(
            "config, every key resolved:\n{}",
            serde_yaml::to_string(&cfg)?.trim_end()
        );
    }
    let config_path = run.config();
    let mut trainer = Trainer::new(cfg, run, ranks, faults)?;
    let progress = match resume && trainer.run.last().exists() {
        true => {
            let p = trainer.load_state()?;
            tracing::info!(
                "resuming at epoch {}, step {} (best R@1 {:.3} at epoch {})",
                p.epoch,
                p.step,
                p.best_r1,
                p.best_epoch
            );
            p
        }
        false => Progress::start(),
    };
    trainer
        .ranks
        .sync_variables(&trainer.vs)
        .map_err(|e| trainer.lost(e))?;
    let done = progress.epoch - 1;
    if trainer.cfg.optim.num_epoch < done {
        bail!(crate::UsageError(format!(
            "num_epoch {} is fewer than the {done} epochs this run has done",
            trainer.cfg.optim.num_epoch
        )));
    }
    if trainer.ranks.is_main() && (!resume || changed) {
        trainer.cfg.save(&config_path)?;
    }
    trainer.fit(progress)
}

/// The run folder: created or reopened (and locked) by rank 0, which publishes its path (or why
/// it could not) to the other ranks through the rendezvous store.
fn open_run_folder(start: &Start, cfg: &Config, ranks: &Ranks) -> Result<RunDir> {
    const KEY: &str = "ccma/run_dir";
    if ranks.is_main() {
        let run = match start {
            Start::Resume { dir, .. } => RunDir::existing(dir),
            Start::New(_) => RunDir::create(cfg),
        };
        if let Some(g) = ranks.group() {
            let opened: Result<&Path, String> = run
                .as_ref()
                .map(|r| r.dir.as_path())
                .map_err(|e| format!("{e:#}"));
            let message = serde_json::to_string(&opened)?;
            g.publish(KEY, &message)
                .map_err(|e| anyhow::anyhow!("cannot tell the other ranks the run folder: {e}"))?;
        }
        return run;
    }
    let g = ranks.group().expect("a rank other than 0 has a group");
    let timeout = std::time::Duration::from_secs(cfg.run.dist_timeout);
    let message = g
        .fetch(KEY, timeout)
        .map_err(|e| anyhow::anyhow!("rank 0 stopped before naming the run folder: {e}"))?
        .with_context(|| {
            format!(
                "rank 0 did not name the run folder within {}s (dist_timeout)",
                cfg.run.dist_timeout
            )
        })?;
    let opened: Result<PathBuf, String> = serde_json::from_str(&message)
        .with_context(|| format!("rank 0 named the run folder as {message:?}"))?;
    match opened {
        Ok(dir) => Ok(RunDir::follow(dir)),
        Err(e) => bail!("rank 0 could not open the run folder: {e}"),
    }
}
