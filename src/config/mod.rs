//! The run configuration: every key of the method with IRRA's names and the paper's defaults, in
//! typed sections.
//!
//! A config file is one flat YAML mapping (IRRA's keys); in memory the keys are grouped by what
//! they steer: [`RunSection`], [`DataSection`], [`ModelSection`], [`LossSection`],
//! [`OptimSection`]. Every closed set of values is an enum ([`choices`]), refused at load time
//! when unknown. Loading ([`merge`]) checks keys (an unknown key names the nearest valid one) and
//! types (naming the key); [`Config::validate`] then checks ranges, naming the key and what was
//! expected.
mod authors_runs;
pub mod choices;
mod data_section;
pub mod datasets;
mod earlier_runs;
mod loss_section;
mod merge;
mod micro_batch_key;
mod model_section;
mod optim_section;
mod run_section;

pub use crate::model::config::{MAX_IMAGE_SIDE, MAX_TEXT_LENGTH};
pub use choices::{
    DatasetName, DistBackend, GlobalCaption, LossNames, LossTerm, MatmulPrecision, NoiseFilter,
    OptimizerKind, SamplerKind, Scheduler, Similarity, SplitName, TseBatchNorm, WarmupMethod,
};
pub use data_section::{DataSection, MAX_SYNTH_SEED};
pub use loss_section::LossSection;
pub use merge::{edit_distance, parse_override, valid_keys};
pub use micro_batch_key::MicroBatch;
pub use model_section::{ModelSection, MIN_VOCAB_SIZE};
pub use optim_section::OptimSection;
pub use run_section::{RunSection, DEFAULT_DIST_TIMEOUT};

use crate::ranges::invalid;
use crate::UsageError;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole run configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub run: RunSection,
    #[serde(flatten)]
    pub data: DataSection,
    #[serde(flatten)]
    pub model: ModelSection,
    #[serde(flatten)]
    pub loss: LossSection,
    #[serde(flatten)]
    pub optim: OptimSection,
}

impl Config {
    /// The defaults with the YAML file `path` over them, every key and type checked; not yet
    /// validated (overrides may still change it). Errors are usage errors naming the file.
    pub fn load(path: &Path) -> Result<Config> {
        merge::load(path).map_err(|e| UsageError(format!("{e:#}")).into())
    }

    /// This config with overrides (`key`, value as YAML) applied, every key and type checked; not
    /// yet validated. Errors are usage errors naming the key.
    pub fn with_overrides(&self, sets: &[(String, String)]) -> Result<Config> {
        merge::apply(self, sets).map_err(|e| UsageError(format!("{e:#}")).into())
    }

    /// A config file over the defaults, validated.
    pub fn from_file(path: &Path) -> Result<Config> {
        let cfg = Config::load(path)?;
        cfg.validate()
            .map_err(|e| UsageError(format!("config file {}: {e:#}", path.display())))?;
        Ok(cfg)
    }

    /// Checks every value that has a constrained range; the error names the key.
    pub fn validate(&self) -> Result<()> {
        self.run.validate()?;
        self.data.validate()?;
        self.model.validate()?;
        self.loss.validate()?;
        self.optim.validate()?;
        if self.model.tse_batchnorm == TseBatchNorm::Batch && self.run.micro_batch.is_some() {
            invalid!(
                "tse_batchnorm",
                "batch with `micro_batch`: each pass would normalise with its own chunk's statistics, and the chunked step would not give the whole batch's gradient (expected running, or no micro_batch)"
            );
        }
        let (h, w) = self.data.img_size;
        let patch = self.model.vision_patch_size;
        if h < patch || w < patch {
            invalid!(
                "img_size",
                "[{h}, {w}] is smaller than the patch size {patch}"
            );
        }
        self.validate_noise_keys()?;
        self.validate_run_tag()
    }

