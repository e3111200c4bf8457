//! IRRA's, CCMA's and RDE's PyTorch checkpoints: the `best.pth` their `Checkpointer` writes with
//! `torch.save` (a dict with the model's state dict under `model`, beside `optimizer`,
//! `scheduler`, `num_epoch` and `iteration`, which are not needed here), or a plain state dict.
//!
//! IRRA's names are ccma's (`base_model.*` as OpenAI's CLIP, `cross_attn`,
//! `cross_modal_transformer`, `ln_pre_t`, `ln_pre_i`, `ln_post`, `mlm_head`, `classifier`). The
//! modules CCMA's published code adds (`cross_modal_att`, `cross_modal_att_text`,
//! `fusion_module_tg`, `DiffAttention`) have no counterpart in the method as specified: they are
//! set aside (named in the log) and ccma's DCA stacks start fresh. RDE's adds its token selection
//! embedding layers (`visul_emb_layer`, `texual_emb_layer`) under ccma's names, and registers
//! modules its forward never uses (the image layer's `linear`, each layer's second BatchNorm
//! `mlp.bns.1`), set aside in the same way, as are the BatchNorms' `num_batches_tracked` counters
//! (ccma's BatchNorm keeps a fixed momentum and no counter). Weights are a mix of fp16 and fp32
//! there; they are read as saved and turned to f32.
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

/// Modules of RDE's published model that its forward never uses.
pub const RDE_UNUSED_MODULES: [&str; 3] = [
    "visul_emb_layer.linear.",
    "visul_emb_layer.mlp.bns.1.",
    "texual_emb_layer.mlp.bns.1.",
];

/// The last segment of a BatchNorm's step counter.
const BATCHES_TRACKED: &str = ".num_batches_tracked";

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
    set_aside(
        &mut tensors,
        &CCMA_EXTRA_MODULES,
        "CCMA's published modules",
        "are not part of the method as specified",
        path,
    );
    set_aside(
        &mut tensors,
        &RDE_UNUSED_MODULES,
        "RDE's modules",
        "are registered but never used by its forward",
        path,
    );
    let counters = tensors.len();
    tensors.retain(|k, _| !k.ends_with(BATCHES_TRACKED));
    if tensors.len() != counters {
        tracing::info!(
            "{}: BatchNorm step counters (`num_batches_tracked`) are not loaded: ccma's BatchNorm uses a fixed momentum",
            path.display()
        );
    }
    Ok(Weights {
        tensors,
        metadata: HashMap::new(),
        format: Format::TorchSave,
        heads: None,
    })
}

/// Removes the tensors of `modules` (name prefixes) from `tensors`, naming those found in the log
/// as `what` that `why`.
fn set_aside(
    tensors: &mut HashMap<String, tch::Tensor>,
    modules: &[&str],
    what: &str,
    why: &str,
    path: &Path,
) {
    let found: Vec<&str> = modules
        .iter()
        .filter(|m| tensors.keys().any(|k| k.starts_with(*m)))
        .map(|m| m.trim_end_matches('.'))
        .collect();
    if !found.is_empty() {
        tracing::info!(
            "{}: {what} {} {why} and are not loaded",
            path.display(),
            found.join(", ")
        );
        tensors.retain(|k, _| !modules.iter().any(|m| k.starts_with(m)));
    }
}

/// A model's tensors under IRRA's names, for IRRA's `load_state_dict`, and what IRRA's layout
/// cannot hold.
pub struct IrraState {
    /// Every tensor of a module IRRA's model has, sorted by name.
    pub tensors: Vec<(String, tch::Tensor)>,
    /// The modules IRRA's model does not have (CCMA's DCA stacks, RDE's TSE layers), with the number of tensors of
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
    let left_out = left_out(w.tensors.keys(), Module::in_irra);
    let mut tensors: Vec<(String, tch::Tensor)> = w
        .tensors
        .into_iter()
        .filter(|(k, _)| Module::of(k).is_none_or(Module::in_irra))
        .collect();
    tensors.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(IrraState { tensors, left_out })
}

/// The modules of the tensors `names` that a layout without them does not `hold`, with the
/// number of tensors of each, sorted by module name.
pub fn left_out<'a>(
    names: impl Iterator<Item = &'a String>,
    hold: impl Fn(Module) -> bool,
) -> Vec<(Module, usize)> {
    let mut out: Vec<(Module, usize)> = Vec::new();
    for m in names.filter_map(|k| Module::of(k)).filter(|m| !hold(*m)) {
        match out.iter_mut().find(|(x, _)| *x == m) {
            Some((_, n)) => *n += 1,
            None => out.push((m, 1)),
        }
    }
    out.sort_by_key(|(m, _)| m.name());
    out
}

/// Whether RDE's model has module `m`: CLIP's encoders and the TSE layers, nothing else.
pub fn in_rde(m: Module) -> bool {
    m == Module::Backbone || m.is_tse()
}

/// The tensors of a ccma model with TSE under RDE's names, for RDE's `load_state_dict`: CLIP's
/// encoders and the TSE layers (RDE's model has no other module), the modules RDE registers but
/// never uses filled as PyTorch starts them unused (the image layer's `linear` zero, the second
/// BatchNorms as the identity), and each BatchNorm's `num_batches_tracked` (0). `None` for a
/// model without the TSE layers.
pub fn rde_state(named: Vec<(String, tch::Tensor)>) -> Option<Vec<(String, tch::Tensor)>> {
    let tse_norm = |side: Module| format!("{}mlp.bns.0.running_mean", side.prefix());
    let width = |side: Module| {
        named
            .iter()
            .find(|(k, _)| *k == tse_norm(side))
            .map(|(_, t)| t.size()[0])
    };
    let (d_image, d_text) = (width(Module::TseImage)?, width(Module::TseText)?);
    let mut state: Vec<(String, tch::Tensor)> = named
        .into_iter()
        .filter(|(k, _)| Module::of(k).is_some_and(in_rde))
        .collect();
    let f32s = (tch::Kind::Float, tch::Device::Cpu);
    let linear = Module::TseImage.prefix() + "linear.";
    state.push((
        format!("{linear}weight"),
        tch::Tensor::zeros([2 * d_image, d_image], f32s),
    ));
    state.push((
        format!("{linear}bias"),
        tch::Tensor::zeros([2 * d_image], f32s),
    ));
    for (side, d) in [(Module::TseImage, d_image), (Module::TseText, d_text)] {
        let unused = format!("{}mlp.bns.1.", side.prefix());
        // The second BatchNorm is registered over the MLP's output width, 2D.
        for (k, t) in [
            ("weight", tch::Tensor::ones([2 * d], f32s)),
            ("bias", tch::Tensor::zeros([2 * d], f32s)),
            ("running_mean", tch::Tensor::zeros([2 * d], f32s)),
            ("running_var", tch::Tensor::ones([2 * d], f32s)),
        ] {
            state.push((format!("{unused}{k}"), t));
        }
        for bn in ["bns.0", "bns.1"] {
            let counter = format!("{}mlp.{bn}{BATCHES_TRACKED}", side.prefix());
            state.push((
                counter,
                tch::Tensor::zeros([], (tch::Kind::Int64, tch::Device::Cpu)),
            ));
        }
    }
    Some(state)
}
