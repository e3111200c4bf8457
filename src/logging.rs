//! Log set-up: human-readable lines on stderr, and optionally a copy into a run's log file.
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

static LOG_FILE: OnceLock<Mutex<Option<std::fs::File>>> = OnceLock::new();

/// Writer that forwards to the current run's log file, if one is open.
struct FileSink;
impl std::io::Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(lock) = LOG_FILE.get() {
            if let Some(f) = lock
                .lock()
                .map_err(|_| std::io::Error::other("log lock"))?
                .as_mut()
            {
                f.write_all(buf)?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the global subscriber once; `filter` is a level or an env-filter directive.
pub fn init(filter: &str, log_file: Option<&Path>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact();
    let file = fmt::layer()
        .with_writer(|| FileSink)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
    if let Some(p) = log_file {
        let _ = set_log_file(p);
    }
}

/// Sends a copy of every later log line to `path` (appending).
pub fn set_log_file(path: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    *LOG_FILE
        .get_or_init(|| Mutex::new(None))
        .lock()
        .map_err(|_| std::io::Error::other("log lock"))? = Some(f);
    Ok(())
}
