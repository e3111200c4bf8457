//! Training: how a run starts ([`start`]) and its loop ([`trainer`]), with its faults for tests,
//! its progress, loss meter and checkpoint tensors; the one step the trainer and the benchmark
//! share ([`step`]: in one pass, or in chunks with the whole batch's exact gradient, the
//! `micro_batch` key, whose chunk size [`chunk_size`] resolves); the clean division of the pairs
//! before an epoch ([`ccd`]); the optimiser, the schedule, the run folder with its typed epoch
//! records, and the throughput benchmark.
pub mod bench;
pub mod ccd;
pub mod checkpoint;
pub mod chunk_size;
pub mod faults;
mod grad_buffer;
pub mod interrupt;
mod meter;
pub mod optimizer;
pub mod parallel;
pub mod progress;
pub mod record;
pub mod run_dir;
pub mod schedule;
pub mod start;
pub mod step;
pub mod trainer;

pub use faults::{Faults, RankFault};
pub use interrupt::Interrupted;
pub use progress::Progress;
pub use start::{run, Start};
pub use trainer::Trainer;
