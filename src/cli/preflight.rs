//! What `train`, `test` and `serve --run` check before building a model: the cheap part of
//! `ccma check`.
use crate::config::{Config, DatasetName};
use crate::data::annotations::Annotations;
use crate::data::audit;
use crate::UsageError;
use anyhow::{bail, Result};

/// The annotations of `cfg`'s dataset are read and every image path is located (no image
/// opened). Images that are missing, lead out of `imgs/` or are not regular files stop the command
/// with their counts and the `ccma check` command that reports in full.
pub fn require_images(cfg: &Config) -> Result<()> {
    let name = cfg.data.dataset_name;
    let ann = Annotations::read(name, &crate::data::dataset_dir(cfg)?)?;
    let (bad, named) = audit::locate_only(&ann);
    let n: usize = bad.iter().sum();
    if n == 0 {
        return Ok(());
    }
    let mut command = format!(
        "ccma check --dataset {name} --root-dir {}",
        cfg.data.root_dir.display()
    );
    let defaults = Config::default();
    if name == DatasetName::SynthPedes
        && (cfg.data.synth_ids, cfg.run.seed) != (defaults.data.synth_ids, defaults.run.seed)
    {
        let (t, v, s) = cfg.data.synth_ids;
        command.push_str(&format!(
            " --set synth_ids=[{t},{v},{s}] --set seed={}",
            cfg.run.seed
        ));
    }
    bail!(UsageError(format!(
        "{}: {n} of {} images are missing, outside imgs/ or not regular files (train {}, val {}, test {}), e.g. {}; `{command}` reports every problem",
        ann.file.display(),
        ann.entries.len(),
        bad[0],
        bad[1],
        bad[2],
        named.join(", ")
    )))
}
