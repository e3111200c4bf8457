//! Batched encoding of images and captions into the features retrieval compares (used by
//! training's evaluation, `test`, `embed`, `search` and `serve`), and the scoring of an
//! evaluation split.
use super::metrics::{evaluate, score_queries, QueryRecord, RetrievalMetrics};
use super::similarity::Embedded;
use crate::config::Similarity;
use crate::data::annotations::EvalSplit;
use crate::data::host_buffer::{elements_mut, host_tensor};
use crate::data::tokenizer::Tokenizer;
use crate::data::transforms::{load_rgb, ImageTransform};
use crate::model::Ccma;
use anyhow::Result;
use rand::SeedableRng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// How images and captions are fed to the encoders.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// (H, W) of the test transform.
    pub img_size: (usize, usize),
    pub text_length: usize,
    pub batch_size: usize,
    pub device: Device,
    /// Which embeddings are compared ([`super::similarity::resolve`] decides it for a model):
    /// what [`embed_images`], [`embed_captions`] and [`embed_split`] return.
    pub similarity: Similarity,
}

impl EncodeOptions {
    /// The evaluation settings of a run config (`img_size`, `text_length`, `test_batch_size`).
    pub fn from_config(d: &crate::config::DataSection, device: Device) -> EncodeOptions {
        EncodeOptions {
            img_size: (d.img_size.0 as usize, d.img_size.1 as usize),
            text_length: d.text_length as usize,
            batch_size: d.test_batch_size,
            device,
            similarity: Similarity::Bge,
        }
    }

    /// What a model was built for: its input size and context length, in batches of
    /// `batch_size`.
    pub fn for_model(
        clip: &crate::model::clip::ClipConfig,
        batch_size: usize,
        device: Device,
    ) -> EncodeOptions {
        EncodeOptions {
            img_size: (clip.image_size.0 as usize, clip.image_size.1 as usize),
            text_length: clip.context_length as usize,
            batch_size,
            device,
            similarity: Similarity::Bge,
        }
    }

    /// Refuses options that the model of `weights` (sized by `clip`) cannot take: captions longer
    /// than its positions (context length).
    pub fn check_fits(&self, clip: &crate::model::clip::ClipConfig, weights: &Path) -> Result<()> {
        if self.text_length as i64 > clip.context_length {
            anyhow::bail!(crate::UsageError(format!(
                "text_length {} is longer than the {} positions (context length) of the model in {}: set text_length to at most {}",
                self.text_length,
                clip.context_length,
                weights.display(),
                clip.context_length
            )));
        }
        Ok(())
    }
}

fn bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let pb =
        crate::report::progress::bar(len, "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}");
    pb.set_message(what.to_string());
    pb
}

/// The compared image features of `paths` ([`EncodeOptions::similarity`]), in order: [N, D'] f32
/// on the CPU (not normalised). Decoding and the test transform run in parallel; an unreadable
/// image is an error naming it.
pub fn embed_images(model: &Ccma, paths: &[PathBuf], opts: &EncodeOptions) -> Result<Tensor> {
    let (feats, unreadable) = embed_readable_images(model, paths, opts)?;
    match unreadable.into_iter().next() {
        Some((_, err)) => Err(err),
        None => Ok(feats),
    }
}

/// Batches of images decoded ahead of the encoder, waiting for it.
const PREFETCH: usize = 2;

/// One batch of images ready for the encoder.
struct ImageBatch {
    /// [n, 3, H, W] f32 on the host (pinned when the encoder is on CUDA): the readable images of
    /// the batch's paths, in order; none when none is.
    images: Option<Tensor>,
    /// The index and error of each of the batch's paths that cannot be read or decoded.
    unreadable: Vec<(usize, anyhow::Error)>,
    /// Paths in the batch.
    len: usize,
}

