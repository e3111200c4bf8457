//! The training loop: epochs of optimiser steps, periodic evaluation, checkpoints and resumption.
use super::checkpoint;
use super::optimizer::Optimizer;
use super::run_dir::RunDir;
use super::schedule::{group_lr, lr_at};
use super::Interrupted;
use crate::config::Config;
use crate::data::annotations::Dataset;
use crate::data::loader::{LoaderOptions, TrainLoader};
use crate::eval::evaluator::{embed_split, score_split, EmbedOptions};
use crate::eval::metrics::RetrievalMetrics;
use crate::model::Ccma;
use crate::report::tfevents::EventWriter;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn::VarStore, Device, Tensor};

/// Set by Ctrl-C: the loop finishes the current step, writes a resumable checkpoint and stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler (a second Ctrl-C exits at once).
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step, then writing a resumable checkpoint (Ctrl-C again to abort)");
    });
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
}

impl Progress {
    fn start() -> Progress {
        Progress {
            epoch: 1,
            step: 0,
            best_r1: -1.0,
            best_epoch: 0,
            global_step: 0,
        }
    }

    fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("epoch".into(), self.epoch.to_string()),
            ("step".into(), self.step.to_string()),
            ("best_r1".into(), format!("{:?}", self.best_r1)),
            ("best_epoch".into(), self.best_epoch.to_string()),
            ("global_step".into(), self.global_step.to_string()),
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
        })
    }
}

/// A loss term that is not finite: training stops and names it.
#[derive(Debug, thiserror::Error)]
#[error("loss term `{term}` is {value} at epoch {epoch}, step {step} (global step {global_step}); stopped, the last good checkpoint is kept")]
pub struct NonFiniteLoss {
    pub term: String,
    pub value: f64,
    pub epoch: usize,
    pub step: usize,
    pub global_step: usize,
}

/// Everything a run needs, built once.
pub struct Trainer {
    cfg: Config,
    run: RunDir,
    device: Device,
    dataset: Dataset,
    vs: VarStore,
    model: Ccma,
    opt: Optimizer,
    loader: TrainLoader,
    losses: Vec<String>,
    events: Option<EventWriter>,
}

impl Trainer {
    pub fn new(cfg: Config, run: RunDir) -> Result<Trainer> {
        let device = cfg.tch_device()?;
        tch::manual_seed(cfg.seed as i64);
        let dataset = crate::data::load_dataset(&cfg)?;
        tracing::info!(
            "{}: {} training pairs, {} identities, {} test images, {} test captions",
            dataset.name,
            dataset.train.len(),
            dataset.num_classes,
            dataset.test.image_paths.len(),
            dataset.test.captions.len()
        );
        let (vs, model) = crate::model::from_config(&cfg, dataset.num_classes as i64, device)?;
        let opt = Optimizer::new(&vs, &cfg)?;
        let loader = TrainLoader::new(
            dataset.train.clone(),
            LoaderOptions::from_config(&cfg, device),
        )?;
        let losses = cfg.losses();
        tracing::info!(
            "device {device:?}, losses {}, {} parameters",
            losses.join("+"),
            count_params(&vs)
        );
        Ok(Trainer {
            cfg,
            run,
            device,
            dataset,
            vs,
            model,
            opt,
            loader,
            losses,
            events: None,
        })
    }

