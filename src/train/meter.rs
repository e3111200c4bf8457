//! The loss meter: running means of the loss terms over an epoch, and its throughput.
use super::progress::Progress;
use super::step::StepOutcome;
use crate::config::LossTerm;
use std::time::Instant;

/// Running means of the loss terms over an epoch, and its throughput (since it started here).
pub(super) struct EpochMeter {
    /// Each term's sum over the epoch's steps so far.
    pub(super) sums: Vec<(LossTerm, f64)>,
    steps: usize,
    samples: usize,
    started: Instant,
}

impl EpochMeter {
    /// The meter of the epoch `progress` is in, with the sums of its batches already done.
    pub(super) fn resume(progress: &Progress) -> EpochMeter {
        EpochMeter {
            sums: progress.epoch_loss.clone(),
            steps: progress.step,
            samples: 0,
            started: Instant::now(),
        }
    }

    pub(super) fn add(
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

    pub(super) fn means(&self) -> impl Iterator<Item = (LossTerm, f64)> + '_ {
        let n = self.steps.max(1) as f64;
        self.sums.iter().map(move |(k, s)| (*k, s / n))
    }

    pub(super) fn samples_per_s(&self) -> f64 {
        self.samples as f64 / self.started.elapsed().as_secs_f64()
    }

    /// `sdm 1.234 id 0.567 ...` with `decimals` digits.
    pub(super) fn summary(&self, decimals: usize) -> String {
        let shown: Vec<String> = self
            .means()
            .map(|(k, m)| format!("{k} {m:.decimals$}"))
            .collect();
        shown.join(" ")
    }
}