/// Decodes and transforms `chunk` (paths `first..` of the list) in parallel, straight into one
/// host tensor (pinned for CUDA device `pin`, when given); the readable images are moved together
/// over the unreadable ones, in place.
fn prepare(
    chunk: &[PathBuf],
    first: usize,
    transform: &ImageTransform,
    opts: &EncodeOptions,
    pin: Option<usize>,
) -> Result<ImageBatch> {
    let (h, w) = opts.img_size;
    let per_image = 3 * h * w;
    let shape = [chunk.len() as i64, 3, h as i64, w as i64];
    let mut images = host_tensor::<f32>(&shape, pin)?;
    let pixels = elements_mut::<f32>(&mut images);
    let read: Vec<Result<()>> = pixels
        .par_chunks_mut(per_image)
        .zip(chunk.par_iter())
        .map(|(out, p)| {
            let img = load_rgb(p)?;
            // The test transform is deterministic; the generator is never drawn from.
            transform.apply(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0), out);
            Ok(())
        })
        .collect();
    let (mut kept, mut unreadable) = (0, Vec::new());
    for (i, r) in read.into_iter().enumerate() {
        match r {
            Ok(()) => {
                if kept != i {
                    pixels.copy_within(i * per_image..(i + 1) * per_image, kept * per_image);
                }
                kept += 1;
            }
            Err(e) => unreadable.push((first + i, e)),
        }
    }
    Ok(ImageBatch {
        images: (kept > 0).then(|| images.narrow(0, 0, kept as i64)),
        unreadable,
        len: chunk.len(),
    })
}

/// Like [`embed_images`], but an image that cannot be read or decoded is left out: returns the
/// features of the readable ones [N', D'] in order, and each unreadable one's index and error.
pub fn embed_readable_images(
    model: &Ccma,
    paths: &[PathBuf],
    opts: &EncodeOptions,
) -> Result<(Tensor, Vec<(usize, anyhow::Error)>)> {
    let (parts, unreadable) = embed_readable_image_parts(model, paths, opts)?;
    Ok((parts.compared(opts.similarity), unreadable))
}

/// Every embedding the model has of the readable images of `paths` (see
/// [`embed_readable_images`]), f32 on the CPU.
///
/// A thread decodes and transforms the next batches (in parallel, [`PREFETCH`] ahead) while the
/// encoder runs on the current one; on CUDA they are copied from pinned memory without waiting,
/// and the features stay on the card until the last batch.
pub fn embed_readable_image_parts(
    model: &Ccma,
    paths: &[PathBuf],
    opts: &EncodeOptions,
) -> Result<(Embedded, Vec<(usize, anyhow::Error)>)> {
    let transform = ImageTransform::test(opts.img_size);
    let pin = match opts.device {
        Device::Cuda(i) => Some(i),
        _ => None,
    };
    let size = opts.batch_size.max(1);
    let pb = bar(paths.len(), "images");
    let (feats, unreadable) = std::thread::scope(|scope| -> Result<_> {
        let (tx, rx) = crossbeam_channel::bounded(PREFETCH);
        let transform = &transform;
        scope.spawn(move || {
            for (c, chunk) in paths.chunks(size).enumerate() {
                let batch = prepare(chunk, c * size, transform, opts, pin);
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return; // the encoder stopped, or the error was delivered
                }
            }
        });
        let (mut feats, mut unreadable) = (Vec::new(), Vec::new());
        for batch in rx {
            let batch = batch?;
            if let Some(x) = batch.images {
                let x = x.to_device_(opts.device, tch::Kind::Float, true, false);
                let (bge, tse) = tch::no_grad(|| model.image_embeddings(&x));
                feats.push(Embedded { bge, tse });
            }
            unreadable.extend(batch.unreadable);
            pb.inc(batch.len as u64);
        }
        Ok((feats, unreadable))
    })?;
    pb.finish_and_clear();
    Ok((on_cpu(concat(feats)), unreadable))
}

/// The compared text features of `captions` ([`EncodeOptions::similarity`]), in order: [N, D']
/// f32 on the CPU (not normalised).
pub fn embed_captions(model: &Ccma, captions: &[String], opts: &EncodeOptions) -> Result<Tensor> {
    Ok(embed_caption_parts(model, captions, opts)?.compared(opts.similarity))
}

