//! What `train`, `test` and `serve --run` check before building a model: the cheap part of
//! `ccma check`.
use crate::config::Config;
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
    let mut defaults = Config::default();
    defaults.data.dataset_name = name;
    let default_keys = crate::data::folder_keys(&defaults);
    for (key, value) in crate::data::folder_keys(cfg) {
        if !default_keys.contains(&(key, value.clone())) {
            command.push_str(&format!(" --set {key}={value}"));
        }
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
