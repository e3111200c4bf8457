//! The run folder: `configs.yaml`, `train_log.txt`, `best.safetensors`, `last.safetensors`
//! (resumable state), `results.json` and `metrics.jsonl`.
use super::record::EpochRecord;
use crate::config::Config;
use crate::retrieval::metrics::RetrievalMetrics;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    /// `run_dir` if set, else `<output_dir>/<dataset_name>/<YYYYmmdd_HHMMSS>_<name>/`; created
    /// empty. A folder that already holds a run is refused (resume it instead).
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
        let run = RunDir { dir };
        if run.state().exists() || run.config().exists() {
            bail!(crate::UsageError(format!(
                "run folder {} already holds a run: resume it, or choose another run folder",
                run.dir.display()
            )));
        }
        std::fs::create_dir_all(&run.dir)
            .with_context(|| format!("cannot create run folder {}", run.dir.display()))?;
        Ok(run)
    }

    /// A run folder written by an earlier `ccma train`, to resume.
    pub fn existing(dir: &Path) -> Result<RunDir> {
        let run = RunDir {
            dir: dir.to_path_buf(),
        };
        for f in [run.config(), run.state()] {
            if !f.exists() {
                bail!(crate::UsageError(format!(
                    "cannot resume {}: {} is missing (is this a run folder that finished at least one epoch?)",
                    dir.display(),
                    f.display()
                )));
            }
        }
        Ok(run)
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

    /// `results.json`: the best epoch and its t2i metrics.
    pub fn write_results(&self, best_epoch: usize, m: &RetrievalMetrics) -> Result<()> {
        let v = serde_json::json!({ "best_epoch": best_epoch, "t2i": m });
        crate::io::write_atomic(
            &self.results(),
            serde_json::to_string_pretty(&v)?.as_bytes(),
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
