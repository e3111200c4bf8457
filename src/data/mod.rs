//! Datasets and their audit, tokenizer, MLM masking, RDE's caption augmentation, injected noisy
//! correspondences, image transforms, samplers and the parallel loader.
//!
//! Knows the run configuration ([`crate::config`]) but no model: a batch is plain tensors.
pub mod annotations;
pub mod audit;
pub mod batch;
pub mod entries_json;
pub mod formats;
pub mod host_buffer;
pub mod loader;
pub mod mlm;
pub mod noise;
pub mod numpy_rng;
pub mod sampler;
pub mod synthetic;
pub mod text_clean;
mod text_tables;
pub mod tokenizer;
pub mod transforms;
pub mod txt_aug;

use crate::config::datasets::Source;
use crate::config::Config;

/// Tokenises every line of `input` (UTF-8, `\n`-separated; a final `\r` is whitespace and
/// cleaned away) and writes one JSON array of `text_length` ids per line (the caller holds
/// `text_length` to the config's bounds for `text_length`).
pub fn tokenize_lines(
    mut input: impl std::io::BufRead,
    output: &mut impl std::io::Write,
    text_length: usize,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let tokenizer = tokenizer::Tokenizer::shared();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("cannot read stdin")?
            == 0
        {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let text = std::str::from_utf8(&line).map_err(|e| {
            crate::UsageError(format!(
                "stdin line {number}: invalid UTF-8 at byte {} (expected UTF-8 text)",
                e.valid_up_to() + 1
            ))
        })?;
        let ids = tokenizer.encode(text, text_length);
        serde_json::to_writer(&mut *output, &ids).context("cannot write to stdout")?;
        output.write_all(b"\n").context("cannot write to stdout")?;
    }
    output.flush().context("cannot write to stdout")?;
    Ok(())
}

/// The config keys that decide which dataset [`dataset_dir`] reads.
pub const DATASET_KEYS: [&str; 4] = ["dataset_name", "root_dir", "synth_ids", "synth_seed"];

/// The folder of the dataset a config names: `<root_dir>/<dataset_name>`, or for a generated set
/// the folder of the generation the config's `synth_ids` and `synth_seed` make (generated first
/// when missing).
pub fn dataset_dir(cfg: &Config) -> anyhow::Result<std::path::PathBuf> {
    let d = &cfg.data;
    Ok(match d.dataset_name.record().source {
        Source::Downloaded => d.root_dir.join(d.dataset_name.name()),
        Source::Generated => synthetic::ensure(&d.root_dir, d.synth_ids, d.synth_seed)?,
    })
}

/// The keys besides `dataset_name` and `root_dir` that choose the folder [`dataset_dir`] reads,
/// with their values in `cfg`: `synth_ids` and `synth_seed` for a generated set, none for a
/// downloaded one.
pub fn folder_keys(cfg: &Config) -> Vec<(&'static str, serde_json::Value)> {
    let d = &cfg.data;
    match d.dataset_name.record().source {
        Source::Downloaded => Vec::new(),
        Source::Generated => vec![
            ("synth_ids", serde_json::json!(d.synth_ids)),
            ("synth_seed", serde_json::json!(d.synth_seed)),
        ],
    }
}

/// The dataset a config names ([`dataset_dir`]), loaded and checked.
pub fn load_dataset(cfg: &Config) -> anyhow::Result<annotations::Dataset> {
    annotations::load(cfg.data.dataset_name, &dataset_dir(cfg)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dataset_keys_are_config_keys() {
        let valid = crate::config::valid_keys();
        for key in super::DATASET_KEYS {
            assert!(valid.iter().any(|k| k == key), "{key}");
        }
    }

    #[test]
    fn a_generated_set_is_chosen_by_its_keys_and_a_downloaded_one_by_its_name() {
        use crate::config::{Config, DatasetName};
        let mut cfg = Config::default();
        assert!(super::folder_keys(&cfg).is_empty());
        let root = tempfile::tempdir().unwrap();
        cfg.data.root_dir = root.path().to_path_buf();
        assert_eq!(
            super::dataset_dir(&cfg).unwrap(),
            root.path().join("CUHK-PEDES")
        );
        cfg.data.dataset_name = DatasetName::ToyPedes;
        (cfg.data.synth_ids, cfg.data.synth_seed) = ((3, 1, 2), 4);
        cfg.run.seed = 9;
        let keys = super::folder_keys(&cfg);
        assert_eq!(
            keys,
            [
                ("synth_ids", serde_json::json!([3, 1, 2])),
                ("synth_seed", serde_json::json!(4))
            ]
        );
        for (key, _) in keys {
            assert!(super::DATASET_KEYS.contains(&key), "{key}");
        }
        let dir = super::dataset_dir(&cfg).unwrap();
        assert_eq!(
            dir,
            root.path().join("TOY-PEDES-3-1-2-s4"),
            "seed is not part of it"
        );
        assert_eq!(super::load_dataset(&cfg).unwrap().num_classes, 3);
    }
}
