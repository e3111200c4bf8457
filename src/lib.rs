//! `ccma`: text-to-image person retrieval with CCMA on the IRRA recipe, on libtorch.
//!
//! The crate is built in floors. A module imports only from the floors below its own (and from
//! this root's [`UsageError`]), and the files of one folder refer to each other without a cycle;
//! `tests/layers.rs` reads every file's `crate::` and `super::` paths and keeps this true. Top to
//! bottom:
//!
//! | floor | modules | owns |
//! |---|---|---|
//! | 10 | `main.rs` | parse, set up logging, dispatch once, exit codes |
//! | 9 | `cli` | flags, one file per command, printed output |
//! | 8 | [`train`], [`inference`] | the run's start, the trainer's loop, its one step (in chunks: the exact micro-batch gradient), how ranks exchange gradients (`parallel::Ranks::average_gradients`), optimiser, schedule, run folder, benchmark; a model loaded to infer with, alone or with a dataset split to evaluate |
//! | 7 | [`factory`] | where run config, weight files and device meet to make a model |
//! | 6 | [`retrieval`] | batched encoding, metrics protocol, top-k, galleries, feature files |
//! | 5 | [`loss`] | the loss terms on the model's outputs |
//! | 4 | [`data`] | datasets, tokenizer, transforms, MLM masking, samplers, loader |
//! | 3 | [`config`] | the run config: typed sections (the model's sizes under IRRA's keys), YAML and `--set` merging, validation |
//! | 2 | [`model`] | `ModelConfig` (the paper's sizes, their ranges), the layers, the top-level modules (`Module`), weight readers, parameter groups |
//! | 1 | [`report`], [`device`], [`dist`], [`logging`] | pictures and progress, devices, the ranks of a data-parallel run and their c10d process group, log set-up |
//! | 0 | [`io`], `shim`, [`ranges`] | atomic writes, safetensors with metadata, `torch.save` reader, fingerprints; the C interface of the libtorch shim in `csrc/` (c10d, autocast, matmul precision, pinning, fused Adam); range checks that name the key |
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod dist;
pub mod factory;
pub mod inference;
pub mod io;
pub mod logging;
pub mod loss;
pub mod model;
pub mod ranges;
pub mod report;
pub mod retrieval;
pub(crate) mod shim;
pub mod train;

/// A failure that was the user's input (config, arguments, data), as opposed to a runtime fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
