//! Retrieval: batched encoding with a model, the metrics protocol and each query's outcome under it,
//! top-k search, galleries and the one feature-file format.
pub mod encode;
pub mod features;
pub mod gallery;
pub mod metrics;
pub mod query_ranks;
pub mod sheets;
pub mod topk;
