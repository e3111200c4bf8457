//! `ccma` binary: parse the command line, set up logging, run the command once, report an error
//! on one line with its exit code.

/// Keeps freed large blocks in the heap for reuse instead of handing each one back to the kernel.
/// libtorch on the CPU allocates and frees tens of MB per training step; with glibc's defaults
/// every such tensor is a fresh mapping whose pages the kernel must zero, which made CPU training
/// spend a quarter of its time in the kernel and slow down epoch after epoch.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_allocations() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// 2 for bad input, 130 for an interrupt, 1 otherwise.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<ccma::train::Interrupted>()) {
        130
    } else if err.chain().any(|e| e.is::<ccma::UsageError>()) {
        2
    } else {
        1
    }
}

/// Runs the command; returns (rather than exits, so that destructors run) its exit code. A
/// stdout closed by its reader ends the command quietly with 0: what it writes to files is
/// written before it prints.
fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    keep_large_allocations();
    let cli = match ccma::cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(err) => {
            ccma::logging::stderr_line(&format!("error: {err}"));
            return std::process::ExitCode::from(2);
        }
    };
    // The other ranks of a data-parallel run (torchrun's RANK) report warnings and errors only.
    let rank = std::env::var("RANK").ok().filter(|r| r != "0");
    let level = match (&cli.log, &rank) {
        (Some(level), _) => level.as_str(),
        (None, Some(_)) => "warn",
        (None, None) => "info",
    };
    let result = ccma::logging::init(level, None).and_then(|()| ccma::cli::run(cli.command));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) if err.chain().any(|e| e.is::<ccma::cli::StdoutClosed>()) => {
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            // One line: the outermost context first, then each cause; a run's log keeps it too.
            // Text from files in it (paths, captions) has its control characters escaped.
            let line = match rank {
                Some(r) => format!("error: [rank {r}] {err:#}"),
                None => format!("error: {err:#}"),
            };
            let line = ccma::io::escape::escape_controls(&line);
            ccma::logging::stderr_line(&line);
            ccma::logging::append_to_log_file(&line);
            std::process::ExitCode::from(exit_code(&err))
        }
    }
}
