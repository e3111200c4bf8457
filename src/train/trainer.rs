//! The training loop: epochs of optimiser steps, periodic evaluation, checkpoints and resumption.
use super::interrupt::{self, Interrupted};
use super::optimizer::Optimizer;
use super::parallel::Ranks;
use super::record::{self, EpochRecord, Results};
use super::run_dir::RunDir;
use super::schedule::{group_lr, lr_at};
use super::step::{step, NonFiniteTerm, StepError, StepOptions, StepOutcome};
use crate::config::{Config, LossTerm, MicroBatch, SplitName};
use crate::data::annotations::Dataset;
use crate::data::batch::TrainBatch;
use crate::data::loader::{LoaderOptions, Shard, TrainLoader};
use crate::dist::Launch;
use crate::loss::LossSpec;
use crate::model::Ccma;
use crate::report::tfevents::EventWriter;
use crate::retrieval::encode::{embed_split, score_split, EncodeOptions};
use crate::retrieval::metrics::RetrievalMetrics;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn::VarStore, Tensor};

/// Faults to inject, for tests of the failure paths (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Make the first loss term NaN at this global step (0-based).
    pub nan_at_step: Option<usize>,
    /// Act as if Ctrl-C was pressed once this many global steps are done.
    pub interrupt_after_step: Option<usize>,
    /// Every rank waits before this global step (0-based) until it is interrupted.
    pub park_at_step: Option<usize>,
    /// One rank fails before a global step (0-based).
    pub rank_fault: Option<RankFault>,
}

impl Faults {
    /// What the faults do before global step `global_step` of rank `rank`: the rank fault (kill
    /// or hang) and the park; then the step's options, the NaN and the interrupt among them.
    fn before_step(&self, rank: usize, global_step: usize, chunk: Option<usize>) -> StepOptions {
        if let Some(f) = self.rank_fault {
            if (f.rank, f.step) == (rank, global_step) {
                match f.kill {
                    // SAFETY: raising a signal on this process.
                    true => unsafe {
                        libc::raise(libc::SIGKILL);
                    },
                    false => loop {
                        std::thread::park();
                    },
                }
            }
        }
        if self.park_at_step == Some(global_step) {
            tracing::warn!(
                "rank {rank} (pid {}) parked before global step {global_step} until interrupted",
                std::process::id(),
            );
            interrupt::wait_for_request();
        }
        StepOptions {
            chunk,
            poison: self.nan_at_step == Some(global_step),
            stop: interrupt::requested() || self.interrupt_after_step == Some(global_step + 1),
        }
    }
}

/// A rank that dies or hangs, for tests of how the other ranks stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankFault {
    pub rank: usize,
    pub step: usize,
    /// SIGKILL itself (true) or stop answering for good (false).
    pub kill: bool,
}

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

    fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("epoch".into(), self.epoch.to_string()),
            ("step".into(), self.step.to_string()),
            ("best_r1".into(), format!("{:?}", self.best_r1)),
            ("best_epoch".into(), self.best_epoch.to_string()),
            ("global_step".into(), self.global_step.to_string()),
            (EPOCH_LOSS_KEY.into(), epoch_loss_json(&self.epoch_loss)),
        ])
    }

    fn from_metadata(meta: &HashMap<String, String>) -> Result<Progress> {
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

/// A loss term that is not finite: training stops and names it.
#[derive(Debug, thiserror::Error)]
#[error("loss term `{term}` is {value} at epoch {epoch}, step {step} (global step {global_step}); stopped, the last good checkpoint is kept")]
pub struct NonFiniteLoss {
    pub term: LossTerm,
    pub value: f64,
    pub epoch: usize,
    pub step: usize,
    pub global_step: usize,
}

/// Running means of the loss terms over an epoch, and its throughput (since it started here).
struct EpochMeter {
    sums: Vec<(LossTerm, f64)>,
    steps: usize,
    samples: usize,
    started: Instant,
}

impl EpochMeter {
    /// The meter of the epoch `progress` is in, with the sums of its batches already done.
    fn resume(progress: &Progress) -> EpochMeter {
        EpochMeter {
            sums: progress.epoch_loss.clone(),
            steps: progress.step,
            samples: 0,
            started: Instant::now(),
        }
    }

    fn add(
        &mut self,
        StepOutcome {
            values, samples, ..
        }: &StepOutcome,
    ) {
        for (term, v) in values {
            match self.sums.iter_mut().find(|(k, _)| k == term) {
                Some((_, s)) => *s += v,
                None => self.sums.push((*term, *v)),
            }
        }
        self.steps += 1;
        self.samples += samples;
    }

    fn means(&self) -> impl Iterator<Item = (LossTerm, f64)> + '_ {
        let n = self.steps.max(1) as f64;
        self.sums.iter().map(move |(k, s)| (*k, s / n))
    }

    fn samples_per_s(&self) -> f64 {
        self.samples as f64 / self.started.elapsed().as_secs_f64()
    }

    /// `sdm 1.234 id 0.567 ...` with `decimals` digits.
    fn summary(&self, decimals: usize) -> String {
        let shown: Vec<String> = self
            .means()
            .map(|(k, m)| format!("{k} {m:.decimals$}"))
            .collect();
        shown.join(" ")
    }
}

