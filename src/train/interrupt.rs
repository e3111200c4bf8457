//! Stopping a training run from outside: Ctrl-C (SIGINT), SIGTERM (what SLURM and torchrun send)
//! and, in a rank that `--nproc-per-node` started, the end of its launcher. Each asks the run to
//! finish the current step, write a resumable checkpoint and exit 130, and one request is one
//! request: repeats change nothing. The exception is a second Ctrl-C, which a person at the
//! terminal presses to stop at once, without a checkpoint (the last one saved stays whole).
use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Condvar, Mutex, MutexGuard};

/// The run was stopped by an interrupt after writing a resumable checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// A signal that asks the run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: Ctrl-C at the terminal.
    CtrlC,
    /// SIGTERM.
    Term,
}

/// How `--nproc-per-node` hands each rank the read end of a pipe whose write end only the
/// launcher holds, as `<fd>:<inode of the pipe>`: the pipe reads its end once the launcher has
/// ended, however it ended.
pub const LIFELINE_VAR: &str = "CCMA_LAUNCHER_LIFELINE";

struct State {
    requested: bool,
    ctrl_c: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    requested: false,
    ctrl_c: 0,
});
static REQUESTED: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Calls `on`, on a thread of its own, for every SIGINT and SIGTERM this process gets from now on.
pub fn listen(mut on: impl FnMut(Signal) + Send + 'static) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install the SIGINT and SIGTERM handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                on(if sig == SIGINT {
                    Signal::CtrlC
                } else {
                    Signal::Term
                });
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Installs the training run's handling: SIGINT, SIGTERM and the launcher's end request a stop
/// (once); a second Ctrl-C ends the process at once.
pub fn install_handler() -> Result<()> {
    listen(|sig| match sig {
        Signal::Term => request("SIGTERM"),
        Signal::CtrlC => {
            let presses = {
                let mut s = state();
                s.ctrl_c += 1;
                s.ctrl_c
            };
            if presses > 1 {
                crate::logging::stderr_line(
                    "\nCtrl-C again: stopping now, without a checkpoint (the last one saved is whole)",
                );
                // SAFETY: ends the process at once, running nothing of it (no destructors, no
                // exit handlers) while its other threads are mid-step.
                unsafe { libc::_exit(130) };
            }
            request("Ctrl-C");
        }
    })?;
    if let Some(fd) = lifeline() {
        std::thread::Builder::new()
            .name("launcher".into())
            .spawn(move || {
                let mut pipe = std::fs::File::from(fd);
                // The launcher never writes: the read returns when its end closes.
                let mut byte = [0u8; 1];
                while let Err(e) = std::io::Read::read(&mut pipe, &mut byte) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        break;
                    }
                }
                request("the launcher ended");
            })
            .context("cannot start the thread that watches the launcher")?;
    }
    Ok(())
}

/// The launcher's pipe named by [`LIFELINE_VAR`], when it is a pipe open in this process with
/// the inode the launcher gave (so a copied or stale variable names nothing); closed on exec.
fn lifeline() -> Option<OwnedFd> {
    let value = std::env::var(LIFELINE_VAR).ok()?;
    let (fd, inode) = value.split_once(':')?;
    let (fd, inode): (i32, u64) = (fd.parse().ok()?, inode.parse().ok()?);
    // SAFETY: fstat and fcntl on a descriptor number only read and set its flags.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let is_it = fd > 2
            && libc::fstat(fd, &mut st) == 0
            && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
            && st.st_ino as u64 == inode;
        if !is_it || libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            return None;
        }
        Some(OwnedFd::from_raw_fd(fd))
    }
}

/// Asks the run to stop after the current step, saying why on the first request only.
fn request(why: &str) {
    let mut s = state();
    if !s.requested {
        s.requested = true;
        crate::logging::stderr_line(&format!(
            "\n{why}: finishing the current step, then writing a resumable checkpoint (Ctrl-C again to stop at once)"
        ));
        REQUESTED.notify_all();
    }
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    state().requested
}

/// Waits until a stop is requested.
pub fn wait_for_request() {
    let mut s = state();
    while !s.requested {
        s = REQUESTED.wait(s).unwrap_or_else(|p| p.into_inner());
    }
}
