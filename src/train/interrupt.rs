//! Ctrl-C during training: finish the current step, write a resumable checkpoint, stop.
use std::sync::atomic::{AtomicBool, Ordering};

/// The run was stopped by Ctrl-C after writing a resumable checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler (a second Ctrl-C exits at once).
pub fn install_handler() {
    let _ = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step, then writing a resumable checkpoint (Ctrl-C again to abort)");
    });
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
