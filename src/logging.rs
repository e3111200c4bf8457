//! Log set-up: human-readable lines on stderr, and optionally a copy into a run's log file.
use std::io::{IsTerminal, Write};
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

/// Installs the global subscriber once; `filter` is a level or an env-filter directive (an invalid
/// one is a usage error). Colour codes go to stderr only when it is a terminal and `NO_COLOR` is
/// unset.
pub fn init(filter: &str, log_file: Option<&Path>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).map_err(|e| {
        crate::UsageError(format!(
            "invalid log filter {filter:?}: {e} (expected a level such as info or debug, or a directive such as ccma=debug)"
        ))
    })?;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
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
        set_log_file(p)?;
    }
    Ok(())
}

/// Writes `line` and its newline to stderr in one `write`, so that the lines of ranks sharing
/// the launcher's stderr never interleave mid-line (pipes keep writes under 4 KiB whole).
pub fn stderr_line(line: &str) {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    // Nothing is left to tell the user when stderr itself is gone.
    let _ = std::io::stderr().lock().write_all(&bytes);
}

/// Appends `line` to the current run's log file, if one is open (for the final error line, which
/// goes to stderr directly rather than through the log).
pub fn append_to_log_file(line: &str) {
    let _ = writeln!(FileSink, "{line}");
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
