//! `ccma`: text-to-image person retrieval with CCMA on the IRRA recipe, on libtorch.
//!
//! Layout: [`config`] (the run configuration), [`data`] (datasets, tokenizer, transforms, loader),
//! [`model`] (CLIP encoders, cross-modal MLM branch, differential cross-modal attention),
//! [`loss`], [`train`] (optimiser, schedule, loop, checkpoints), [`eval`] (retrieval protocol),
//! [`search`] (text search over a gallery), [`bench`] (throughput).
pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod logging;
pub mod loss;
pub mod model;
pub mod report;
pub mod search;
pub mod train;
pub mod util;

/// A failure that was the user's input (config, arguments, data), as opposed to a runtime fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Process exit code for an error: 2 for bad input, 130 for an interrupt, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<train::Interrupted>()) {
        130
    } else if err.chain().any(|e| e.is::<UsageError>()) {
        2
    } else {
        1
    }
}
