//! Retrieval: batched encoding with a model, the metrics protocol and its per-query records, the
//! paired bootstrap over queries, top-k search, galleries and the one feature-file format.
pub mod bootstrap;
pub mod encode;
pub mod features;
pub mod gallery;
pub mod metrics;
pub mod sheets;
pub mod topk;
