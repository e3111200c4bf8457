//! The chunk size of a training step: the `micro_batch` setting resolved to samples per pass for
//! one rank (`auto` measured on the card). The step in chunks, with the whole batch's exact
//! gradient, is [`super::step`].
use crate::config::MicroBatch;
use crate::UsageError;
use anyhow::{bail, Result};
use tch::Device;

/// Share of the free device memory that `auto` plans to fill (the rest absorbs fragmentation and
/// what the estimate misses).
const AUTO_FILL: f64 = 0.85;

/// Refuses `auto` off CUDA: it measures a card's free memory.
pub fn check_device(setting: Option<MicroBatch>, device: Device) -> Result<()> {
    if setting == Some(MicroBatch::Auto) && !device.is_cuda() {
        bail!(UsageError(format!(
            "micro_batch auto sizes the chunks to a CUDA card's free memory, but this run is on {device:?}: give a number of samples (or no micro_batch)"
        )));
    }
    Ok(())
}

/// The chunk size of this rank's steps: `None` for one pass (no setting, or one at least the
/// rank's `share` of the batch), else the samples per pass. `auto` (CUDA only) measures what
/// a step takes in chunks of 1 and of 2 samples on the card (`probe(chunk)` runs the passes of a
/// step of that chunk without updating anything) and picks the largest chunk whose estimate fits
/// the free memory. The choice is logged.
pub fn resolve(
    setting: Option<MicroBatch>,
    share: usize,
    device: Device,
    mut probe: impl FnMut(usize) -> Result<()>,
) -> Result<Option<usize>> {
    let chunk = match setting {
        None => return Ok(None),
        Some(MicroBatch::Size(n)) => n,
        Some(MicroBatch::Auto) => {
            let free = |when: &str| {
                crate::device::free_memory_bytes(device).ok_or_else(|| {
                    anyhow::anyhow!("cannot read the free memory of {device:?} {when}")
                })
            };
            check_device(setting, device)?;
            let before = free("before the probe")? as f64;
            probe(1)?;
            let one = free("after a chunk of 1")? as f64;
            probe(2)?;
            let two = free("after a chunk of 2")? as f64;
            let per_sample = (one - two).max(1.0);
            let first = before - one;
            let fits = 1.0 + ((before * AUTO_FILL - first) / per_sample).floor();
            let n = fits.clamp(1.0, share as f64) as usize;
            tracing::info!(
                "micro_batch auto: {:.2} GiB free, about {:.1} MiB per sample in a chunk: chunks of {n}",
                before / (1u64 << 30) as f64,
                per_sample / (1u64 << 20) as f64
            );
            n
        }
    };
    if chunk >= share {
        tracing::info!(
            "micro_batch {chunk} is at least this rank's {share} samples: every step is one pass"
        );
        return Ok(None);
    }
    tracing::info!(
        "micro_batch {chunk}: every step passes this rank's {share} samples in {} chunks, after a pass for their features (gradient cache)",
        share.div_ceil(chunk)
    );
    Ok(Some(chunk))
}
