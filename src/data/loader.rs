//! The parallel training loader: decodes, augments (images and, with `txt_aug`, captions),
//! tokenises and masks ahead of the model.
//!
//! One producer thread assembles batches in epoch order; the samples of a batch are processed in
//! parallel on a dedicated rayon pool and written straight into the batch buffer. Finished batches
//! wait in a bounded queue (`prefetch` batches), so memory stays bounded however slow the consumer.
//! Every sample draws its randomness from its own generator seeded by (seed, epoch, position), so
//! an epoch's batches are identical whatever the number of threads, and a rank of a data-parallel
//! run that assembles only its slice of each batch gets exactly those samples of it. A rank also
//! draws (without decoding any image) the masks of the other ranks' samples, so that it knows the
//! whole batch's layout (sizes, pids, masked tokens) on the host.
use super::annotations::TrainSample;
use super::batch::{masked_positions, per_sample, MaskedCaptions, RankSlices, TrainBatch};
use super::host_buffer::{elements_mut, host_from_slice, host_tensor};
use super::mlm::{mask_tokens, MaskRates};
use super::sampler::Sampler;
use super::tokenizer::Tokenizer;
use super::transforms::{load_rgb, Augment, ImageTransform};
use super::txt_aug::augment_caption;
use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::Arc;
use tch::Device;

/// What the loader produces and how.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// (H, W).
    pub img_size: (usize, usize),
    pub img_aug: bool,
    /// Augment the captions as RDE's `txt_aug` does (before MLM masking).
    pub txt_aug: bool,
    /// Produce MLM-masked captions and labels, with these rates.
    pub mlm: Option<MaskRates>,
    pub text_length: usize,
    pub sampler: Sampler,
    pub seed: u64,
    /// Worker threads (0 = all cores).
    pub num_workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Put batches in pinned host memory for asynchronous copies to this CUDA device (the rank's
    /// own).
    pub pin_memory: Option<usize>,
    /// The slice of every batch this process assembles.
    pub shard: Shard,
}

/// Rank `rank` of `world` takes the `rank`-th of `world` near-equal consecutive slices of each
/// batch (sizes differ by at most one); a batch with fewer samples than ranks is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    /// The whole batch.
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };

    /// This rank's `start..end` of a batch of `n` samples.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        let (base, extra) = (n / self.world, n % self.world);
        let start = self.rank * base + self.rank.min(extra);
        start..start + base + usize::from(self.rank < extra)
    }
}

impl LoaderOptions {
    pub fn from_config(cfg: &crate::config::Config, device: Device) -> LoaderOptions {
        let d = &cfg.data;
        LoaderOptions {
            batch_size: d.batch_size,
            img_size: (d.img_size.0 as usize, d.img_size.1 as usize),
            img_aug: d.img_aug,
            txt_aug: d.txt_aug,
            mlm: cfg.loss.MLM.then_some(MaskRates {
                mask: cfg.loss.masked_token_rate,
                unchanged: cfg.loss.masked_token_unchanged_rate,
            }),
            text_length: d.text_length as usize,
            sampler: Sampler::from_config(d),
            seed: cfg.run.seed,
            num_workers: d.num_workers,
            prefetch: 4,
            pin_memory: match device {
                Device::Cuda(i) => Some(i),
                _ => None,
            },
            shard: Shard::WHOLE,
        }
    }
}

/// Training samples with their captions tokenised once, ready to be served epoch after epoch.
pub struct TrainLoader {
    samples: Arc<Vec<TrainSample>>,
    tokens: Arc<Vec<Vec<i64>>>,
    pids: Vec<i64>,
    opts: LoaderOptions,
    pool: Arc<rayon::ThreadPool>,
}

