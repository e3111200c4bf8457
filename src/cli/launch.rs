//! `ccma train --nproc-per-node N`: starts N copies of this command as the ranks of a
//! data-parallel run on this machine (torchrun's variables, the loopback for the rendezvous, a
//! fresh run id so that no other launch's ranks join) and waits for them. Ctrl-C and SIGTERM are
//! passed on to every rank (they stop together after writing a resumable checkpoint), and a
//! launcher that ends otherwise, even by SIGKILL, makes its ranks stop the same way once; a rank
//! that fails or is killed makes the launcher stop the others and name it.
use crate::dist::env::RUN_ID_VAR;
use crate::train::interrupt::{self, Signal, LIFELINE_VAR};
use crate::train::Interrupted;
use crate::UsageError;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tch::Device;

/// How long the other ranks get to stop on their own once one has failed (they notice a lost
/// peer within seconds), before SIGTERM; then as long again before SIGKILL.
const GRACE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// Ctrl-C presses, each passed on; and whether a SIGTERM came, passed on once.
static CTRL_C: AtomicUsize = AtomicUsize::new(0);
static TERM: AtomicBool = AtomicBool::new(false);

/// The command line without `--nproc-per-node N` (or `=N`).
fn without_launch_flag(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match a.to_str() {
            Some("--nproc-per-node") => skip_value = true,
            Some(s) if s.starts_with("--nproc-per-node=") => {}
            _ => out.push(a),
        }
    }
    out
}

/// How a rank ended, in words.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        _ => "ended".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

/// Sends `sig` to every rank still running.
fn signal_all(children: &[(Child, Option<ExitStatus>)], sig: i32) {
    for (child, status) in children {
        if status.is_none() {
            // SAFETY: signalling a child process this launcher started and has not reaped.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
    }
}

/// Refuses `--nproc-per-node N` beyond what the machine can give one rank each: a CPU per rank
/// on `device` cpu, a GPU per rank on CUDA.
pub fn check_nproc(nproc: usize, device: Device) -> Result<()> {
    let (have, what) = match device {
        Device::Cuda(_) => (tch::Cuda::device_count().max(0) as usize, "CUDA device"),
        _ => (
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            "CPU",
        ),
    };
    if nproc == 0 || nproc > have {
        bail!(UsageError(format!(
            "--nproc-per-node {nproc}: expected 1 to {have} (at most one rank per {what}; this machine has {have})"
        )));
    }
    Ok(())
}

/// A pipe whose read end the ranks inherit and whose write end only this process holds: it
/// reads its end in every rank once this process has ended. (read, write), both closed on exec.
fn lifeline() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors, owned from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create the launcher's pipe");
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The inode of an open descriptor.
fn inode(fd: &OwnedFd) -> Result<u64> {
    Ok(std::os::unix::fs::MetadataExt::ino(
        &std::fs::File::from(fd.try_clone()?).metadata()?,
    ))
}

/// Refuses `--nproc-per-node` in a process a launcher already started as a rank.
pub fn check_not_nested() -> Result<()> {
    if std::env::var_os("WORLD_SIZE").is_some() {
        bail!(UsageError(
            "--nproc-per-node starts its own ranks, but WORLD_SIZE is already set (a launcher such as torchrun started this one): use one or the other".into(),
        ));
    }
    Ok(())
}

/// Starts `nproc` ranks of this `ccma train` command and waits for all of them; `nproc` was
/// checked by [`check_nproc`].
pub fn run(nproc: usize) -> Result<()> {
    let exe =
        std::env::current_exe().context("cannot find the ccma executable to start the ranks")?;
    let args = without_launch_flag(std::env::args_os().skip(1));
    let port = match std::env::var("MASTER_PORT") {
        Ok(p) => p,
        Err(_) => crate::dist::free_port()?.to_string(),
    };
    let run_id = format!("{:016x}", rand::random::<u64>());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / nproc).max(1).to_string();
    interrupt::listen(|sig| match sig {
        Signal::CtrlC => {
            CTRL_C.fetch_add(1, Ordering::SeqCst);
        }
        Signal::Term => TERM.store(true, Ordering::SeqCst),
    })?;
    let (read_end, _write_end) = lifeline()?;
    let read_fd = read_end.as_raw_fd();
    let lifeline_value = format!("{read_fd}:{}", inode(&read_end)?);
    tracing::info!("starting {nproc} ranks on 127.0.0.1:{port}, {threads} thread(s) each");
    let mut children: Vec<(Child, Option<ExitStatus>)> = Vec::new();
    for rank in 0..nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("WORLD_SIZE", nproc.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .env(RUN_ID_VAR, &run_id)
            .env(LIFELINE_VAR, &lifeline_value)
            .process_group(0);
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", &threads);
        }
        // SAFETY: fcntl only, between fork and exec: the rank keeps the read end open.
        unsafe {
            cmd.pre_exec(move || match libc::fcntl(read_fd, libc::F_SETFD, 0) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        match cmd.spawn() {
            Ok(child) => children.push((child, None)),
            Err(e) => {
                signal_all(&children, libc::SIGTERM);
                return Err(e)
                    .with_context(|| format!("cannot start rank {rank} ({})", exe.display()));
            }
        }
    }
    supervise(children)
}

/// Waits for every rank, passing Ctrl-C (each press) and SIGTERM (once) on and stopping the others once one fails.
fn supervise(mut children: Vec<(Child, Option<ExitStatus>)>) -> Result<()> {
    let (mut ctrl_c, mut term) = (0, false);
    let mut failed: Option<(usize, u32, ExitStatus, Instant)> = None;
    let mut escalated = 0;
    while children.iter().any(|(_, s)| s.is_none()) {
        let pressed = CTRL_C.load(Ordering::SeqCst);
        while ctrl_c < pressed {
            ctrl_c += 1;
            signal_all(&children, libc::SIGINT);
        }
        if !term && TERM.load(Ordering::SeqCst) {
            term = true;
            signal_all(&children, libc::SIGTERM);
        }
        for (rank, (child, status)) in children.iter_mut().enumerate() {
            if status.is_some() {
                continue;
            }
            if let Some(s) = child.try_wait().context("cannot wait for a rank")? {
                *status = Some(s);
                let interrupted = s.code() == Some(130);
                if !s.success() && !interrupted && failed.is_none() {
                    failed = Some((rank, child.id(), s, Instant::now()));
                }
            }
        }
        if let Some((_, _, _, at)) = failed {
            let waited = at.elapsed();
            if escalated == 0 && waited > GRACE {
                signal_all(&children, libc::SIGTERM);
                escalated = 1;
            } else if escalated == 1 && waited > 2 * GRACE {
                signal_all(&children, libc::SIGKILL);
                escalated = 2;
            }
        }
        std::thread::sleep(POLL);
    }
    if let Some((rank, pid, status, _)) = failed {
        let line = format!(
            "rank {rank} (pid {pid}) {}; the other ranks were stopped",
            describe(status)
        );
        match status.code() {
            Some(2) => bail!(UsageError(line)),
            _ => bail!(line),
        }
    }
    if children
        .iter()
        .any(|(_, s)| s.is_some_and(|s| s.code() == Some(130)))
    {
        return Err(Interrupted.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launch_flag_and_its_value_are_removed() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let out = without_launch_flag(
            args(&[
                "train",
                "--nproc-per-node",
                "2",
                "--config",
                "c.yaml",
                "--nproc-per-node=3",
            ])
            .into_iter(),
        );
        assert_eq!(out, args(&["train", "--config", "c.yaml"]));
    }
}
