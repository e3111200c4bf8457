//! The names of the files of a run folder, for every floor that reads them (the run folder itself
//! is `train::run_dir::RunDir`).

/// The lock file of a run folder. `ccma` writes it when it takes a folder for a run, so it also
/// marks the folder as ccma's own: the one rule by which a folder is recognised as a run folder.
pub const LOCK: &str = ".ccma.lock";
/// The run's resolved configuration.
pub const CONFIG: &str = "configs.yaml";
/// The weights of the best evaluated epoch.
pub const BEST: &str = "best.safetensors";
/// The last saved step: weights, optimiser and progress, what a resume continues from.
pub const LAST: &str = "last.safetensors";
/// The run's log.
pub const LOG: &str = "train_log.txt";
/// One line per epoch: losses, rates and evaluation.
pub const METRICS: &str = "metrics.jsonl";
/// The training curves.
pub const CURVES: &str = "curves.png";
/// The noise index the run trained with, in RDE's `.npy` format (runs with injected noise).
pub const NOISE_INDEX: &str = "noise_index.npy";
/// The final report: the best epoch and its metrics.
pub const RESULTS: &str = "results.json";
/// The best model of a folder that IRRA's, CCMA's or RDE's `train.py` wrote, beside its
/// `configs.yaml`.
pub const AUTHORS_BEST: &str = "best.pth";

/// The model a folder's `configs.yaml` at `config` describes: [`BEST`] beside it, else, in a
/// folder IRRA's, CCMA's or RDE's `train.py` wrote, [`AUTHORS_BEST`] (as their `test.py` loads
/// it, but from beside the file rather than from the `output_dir` it records); [`BEST`] when
/// neither exists, for the error to name.
pub fn model_beside(config: &std::path::Path) -> std::path::PathBuf {
    let ours = config.with_file_name(BEST);
    let theirs = config.with_file_name(AUTHORS_BEST);
    match !ours.exists() && theirs.is_file() {
        true => theirs,
        false => ours,
    }
}
