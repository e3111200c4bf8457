//! The training loop: epochs of optimiser steps, with periodic evaluation, the best and the
//! resumable checkpoints, and the epoch's report (TensorBoard scalars, curves).
use super::ccd::Division;
use super::checkpoint::{restore_resumable, resumable_tensors};
use super::faults::Faults;
use super::interrupt::Interrupted;
use super::meter::EpochMeter;
use super::optimizer::Optimizer;
use super::parallel::Ranks;
use super::progress::Progress;
use super::record::{self, DataRecord, EpochRecord, Results};
use super::run_dir::RunDir;
use super::schedule::{group_lr, lr_at};
use super::step::{step, NonFiniteTerm, StepError};
use crate::config::{Config, LossTerm, NoiseFilter, Similarity, SplitName};
use crate::data::annotations::Dataset;
use crate::data::batch::TrainBatch;
use crate::data::loader::{LoaderOptions, Shard, TrainLoader};
use crate::data::noise::NoiseIndex;
use crate::io::npy::write_npy;
use crate::loss::LossSpec;
use crate::model::Ccma;
use crate::report::tfevents::EventWriter;
use crate::retrieval::encode::{embed_split, score_split, EncodeOptions};
use crate::retrieval::metrics::RetrievalMetrics;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{nn::VarStore, Tensor};

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

/// Everything a run needs, built once. Every rank of a data-parallel run has one; rank 0 alone
/// writes the run folder and evaluates.
pub struct Trainer {
    pub(super) cfg: Config,
    pub(super) run: RunDir,
    pub(super) ranks: Ranks,
    dataset: Dataset,
    pub(super) vs: VarStore,
    model: Ccma,
    opt: Optimizer,
    loader: TrainLoader,
    spec: LossSpec,
    /// Samples per pass of a step (`micro_batch` resolved); `None`: one pass.
    chunk: Option<usize>,
    faults: Faults,
    events: Option<EventWriter>,
    /// What the first step this process runs logs: the type a linear layer returns inside the
    /// training forward's autocast region (`bf16`, `fp16` or `off`); `None` once logged.
    autocast: Option<&'static str>,
    /// Whether each training pair is truly clean (all of them without injected noise).
    truly_clean: Vec<bool>,
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
        let noise = NoiseIndex::of_config(&cfg, dataset.train.len())?;
        let truly_clean: Vec<bool> = match &noise {
            Some(index) => (0..index.len()).map(|i| index.is_clean(i)).collect(),
            None => vec![true; dataset.train.len()],
        };
        let pairs = match &noise {
            Some(index) => {
                let clean = index.clean_count();
                tracing::info!(
                    "noisy correspondences: {clean} clean pairs, {} noisy pairs of {}",
                    index.len() - clean,
                    index.len()
                );
                if ranks.rank() == 0 {
                    write_npy(&run.noise_index(), index.sources())?;
                }
                index.apply(&dataset.train)
            }
            None => dataset.train.clone(),
        };
        let loader = TrainLoader::new(
            pairs,
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
        let chunk = super::chunk_size::resolve(cfg.run.micro_batch, share, device, |c| {
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
            autocast: Some(crate::model::amp::autocast_in_effect(device)),
            truly_clean,
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

    /// t2i metrics on the evaluation split `split`, by the configured similarity (the model's
    /// default when unset: BGE+TSE with the TSE layers, the row RDE chooses its epoch by).
    fn evaluate(&self, split: SplitName) -> Result<RetrievalMetrics> {
        let mut opts = EncodeOptions::from_config(&self.cfg.data, self.ranks.device());
        opts.similarity = Similarity::or_default(self.cfg.model.similarity, self.model.has_tse());
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
            let division = self.divide(epoch)?;
            let weights = division.as_ref().map(|d| &d.weights[..]);
            let meter = self.train_epoch(&mut progress, lr, weights)?;
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
                ccd_precision: division.as_ref().and_then(|d| d.quality.precision),
                ccd_recall: division.as_ref().and_then(|d| d.quality.recall),
                ccd_clean_fraction: division.as_ref().map(|d| d.quality.clean_fraction),
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
            Some(results) => self.run.write_results(&Results {
                data: Some(DataRecord::of(&self.dataset)?),
                ..results
            })?,
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
    pub(super) fn lost(&self, e: crate::dist::group::RankLost) -> anyhow::Error {
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
        for (name, v) in record.division() {
            events.scalar(
                &format!("ccd/{}", name.trim_start_matches("ccd_")),
                v as f32,
                epoch,
            )?;
        }
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

    /// The clean division before `epoch` (`noise_filter: ccd`, after the `ccd_warmup` epochs),
    /// logged; `None` when the epoch trains on all pairs.
    fn divide(&self, epoch: usize) -> Result<Option<Division>> {
        let l = &self.cfg.loss;
        if l.noise_filter == NoiseFilter::None || epoch <= l.ccd_warmup {
            return Ok(None);
        }
        let started = Instant::now();
        let d = super::ccd::divide(
            &self.model,
            &self.loader,
            epoch,
            &self.cfg,
            &self.ranks,
            &self.truly_clean,
        )?;
        let q = &d.quality;
        let percent = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
        tracing::info!(
            "epoch {epoch} clean division ({:.1} s): {:.2}% of the pairs clean (BGE {}, TSE {}); precision {}, recall {}",
            started.elapsed().as_secs_f64(),
            100.0 * q.clean_fraction,
            d.bge.describe(),
            d.tse.describe(),
            percent(q.precision),
            percent(q.recall)
        );
        Ok(Some(d))
    }

    /// One epoch from `progress.step` on, each pair's share of every loss term times its
    /// clean-division weight where `weights` ([N], by training-pair index, 0 or 1) are given (the
    /// means then over the pairs of weight 1: METHOD.md section 7); returns its loss means and
    /// throughput.
    fn train_epoch(
        &mut self,
        progress: &mut Progress,
        lr: f64,
        weights: Option<&[f32]>,
    ) -> Result<EpochMeter> {
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
            let mut batch = batch?;
            if let Some(w) = weights {
                let of_batch: Vec<f32> = batch
                    .slices
                    .all_indices
                    .iter()
                    .map(|&i| w[i as usize])
                    .collect();
                batch.weights = Some(of_batch);
            }
            let batch = batch.to_device(self.ranks.device());
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
            if let Some(kind) = self.autocast.take().filter(|_| self.ranks.is_main()) {
                let line = format!(
                    "global step {}: the forward ran with autocast {kind} (the type a linear layer returned in its region)",
                    progress.global_step
                );
                pb.suspend(|| tracing::info!("{line}"));
            }
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

fn count_params(vs: &VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(Tensor::numel)
        .map(|n| n as i64)
        .sum()
}
