//! Masked-language-model inputs for the cross-modal MLM branch (BERT's 80/10/10 rule).
use super::tokenizer::MASK_ID;
use rand::Rng;

/// Probability that an eligible token is selected for prediction.
pub const SELECT_PROB: f64 = 0.15;

/// What becomes of a selected token: `MASK_ID` with probability `mask`, itself with probability
/// `unchanged`, a random id otherwise (config keys `masked_token_rate`,
/// `masked_token_unchanged_rate`; BERT's and IRRA's 0.8 and 0.1 by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskRates {
    pub mask: f64,
    pub unchanged: f64,
}

impl Default for MaskRates {
    fn default() -> Self {
        MaskRates {
            mask: 0.8,
            unchanged: 0.1,
        }
    }
}

/// Masks one caption's ids (`[L]`, as produced by the tokenizer). Each token with
/// `0 < id < MASK_ID` (not padding, SOT, EOT or mask) is selected with probability 0.15; a
/// selected token becomes `MASK_ID` with probability `rates.mask`, stays as it is with
/// probability `rates.unchanged`, and becomes a uniform random id in `[1, MASK_ID)` otherwise.
/// Returns `(masked ids, labels)`, both of length L: the label of a selected token is its
/// original id, of every other position 0. If no token was selected, position 1 (the first
/// caption token) is masked and labelled.
pub fn mask_tokens<R: Rng>(ids: &[i64], rates: MaskRates, rng: &mut R) -> (Vec<i64>, Vec<i64>) {
    let mut masked = ids.to_vec();
    let mut labels = vec![0i64; ids.len()];
    for (i, &id) in ids.iter().enumerate() {
        if !(0 < id && id < MASK_ID) {
            continue;
        }
        let u: f64 = rng.gen();
        if u < SELECT_PROB {
            let v = u / SELECT_PROB;
            if v < rates.mask {
                masked[i] = MASK_ID;
            } else if v < 1.0 - rates.unchanged {
                masked[i] = rng.gen_range(1..MASK_ID);
            }
            labels[i] = id;
        }
    }
    if labels.iter().all(|&l| l == 0) && ids.len() > 1 {
        labels[1] = ids[1];
        masked[1] = MASK_ID;
    }
    (masked, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::{EOT_ID, SOT_ID};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A caption-like row: SOT, `n` ordinary ids, EOT, zero padding to 77.
    fn row(n: usize, rng: &mut ChaCha8Rng) -> Vec<i64> {
        let mut ids = vec![SOT_ID];
        ids.extend((0..n).map(|_| rng.gen_range(1..MASK_ID)));
        ids.push(EOT_ID);
        ids.resize(77, 0);
        ids
    }

    /// Observed count within 4 standard deviations of its expectation.
    fn assert_count(observed: usize, mean: f64, var: f64, what: &str) {
        let tol = 4.0 * var.sqrt();
        assert!(
            (observed as f64 - mean).abs() <= tol,
            "{what}: {observed}, expected {mean:.1} ± {tol:.1}"
        );
    }

    /// The rates act: all selected tokens masked, or all left as they are (still labelled).
    #[test]
    fn mask_rates_decide_what_a_selected_token_becomes() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let ids = row(60, &mut rng);
        let all_masked = MaskRates {
            mask: 1.0,
            unchanged: 0.0,
        };
        let (masked, labels) = mask_tokens(&ids, all_masked, &mut ChaCha8Rng::seed_from_u64(9));
        let selected: Vec<usize> = (0..ids.len()).filter(|&i| labels[i] != 0).collect();
        assert!(!selected.is_empty());
        assert!(selected
            .iter()
            .all(|&i| masked[i] == MASK_ID && labels[i] == ids[i]));
        let kept = MaskRates {
            mask: 0.0,
            unchanged: 1.0,
        };
        let (masked, labels) = mask_tokens(&ids, kept, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(masked, ids, "selected tokens stay as they are");
        assert_eq!(labels.iter().filter(|&&l| l != 0).count(), selected.len());
    }

    #[test]
    fn selection_rate_and_80_10_10_split() {
        // For a row of n eligible tokens, with p = 0.15 and q = 0.85^n (nothing drawn, so the
        // fallback masks one token): E[selected] = n p + q, E[masked] = 0.8 n p + q,
        // E[random] = E[kept] = 0.1 n p. Variances are bounded by the binomial ones plus q(1-q).
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut selected, mut to_mask, mut to_random, mut kept) = (0, 0, 0, 0);
        let (mut e_sel, mut v_sel, mut e_mask, mut v_mask, mut e_rand, mut v_rand) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for _ in 0..20_000 {
            let n = rng.gen_range(3..40);
            let ids = row(n, &mut rng);
            let (masked, labels) = mask_tokens(&ids, MaskRates::default(), &mut rng);
            let (p, q) = (SELECT_PROB, 0.85f64.powi(n as i32));
            let n = n as f64;
            e_sel += n * p + q;
            v_sel += n * p * (1.0 - p) + q * (1.0 - q);
            e_mask += n * 0.8 * p + q;
            v_mask += n * 0.12 * 0.88 + q * (1.0 - q);
            e_rand += n * 0.1 * p;
            v_rand += n * 0.015 * 0.985;
            for (i, &id) in ids.iter().enumerate() {
                if !(0 < id && id < MASK_ID) {
                    assert_eq!(
                        (masked[i], labels[i]),
                        (id, 0),
                        "SOT/EOT/padding untouched at {i}"
                    );
                } else if labels[i] == 0 {
                    assert_eq!(masked[i], id, "unselected token unchanged");
                } else {
                    assert_eq!(labels[i], id, "label is the original id");
                    selected += 1;
                    match masked[i] {
                        MASK_ID => to_mask += 1,
                        m if m == id => kept += 1,
                        m => {
                            assert!((1..MASK_ID).contains(&m), "random id {m} in [1, 49405)");
                            to_random += 1
                        }
                    }
                }
            }
            assert!(
                labels.iter().any(|&l| l != 0),
                "at least one position labelled"
            );
        }
        assert_count(selected, e_sel, v_sel, "selected");
        assert_count(to_mask, e_mask, v_mask, "masked");
        assert_count(to_random, e_rand, v_rand, "random");
        assert_count(kept, e_rand, v_rand, "kept");
    }

    #[test]
    fn fallback_masks_position_one() {
        // An rng that always returns values above 0.15: nothing is drawn.
        struct High;
        impl rand::RngCore for High {
            fn next_u32(&mut self) -> u32 {
                u32::MAX
            }
            fn next_u64(&mut self) -> u64 {
                u64::MAX
            }
            fn fill_bytes(&mut self, d: &mut [u8]) {
                d.fill(0xFF)
            }
            fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand::Error> {
                d.fill(0xFF);
                Ok(())
            }
        }
        let ids = vec![SOT_ID, 320, 1237, 539, EOT_ID, 0, 0];
        let (masked, labels) = mask_tokens(&ids, MaskRates::default(), &mut High);
        assert_eq!(masked, vec![SOT_ID, MASK_ID, 1237, 539, EOT_ID, 0, 0]);
        assert_eq!(labels, vec![0, 320, 0, 0, 0, 0, 0]);
        // Empty caption: position 1 is EOT and is still masked and labelled (IRRA's rule).
        let (masked, labels) = mask_tokens(&[SOT_ID, EOT_ID, 0], MaskRates::default(), &mut High);
        assert_eq!(masked, vec![SOT_ID, MASK_ID, 0]);
        assert_eq!(labels, vec![0, EOT_ID, 0]);
    }

    #[test]
    fn deterministic_with_seed() {
        let ids = row(30, &mut ChaCha8Rng::seed_from_u64(1));
        let a = mask_tokens(
            &ids,
            MaskRates::default(),
            &mut ChaCha8Rng::seed_from_u64(5),
        );
        let b = mask_tokens(
            &ids,
            MaskRates::default(),
            &mut ChaCha8Rng::seed_from_u64(5),
        );
        assert_eq!(a, b);
    }
}