/// Everything a run needs, built once. Every rank of a data-parallel run has one; rank 0 alone
/// writes the run folder and evaluates.
pub struct Trainer {
    cfg: Config,
    run: RunDir,
    ranks: Ranks,
    dataset: Dataset,
    vs: VarStore,
    model: Ccma,
    opt: Optimizer,
    loader: TrainLoader,
    spec: LossSpec,
    /// Samples per pass of a step (`micro_batch` resolved); `None`: one pass.
    chunk: Option<usize>,
    faults: Faults,
    events: Option<EventWriter>,
}

impl Trainer {
    pub fn new(cfg: Config, run: RunDir, ranks: Ranks, faults: Faults) -> Result<Trainer> {
        let device = ranks.device();
        tch::manual_seed(cfg.run.seed as i64);
        let dataset = crate::data::load_dataset(&cfg)?;
        match cfg.data.val_dataset {
            SplitName::Test => dataset.require_splits(&["train", "test"])?,
            SplitName::Val => dataset.require_splits(&["train", "test", "val"])?,
        }
        tracing::info!(
            "{}: {} training pairs, {} identities, {} test images, {} test captions",
            dataset.name,
            dataset.train.len(),
            dataset.num_classes,
            dataset.test.image_paths.len(),
            dataset.test.captions.len()
        );
        let loader = TrainLoader::new(
            dataset.train.clone(),
            LoaderOptions {
                shard: Shard {
                    rank: ranks.rank(),
                    world: ranks.world(),
                },
                ..LoaderOptions::from_config(&cfg, device)
            },
        )?;
        if loader.num_batches(1) == 0 {
            let d = &cfg.data;
            bail!(crate::UsageError(format!(
                "the {} sampler cannot fill one batch of {} from the {} training pairs (`sampler`, `batch_size`, `num_instance` {}): nothing would be trained",
                d.sampler,
                d.batch_size,
                dataset.train.len(),
                d.num_instance
            )));
        }
        let (vs, model) = crate::factory::training_model(&cfg, dataset.num_classes as i64, device)?;
        let mut opt = Optimizer::new(&vs, &cfg.optim);
        let spec = LossSpec::of(&cfg);
        let share = cfg.data.batch_size.div_ceil(ranks.world());
        let chunk = super::micro_batch::resolve(cfg.run.micro_batch, share, device, |c| {
            let d = &cfg.data;
            let classes = dataset.num_classes as i64;
            let batch =
                TrainBatch::random(share as i64, d.img_size, d.text_length, classes, device);
            Ok(super::step::probe(&model, &mut opt, &batch, &spec, c)?)
        })?;
        let names: Vec<&str> = spec.terms.iter().map(|t| t.name()).collect();
        tracing::info!(
            "device {device:?}, losses {}, {} parameters",
            names.join("+"),
            count_params(&vs)
        );
        Ok(Trainer {
            cfg,
            run,
            ranks,
            dataset,
            vs,
            model,
            opt,
            loader,
            spec,
            chunk,
            faults,
            events: None,
        })
    }

