//! The run folder: `configs.yaml`, `train_log.txt`, `best.safetensors`, `last.safetensors`
//! (resumable state), `results.json` and `metrics.jsonl`.
use super::record::{EpochRecord, Results};
use crate::config::{Config, SplitName};
use crate::io::run_files::{self, LOCK};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A run folder, locked for the life of this value: a second `ccma train` on it (a new run or a
/// resume) is refused while the first runs. The lock is the kernel's (`flock`), so it is released
/// on any exit, a crash included. The other ranks of a data-parallel run follow rank 0's folder
/// without the lock, and only read it.
#[derive(Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    _lock: Option<std::fs::File>,
}

/// The files `ccma` writes into a run folder through atomic writes (and `test_results.*.json`):
/// the only temporary files it removes there are these files' (`.<name>.tmp<pid>`).
const WRITTEN_ATOMICALLY: [&str; 5] = [
    run_files::CONFIG,
    run_files::BEST,
    run_files::LAST,
    run_files::RESULTS,
    run_files::CURVES,
];

impl RunDir {
    /// `run_dir` if set, else `<output_dir>/<dataset_name>/<YYYYmmdd_HHMMSS>_<name>/`; created
    /// and locked. The folder must be new, empty, or a run folder of a run that never started
    /// (ccma's lock file and no `configs.yaml`): a folder holding files ccma did not write is
    /// refused, and so is one that already holds a run (resume it).
    pub fn create(cfg: &Config) -> Result<RunDir> {
        let r = &cfg.run;
        let dir = match &r.run_dir {
            Some(d) => d.clone(),
            None => r
                .output_dir
                .join(cfg.data.dataset_name.name())
                .join(format!(
                    "{}_{}",
                    chrono::Local::now().format("%Y%m%d_%H%M%S"),
                    r.name
                )),
        };
        RunDir::check_new(&dir)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create run folder {}", dir.display()))?;
        let run = RunDir::lock(dir)?;
        if run.config().exists() {
            bail!(crate::UsageError(format!(
                "run folder {} already holds a run: resume it, or choose another run folder",
                run.dir.display()
            )));
        }
        Ok(run)
    }