impl TrainLoader {
    pub fn new(samples: Vec<TrainSample>, opts: LoaderOptions) -> Result<TrainLoader> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.num_workers)
            .thread_name(|i| format!("loader-{i}"))
            .build()
            .context("cannot start the data-loading threads")?;
        let tok = Tokenizer::shared();
        let tokens: Vec<Vec<i64>> = pool.install(|| {
            samples
                .par_iter()
                .map(|s| tok.encode(&s.caption, opts.text_length))
                .collect()
        });
        let pids: Vec<i64> = samples.iter().map(|s| s.pid).collect();
        if opts.shard.world > 1 && opts.shard.rank == 0 {
            let all = opts.sampler.batches(&pids, opts.batch_size, opts.seed, 1);
            let short: usize = all
                .iter()
                .map(Vec::len)
                .filter(|&n| n < opts.shard.world)
                .sum();
            if short > 0 {
                tracing::warn!(
                    "{short} sample(s) per epoch are left out: a last batch smaller than the {} ranks cannot be split among them",
                    opts.shard.world
                );
            }
        }
        Ok(TrainLoader {
            samples: Arc::new(samples),
            tokens: Arc::new(tokens),
            pids,
            opts,
            pool: Arc::new(pool),
        })
    }

    /// Number of batches in `epoch`.
    pub fn num_batches(&self, epoch: usize) -> usize {
        self.batch_indices(epoch).len()
    }

    pub fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// The global batches of `epoch` (every rank's samples).
    fn batch_indices(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut batches =
            self.opts
                .sampler
                .batches(&self.pids, self.opts.batch_size, self.opts.seed, epoch);
        batches.retain(|b| b.len() >= self.opts.shard.world);
        batches
    }

    /// Starts producing this process's slices of the batches of `epoch` (from batch `skip` on) in
    /// the background.
    pub fn epoch(&self, epoch: usize, skip: usize) -> EpochBatches {
        let batches: Vec<Vec<usize>> = self.batch_indices(epoch).into_iter().skip(skip).collect();
        let (tx, rx) = crossbeam_channel::bounded(self.opts.prefetch.max(1));
        let (samples, tokens, pool, opts) = (
            self.samples.clone(),
            self.tokens.clone(),
            self.pool.clone(),
            self.opts.clone(),
        );
        let producer = std::thread::spawn(move || {
            for (b, idx) in batches.iter().enumerate() {
                let batch =
                    pool.install(|| assemble(&samples, &tokens, idx, &opts, epoch, skip + b));
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return; // consumer gone, or the error was delivered
                }
            }
        });
        EpochBatches {
            rx,
            producer: Some(producer),
        }
    }
}

/// The batches of one epoch, in order, as they become ready.
pub struct EpochBatches {
    rx: crossbeam_channel::Receiver<Result<TrainBatch>>,
    producer: Option<std::thread::JoinHandle<()>>,
}

impl Iterator for EpochBatches {
    type Item = Result<TrainBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Unblock the producer (its sends fail once the receiver is gone), then wait for it.
        let (_, dead) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(p) = self.producer.take() {
            let _ = p.join();
        }
    }
}

/// A caption's MLM masking: the masked ids and the labels ([L] each, label 0 where nothing is
/// masked).
type Masking = (Vec<i64>, Vec<i64>);

/// The random choices of the sample at position `pos` of batch `batch_no`: its image
/// augmentation, then (with `txt_aug`) its augmented caption ids ([L]), then (with MLM) the masked
/// ids and labels of that caption ([L] each).
fn draw(
    transform: &ImageTransform,
    tokens: &[i64],
    opts: &LoaderOptions,
    epoch: usize,
    batch_no: usize,
    pos: usize,
) -> (Augment, Option<Vec<i64>>, Option<Masking>) {
    let mut rng = sample_rng(opts.seed, epoch, batch_no, pos);
    let aug = transform.sample(&mut rng);
    let caption = opts.txt_aug.then(|| augment_caption(tokens, &mut rng));
    let masking = opts
        .mlm
        .map(|rates| mask_tokens(caption.as_deref().unwrap_or(tokens), rates, &mut rng));
    (aug, caption, masking)
}

