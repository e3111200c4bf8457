//! Noisy correspondences as RDE injects them (docs/METHOD.md section 7): a noise index `n` over
//! the training pairs in IRRA's order, pair `i` keeping its image and pid and taking the caption
//! of pair `n[i]`; pair `i` is clean iff `n[i] = i`. The index is drawn by RDE's rule from NumPy's
//! legacy generator, or read from a `.npy` file in RDE's format.
use super::annotations::TrainSample;
use super::numpy_rng::NumpyRandomState;
use crate::config::Config;
use crate::io::npy::NpyVector;
use crate::UsageError;
use anyhow::{bail, Result};
use std::path::Path;

/// A noise index over `N` training pairs: a permutation's worth of caption sources, `n[i]` in
/// `0..N` for every `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoiseIndex {
    source: Vec<i64>,
}

impl NoiseIndex {
    /// RDE's rule after `np.random.seed(seed)`: `idx = shuffle(arange(N))[: int(rate·N)]`, then
    /// `n[idx] = shuffle(idx)` (a drawn pair can land on itself and stay clean). `rate` in
    /// `[0, 1)` (the config holds it there); `seed` must be below 2^32, as NumPy requires.
    pub fn draw(n: usize, rate: f64, seed: u64) -> Result<NoiseIndex> {
        let Ok(seed) = u32::try_from(seed) else {
            bail!(UsageError(format!(
                "seed {seed} cannot draw a noise index (`noisy_rate` {rate}): NumPy's generator takes seeds from 0 to {} (expected a smaller seed, or a `noisy_file`)",
                u32::MAX
            )));
        };
        let mut rng = NumpyRandomState::seed(seed);
        let mut order: Vec<i64> = (0..n as i64).collect();
        rng.shuffle(&mut order);
        // Python's `int(rate * N)`: the double product, truncated.
        let drawn = &order[..((rate * n as f64) as usize).min(n)];
        let mut targets = drawn.to_vec();
        rng.shuffle(&mut targets);
        let mut source: Vec<i64> = (0..n as i64).collect();
        for (&i, &t) in drawn.iter().zip(&targets) {
            source[i as usize] = t;
        }
        Ok(NoiseIndex { source })
    }

    /// The index in `.npy` file `path`, for `n` training pairs: a 1-D int64 or int32 array of
    /// exactly `n` entries, each in `0..n`.
    pub fn read(path: &Path, n: usize) -> Result<NoiseIndex> {
        const WHAT: &str = "noise file (`noisy_file`)";
        let file = NpyVector::open(path, WHAT)?;
        if file.len() != n {
            bail!(UsageError(format!(
                "{WHAT} {} holds {} entries, expected {n} (the training split's pair count)",
                path.display(),
                file.len()
            )));
        }
        let source = file.read()?;
        if let Some((i, v)) = source
            .iter()
            .enumerate()
            .find(|(_, &v)| !(0..n as i64).contains(&v))
        {
            bail!(UsageError(format!(
                "{WHAT} {}: entry {i} is {v}, expected a pair index from 0 to {}",
                path.display(),
                n as i64 - 1
            )));
        }
        Ok(NoiseIndex { source })
    }

    /// The index a run config asks for over `n` training pairs: `noisy_file`'s if set, else
    /// one drawn at `noisy_rate` from the run's `seed` if that is above 0, else none.
    pub fn of_config(cfg: &Config, n: usize) -> Result<Option<NoiseIndex>> {
        let d = &cfg.data;
        Ok(match (&d.noisy_file, d.noisy_rate > 0.0) {
            (Some(path), _) => Some(NoiseIndex::read(path, n)?),
            (None, true) => Some(NoiseIndex::draw(n, d.noisy_rate, cfg.run.seed)?),
            (None, false) => None,
        })
    }

    /// `n[i]` for every pair `i`.
    pub fn sources(&self) -> &[i64] {
        &self.source
    }

    /// Pairs.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// Whether pair `i` keeps its own caption.
    pub fn is_clean(&self, i: usize) -> bool {
        self.source[i] == i as i64
    }

    /// Pairs that keep their own caption.
    pub fn clean_count(&self) -> usize {
        (0..self.len()).filter(|&i| self.is_clean(i)).count()
    }

    /// The training pairs with the captions the index assigns: pair `i` keeps its image, pid and
    /// image id and takes the caption of pair `n[i]`. `samples` must be the `N` pairs the index
    /// was made for.
    pub fn apply(&self, samples: &[TrainSample]) -> Vec<TrainSample> {
        assert_eq!(samples.len(), self.len(), "a noise index of another split");
        samples
            .iter()
            .zip(&self.source)
            .map(|(s, &from)| TrainSample {
                caption: samples[from as usize].caption.clone(),
                ..s.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_indices_permute_a_rate_of_the_pairs() {
        let idx = NoiseIndex::draw(1000, 0.3, 1).unwrap();
        let mut sorted = idx.sources().to_vec();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "a permutation");
        let moved = 1000 - idx.clean_count();
        assert!(moved <= 300 && moved > 290, "{moved}");
        assert_eq!(
            NoiseIndex::draw(1000, 0.0, 1).unwrap().sources(),
            (0..1000).collect::<Vec<i64>>()
        );
        assert_ne!(idx, NoiseIndex::draw(1000, 0.3, 2).unwrap());
        let e = NoiseIndex::draw(10, 0.2, 1 << 32).unwrap_err();
        assert!(e.to_string().contains("seed 4294967296"), "{e}");
    }

    #[test]
    fn a_pair_keeps_its_image_and_takes_the_caption_it_is_given() {
        let samples: Vec<TrainSample> = (0..3)
            .map(|i| TrainSample {
                image: format!("{i}.jpg").into(),
                pid: i,
                image_id: i,
                caption: format!("caption {i}"),
            })
            .collect();
        let idx = NoiseIndex {
            source: vec![2, 1, 0],
        };
        let noisy = idx.apply(&samples);
        assert_eq!(noisy[0].caption, "caption 2");
        assert_eq!(noisy[0].image, samples[0].image);
        assert_eq!(noisy[0].pid, 0);
        assert_eq!(noisy[1], samples[1]);
        assert_eq!(idx.clean_count(), 1);
    }
}
