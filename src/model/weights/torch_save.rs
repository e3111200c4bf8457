//! IRRA's and CCMA's PyTorch checkpoints: the `best.pth` their `Checkpointer` writes with
//! `torch.save` (a dict with the model's state dict under `model`, beside `optimizer`,
//! `scheduler`, `num_epoch` and `iteration`, which are not needed here), or a plain state dict.
//!
//! IRRA's names are ccma's (`base_model.*` as OpenAI's CLIP, `cross_attn`,
//! `cross_modal_transformer`, `ln_pre_t`, `ln_pre_i`, `ln_post`, `mlm_head`, `classifier`). The
//! modules CCMA's published code adds (`cross_modal_att`, `cross_modal_att_text`,
//! `fusion_module_tg`, `DiffAttention`) have no counterpart in the method as specified: they are
//! set aside (named in the log) and ccma's DCA stacks start fresh. Weights are a mix of fp16 and
//! fp32 there; they are read as saved and turned to f32.
use super::{Format, Weights, HEAD_WIDTH};
use crate::io::pickle::Value;
use crate::model::Module;
use crate::UsageError;
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::path::Path;

/// Top-level modules of CCMA's published model that ccma does not have.
pub const CCMA_EXTRA_MODULES: [&str; 4] = [
    "cross_modal_att.",
    "cross_modal_att_text.",
    "fusion_module_tg.",
    "DiffAttention.",
];

/// The state dict of the object a `torch.save` file holds (`saved`): the `model` entry of a
/// checkpoint, else the file's own dict of tensors; a `module.` prefix (a model saved inside
/// DistributedDataParallel) removed.
pub fn from_value(saved: Value, path: &Path) -> Result<Weights> {
    let state = match saved.get("model") {
        Some(m) => m,
        None => &saved,
    };
    let Value::Dict(entries) = state else {
        bail!(
            "{}: holds no state dict (expected a dict with `model`, or a dict of tensors; found {})",
            path.display(),
            state.kind_name()
        )
    };
    let mut tensors = HashMap::new();
    for (k, v) in entries {
        let (Value::Str(k), Value::Tensor(t)) = (k, v) else {
            bail!(
                "{}: a state dict entry is {} named by {}, not a tensor named by a string",
                path.display(),
                v.kind_name(),
                k.kind_name()
            )
        };
        let name = k.strip_prefix("module.").unwrap_or(k);
        if tensors
            .insert(name.to_string(), t.shallow_clone())
            .is_some()
        {
            bail!("{}: the state dict has `{name}` twice", path.display());
        }
    }
    let extra: Vec<String> = CCMA_EXTRA_MODULES
        .iter()
        .filter(|m| tensors.keys().any(|k| k.starts_with(*m)))
        .map(|m| m.trim_end_matches('.').to_string())
        .collect();
    if !extra.is_empty() {
        tracing::info!(
            "{}: CCMA's published modules {} are not part of the method as specified and are not loaded",
            path.display(),
            extra.join(", ")
        );
        tensors.retain(|k, _| !CCMA_EXTRA_MODULES.iter().any(|m| k.starts_with(m)));
    }
    Ok(Weights {
        tensors,
        metadata: HashMap::new(),
        format: Format::TorchSave,
        heads: None,
    })
}

/// A model's tensors under IRRA's names, for IRRA's `load_state_dict`, and what IRRA's layout
/// cannot hold.
pub struct IrraState {
    /// Every tensor of a module IRRA's model has, sorted by name.
    pub tensors: Vec<(String, tch::Tensor)>,
    /// The modules IRRA's model does not have (CCMA's DCA stacks), with the number of tensors of
    /// each that are left out.
    pub left_out: Vec<(Module, usize)>,
}

/// `w` (the optimiser's state of a training state already set aside) in IRRA's layout; refused
/// when IRRA's code could not read it back: its encoders' attention heads are not width /
/// [`HEAD_WIDTH`], the only heads IRRA's `build_model` gives.
pub fn irra_state(w: Weights) -> Result<IrraState> {
    let (conv, norm) = (
        "base_model.visual.conv1.weight",
        "base_model.ln_final.weight",
    );
    if w.tensors.contains_key(conv) || w.tensors.contains_key(norm) {
        let vision = super::dims(&w.tensors, conv, 4)?[0];
        let text = super::dims(&w.tensors, norm, 1)?[0];
        let (vh, th) = super::heads(&w, vision, text)?;
        if (vh, th) != (vision / HEAD_WIDTH, text / HEAD_WIDTH) {
            bail!(UsageError(format!(
                "its attention heads ({vh} vision, {th} text) are not its widths ({vision}, {text}) / {HEAD_WIDTH}, the only heads IRRA's code builds: IRRA could not read it back"
            )));
        }
    }
    let mut left_out: Vec<(Module, usize)> = Vec::new();
    let mut tensors = Vec::new();
    for (name, t) in w.tensors {
        match Module::of(&name).filter(|m| !m.in_irra()) {
            Some(m) => match left_out.iter_mut().find(|(x, _)| *x == m) {
                Some((_, n)) => *n += 1,
                None => left_out.push((m, 1)),
            },
            None => tensors.push((name, t)),
        }
    }
    tensors.sort_by(|x, y| x.0.cmp(&y.0));
    left_out.sort_by_key(|(m, _)| m.name());
    Ok(IrraState { tensors, left_out })
}