    /// The full resumable state: model parameters, optimiser state, and `progress` as metadata.
    fn save_state(&self, progress: &Progress) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        tensors.extend(
            self.opt
                .state_tensors()
                .into_iter()
                .map(|(k, t)| (format!("optimizer.{k}"), t)),
        );
        checkpoint::save(&self.run.state(), &tensors, &progress.to_metadata())
            .context("cannot write the resumable checkpoint")
    }

    /// Restores a state written by [`Trainer::save_state`].
    pub fn load_state(&mut self) -> Result<Progress> {
        let path = self.run.state();
        let (tensors, meta) = checkpoint::load(&path)?;
        let mut opt_state = HashMap::new();
        let mut params = HashMap::new();
        for (k, t) in tensors {
            match k.strip_prefix("optimizer.") {
                Some(rest) => opt_state.insert(rest.to_string(), t),
                None => params.insert(k, t),
            };
        }
        crate::model::copy_named(&mut self.vs, &params)
            .with_context(|| format!("resume state {}", path.display()))?;
        self.opt
            .load_state(&opt_state)
            .with_context(|| format!("resume state {}", path.display()))?;
        Progress::from_metadata(&meta).with_context(|| format!("resume state {}", path.display()))
    }

    fn save_best(&self) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        checkpoint::save(&self.run.best(), &tensors, &HashMap::new())
            .context("cannot write the best checkpoint")
    }

    fn evaluate(&self) -> Result<RetrievalMetrics> {
        let opts = EmbedOptions::from_config(&self.cfg, self.device);
        let feats = embed_split(&self.model, &self.dataset.test, &opts)?;
        Ok(score_split(&feats, &self.dataset.test, false)?.0)
    }

    /// Trains from `progress` to the last epoch.
    pub fn fit(&mut self, mut progress: Progress) -> Result<Progress> {
        let started = Instant::now();
        while progress.epoch <= self.cfg.num_epoch {
            let epoch = progress.epoch;
            let lr = lr_at(&self.cfg, epoch);
            self.opt.set_lr(|base| group_lr(&self.cfg, epoch, base));
            let means = self.train_epoch(&mut progress, lr)?;
            progress.epoch += 1;
            progress.step = 0;
            let mut record = serde_json::json!({ "epoch": epoch, "lr": lr, "loss": means });
            if epoch % self.cfg.eval_period == 0 || epoch == self.cfg.num_epoch {
                let m = self.evaluate()?;
                tracing::info!(
                    "epoch {epoch} test t2i\n{}",
                    crate::eval::metrics::table(&[("t2i", &m)])
                );
                record["t2i"] = crate::eval::metrics::to_json(&m);
                if m.r1 > progress.best_r1 {
                    progress.best_r1 = m.r1;
                    progress.best_epoch = epoch;
                    self.save_best()?;
                    self.run.write_results(epoch, &m)?;
                    tracing::info!(
                        "best R@1 {:.3} at epoch {epoch}: saved {}",
                        m.r1,
                        self.run.best().display()
                    );
                }
            }
            self.save_state(&progress)?;
            self.run.append_metrics(&record)?;
            self.report(&record)?;
        }
        tracing::info!(
            "finished in {:.1} min; best t2i R@1 {:.3} at epoch {}",
            started.elapsed().as_secs_f64() / 60.0,
            progress.best_r1,
            progress.best_epoch
        );
        Ok(progress)
    }

    /// Refreshes `curves.png` from `metrics.jsonl` and logs the epoch's scalars for TensorBoard.
    fn report(&mut self, record: &serde_json::Value) -> Result<()> {
        let epoch = record["epoch"].as_i64().unwrap_or(0);
        if self.events.is_none() {
            self.events = Some(EventWriter::create(&self.run.dir)?);
        }
        let events = self.events.as_mut().expect("created above");
        for (term, v) in record["loss"].as_object().into_iter().flatten() {
            events.scalar(
                &format!("loss/{term}"),
                v.as_f64().unwrap_or(f64::NAN) as f32,
                epoch,
            )?;
        }
        events.scalar(
            "lr",
            record["lr"].as_f64().unwrap_or(f64::NAN) as f32,
            epoch,
        )?;
        for (k, v) in record["t2i"].as_object().into_iter().flatten() {
            if let Some(v) = v.as_f64() {
                events.scalar(&format!("test_t2i/{k}"), v as f32, epoch)?;
            }
        }
        crate::report::curves::write(&self.run.curves(), &self.run.read_metrics()?)
    }

    /// One epoch from `progress.step` on; returns the mean of each loss term.
    fn train_epoch(&mut self, progress: &mut Progress, lr: f64) -> Result<serde_json::Value> {
        let epoch = progress.epoch;
        let total = self.loader.num_batches(epoch);
        let pb = ProgressBar::new(total as u64).with_position(progress.step as u64);
        pb.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:25}] {pos}/{len} {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(format!("{epoch}/{}", self.cfg.num_epoch));
        let mut sums: Vec<(String, f64)> = Vec::new();
        let mut n = 0usize;
        let t0 = Instant::now();
        let mut samples = 0usize;
        let nan_hook = hook_step("CCMA_INJECT_NAN_AT_STEP");
        let interrupt_hook = hook_step("CCMA_INTERRUPT_AT_STEP");
        for batch in self.loader.epoch(epoch, progress.step) {
            let batch = batch?.to_device(self.device);
            samples += batch.len() as usize;
            let out = self.model.forward_train(&batch, &self.losses);
            let terms = crate::loss::compute(&self.cfg, &out, &batch.pids);
            let mut values: Vec<(String, f64)> = terms
                .0
                .iter()
                .map(|(k, t)| (k.clone(), t.double_value(&[])))
                .collect();
            if nan_hook == Some(progress.global_step) {
                values[0].1 = f64::NAN;
            }
            if let Some((term, value)) = values.iter().find(|(_, v)| !v.is_finite()) {
                pb.abandon();
                bail!(NonFiniteLoss {
                    term: term.clone(),
                    value: *value,
                    epoch,
                    step: progress.step,
                    global_step: progress.global_step
                });
            }
            self.opt.zero_grad();
            terms.total().backward();
            self.opt.step();
            progress.step += 1;
            progress.global_step += 1;
            if sums.is_empty() {
                sums = values.iter().map(|(k, _)| (k.clone(), 0.0)).collect();
            }
            for ((_, s), (_, v)) in sums.iter_mut().zip(&values) {
                *s += v;
            }
            n += 1;
            let rate = samples as f64 / t0.elapsed().as_secs_f64();
            let shown: Vec<String> = sums
                .iter()
                .map(|(k, s)| format!("{k} {:.3}", s / n as f64))
                .collect();
            pb.set_message(format!(
                "{} lr {lr:.2e} {rate:.0} samples/s",
                shown.join(" ")
            ));
            pb.inc(1);
            if INTERRUPTED.load(Ordering::SeqCst) || interrupt_hook == Some(progress.global_step) {
                pb.abandon();
                self.save_state(progress)?;
                tracing::warn!(
                    "interrupted at epoch {epoch}, step {}: resumable checkpoint written; continue with `ccma train --resume {}`",
                    progress.step,
                    self.run.dir.display()
                );
                bail!(Interrupted);
            }
        }
        pb.finish_and_clear();
        let means: serde_json::Map<String, serde_json::Value> = sums
            .iter()
            .map(|(k, s)| (k.clone(), serde_json::json!(s / n.max(1) as f64)))
            .collect();
        let shown: Vec<String> = sums
            .iter()
            .map(|(k, s)| format!("{k} {:.4}", s / n.max(1) as f64))
            .collect();
        tracing::info!(
            "epoch {epoch}: {} lr {lr:.3e} {:.1} samples/s",
            shown.join(" "),
            samples as f64 / t0.elapsed().as_secs_f64()
        );
        Ok(serde_json::Value::Object(means))
    }
}