/// Builds this process's slice of the global batch `idx`: images [B,3,H,W] f32, caption ids and
/// MLM-masked ids [B,L] i64, masked positions and their targets [M] i64, pids [B] i64, and the
/// layout of the whole batch over the ranks.
fn assemble(
    samples: &[TrainSample],
    tokens: &[Vec<i64>],
    idx: &[usize],
    opts: &LoaderOptions,
    epoch: usize,
    batch_no: usize,
) -> Result<TrainBatch> {
    let (h, w) = opts.img_size;
    let l = opts.text_length;
    let per_image = 3 * h * w;
    let transform = ImageTransform::train(opts.img_size, opts.img_aug);
    let shard = opts.shard;
    let slice = shard.range(idx.len());
    let draws: Vec<_> = idx
        .par_iter()
        .enumerate()
        .map(|(pos, &i)| draw(&transform, &tokens[i], opts, epoch, batch_no, pos))
        .collect();
    let own = &idx[slice.clone()];
    let b = own.len() as i64;
    // Decoded straight into the batch's (pinned) tensor.
    let mut images = host_tensor::<f32>(&[b, 3, h as i64, w as i64], opts.pin_memory)?;
    elements_mut::<f32>(&mut images)
        .par_chunks_mut(per_image)
        .zip(own.par_iter().zip(&draws[slice.clone()]))
        .try_for_each(|(out, (&i, (aug, _, _)))| -> Result<()> {
            transform.apply_with(&load_rgb(&samples[i].image)?, aug, out);
            Ok(())
        })?;
    let caption_ids: Vec<i64> = own
        .iter()
        .zip(&draws[slice.clone()])
        .flat_map(|(&i, (_, augmented, _))| {
            augmented.as_deref().unwrap_or(&tokens[i]).iter().copied()
        })
        .collect();
    let masked_of = |range: std::ops::Range<usize>| -> Vec<i64> {
        draws[range]
            .iter()
            .flat_map(|(_, _, m)| m.as_ref().map_or(&[][..], |(_, labels)| &labels[..]))
            .copied()
            .collect()
    };
    let host = |v: &[i64], shape: &[i64]| host_from_slice(v, shape, opts.pin_memory);
    let ids = |v: &[i64]| host(v, &[b, l as i64]);
    let masked = opts
        .mlm
        .map(|_| -> Result<MaskedCaptions> {
            let masked_ids: Vec<i64> = draws[slice.clone()]
                .iter()
                .flat_map(|(_, _, m)| m.as_ref().expect("masked with MLM").0.iter().copied())
                .collect();
            let labels = masked_of(slice.clone());
            let (positions, targets) = masked_positions(&labels);
            Ok(MaskedCaptions {
                ids: ids(&masked_ids)?,
                positions: host(&positions, &[positions.len() as i64])?,
                targets: host(&targets, &[targets.len() as i64])?,
                per_sample: per_sample(&labels, l),
            })
        })
        .transpose()?;
    let caption_ids = ids(&caption_ids)?;
    let pids_of = |idx: &[usize]| -> Vec<i64> { idx.iter().map(|&i| samples[i].pid).collect() };
    let ranks: Vec<std::ops::Range<usize>> = (0..shard.world)
        .map(|rank| Shard { rank, ..shard }.range(idx.len()))
        .collect();
    let slices = RankSlices {
        sizes: ranks.iter().map(|r| r.len() as i64).collect(),
        all_masked: match opts.mlm {
            Some(_) => per_sample(&masked_of(0..idx.len()), l),
            None => vec![0; idx.len()],
        },
        all_pids: match shard.world {
            1 => None,
            _ => Some(host(&pids_of(idx), &[idx.len() as i64])?),
        },
        all_indices: idx.iter().map(|&i| i as i64).collect(),
    };
    Ok(TrainBatch {
        images,
        caption_ids,
        masked,
        pids: host(&pids_of(own), &[b])?,
        indices: own.iter().map(|&i| i as i64).collect(),
        weights: None,
        slices,
    })
}

/// The generator of one sample: a distinct stream per (seed, epoch, batch, position).
fn sample_rng(seed: u64, epoch: usize, batch_no: usize, pos: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((epoch as u64) << 44) | ((batch_no as u64) << 20) | pos as u64);
    rng
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn shards_split_a_batch_into_consecutive_near_equal_slices() {
        let slices = |n, world| -> Vec<_> {
            (0..world)
                .map(|rank| Shard { rank, world }.range(n))
                .collect()
        };
        assert_eq!(slices(8, 2), [0..4, 4..8]);
        assert_eq!(slices(7, 3), [0..3, 3..5, 5..7]);
        assert_eq!(slices(5, 1), vec![0..5]);
        assert_eq!(Shard::WHOLE.range(3), 0..3);
    }
}
