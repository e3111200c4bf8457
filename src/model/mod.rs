//! The network: CLIP's two encoders, IRRA's cross-modal MLM branch, CCMA's differential
//! cross-modal attention, assembled in [`Ccma`]; its sizes ([`ModelConfig`]); its top-level
//! modules ([`Module`]) and the parameter-group rule that reads them; weight readers.
//!
//! Knows no run configuration and no data: it is built from a [`ModelConfig`] and fed tensors.
pub mod amp;
pub mod ccma;
pub mod clip;
pub mod config;
pub mod cross_modal;
pub mod dca;
pub mod layers;
pub mod module;
pub mod param_groups;
pub mod weights;

pub use ccma::{Ccma, Embedding, Heads, Masked, TrainOutputs};
pub use config::ModelConfig;
pub use module::Module;
