//! Retrieval: batched encoding with a model, the metrics protocol, its per-query records and each
//! query's outcome under it, the paired bootstrap over queries, top-k search, galleries and the one
//! feature-file format.
pub mod bootstrap;
pub mod encode;
pub mod features;
pub mod gallery;
pub mod metrics;
pub mod query_ranks;
pub mod sheets;
pub mod similarity;
pub mod topk;
