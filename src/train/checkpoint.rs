//! The tensors of a resumable checkpoint: the model's variables and the optimiser's state, and
//! how they go back into a model and an optimiser.
use super::optimizer::Optimizer;
use crate::model::weights::OPTIMIZER_PREFIX;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn::VarStore, Tensor};

/// What a resumable checkpoint holds: every variable under its name, and the optimiser's state
/// under [`OPTIMIZER_PREFIX`] (the tensors themselves, not copies).
pub fn resumable_tensors(vs: &VarStore, opt: &Optimizer) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.extend(
        opt.state_tensors()
            .into_iter()
            .map(|(k, t)| (format!("{OPTIMIZER_PREFIX}{k}"), t)),
    );
    tensors
}

/// Puts what [`resumable_tensors`] wrote (read from `path`) back into `vs` and `opt`, the model's
/// positional grid being `grid` (patches high, wide).
pub fn restore_resumable(
    vs: &mut VarStore,
    opt: &mut Optimizer,
    tensors: Vec<(String, Tensor)>,
    grid: (i64, i64),
    path: &Path,
) -> Result<()> {
    let mut opt_state = HashMap::new();
    let mut params = HashMap::new();
    for (k, t) in tensors {
        match k.strip_prefix(OPTIMIZER_PREFIX) {
            Some(rest) => opt_state.insert(rest.to_string(), t),
            None => params.insert(k, t),
        };
    }
    crate::model::weights::copy_into(vs, &params, &[], &[], grid, path)?;
    opt.load_state(&opt_state)
        .with_context(|| format!("resume state {}", path.display()))
}
