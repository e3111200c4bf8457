//! `DataSection`: the dataset and how samples are fed.
use super::{DatasetName, SamplerKind, SplitName};
use crate::model::config::{MAX_IMAGE_SIDE, MAX_TEXT_LENGTH};
use crate::ranges::{check_range, invalid};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The dataset and how samples are fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataSection {
    pub dataset_name: DatasetName,
    /// The split whose t2i R@1 chooses the best epoch (IRRA's key and default, `test`); the test
    /// metrics are reported at that epoch either way.
    pub val_dataset: SplitName,
    /// Folder that holds `<dataset_name>/`.
    pub root_dir: PathBuf,
    pub sampler: SamplerKind,
    /// Samples per identity in a batch of the `identity` sampler.
    pub num_instance: usize,
    pub batch_size: usize,
    pub test_batch_size: usize,
    /// Data-loading threads (0 = all cores).
    pub num_workers: usize,
    /// Image size as (height, width).
    pub img_size: (i64, i64),
    pub img_aug: bool,
    /// Tokens per caption (start and end tokens included).
    pub text_length: i64,
    /// RDE's caption augmentation of the training data (METHOD.md 7): each word token with
    /// probability 0.2 masked, replaced or removed.
    pub txt_aug: bool,
    /// The fraction of training pairs given another pair's caption, drawn by RDE's rule from the
    /// run's `seed` (METHOD.md 7), in `[0, 1)`; with `noisy_file`, the file's index is used and
    /// this chooses only the division's mixture settings.
    pub noisy_rate: f64,
    /// A noise index in RDE's `.npy` format over the training pairs, used instead of a drawn one.
    pub noisy_file: Option<PathBuf>,
    /// TOY-PEDES identities per split (train, val, test), used when the set is generated.
    pub synth_ids: (usize, usize, usize),
    /// The seed TOY-PEDES is generated from (its people, images and captions); `seed` varies
    /// only the initialisation, the sample order and the augmentation.
    pub synth_seed: u64,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            dataset_name: DatasetName::CuhkPedes,
            val_dataset: SplitName::Test,
            root_dir: "data".into(),
            sampler: SamplerKind::Random,
            num_instance: 4,
            batch_size: 64,
            test_batch_size: 512,
            num_workers: 0,
            img_size: (384, 128),
            img_aug: true,
            text_length: 77,
            txt_aug: false,
            noisy_rate: 0.0,
            noisy_file: None,
            synth_ids: (1000, 100, 200),
            synth_seed: 1,
        }
    }
}

/// The largest `synth_seed`: 2^53 - 1, the largest whole number a double holds exactly.
pub const MAX_SYNTH_SEED: u64 = (1 << 53) - 1;

impl DataSection {
    pub(super) fn validate(&self) -> Result<()> {
        let (h, w) = self.img_size;
        let side = MAX_IMAGE_SIDE as f64;
        check_range(&[
            ("batch_size", self.batch_size as f64, 2.0, 65536.0),
            ("test_batch_size", self.test_batch_size as f64, 1.0, 65536.0),
            ("num_workers", self.num_workers as f64, 0.0, 1024.0),
            (
                "text_length",
                self.text_length as f64,
                2.0,
                MAX_TEXT_LENGTH as f64,
            ),
            ("img_size", h as f64, 1.0, side),
            ("img_size", w as f64, 1.0, side),
            ("synth_ids", self.synth_ids.0 as f64, 1.0, 1e6),
            ("synth_ids", self.synth_ids.1 as f64, 0.0, 1e6),
            ("synth_ids", self.synth_ids.2 as f64, 1.0, 1e6),
        ])?;
        if !(0.0..1.0).contains(&self.noisy_rate) {
            invalid!(
                "noisy_rate",
                "{} (expected a fraction of the training pairs from 0 to below 1)",
                self.noisy_rate
            );
        }
        if self.synth_seed > MAX_SYNTH_SEED {
            invalid!(
                "synth_seed",
                "{} (expected a whole number from 0 to {MAX_SYNTH_SEED}: the seed is recorded in JSON, whose readers may hold numbers as doubles)",
                self.synth_seed
            );
        }
        let name = self.dataset_name;
        if self.val_dataset == SplitName::Val && !name.record().has_val {
            invalid!(
                "val_dataset",
                "val, but {name} has no validation split (expected test for {name})"
            );
        }
        if self.sampler == SamplerKind::Identity
            && (self.num_instance == 0 || !self.batch_size.is_multiple_of(self.num_instance))
        {
            invalid!(
                "num_instance",
                "{} (expected a positive divisor of `batch_size` {})",
                self.num_instance,
                self.batch_size
            );
        }
        Ok(())
    }
}