    /// The full resumable state: model parameters, optimiser state, the model's sizes and
    /// `progress` as metadata.
    fn save_state(&self, progress: &Progress) -> Result<()> {
        let tensors = resumable_tensors(&self.vs, &self.opt);
        let mut meta = self.model.config.to_metadata();
        meta.extend(progress.to_metadata());
        crate::io::safetensors::save(&self.run.last(), &tensors, &meta)
            .context("cannot write the resumable checkpoint")
    }

    /// Restores a state written by [`Trainer::save_state`].
    pub fn load_state(&mut self) -> Result<Progress> {
        let path = self.run.last();
        let (tensors, meta) = crate::io::safetensors::load(&path)?;
        let grid = self.model.config.clip.grid();
        restore_resumable(&mut self.vs, &mut self.opt, tensors, grid, &path)?;
        Progress::from_metadata(&meta).with_context(|| format!("resume state {}", path.display()))
    }

    /// `best.safetensors`: the model's parameters and sizes.
    fn save_best(&self) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        crate::io::safetensors::save(&self.run.best(), &tensors, &self.model.config.to_metadata())
            .context("cannot write the best checkpoint")
    }

    /// t2i metrics on the evaluation split `split`.
    fn evaluate(&self, split: SplitName) -> Result<RetrievalMetrics> {
        let opts = EncodeOptions::from_config(&self.cfg.data, self.ranks.device());
        let data = self.dataset.eval_split(split);
        let feats = embed_split(&self.model, data, &opts)?;
        Ok(score_split(&feats, data, false)?.0)
    }

    /// Trains from `progress` to the last epoch.
    pub fn fit(&mut self, mut progress: Progress) -> Result<Progress> {
        let started = Instant::now();
        let last = self.cfg.optim.num_epoch;
        while progress.epoch <= last {
            let epoch = progress.epoch;
            let lr = lr_at(&self.cfg.optim, epoch);
            let optim = &self.cfg.optim;
            self.opt.set_lr(|base| group_lr(optim, epoch, base));
            let meter = self.train_epoch(&mut progress, lr)?;
            progress.epoch += 1;
            progress.step = 0;
            progress.epoch_loss.clear();
            let mut record = EpochRecord {
                epoch,
                lr,
                loss: meter
                    .means()
                    .map(|(k, m)| (k.to_string(), m))
                    .collect::<BTreeMap<_, _>>(),
                t2i: None,
                val_t2i: None,
            };
            self.check_ranks_agree(epoch)?;
            if epoch.is_multiple_of(self.cfg.run.eval_period) || epoch == last {
                if self.ranks.is_main() {
                    self.evaluate_and_keep_best(&mut record, &mut progress)?;
                }
                let best = [progress.best_r1, progress.best_epoch as f64];
                let agreed = self.ranks.from_main(&best).map_err(|e| self.lost(e))?;
                progress.best_r1 = agreed[0];
                progress.best_epoch = agreed[1] as usize;
            }
            if self.ranks.is_main() {
                self.save_state(&progress)?;
                self.run.append_metrics(&record)?;
                self.report(&record)?;
            }
        }
        tracing::info!(
            "finished in {:.1} min; best t2i R@1 {:.3} on {} at epoch {}",
            started.elapsed().as_secs_f64() / 60.0,
            progress.best_r1,
            self.cfg.data.val_dataset,
            progress.best_epoch
        );
        Ok(progress)
    }

    /// Evaluates `record`'s epoch on the test split (and on the validation split when
    /// `val_dataset` is `val`) into `record`; on a new best t2i R@1 on the `val_dataset` split,
    /// saves `best.safetensors`; then rewrites `results.json` from the epoch records (rank 0).
    fn evaluate_and_keep_best(
        &self,
        record: &mut EpochRecord,
        progress: &mut Progress,
    ) -> Result<()> {
        let (epoch, on) = (record.epoch, self.cfg.data.val_dataset);
        record.t2i = Some(self.evaluate(SplitName::Test)?);
        if on == SplitName::Val {
            record.val_t2i = Some(self.evaluate(SplitName::Val)?);
        }
        let rows: Vec<(&str, &RetrievalMetrics)> =
            [("t2i test", &record.t2i), ("t2i val", &record.val_t2i)]
                .into_iter()
                .filter_map(|(task, m)| Some((task, m.as_ref()?)))
                .collect();
        tracing::info!("epoch {epoch}\n{}", crate::retrieval::metrics::table(&rows));
        let r1 = record.on(on).expect("evaluated above").r1;
        if r1 > progress.best_r1 {
            progress.best_r1 = r1;
            progress.best_epoch = epoch;
            self.save_best()?;
            tracing::info!(
                "best R@1 {r1:.3} on {on} at epoch {epoch}: saved {}",
                self.run.best().display()
            );
        }
        let mut records = match self.run.metrics().is_file() {
            true => self.run.read_metrics()?,
            false => Vec::new(),
        };
        records.retain(|r| r.epoch < epoch);
        records.push(record.clone());
        match Results::from_records(&records, progress.best_epoch, on) {
            Some(results) => self.run.write_results(&results)?,
            None => tracing::warn!(
                "{} has no test metrics of the best epoch {}: results.json is left as it was",
                self.run.metrics().display(),
                progress.best_epoch
            ),
        }
        Ok(())
    }

    /// In a data-parallel run, checks that every rank holds bit-identical parameters.
    fn check_ranks_agree(&self, epoch: usize) -> Result<()> {
        if self.ranks.world() == 1 {
            return Ok(());
        }
        let digests = self.ranks.digests(&self.vs).map_err(|e| self.lost(e))?;
        let shown: Vec<String> = digests.iter().map(|d| format!("{d:016x}")).collect();
        if digests.iter().any(|d| *d != digests[0]) {
            bail!(
                "the ranks' parameters differ after epoch {epoch} (digests by rank: {}): the ranks ran different code or data",
                shown.join(", ")
            );
        }
        tracing::info!(
            "epoch {epoch}: parameters bit-identical on all {} ranks (digests by rank: {})",
            digests.len(),
            shown.join(", ")
        );
        Ok(())
    }

    /// The error for a rank that stopped answering: the run stops; the state on disk is whole.
    fn lost(&self, e: crate::dist::group::RankLost) -> anyhow::Error {
        let saved = match self.run.last().is_file() {
            true => "its last checkpoint is whole",
            false => "no checkpoint was written yet, so it resumes from its start",
        };
        anyhow::anyhow!(
            "{e}; the run stops, {saved}: resume the run in {} to continue",
            self.run.dir.display()
        )
    }

    /// Logs the epoch's scalars for TensorBoard and refreshes `curves.png` from `metrics.jsonl`.
    fn report(&mut self, record: &EpochRecord) -> Result<()> {
        if self.events.is_none() {
            self.events = Some(EventWriter::create(&self.run.dir)?);
        }
        let events = self.events.as_mut().expect("created above");
        let epoch = record.epoch as i64;
        for (term, v) in &record.loss {
            events.scalar(&format!("loss/{term}"), *v as f32, epoch)?;
        }
        events.scalar("lr", record.lr as f32, epoch)?;
        for (split, m) in [("test", &record.t2i), ("val", &record.val_t2i)] {
            let Some(m) = m else { continue };
            for (k, v) in [
                ("R1", m.r1),
                ("R5", m.r5),
                ("R10", m.r10),
                ("mAP", m.map),
                ("mINP", m.minp),
            ] {
                events.scalar(&format!("{split}_t2i/{k}"), v as f32, epoch)?;
            }
        }
        crate::report::curves::write(
            &self.run.curves(),
            &record::curves(&self.run.read_metrics()?),
        )
    }

    /// One epoch from `progress.step` on; returns its loss means and throughput.
    fn train_epoch(&mut self, progress: &mut Progress, lr: f64) -> Result<EpochMeter> {
        let epoch = progress.epoch;
        let pb = crate::report::progress::bar(
            self.loader.num_batches(epoch),
            "epoch {prefix} [{bar:25}] {pos}/{len} {msg} eta {eta}",
        );
        if !self.ranks.is_main() {
            pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        pb.set_position(progress.step as u64);
        pb.set_prefix(format!("{epoch}/{}", self.cfg.optim.num_epoch));
        let mut meter = EpochMeter::resume(progress);
        for batch in self.loader.epoch(epoch, progress.step) {
            let batch = batch?.to_device(self.ranks.device());
            let how = self
                .faults
                .before_step(self.ranks.rank(), progress.global_step, self.chunk);
            let outcome = step(
                &self.model,
                &mut self.opt,
                &batch,
                &self.spec,
                &self.ranks,
                how,
            )
            .map_err(|e| {
                pb.abandon();
                match e {
                    StepError::NonFinite(NonFiniteTerm { term, value }) => NonFiniteLoss {
                        term,
                        value,
                        epoch,
                        step: progress.step,
                        global_step: progress.global_step,
                    }
                    .into(),
                    StepError::RankLost(e) => self.lost(e),
                    StepError::Update(e) => e,
                }
            })?;
            progress.step += 1;
            progress.global_step += 1;
            meter.add(&outcome);
            pb.set_message(format!(
                "{} lr {lr:.2e} {:.0} samples/s",
                meter.summary(3),
                meter.samples_per_s()
            ));
            pb.inc(1);
            if self.ranks.is_main() && progress.step.is_multiple_of(self.cfg.run.log_period) {
                // Formatted before the bar is suspended: the bar is locked while it is.
                let line = format!(
                    "epoch {epoch} step {}/{}: {} lr {lr:.3e} {:.1} samples/s",
                    progress.step,
                    pb.length().unwrap_or_default(),
                    meter.summary(4),
                    meter.samples_per_s()
                );
                pb.suspend(|| tracing::info!("{line}"));
            }
            if outcome.stop {
                pb.abandon();
                progress.epoch_loss = meter.sums.clone();
                if self.ranks.is_main() {
                    self.save_state(progress)?;
                    tracing::warn!(
                        "interrupted at epoch {epoch}, step {}: resumable checkpoint written; resume the run in {} to continue",
                        progress.step,
                        self.run.dir.display()
                    );
                }
                bail!(Interrupted);
            }
        }
        pb.finish_and_clear();
        tracing::info!(
            "epoch {epoch}: {} lr {lr:.3e} {:.1} samples/s",
            meter.summary(4),
            meter.samples_per_s()
        );
        Ok(meter)
    }
}

