//! A c10d process group: the collectives data-parallel training needs (all-reduce, all-gather,
//! broadcast) and the rendezvous store, which also tells which rank stopped answering when a
//! collective fails.
use super::env::Launch;
use crate::shim::{self, call, take_string, take_tensor};
use crate::UsageError;
use anyhow::{bail, Result};
use std::ffi::{c_char, c_void, CString};
use std::ptr::null_mut;
use std::time::{Duration, Instant};
use tch::Tensor;

/// The c10d backend: Gloo carries CPU tensors, NCCL CUDA tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// Whether this build can create NCCL groups (a CUDA libtorch with the NCCL headers).
    pub fn nccl_compiled() -> bool {
        // SAFETY: a constant query.
        unsafe { shim::ccma_nccl_compiled() != 0 }
    }
}

/// A collective or store call failed: another rank died, hung past the timeout, or the network
/// failed. The message names the ranks that did not answer a liveness check.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RankLost(pub String);

/// How long the survivors of a failed collective wait for each other to report in.
const LIVENESS_WAIT: Duration = Duration::from_secs(3);

/// The process group of this run's ranks; dropping it leaves the group.
pub struct Group {
    ptr: *mut c_void,
    rank: usize,
    world: usize,
    /// A collective failed: the group is left to the process's exit, since tearing it down could
    /// wait on a peer that is gone.
    failed: std::cell::Cell<bool>,
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("NUL bytes removed")
}

/// What rank 0 publishes in the store and the other ranks check: the launch's run id and its
/// number of ranks.
fn run_identity(launch: &Launch) -> String {
    match launch.run_id.as_str() {
        "" => format!("a run of {} ranks without a run id", launch.world_size),
        id => format!("run {id} of {} ranks", launch.world_size),
    }
}

impl Group {
    /// Meets the other ranks at `launch.master_addr:master_port` (rank 0 serves the store) and
    /// creates the `backend` group; every collective and the rendezvous give up after `timeout`
    /// (NCCL's watchdog holds it for the collectives, which do not block this thread). An NCCL
    /// rank is bound to `cuda:LOCAL_RANK` (the current device of this thread, and the group's).
    /// Gloo uses the interface in `GLOO_SOCKET_IFNAME` when set, the loopback when every rank is
    /// local, else the address this machine's hostname resolves to. A port rank 0 cannot serve,
    /// and a store that another run's rank 0 serves (another [`Launch::run_id`] or number of
    /// ranks), are refused before this rank counts as one of the run's.
    pub fn connect(launch: &Launch, backend: Backend, timeout: Duration) -> Result<Group> {
        if backend == Backend::Nccl && !Backend::nccl_compiled() {
            bail!(UsageError(
                "dist_backend nccl: this ccma was built against a libtorch without NCCL (a CPU build, or the CUDA and NCCL headers were missing); use dist_backend: gloo".into(),
            ));
        }
        let interface = std::env::var("GLOO_SOCKET_IFNAME")
            .ok()
            .map(|s| c_string(&s));
        let hostname = launch.is_loopback().then(|| c_string("127.0.0.1"));
        let as_ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        let (name, addr) = (c_string(backend.name()), c_string(&launch.master_addr));
        let ours = run_identity(launch);
        let run_id = c_string(&ours);
        let mut refused = 0;
        let ptr = call(
            // SAFETY: valid C strings and out-pointer that outlive the call; the shim copies what
            // it keeps.
            |err| unsafe {
                shim::ccma_group_new(
                    name.as_ptr(),
                    addr.as_ptr(),
                    launch.master_port as i32,
                    launch.rank as i32,
                    launch.world_size as i32,
                    timeout.as_millis() as i64,
                    match backend {
                        Backend::Nccl => launch.local_rank as i32,
                        Backend::Gloo => -1,
                    },
                    as_ptr(&interface),
                    as_ptr(&hostname),
                    run_id.as_ptr(),
                    &mut refused,
                    err,
                )
            },
            |p| p.is_null(),
        )
        .map_err(|e| -> anyhow::Error {
            let port = launch.master_port;
            match refused {
                shim::REFUSED_PORT_UNAVAILABLE => UsageError(format!(
                    "MASTER_PORT={port}: rank 0 cannot serve the rendezvous store on it ({}): another run or program holds it; give this run a free port",
                    e.rsplit_once("message: ").map_or(e.as_str(), |(_, m)| m).trim()
                ))
                .into(),
                shim::REFUSED_OTHER_RUN => UsageError(format!(
                    "MASTER_PORT={port} on {} is the rendezvous of another run ({e}), not of this rank {}'s ({ours}): give each run its own MASTER_PORT",
                    launch.master_addr, launch.rank
                ))
                .into(),
                _ => RankLost(format!(
                    "rank {} of {} could not join the {} group at {}:{port}: {}",
                    launch.rank,
                    launch.world_size,
                    backend.name(),
                    launch.master_addr,
                    e.lines().next().unwrap_or("").trim()
                ))
                .into(),
            }
        })?;
        Ok(Group {
            ptr,
            rank: launch.rank,
            world: launch.world_size,
            failed: std::cell::Cell::new(false),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Sums the contiguous `t` over all ranks in place; every rank ends with the same values.
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), RankLost> {
        assert!(t.is_contiguous(), "all-reduce needs a contiguous tensor");
        // SAFETY: `t` is a live tensor; the shim reduces it in place.
        call(
            |err| unsafe { shim::ccma_all_reduce_sum(self.ptr, t.as_mut_ptr().cast(), err) },
            |ok| *ok == 0,
        )
        .map(|_| ())
        .map_err(|e| self.lost("all-reduce", &e))
    }

    /// Every rank's `t` ([n, ...], the same shape on every rank) as [world * n, ...], in rank
    /// order. Not differentiable.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor, RankLost> {
        let mut local = t.detach().contiguous();
        // SAFETY: `local` is a live tensor; the shim returns a new one.
        call(
            |err| unsafe { shim::ccma_all_gather(self.ptr, local.as_mut_ptr().cast(), err) },
            |p| p.is_null(),
        )
        .map(take_tensor)
        .map_err(|e| self.lost("all-gather", &e))
    }

    /// Overwrites the contiguous `t` with rank `root`'s values, in place.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), RankLost> {
        assert!(t.is_contiguous(), "broadcast needs a contiguous tensor");
        // SAFETY: `t` is a live tensor; the shim overwrites it in place.
        call(
            |err| unsafe {
                shim::ccma_broadcast(self.ptr, t.as_mut_ptr().cast(), root as i32, err)
            },
            |ok| *ok == 0,
        )
        .map(|_| ())
        .map_err(|e| self.lost("broadcast", &e))
    }

