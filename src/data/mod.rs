//! Datasets and their audit, tokenizer, MLM masking, image transforms, samplers and the parallel loader.
//!
//! Knows the run configuration ([`crate::config`]) but no model: a batch is plain tensors.
pub mod annotations;
pub mod audit;
pub mod batch;
pub mod loader;
pub mod mlm;
pub mod sampler;
pub mod synthetic;
pub mod text_clean;
mod text_tables;
pub mod tokenizer;
pub mod transforms;

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
pub const DATASET_KEYS: [&str; 4] = ["dataset_name", "root_dir", "synth_ids", "seed"];

/// The folder of the dataset a config names: `<root_dir>/<dataset_name>`, or for SYNTH-PEDES the
/// folder of the generation the config's `synth_ids` and `seed` make (generated first when
/// missing).
pub fn dataset_dir(cfg: &crate::config::Config) -> anyhow::Result<std::path::PathBuf> {
    let d = &cfg.data;
    Ok(match d.dataset_name {
        crate::config::DatasetName::SynthPedes => {
            synthetic::ensure(&d.root_dir, d.synth_ids, cfg.run.seed)?
        }
        name => d.root_dir.join(name.name()),
    })
}

/// The dataset a config names ([`dataset_dir`]), loaded and checked.
pub fn load_dataset(cfg: &crate::config::Config) -> anyhow::Result<annotations::Dataset> {
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
}
