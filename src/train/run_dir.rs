//! The run folder: `configs.yaml`, `train_log.txt`, `best.safetensors`, `last.safetensors`
//! (resumable state), `results.json` and `metrics.jsonl`.
use super::record::{EpochRecord, Results};
use crate::config::Config;
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

impl RunDir {
    /// `run_dir` if set, else `<output_dir>/<dataset_name>/<YYYYmmdd_HHMMSS>_<name>/`; created
    /// and locked. A folder that already holds a run (its `configs.yaml`) is refused: resume it.
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

    /// A run folder written by an earlier `ccma train`, locked, to resume: it has its
    /// `configs.yaml` (and `last.safetensors` once a step was saved).
    pub fn existing(dir: &Path) -> Result<RunDir> {
        RunDir::config_to_resume(dir)?;
        RunDir::lock(dir.to_path_buf())
    }

    /// The `configs.yaml` of the run folder `dir`, which a resume needs.
    pub fn config_to_resume(dir: &Path) -> Result<PathBuf> {
        let config = dir.join("configs.yaml");
        if !config.is_file() {
            bail!(crate::UsageError(format!(
                "cannot resume {}: it has no configs.yaml (is it a run folder?)",
                dir.display()
            )));
        }
        Ok(config)
    }

    /// Takes the folder's lock (recording this process's pid in it) and removes the temporary
    /// files an interrupted checkpoint write of an earlier run left (`.<name>.tmp<pid>`, only
    /// ever written by ccma; no other ccma can be writing here while the lock is held).
    fn lock(dir: PathBuf) -> Result<RunDir> {
        let path = dir.join(".ccma.lock");
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
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if crate::io::atomic::is_temporary_name(&name) {
                tracing::info!("removing {name}, left by an interrupted checkpoint write");
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
        }
        Ok(RunDir {
            dir,
            _lock: Some(file),
        })
    }

    /// The folder rank 0 of a data-parallel run holds, as another rank sees it (to read its
    /// resumable state; it writes nothing there).
    pub fn follow(dir: PathBuf) -> RunDir {
        RunDir { dir, _lock: None }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("configs.yaml")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("train_log.txt")
    }
    pub fn best(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    pub fn curves(&self) -> PathBuf {
        self.dir.join("curves.png")
    }
    pub fn results(&self) -> PathBuf {
        self.dir.join("results.json")
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