/// Fault-injection hooks for the tests: `CCMA_INJECT_NAN_AT_STEP=N` makes the first loss term
/// NaN at global step N; `CCMA_INTERRUPT_AT_STEP=N` acts as a Ctrl-C after global step N.
fn hook_step(var: &str) -> Option<usize> {
    std::env::var(var).ok()?.parse().ok()
}

fn count_params(vs: &VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(Tensor::numel)
        .map(|n| n as i64)
        .sum()
}

/// `ccma train`: a new run, or `--resume RUN_DIR`.
pub fn run(args: &crate::cli::TrainArgs) -> Result<()> {
    let (cfg, run, resume) = match &args.resume {
        Some(dir) => {
            let run = RunDir::existing(dir)?;
            let cfg = Config::from_file(&run.config())
                .map_err(|e| crate::UsageError(format!("{e:#}")))?;
            (cfg, run, true)
        }
        None => {
            let cfg = args.config.resolve()?;
            let run = RunDir::create(&cfg)?;
            cfg.save(&run.config())?;
            (cfg, run, false)
        }
    };
    crate::logging::set_log_file(&run.log())
        .with_context(|| format!("cannot open {}", run.log().display()))?;
    tracing::info!("run folder {}", run.dir.display());
    install_interrupt_handler();
    let mut trainer = Trainer::new(cfg, run)?;
    let progress = if resume {
        let p = trainer.load_state()?;
        tracing::info!(
            "resuming at epoch {}, step {} (best R@1 {:.3} at epoch {})",
            p.epoch,
            p.step,
            p.best_r1,
            p.best_epoch
        );
        p
    } else {
        Progress::start()
    };
    trainer.fit(progress)?;
    Ok(())
}