/// What a resumable checkpoint holds: every variable under its name, and the optimiser's state
/// under `optimizer.` (the tensors themselves, not copies).
pub fn resumable_tensors(vs: &VarStore, opt: &Optimizer) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.extend(
        opt.state_tensors()
            .into_iter()
            .map(|(k, t)| (format!("optimizer.{k}"), t)),
    );
    tensors
}

/// Puts what [`resumable_tensors`] wrote (read from `path`) back into `vs` and `opt`, the model's
/// positional grid being `grid` (patches high, wide).
pub fn restore_resumable(
    vs: &mut VarStore,
    opt: &mut Optimizer,
    tensors: Vec<(String, Tensor)>,
    grid: (i64, i64),
    path: &Path,
) -> Result<()> {
    let mut opt_state = HashMap::new();
    let mut params = HashMap::new();
    for (k, t) in tensors {
        match k.strip_prefix("optimizer.") {
            Some(rest) => opt_state.insert(rest.to_string(), t),
            None => params.insert(k, t),
        };
    }
    crate::model::weights::copy_into(vs, &params, &[], &[], grid, path)?;
    opt.load_state(&opt_state)
        .with_context(|| format!("resume state {}", path.display()))
}

fn count_params(vs: &VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(Tensor::numel)
        .map(|n| n as i64)
        .sum()
}

/// How a training command starts.
pub enum Start {
    /// A new run with this config.
    New(Box<Config>),
    /// Continue the run in `dir` from its last saved step, with its own `configs.yaml`; only the
    /// number of epochs may change (to at least the epochs already done).
    Resume {
        dir: PathBuf,
        num_epoch: Option<usize>,
        /// Another `micro_batch`: the same trajectory in other passes.
        micro_batch: Option<MicroBatch>,
    },
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
            dir,
            num_epoch,
            micro_batch,
        } => {
            let config = RunDir::config_to_resume(dir)?;
            (Config::from_file(&config)?, true, *num_epoch, *micro_batch)
        }
        Start::New(cfg) => {
            let cwd = std::env::current_dir().context("cannot read the current folder")?;
            (cfg.clone().with_absolute_paths(&cwd), false, None, None)
        }
    };
    let ranks = match &launch {
        Some(l) => Ranks::connect(l, &cfg)?,
        None => Ranks::single(cfg.run.device.resolve()?),
    };
    super::micro_batch::check_device(micro_batch.or(cfg.run.micro_batch), ranks.device())?;
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
