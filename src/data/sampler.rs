//! Epoch orderings of the training samples: `random` and `identity` (P identities x K instances).
use crate::config::SamplerKind;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// How one epoch orders the training samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// A fresh shuffle of all samples every epoch; the last batch may be short.
    Random,
    /// Batches of `batch_size / num_instance` identities with `num_instance` samples each, as
    /// person re-id samplers build them; identities with fewer samples are topped up by
    /// resampling, and the epoch ends when too few identities have samples left for a batch.
    Identity { num_instance: usize },
}

impl Sampler {
    /// From the config keys `sampler` and `num_instance` (validated by the config).
    pub fn from_config(d: &crate::config::DataSection) -> Sampler {
        match d.sampler {
            SamplerKind::Identity => Sampler::Identity {
                num_instance: d.num_instance,
            },
            SamplerKind::Random => Sampler::Random,
        }
    }

    /// The batches of epoch `epoch` as sample indices, deterministic in (`seed`, `epoch`).
    pub fn batches(
        &self,
        pids: &[i64],
        batch_size: usize,
        seed: u64,
        epoch: usize,
    ) -> Vec<Vec<usize>> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        match *self {
            Sampler::Random => {
                let mut order: Vec<usize> = (0..pids.len()).collect();
                order.shuffle(&mut rng);
                order
                    .chunks(batch_size.max(1))
                    .map(<[usize]>::to_vec)
                    .collect()
            }
            Sampler::Identity { num_instance } => {
                identity_batches(pids, batch_size, num_instance, &mut rng)
            }
        }
    }
}

fn identity_batches(
    pids: &[i64],
    batch_size: usize,
    k: usize,
    rng: &mut impl Rng,
) -> Vec<Vec<usize>> {
    let mut by_pid: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &p) in pids.iter().enumerate() {
        by_pid.entry(p).or_default().push(i);
    }
    // Each identity's samples, shuffled and cut into groups of k (topped up when fewer than k).
    let mut groups: BTreeMap<i64, Vec<Vec<usize>>> = BTreeMap::new();
    for (pid, mut idx) in by_pid {
        if idx.len() < k {
            let extra: Vec<usize> = (idx.len()..k)
                .map(|_| idx[rng.gen_range(0..idx.len())])
                .collect();
            idx.extend(extra);
        }
        idx.shuffle(rng);
        let full = idx.len() / k * k;
        groups.insert(pid, idx[..full].chunks(k).map(<[usize]>::to_vec).collect());
    }
    let per_batch = (batch_size / k).max(1);
    let mut available: Vec<i64> = groups.keys().copied().collect();
    let mut batches = Vec::new();
    while available.len() >= per_batch {
        let chosen: Vec<i64> = available.choose_multiple(rng, per_batch).copied().collect();
        let mut batch = Vec::with_capacity(per_batch * k);
        for pid in &chosen {
            let g = groups.get_mut(pid).expect("chosen from available");
            batch.extend(g.pop().expect("available pids have groups"));
            if g.is_empty() {
                available.retain(|p| p != pid);
            }
        }
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_covers_every_sample_once_and_is_seeded() {
        let pids: Vec<i64> = (0..103).map(|i| i / 3).collect();
        let b = Sampler::Random.batches(&pids, 10, 1, 0);
        assert_eq!(b.len(), 11);
        assert_eq!(b.last().unwrap().len(), 3);
        let mut all: Vec<usize> = b.concat();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert_eq!(b, Sampler::Random.batches(&pids, 10, 1, 0));
        assert_ne!(b, Sampler::Random.batches(&pids, 10, 1, 1));
        assert_ne!(b, Sampler::Random.batches(&pids, 10, 2, 0));
    }

    #[test]
    fn identity_batches_have_p_ids_times_k() {
        // 30 identities with 1..=7 samples each.
        let pids: Vec<i64> = (0..30)
            .flat_map(|p| std::iter::repeat_n(p, 1 + p as usize % 7))
            .collect();
        let s = Sampler::Identity { num_instance: 4 };
        let batches = s.batches(&pids, 16, 3, 0);
        assert!(!batches.is_empty());
        for b in &batches {
            assert_eq!(b.len(), 16);
            let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
            for &i in b {
                *counts.entry(pids[i]).or_default() += 1;
            }
            assert_eq!(counts.len(), 4, "4 identities per batch");
            assert!(
                counts.values().all(|&c| c == 4),
                "4 instances each: {counts:?}"
            );
        }
        assert_eq!(batches, s.batches(&pids, 16, 3, 0));
    }
}
