//! `ccma` binary: parse the command line, run it, report errors on one line.
use clap::Parser;

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

fn main() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    keep_large_allocations();
    let cli = ccma::cli::Cli::parse();
    ccma::logging::init(&cli.log, None);
    if let Err(err) = ccma::cli::run(cli) {
        // One line: the outermost context first, then each cause.
        eprintln!("error: {err:#}");
        std::process::exit(ccma::exit_code(&err));
    }
}