/// Every embedding the model has of `captions`, in order, f32 on the CPU.
pub fn embed_caption_parts(
    model: &Ccma,
    captions: &[String],
    opts: &EncodeOptions,
) -> Result<Embedded> {
    let vocab = model.config.clip.vocab_size;
    if vocab < crate::data::tokenizer::VOCAB_SIZE as i64 {
        anyhow::bail!(crate::UsageError(format!(
            "the model's vocabulary has {vocab} tokens, but captions are tokenised with CLIP's {} (weights for text need the full vocabulary)",
            crate::data::tokenizer::VOCAB_SIZE
        )));
    }
    let tok = Tokenizer::shared();
    let pb = bar(captions.len(), "captions");
    let mut feats = Vec::new();
    for chunk in captions.chunks(opts.batch_size.max(1)) {
        let ids: Vec<i64> = chunk
            .par_iter()
            .flat_map_iter(|c| tok.encode(c, opts.text_length))
            .collect();
        let ids = Tensor::from_slice(&ids)
            .view([chunk.len() as i64, opts.text_length as i64])
            .to_device(opts.device);
        let (bge, tse) = tch::no_grad(|| model.text_embeddings(&ids));
        feats.push(on_cpu(Embedded { bge, tse }));
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(concat(feats))
}

/// Embeddings `e`, f32 on the CPU.
fn on_cpu(e: Embedded) -> Embedded {
    let cpu = |t: Tensor| t.to_kind(tch::Kind::Float).to_device(Device::Cpu);
    Embedded {
        bge: cpu(e.bge),
        tse: e.tse.map(cpu),
    }
}

fn concat(parts: Vec<Embedded>) -> Embedded {
    if parts.is_empty() {
        let empty = || Tensor::zeros([0, 0], (tch::Kind::Float, Device::Cpu));
        Embedded {
            bge: empty(),
            tse: Some(empty()),
        }
    } else {
        Embedded::concat(&parts)
    }
}

/// The compared features of a split: images [Ni, D'] and captions [Nt, D'], f32 on the CPU.
pub struct SplitFeatures {
    pub images: Tensor,
    pub texts: Tensor,
}

/// Embeds every image and caption of `split`: the compared features.
pub fn embed_split(model: &Ccma, split: &EvalSplit, opts: &EncodeOptions) -> Result<SplitFeatures> {
    let [images, texts] = embed_split_parts(model, split, opts)?;
    Ok(SplitFeatures {
        images: images.compared(opts.similarity),
        texts: texts.compared(opts.similarity),
    })
}

/// Every embedding the model has of every image and caption of `split`: [images, captions].
pub fn embed_split_parts(
    model: &Ccma,
    split: &EvalSplit,
    opts: &EncodeOptions,
) -> Result<[Embedded; 2]> {
    let (images, unreadable) = embed_readable_image_parts(model, &split.image_paths, opts)?;
    if let Some((_, err)) = unreadable.into_iter().next() {
        return Err(err);
    }
    Ok([images, embed_caption_parts(model, &split.captions, opts)?])
}

/// Text-to-image metrics of `split` from its features; image-to-text too when `i2t`.
pub fn score_split(
    feats: &SplitFeatures,
    split: &EvalSplit,
    i2t: bool,
) -> Result<(RetrievalMetrics, Option<RetrievalMetrics>)> {
    let t2i = evaluate(
        &feats.texts,
        &feats.images,
        &split.caption_pids,
        &split.image_pids,
    )?;
    let i2t = if i2t {
        Some(score_i2t(feats, split)?)
    } else {
        None
    };
    Ok((t2i, i2t))
}

/// Image-to-text metrics of `split` from its features.
pub fn score_i2t(feats: &SplitFeatures, split: &EvalSplit) -> Result<RetrievalMetrics> {
    evaluate(
        &feats.images,
        &feats.texts,
        &split.image_pids,
        &split.caption_pids,
    )
}

/// One record per text-to-image query of `split` (its captions, in order) from its features;
/// a query whose pid has no image is left out (its number skipped).
pub fn t2i_records(feats: &SplitFeatures, split: &EvalSplit) -> Result<Vec<QueryRecord>> {
    let scores = score_queries(
        &feats.texts,
        &feats.images,
        &split.caption_pids,
        &split.image_pids,
    )?;
    Ok(scores
        .into_iter()
        .enumerate()
        .filter_map(|(query, s)| {
            s.map(|s| QueryRecord {
                query,
                caption: split.captions[query].clone(),
                pid: split.caption_pids[query],
                rank: s.rank,
                ap: s.ap,
                inp: s.inp,
            })
        })
        .collect())
}