    /// Refuses `dir` for a new run unless it does not exist, is empty, or is ccma's own.
    fn check_new(dir: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if dir.exists() && !dir.is_dir() => bail!(crate::UsageError(format!(
                "run folder {} is not a folder",
                dir.display()
            ))),
            other => other.with_context(|| format!("cannot read run folder {}", dir.display()))?,
        };
        if RunDir::is_run_folder(dir) {
            return Ok(());
        }
        if let Some(entry) = entries.flatten().next() {
            bail!(crate::UsageError(format!(
                "run folder {} holds files ccma did not write ({}, ...): a new run needs a new or empty folder",
                dir.display(),
                entry.file_name().to_string_lossy()
            )));
        }
        Ok(())
    }

    /// Whether `dir` is a folder ccma took for a run (it holds ccma's lock file).
    pub fn is_run_folder(dir: &Path) -> bool {
        dir.join(LOCK).is_file()
    }

    /// A run folder written by an earlier `ccma train`, locked, to resume: it has its
    /// `configs.yaml` (and `last.safetensors` once a step was saved).
    pub fn existing(dir: &Path) -> Result<RunDir> {
        RunDir::config_to_resume(dir)?;
        RunDir::lock(dir.to_path_buf())
    }

    /// The `configs.yaml` of the run folder `dir`, which a resume needs.
    pub fn config_to_resume(dir: &Path) -> Result<PathBuf> {
        let config = dir.join(run_files::CONFIG);
        if !config.is_file() {
            bail!(crate::UsageError(format!(
                "cannot resume {}: it has no configs.yaml (is it a run folder?)",
                dir.display()
            )));
        }
        Ok(config)
    }

    /// Refuses when a `ccma train` holds the run folder `dir`; otherwise (a run folder at rest,
    /// or any other folder) a hold that keeps a new `ccma train` out of it for as long as it is
    /// kept, so that a command writing beside a checkpoint never writes into a run in progress.
    pub fn hold_at_rest(dir: &Path) -> Result<Option<std::fs::File>> {
        let path = dir.join(LOCK);
        let Ok(file) = std::fs::File::open(&path) else {
            return Ok(None);
        };
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(crate::UsageError(format!(
                "run folder {} is in use by ccma train (pid {}): test its checkpoint once the run stops, or a copy of it elsewhere",
                dir.display(),
                holder.trim()
            )));
        }
        Ok(Some(file))
    }

    /// Takes the folder's lock (recording this process's pid in it) and, in a folder that was
    /// ccma's before (its lock file existed), removes the temporary files an interrupted write of
    /// one of its own files left (`.<name>.tmp<pid>`; no other ccma can be writing here while
    /// the lock is held).
    fn lock(dir: PathBuf) -> Result<RunDir> {
        let ours = RunDir::is_run_folder(&dir);
        let path = dir.join(LOCK);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(crate::UsageError(format!(
                "run folder {} is in use by another ccma train (pid {})",
                dir.display(),
                holder.trim()
            )));
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        if ours {
            RunDir::remove_stale_temporaries(&dir)?;
        }
        Ok(RunDir {
            dir,
            _lock: Some(file),
        })
    }

    /// Removes the temporary files of interrupted writes of the run folder's own files.
    fn remove_stale_temporaries(dir: &Path) -> Result<()> {
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let own = crate::io::atomic::temporary_target(&name).is_some_and(|target| {
                WRITTEN_ATOMICALLY.contains(&target) || is_test_results_name(target)
            });
            if own && entry.file_type().is_ok_and(|t| t.is_file()) {
                tracing::info!("removing {name}, left by an interrupted write");
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// The folder rank 0 of a data-parallel run holds, as another rank sees it (to read its
    /// resumable state; it writes nothing there).
    pub fn follow(dir: PathBuf) -> RunDir {
        RunDir { dir, _lock: None }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join(run_files::CONFIG)
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join(run_files::LOG)
    }
    pub fn best(&self) -> PathBuf {
        self.dir.join(run_files::BEST)
    }
    pub fn last(&self) -> PathBuf {
        self.dir.join(run_files::LAST)
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join(run_files::METRICS)
    }
    pub fn curves(&self) -> PathBuf {
        self.dir.join(run_files::CURVES)
    }
    pub fn results(&self) -> PathBuf {
        self.dir.join(run_files::RESULTS)
    }
    pub fn noise_index(&self) -> PathBuf {
        self.dir.join(run_files::NOISE_INDEX)
    }

    /// `results.json`, atomically.
    pub fn write_results(&self, results: &Results) -> Result<()> {
        crate::io::write_atomic(
            &self.results(),
            serde_json::to_string_pretty(results)?.as_bytes(),
        )
    }

    /// Every record of `metrics.jsonl`, in order.
    pub fn read_metrics(&self) -> Result<Vec<EpochRecord>> {
        let text = std::fs::read_to_string(self.metrics())
            .with_context(|| format!("cannot read {}", self.metrics().display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}", self.metrics().display(), i + 1))
            })
            .collect()
    }

    /// Appends one line to `metrics.jsonl`.
    pub fn append_metrics(&self, record: &EpochRecord) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.metrics())
            .with_context(|| format!("cannot open {}", self.metrics().display()))?;
        writeln!(f, "{}", serde_json::to_string(record)?)
            .with_context(|| format!("cannot write {}", self.metrics().display()))
    }
}

/// The file `ccma test` writes beside `checkpoint` for one evaluation of `split`:
/// `<split>_results.<checkpoint stem>.<dataset>.<tag>.json`, where `tag` names the data and
/// settings (so that tests of one checkpoint on other data or settings keep their own files).
pub fn test_results_path(checkpoint: &Path, split: SplitName, dataset: &str, tag: &str) -> PathBuf {
    let stem = checkpoint
        .file_stem()
        .map_or("checkpoint".into(), |s| s.to_string_lossy());
    checkpoint.with_file_name(format!("{split}_results.{stem}.{dataset}.{tag}.json"))
}

/// The per-query file beside the results file `results` (`....json` -> `....queries.jsonl`), one
/// [`crate::retrieval::metrics::QueryRecord`] a line.
pub fn queries_path(results: &Path) -> PathBuf {
    results.with_extension("queries.jsonl")
}

/// Whether `name` is one that [`test_results_path`] or [`queries_path`] makes.
fn is_test_results_name(name: &str) -> bool {
    ["test_results.", "val_results."]
        .iter()
        .any(|p| name.starts_with(p))
        && (name.ends_with(".json") || name.ends_with(".queries.jsonl"))
}