    /// Publishes `value` under `key` in the rendezvous store.
    pub fn publish(&self, key: &str, value: &str) -> Result<(), RankLost> {
        let (k, v) = (c_string(key), c_string(value));
        // SAFETY: valid C strings for the duration of the call.
        call(
            |err| unsafe { shim::ccma_store_set(self.ptr, k.as_ptr(), v.as_ptr(), err) },
            |ok| *ok == 0,
        )
        .map(|_| ())
        .map_err(RankLost)
    }

    /// The value published under `key`, waiting up to `timeout` for it; `None` if it never came.
    pub fn fetch(&self, key: &str, timeout: Duration) -> Result<Option<String>, RankLost> {
        let k = c_string(key);
        let mut value: *mut c_char = null_mut();
        // SAFETY: valid C string; the shim allocates `value`, taken below.
        call(
            |err| unsafe {
                shim::ccma_store_get(
                    self.ptr,
                    k.as_ptr(),
                    timeout.as_millis() as i64,
                    &mut value,
                    err,
                )
            },
            |ok| *ok == 0,
        )
        .map_err(RankLost)?;
        Ok(take_string(value))
    }

    /// Whether a value is published under `key` now.
    pub fn published(&self, key: &str) -> Result<bool, RankLost> {
        let k = c_string(key);
        let mut present = 0;
        // SAFETY: valid C string and out-pointer for the duration of the call.
        call(
            |err| unsafe { shim::ccma_store_check(self.ptr, k.as_ptr(), &mut present, err) },
            |ok| *ok == 0,
        )
        .map_err(RankLost)?;
        Ok(present != 0)
    }

