//! OpenAI's TorchScript CLIP archive (`ViT-B-16.pt`, what `clip.load(..., jit=True)` reads),
//! read without TorchScript: its `data.pkl` is the module tree pickled as objects of classes named
//! `__torch__.…`, each holding its parameters, buffers and submodules as attributes. The
//! restricted reader ([`crate::io::pickle`]) turns those objects into attribute containers, and
//! the tensors found by walking them are the module's state dict (`visual.conv1.weight`, ...);
//! the archive's `code/` is never read, let alone run.
use super::{Format, Named, Weights};
use crate::io::pickle::Value;
use anyhow::{ensure, Result};
use std::collections::HashMap;
use std::path::Path;

/// The tensors of the module tree `module` under `base_model.` (the size buffers among them,
/// which the caller drops).
pub fn from_module(module: Value, path: &Path) -> Result<Weights> {
    let mut tensors = HashMap::new();
    collect("base_model", module, &mut tensors, path)?;
    Ok(Weights {
        tensors,
        metadata: HashMap::new(),
        format: Format::OpenAi,
        heads: None,
    })
}

/// Adds the tensors of `value` under `name` to `out`: a tensor itself, an object's attributes
/// (`name.attribute`) recursively; other attributes (`training`, hooks) carry no weights.
fn collect(name: &str, value: Value, out: &mut Named, path: &Path) -> Result<()> {
    match value {
        Value::Tensor(t) => ensure!(
            out.insert(name.to_string(), t).is_none(),
            "{}: the tensor `{name}` appears twice",
            path.display()
        ),
        Value::Object { attributes, .. } => {
            for (k, v) in attributes {
                collect(&format!("{name}.{k}"), v, out, path)?;
            }
        }
        _ => {}
    }
    Ok(())
}
