//! Training: the trainer and its one step (in one pass or in chunks), the optimiser, the schedule, the run folder with its
//! typed epoch records, and the throughput benchmark.
pub mod bench;
pub mod interrupt;
pub mod micro_batch;
pub mod optimizer;
pub mod parallel;
pub mod record;
pub mod run_dir;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use interrupt::Interrupted;
pub use trainer::{run, Faults, Progress, RankFault, Start, Trainer};