    /// The error for a failed `op`: each surviving rank reports in through the store and waits
    /// briefly for the others; the ranks that never report are named.
    fn lost(&self, op: &str, cause: &str) -> RankLost {
        self.failed.set(true);
        let cause = cause.lines().next().unwrap_or("").trim();
        let me = self.rank;
        let who = match self.publish(&format!("ccma/alive/{me}"), "1") {
            Err(_) if me != 0 => {
                "rank 0 (which serves the rendezvous store) stopped answering".to_string()
            }
            Err(e) => format!("the rendezvous store failed ({e})"),
            Ok(()) => {
                let deadline = Instant::now() + LIVENESS_WAIT;
                let mut missing: Vec<usize> = (0..self.world).filter(|&r| r != me).collect();
                while !missing.is_empty() && Instant::now() < deadline {
                    missing.retain(|r| {
                        !matches!(self.published(&format!("ccma/alive/{r}")), Ok(true))
                    });
                    std::thread::sleep(Duration::from_millis(100));
                }
                let missing: Vec<String> = missing.iter().map(usize::to_string).collect();
                match missing.len() {
                    0 => "every rank is still alive (a timeout or a network fault)".to_string(),
                    1 => format!("rank {} stopped answering", missing[0]),
                    _ => format!("ranks {} stopped answering", missing.join(", ")),
                }
            }
        };
        RankLost(format!("{who}: {op} failed on rank {me} ({cause})"))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.failed.get() {
            // SAFETY: `ptr` came from `ccma_group_new` and is freed once (an NCCL group is shut
            // down first).
            unsafe { shim::ccma_group_free(self.ptr) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn port() -> u16 {
        crate::dist::free_port().unwrap()
    }

    #[test]
    fn one_rank_gloo_group_runs_every_collective() {
        let launch = Launch::loopback(0, 1, port(), "t");
        let g = Group::connect(&launch, Backend::Gloo, Duration::from_secs(30)).unwrap();
        let mut t = Tensor::from_slice(&[1.5f32, -2.0, 3.25]);
        g.all_reduce_sum(&mut t).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.5, -2.0, 3.25]);
        let gathered = g
            .all_gather(&Tensor::arange(6, (Kind::Int64, tch::Device::Cpu)).view([3, 2]))
            .unwrap();
        assert_eq!(gathered.size(), [3, 2]);
        assert_eq!(
            Vec::<i64>::try_from(&gathered.flatten(0, 1)).unwrap(),
            [0, 1, 2, 3, 4, 5]
        );
        g.broadcast(&mut t, 0).unwrap();
        g.publish("k", "v").unwrap();
        assert_eq!(
            g.fetch("k", Duration::from_secs(1)).unwrap().as_deref(),
            Some("v")
        );
        assert!(g.published("k").unwrap() && !g.published("absent").unwrap());
    }

    #[test]
    fn a_rank_of_another_run_and_a_taken_port_are_refused() {
        let rank = |rank: usize, run_id: &str, master_port: u16| {
            Launch::loopback(rank, 2, master_port, run_id)
        };
        let timeout = Duration::from_secs(30);
        let p = port();
        // Sums rank + 1 over both ranks.
        let reduce = |g: Group| {
            let mut t = Tensor::from_slice(&[g.rank() as f32 + 1.0]);
            g.all_reduce_sum(&mut t).unwrap();
            f32::try_from(&t).unwrap()
        };
        let first = std::thread::spawn(move || {
            reduce(Group::connect(&rank(0, "a", p), Backend::Gloo, timeout).unwrap())
        });
        let refused = |r: Result<Group>| {
            let e = r.err().expect("refused");
            assert!(e.is::<UsageError>(), "{e:#}");
            e.to_string()
        };
        let e = refused(Group::connect(&rank(1, "b", p), Backend::Gloo, timeout));
        assert!(
            e.starts_with(&format!("MASTER_PORT={p} on 127.0.0.1 is the rendezvous of another run (run a of 2 ranks), not of this rank 1's (run b of 2 ranks)")),
            "{e}"
        );
        let e = refused(Group::connect(&rank(0, "c", p), Backend::Gloo, timeout));
        assert!(
            e.starts_with(&format!("MASTER_PORT={p}: rank 0 cannot serve the rendezvous store on it (address already in use)")),
            "{e}"
        );
        // The run's own rank 1 still joins, and the two ranks reduce together.
        let second = reduce(Group::connect(&rank(1, "a", p), Backend::Gloo, timeout).unwrap());
        assert_eq!((first.join().unwrap(), second), (3.0, 3.0));
    }
}
