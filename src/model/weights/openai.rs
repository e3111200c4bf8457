//! OpenAI's TorchScript CLIP archive (`ViT-B-16.pt`, what `clip.load(..., jit=True)` reads).
use super::{Format, Weights};
use anyhow::Result;
use std::collections::HashMap;
use std::path::Path;

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The archive's parameters under `base_model.` (its size buffers are not parameters).
pub fn read_archive(path: &Path) -> Result<Weights> {
    let module = tch::CModule::load(path).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a loadable TorchScript archive: {}",
            path.display(),
            first_line(&e.to_string())
        )
    })?;
    let params = module
        .named_parameters()
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), first_line(&e.to_string())))?;
    Ok(Weights {
        tensors: params
            .into_iter()
            .map(|(k, t)| (format!("base_model.{k}"), t))
            .collect(),
        metadata: HashMap::new(),
        format: Format::OpenAi,
        heads: None,
    })
}
