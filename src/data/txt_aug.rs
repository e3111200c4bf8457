//! RDE's caption augmentation (`txt_aug`, METHOD.md section 7): each word token, with
//! probability 0.2, becomes the mask token, a random token or nothing, in ratio 0.6 : 0.2 : 0.2.
use super::tokenizer::MASK_ID;
use rand::Rng;

/// Probability that a word token is augmented.
pub const AUG_PROB: f64 = 0.2;
/// Of the augmented tokens, the share masked; the next [`RANDOM_SHARE`] become a random token,
/// the rest are removed.
pub const MASK_SHARE: f64 = 0.6;
pub const RANDOM_SHARE: f64 = 0.2;

/// Augments one caption's ids (`[L]`, as produced by the tokenizer): each word token
/// (`0 < id < MASK_ID`; not padding, SOT, EOT or mask) with probability [`AUG_PROB`] becomes
/// `MASK_ID`, a uniform random id in `[1, MASK_ID)`, or is removed, in ratio 0.6 : 0.2 : 0.2; the
/// tokens after a removed one shift left and the caption is zero-padded back to `L`.
pub fn augment_caption<R: Rng>(ids: &[i64], rng: &mut R) -> Vec<i64> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        if !(0 < id && id < MASK_ID) {
            out.push(id);
            continue;
        }
        let u: f64 = rng.gen();
        if u >= AUG_PROB {
            out.push(id);
            continue;
        }
        let v = u / AUG_PROB;
        if v < MASK_SHARE {
            out.push(MASK_ID);
        } else if v < MASK_SHARE + RANDOM_SHARE {
            out.push(rng.gen_range(1..MASK_ID));
        }
    }
    out.resize(ids.len(), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::{EOT_ID, SOT_ID};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// SOT, `n` word ids in `[1000, 1010)` (a random replacement falls among them with
    /// probability 10/49404), EOT, zero padding to 77.
    fn row(n: usize) -> Vec<i64> {
        let mut ids = vec![SOT_ID];
        ids.extend((0..n as i64).map(|i| 1000 + i % 10));
        ids.push(EOT_ID);
        ids.resize(77, 0);
        ids
    }

    #[test]
    fn special_tokens_stay_and_the_caption_keeps_its_length() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in [0, 1, 20, 75] {
            let ids = row(n);
            for _ in 0..200 {
                let out = augment_caption(&ids, &mut rng);
                assert_eq!(out.len(), 77);
                assert_eq!(out[0], SOT_ID);
                let eot = out.iter().position(|&t| t == EOT_ID).unwrap();
                assert!(out[eot + 1..].iter().all(|&t| t == 0), "zero padded");
                assert!(out[1..eot].iter().all(|&t| 0 < t && t <= MASK_ID));
            }
        }
        let mask_only = [SOT_ID, MASK_ID, EOT_ID, 0];
        assert_eq!(augment_caption(&mask_only, &mut rng), mask_only);
    }

    /// Over 100,000 word tokens, each outcome's count lies within 4 binomial standard deviations
    /// of its expectation: masked 0.12, random 0.04, removed 0.04, kept 0.80. A random token that
    /// falls among the original ids (1000-1009) counts as kept: about 0.04 · 10/49404 < 1e-5 of
    /// the tokens, within the 1e-4 allowed besides.
    #[test]
    fn rates_within_binomial_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ids = row(50);
        let (mut masked, mut random, mut removed, mut kept, mut total) = (0, 0, 0, 0, 0usize);
        for _ in 0..2000 {
            let out = augment_caption(&ids, &mut rng);
            let eot = out.iter().position(|&t| t == EOT_ID).unwrap();
            removed += 51 - eot;
            total += 50;
            for &t in &out[1..eot] {
                match t {
                    MASK_ID => masked += 1,
                    1000..=1009 => kept += 1,
                    _ => random += 1,
                }
            }
        }
        let n = total as f64;
        for (what, count, p) in [
            ("masked", masked, AUG_PROB * MASK_SHARE),
            ("random", random, AUG_PROB * RANDOM_SHARE),
            (
                "removed",
                removed,
                AUG_PROB * (1.0 - MASK_SHARE - RANDOM_SHARE),
            ),
            ("kept", kept, 1.0 - AUG_PROB),
        ] {
            let (mean, sd) = (n * p, (n * p * (1.0 - p)).sqrt());
            assert!(
                (count as f64 - mean).abs() <= 4.0 * sd + n * 1e-4,
                "{what}: {count}, expected {mean:.0} ± {:.0}",
                4.0 * sd
            );
        }
    }
}