    /// RDE's run tag in `loss_names` against the settings it names, and the model it stands for.
    fn validate_run_tag(&self) -> Result<()> {
        let Some(tag) = self.loss.loss_names.tag() else {
            return Ok(());
        };
        for (key, tagged, actual) in [
            ("select_ratio", tag.select_ratio, self.model.select_ratio),
            ("tau", tag.tau, self.loss.tau),
            ("margin", tag.margin, self.loss.margin),
            ("noisy_rate", tag.noisy_rate, self.data.noisy_rate),
        ] {
            if actual != tagged {
                invalid!(
                    "loss_names",
                    "its run tag {} says {key} {tagged}, but {key} is {actual} (RDE's run_rde.sh writes the tag from the same settings; expected them equal)",
                    tag.text
                );
            }
        }
        if !self.model.tse {
            invalid!(
                "loss_names",
                "its run tag {} is RDE's, whose model always has the TSE layers and divides its pairs (expected `tse: true`, as configs/rde-cuhk-pedes.yaml sets it)",
                tag.text
            );
        }
        Ok(())
    }

    /// The clean division's keys against the model and the loss terms.
    fn validate_noise_keys(&self) -> Result<()> {
        let l = &self.loss;
        if !self.model.tse && l.noise_filter == NoiseFilter::Ccd {
            invalid!(
                "noise_filter",
                "ccd divides by the TSE embeddings too (expected `tse: true` with it)"
            );
        }
        match l.noise_filter {
            NoiseFilter::None if l.ccd_warmup > 0 => invalid!(
                "ccd_warmup",
                "{} acts only with the clean division (expected `noise_filter: ccd` with it, or 0)",
                l.ccd_warmup
            ),
            NoiseFilter::Ccd if !self.losses().contains(&LossTerm::Tal) => invalid!(
                "noise_filter",
                "ccd divides by the TSE embeddings, which only the tal term trains (expected tal in `loss_names`, e.g. `tal` or `imal+tal`)"
            ),
            NoiseFilter::None | NoiseFilter::Ccd => {}
        }
        Ok(())
    }

    /// The loss terms in effect: `loss_names` expanded (`MLM` only switches the masking data
    /// path, as in IRRA).
    pub fn losses(&self) -> Vec<LossTerm> {
        self.loss.loss_names.terms().to_vec()
    }

