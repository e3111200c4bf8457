//! A model loaded to infer with, and how to feed it: from weights alone ([`model_and_options`]:
//! `embed`, `search`, `serve`), or a checkpoint with its dataset for evaluating a split
//! ([`TestSetup`]: `test`, `serve --run`).
use crate::config::{Config, DataSection, Similarity, SplitName};
use crate::data::annotations::{Dataset, EvalSplit};
use crate::factory::{Inference, WeightsSource};
use crate::retrieval::encode::{embed_split, embed_split_parts, EncodeOptions, SplitFeatures};
use crate::retrieval::features::require_finite_output;
use crate::retrieval::similarity::{resolve, Embedded};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// The model of `source` and how to feed it: the data settings `data` when the user gave some
/// (a run's configs.yaml, a config file, `--set`), else what the weights were built for; the
/// input size `img_size` (H, W) over either; the embeddings compared, `similarity` when
/// configured, else the model's default.
pub fn model_and_options(
    source: &WeightsSource,
    data: Option<&DataSection>,
    img_size: Option<(i64, i64)>,
    similarity: Option<Similarity>,
    device: tch::Device,
) -> Result<(Inference, EncodeOptions)> {
    let size = img_size.or(data.map(|d| d.img_size));
    let model = crate::factory::inference_model(source, size, device)?;
    let clip = &model.model.config.clip;
    let mut opts = match data {
        Some(d) => EncodeOptions::from_config(d, device),
        None => EncodeOptions::for_model(clip, DataSection::default().test_batch_size, device),
    };
    opts.img_size = (clip.image_size.0 as usize, clip.image_size.1 as usize);
    let (WeightsSource::Checkpoint(path) | WeightsSource::Pretrained(path)) = source;
    opts.check_fits(clip, path)?;
    opts.similarity = resolve(similarity, model.model.has_tse(), path)?;
    Ok((model, opts))
}

/// A checkpoint and its dataset, loaded with the data settings that decide the numbers.
pub struct TestSetup {
    pub checkpoint: PathBuf,
    pub cfg: Config,
    pub dataset: Dataset,
    pub split: SplitName,
    pub model: Inference,
    pub opts: EncodeOptions,
    pub device: tch::Device,
}

impl TestSetup {
    /// Loads `checkpoint` on `device` and the dataset of `cfg` (its images located beforehand),
    /// for evaluating `split`: the input size and caption length are `cfg`'s when `sized` (the
    /// user gave them), else those of the checkpoint's own model; the encoding batch is `cfg`'s.
    /// `cfg`'s `matmul_precision` is set for the process (it acts on CUDA matmuls only).
    pub fn load(
        cfg: Config,
        checkpoint: PathBuf,
        sized: bool,
        split: SplitName,
        device: tch::Device,
    ) -> Result<TestSetup> {
        crate::model::amp::set_cuda_matmul_precision(cfg.run.matmul_precision.name())?;
        let dataset = crate::data::load_dataset(&cfg)?;
        dataset.require_splits(&[split.name()])?;
        let source = WeightsSource::Checkpoint(checkpoint.clone());
        let data = sized.then_some(&cfg.data);
        let (model, mut opts) =
            model_and_options(&source, data, None, cfg.model.similarity, device)?;
        opts.batch_size = cfg.data.test_batch_size;
        Ok(TestSetup {
            checkpoint,
            cfg,
            dataset,
            split,
            model,
            opts,
            device,
        })
    }

    /// The evaluated split's annotations.
    pub fn eval_split(&self) -> &EvalSplit {
        self.dataset.eval_split(self.split)
    }

    /// The evaluated split's features; non-finite features are an error.
    pub fn embed(&self) -> Result<SplitFeatures> {
        let on = format!("the {} {} split", self.dataset.name, self.split);
        let feats = embed_split(&self.model.model, self.eval_split(), &self.opts)
            .with_context(|| format!("embedding {on}"))?;
        require_finite_output(&[&feats.images, &feats.texts], &self.checkpoint, &on)?;
        Ok(feats)
    }

    /// Every embedding the model has of the evaluated split, [images, captions]; non-finite
    /// features are an error.
    pub fn embed_parts(&self) -> Result<[Embedded; 2]> {
        let on = format!("the {} {} split", self.dataset.name, self.split);
        let parts = embed_split_parts(&self.model.model, self.eval_split(), &self.opts)
            .with_context(|| format!("embedding {on}"))?;
        let all: Vec<&tch::Tensor> = parts
            .iter()
            .flat_map(|p| std::iter::once(&p.bge).chain(&p.tse))
            .collect();
        require_finite_output(&all, &self.checkpoint, &on)?;
        Ok(parts)
    }
}
