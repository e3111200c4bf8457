//! Faults injected into a run, for tests of the failure paths: a NaN loss, Ctrl-C, a parked rank,
//! a rank that dies or hangs.
use super::interrupt;
use super::step::StepOptions;

/// Faults to inject, for tests of the failure paths (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Make the first loss term NaN at this global step (0-based).
    pub nan_at_step: Option<usize>,
    /// Act as if Ctrl-C was pressed once this many global steps are done.
    pub interrupt_after_step: Option<usize>,
    /// Every rank waits before this global step (0-based) until it is interrupted.
    pub park_at_step: Option<usize>,
    /// One rank fails before a global step (0-based).
    pub rank_fault: Option<RankFault>,
}

impl Faults {
    /// What the faults do before global step `global_step` of rank `rank`: the rank fault (kill
    /// or hang) and the park; then the step's options, the NaN and the interrupt among them.
    pub(super) fn before_step(
        &self,
        rank: usize,
        global_step: usize,
        chunk: Option<usize>,
    ) -> StepOptions {
        if let Some(f) = self.rank_fault {
            if (f.rank, f.step) == (rank, global_step) {
                match f.kill {
                    // SAFETY: raising a signal on this process.
                    true => unsafe {
                        libc::raise(libc::SIGKILL);
                    },
                    false => loop {
                        std::thread::park();
                    },
                }
            }
        }
        if self.park_at_step == Some(global_step) {
            tracing::warn!(
                "rank {rank} (pid {}) parked before global step {global_step} until interrupted",
                std::process::id(),
            );
            interrupt::wait_for_request();
        }
        StepOptions {
            chunk,
            poison: self.nan_at_step == Some(global_step),
            stop: interrupt::requested() || self.interrupt_after_step == Some(global_step + 1),
        }
    }
}

/// A rank that dies or hangs, for tests of how the other ranks stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankFault {
    pub rank: usize,
    pub step: usize,
    /// SIGKILL itself (true) or stop answering for good (false).
    pub kill: bool,
}
