//! The chunk size of a training step: the `micro_batch` setting resolved to samples per pass for
//! one rank (`auto` measured on the card). The step in chunks, with the whole batch's exact
//! gradient, is [`super::step`].
use crate::config::MicroBatch;
use crate::device::{cuda_memory, reset_peak_allocated};
use crate::UsageError;
use anyhow::{bail, Result};
use tch::Device;

/// Share of the memory the allocator can hand out that `auto` keeps free: for fragmentation (the
/// allocator's blocks are rounded up and split), what the probes do not see (a data-parallel
/// rank's gradient buffer on its first step, the collectives' buffers) and the allocator's own
/// workspace.
const AUTO_MARGIN: f64 = 0.10;

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
/// rank's `share` of the batch), else the samples per pass. `auto` (CUDA only) measures, on the
/// rank's own card, the peak bytes allocated by the passes of a step in chunks of 1 and of 2
/// samples (`probe(chunk)` runs them without updating anything; the allocator's peak is reset
/// before each) and picks the largest chunk whose peak, extrapolated, fits what the allocator can
/// hand out (the card's free memory and the allocator's own cache) less [`AUTO_MARGIN`]. The
/// figures it chose from are logged.
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
            check_device(setting, device)?;
            let before = cuda_memory(device)?;
            let usable = before.free + before.reserved;
            let mut peak_of = |c: usize| -> Result<u64> {
                reset_peak_allocated(device)?;
                probe(c)?;
                Ok(cuda_memory(device)?.peak)
            };
            let (one, two) = (peak_of(1)?, peak_of(2)?);
            let n = auto_chunk(usable, one, two, share);
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            tracing::info!(
                "micro_batch auto on {device:?}: {:.2} GiB the allocator can hand out ({:.2} GiB free, {:.2} GiB it holds); a step's passes peak at {:.2} GiB allocated in chunks of 1 and {:.2} GiB in chunks of 2 ({:.1} MiB per sample); with a {:.0}% margin: chunks of {n}",
                gib(usable),
                gib(before.free),
                gib(before.reserved),
                gib(one),
                gib(two),
                two.saturating_sub(one) as f64 / (1u64 << 20) as f64,
                AUTO_MARGIN * 100.0
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

/// The largest chunk whose peak allocation fits `usable` bytes less [`AUTO_MARGIN`], from the
/// peaks of chunks of 1 (`one`) and 2 (`two`) samples, growing by `two - one` per sample; at
/// least 1 and at most `share`.
fn auto_chunk(usable: u64, one: u64, two: u64, share: usize) -> usize {
    let per_sample = two.saturating_sub(one).max(1) as f64;
    let budget = usable as f64 * (1.0 - AUTO_MARGIN);
    let fits = 1.0 + ((budget - one as f64) / per_sample).floor();
    fits.clamp(1.0, share as f64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_largest_chunk_whose_extrapolated_peak_fits_the_margin() {
        const GIB: u64 = 1 << 30;
        // 10 GiB usable, 9 GiB within the margin; 3 GiB for one sample, 0.5 GiB more each:
        // 3 + 0.5 (n - 1) <= 9 for n up to 13.
        assert_eq!(auto_chunk(10 * GIB, 3 * GIB, 3 * GIB + GIB / 2, 64), 13);
        assert_eq!(
            auto_chunk(10 * GIB, 3 * GIB, 3 * GIB + GIB / 2, 8),
            8,
            "at most the share"
        );
        assert_eq!(auto_chunk(2 * GIB, 3 * GIB, 4 * GIB, 8), 1, "at least 1");
        assert_eq!(auto_chunk(10 * GIB, GIB, GIB, 8), 8, "no growth: the share");
    }
}