    /// This config with its relative paths (`root_dir`, `output_dir`, `run_dir`, `pretrained`)
    /// made absolute against `cwd`, so a run's `configs.yaml` means the same from any folder.
    pub fn with_absolute_paths(mut self, cwd: &Path) -> Config {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = cwd.join(&*p);
            }
        };
        abs(&mut self.data.root_dir);
        abs(&mut self.run.output_dir);
        self.run.run_dir.as_mut().map(abs);
        self.model.pretrained.as_mut().map(abs);
        self.data.noisy_file.as_mut().map(abs);
        self
    }

    /// Writes the config as YAML atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_yaml::to_string(self)?;
        crate::io::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml).unwrap();
        format!("{:#}", Config::from_file(&p).unwrap_err())
    }

    fn set(pairs: &[(&str, &str)]) -> Result<Config> {
        let sets: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::default().with_overrides(&sets)
    }

    #[test]
    fn defaults_validate_and_round_trip() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        // IRRA's epsilons: 1e-3 for Adam, 1e-8 for AdamW, unless `eps` is set.
        assert_eq!(cfg.optim.eps(), 1e-3);
        let adamw = set(&[("optimizer", "AdamW")]).unwrap();
        assert_eq!(adamw.optim.eps(), 1e-8);
        assert_eq!(
            set(&[("optimizer", "AdamW"), ("eps", "1e-6")])
                .unwrap()
                .optim
                .eps(),
            1e-6
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        cfg.save(&p).unwrap();
        assert_eq!(Config::from_file(&p).unwrap(), cfg);
        let keys = valid_keys();
        assert_eq!(keys.first().map(String::as_str), Some("name"));
        assert!(keys.iter().any(|k| k == "MLM") && keys.iter().any(|k| k == "power"));
    }

    #[test]
    fn unknown_key_names_nearest() {
        assert!(
            err("batch_sise: 3").contains("unknown key `batch_sise` (did you mean `batch_size`?)")
        );
        assert!(err("mlm: true").contains("did you mean `MLM`"));
    }

    #[test]
    fn wrong_type_names_key_and_value() {
        let e = err("batch_size: many");
        assert!(e.contains("wrong type for `batch_size`: got many"), "{e}");
        assert!(e.contains("expected usize"), "{e}");
        let e = err("img_aug: 3");
        assert!(
            e.contains("`img_aug`") && e.contains("expected a boolean"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_name_key_and_list_the_valid_ones() {
        assert!(err("dca_heads: 3").contains("`dca_heads`: 3 (expected a positive even number"));
        let e = err("dataset_name: MARKET");
        assert!(e.contains("invalid value for `dataset_name`: \"MARKET\" (expected one of CUHK-PEDES, ICFG-PEDES, RSTPReid, TOY-PEDES)"), "{e}");
        assert!(err("loss_names: sdm+foo").contains("unknown loss \"foo\""));
        assert!(err("device: gpu7").contains("invalid value for `device`: \"gpu7\""));
        assert!(err("sampler: pk")
            .contains("invalid value for `sampler`: \"pk\" (expected one of random, identity)"));
    }

    #[test]
    fn synth_seed_defaults_to_1_and_is_checked() {
        assert_eq!(Config::default().data.synth_seed, 1);
        assert_eq!(set(&[("synth_seed", "7")]).unwrap().data.synth_seed, 7);
        let e = err("synth_seed: -1");
        assert!(
            e.contains("`synth_seed`: integer `-1`, expected u64"),
            "{e}"
        );
        let e = err(&format!("synth_seed: {}", MAX_SYNTH_SEED + 1));
        assert!(
            e.contains("invalid value for `synth_seed`: 9007199254740992 (expected a whole number from 0 to 9007199254740991"),
            "{e}"
        );
        let cfg = set(&[("synth_seed", &MAX_SYNTH_SEED.to_string())]).unwrap();
        cfg.validate().unwrap();
    }

    #[test]
    fn val_dataset_is_test_or_val_and_icfg_has_no_val() {
        assert_eq!(Config::default().data.val_dataset, SplitName::Test);
        let e = err("val_dataset: dev");
        assert!(
            e.contains("invalid value for `val_dataset`: \"dev\" (expected one of test, val)"),
            "{e}"
        );
        let e = err("dataset_name: ICFG-PEDES\nval_dataset: val");
        assert!(
            e.contains(
                "invalid value for `val_dataset`: val, but ICFG-PEDES has no validation split"
            ),
            "{e}"
        );
        let cfg = set(&[("dataset_name", "RSTPReid"), ("val_dataset", "val")]).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.data.val_dataset, SplitName::Val);
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let cfg = set(&[
            ("batch_size", "8"),
            ("img_size", "[128, 48]"),
            ("sampler", "identity"),
        ])
        .unwrap();
        assert_eq!(cfg.data.batch_size, 8);
        assert_eq!(cfg.data.img_size, (128, 48));
        assert_eq!(cfg.data.sampler, SamplerKind::Identity);
        let e = format!("{:#}", set(&[("lrr", "1")]).unwrap_err());
        assert!(e.contains("unknown key `lrr` (did you mean `lr`?)"), "{e}");
    }

    #[test]
    fn mlm_switches_the_data_path_and_the_loss_names_the_terms() {
        use LossTerm::*;
        let cfg = set(&[("loss_names", "sdm+id")]).unwrap();
        assert_eq!(cfg.losses(), vec![Sdm, Id]);
        assert!(
            cfg.loss.masked_global_captions(),
            "IRRA's sdm+id ablation still masks captions"
        );
        let cfg = set(&[("loss_names", "sdm+id"), ("global_caption", "clean")]).unwrap();
        assert!(!cfg.loss.masked_global_captions());
        let cfg = set(&[("loss_names", "imal"), ("MLM", "false")]).unwrap();
        let e = format!("{:#}", cfg.validate().unwrap_err());
        assert!(
            e.contains(
                "invalid value for `MLM`: false, but `loss_names` \"imal\" has the mlm term"
            ),
            "{e}"
        );
    }

    /// RDE's keys act on the TSE layers only: without `tse: true` each is refused by name, as is
    /// the batch-statistics BatchNorm in a chunked step (`similarity` is checked against the
    /// model itself, whose weights may bring the layers: `retrieval::similarity::resolve`).
    #[test]
    fn the_tse_keys_need_the_tse_layers() {
        let refused = |pairs: &[(&str, &str)], key: &str| {
            let e = format!("{:#}", set(pairs).and_then(|c| c.validate()).unwrap_err());
            assert!(e.contains(&format!("`{key}`")), "{pairs:?}: {e}");
        };
        refused(&[("select_ratio", "0.5")], "select_ratio");
        refused(&[("tse_batchnorm", "batch")], "tse_batchnorm");
        refused(
            &[
                ("tse", "true"),
                ("tse_batchnorm", "batch"),
                ("micro_batch", "8"),
            ],
            "tse_batchnorm",
        );
        refused(&[("tse", "true"), ("select_ratio", "1.5")], "select_ratio");
        let cfg = set(&[
            ("tse", "true"),
            ("select_ratio", "0.5"),
            ("similarity", "tse"),
            ("tse_batchnorm", "batch"),
            ("loss_names", "TAL"),
        ])
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.losses(), vec![LossTerm::Tal]);
    }

    /// RDE's `--loss_names TAL+sr0.3_tau0.015_margin0.1_n0.0`: the tag is checked against the
    /// settings it names and needs RDE's model; a second tag, or a tag alone, is refused.
    #[test]
    fn rdes_run_tag_is_checked_against_its_settings() {
        let tagged = |names: &str, more: &[(&str, &str)]| {
            let mut pairs = vec![
                ("loss_names", names),
                ("tse", "true"),
                ("noisy_rate", "0.2"),
            ];
            pairs.extend_from_slice(more);
            set(&pairs).and_then(|c| c.validate().map(|()| c))
        };
        let cfg = tagged("TAL+sr0.3_tau0.015_margin0.1_n0.2", &[]).unwrap();
        assert_eq!(cfg.losses(), vec![LossTerm::Tal]);
        assert_eq!(
            cfg.loss.loss_names.to_string(),
            "TAL+sr0.3_tau0.015_margin0.1_n0.2"
        );
        const TAG: &str = "TAL+sr0.3_tau0.015_margin0.1_n0.2";
        for (names, more, needle) in [
            (TAG, &[("tau", "0.02")][..], "`loss_names`: its run tag"),
            (TAG, &[("tau", "0.02")], "says tau 0.015, but tau is 0.02"),
            (
                "TAL+sr0.3_tau0.015_margin0.1_n0.0",
                &[],
                "says noisy_rate 0, but noisy_rate is 0.2",
            ),
            (TAG, &[("tse", "false")], "expected `tse: true`"),
            (
                "TAL+sr0.3_tau0.015_margin0.1_n0.2+sr0.3_tau0.015_margin0.1_n0.2",
                &[],
                "two run tags",
            ),
            ("sr0.3_tau0.015_margin0.1_n0.2", &[], "names no loss term"),
            (
                "TAL+sr0.3_tau0.015_margin0.1",
                &[],
                "unknown loss \"sr0.3_tau0.015_margin0.1\"",
            ),
        ] {
            let e = format!("{:#}", tagged(names, more).unwrap_err());
            assert!(e.contains(needle), "{names} {more:?}: {e}");
        }
    }
}
