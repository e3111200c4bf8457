//! The network: CLIP's two encoders ([`clip`], on the blocks of [`layers`]), IRRA's cross-modal
//! MLM branch ([`cross_modal`]), CCMA's differential cross-modal attention ([`dca`]), RDE's token
//! selection embedding layers ([`tse`]), assembled
//! in [`Ccma`]; its sizes ([`ModelConfig`]); its top-level modules ([`Module`]) and the
//! parameter-group rule that reads them; mixed precision ([`amp`]); weight readers ([`weights`]).
//!
//! Knows no data, no batch type and no run configuration (the run config stands on this floor):
//! it is built from a [`ModelConfig`], which holds the paper's sizes (`vit_b16`) and the one rule
//! for every size's range ([`ModelConfig::validate_sizes`], naming IRRA's keys), and fed tensors.
//! The weight readers take the attention heads of a run folder's checkpoint from the
//! `configs.yaml` beside it.
pub mod amp;
pub mod ccma;
pub mod clip;
pub mod config;
pub mod cross_modal;
pub mod dca;
pub mod layers;
pub mod module;
pub mod param_groups;
pub mod tse;
pub mod weights;

pub use ccma::{Ccma, Embedding, Heads, Masked, TrainOutputs};
pub use config::ModelConfig;
pub use module::Module;
pub use tse::BatchNormMode;
