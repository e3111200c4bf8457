//! Which rank this process is, from the variables `torchrun` (and SLURM or MPI wrappers that
//! mimic it) set: `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`.
use crate::UsageError;
use anyhow::{bail, Context, Result};

/// This process's place in a data-parallel run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Number of ranks (processes) in the run.
    pub world_size: usize,
    /// This process's rank, `0..world_size`; rank 0 writes the run folder.
    pub rank: usize,
    /// Rank on this machine: CUDA ranks use device `cuda:local_rank`.
    pub local_rank: usize,
    /// Where rank 0 serves the rendezvous store.
    pub master_addr: String,
    pub master_port: u16,
    /// Tells this run's ranks from another's that meet at the same `MASTER_PORT`: rank 0
    /// publishes it in the store and the others refuse a store with another one. From
    /// [`RUN_ID_VAR`] (`--nproc-per-node` sets a fresh random one), else empty.
    pub run_id: String,
}

/// The variable holding a launch's run id ([`Launch::run_id`]).
pub const RUN_ID_VAR: &str = "CCMA_RUN_ID";

impl Launch {
    /// Rank `rank` of `world_size` meeting on this machine's loopback at `master_port`, with
    /// `run_id`: ranks as threads or processes of one machine (tests, local runs).
    pub fn loopback(rank: usize, world_size: usize, master_port: u16, run_id: &str) -> Launch {
        Launch {
            world_size,
            rank,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port,
            run_id: run_id.into(),
        }
    }

    /// The launch the environment describes; `None` when `WORLD_SIZE` is unset (a plain
    /// one-process run). Any other of the variables missing or malformed is a usage error naming it.
    pub fn from_env() -> Result<Option<Launch>> {
        Launch::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`Launch::from_env`], reading the variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let get = |k: &str| {
            var(k).ok_or_else(|| {
                UsageError(format!(
                    "{k} is not set: a data-parallel run (WORLD_SIZE={world}) needs WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, as torchrun sets them"
                ))
            })
        };
        let number = |k: &str, v: &str, what: &str| -> Result<usize> {
            v.trim()
                .parse::<usize>()
                .map_err(|_| UsageError(format!("{k}={v:?} is not {what}")).into())
        };
        let world_size = number("WORLD_SIZE", &world, "a whole number of ranks")?;
        if world_size == 0 {
            bail!(UsageError(
                "WORLD_SIZE=0: a run needs at least one rank".into()
            ));
        }
        let rank = number("RANK", &get("RANK")?, "a rank number")?;
        if rank >= world_size {
            bail!(UsageError(format!(
                "RANK={rank} is not below WORLD_SIZE={world_size} (ranks are 0..WORLD_SIZE-1)"
            )));
        }
        let local_rank = number("LOCAL_RANK", &get("LOCAL_RANK")?, "a rank number")?;
        let master_addr = get("MASTER_ADDR")?.trim().to_string();
        if master_addr.is_empty() {
            bail!(UsageError(
                "MASTER_ADDR is empty: expected rank 0's host name or address".into(),
            ));
        }
        let port = get("MASTER_PORT")?;
        let master_port = port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                UsageError(format!(
                    "MASTER_PORT={port:?} is not a port number (1-65535)"
                ))
            })?;
        Ok(Some(Launch {
            world_size,
            rank,
            local_rank,
            master_addr,
            master_port,
            run_id: var(RUN_ID_VAR).unwrap_or_default(),
        }))
    }

    /// Whether every rank runs on this machine's loopback.
    pub fn is_loopback(&self) -> bool {
        matches!(self.master_addr.as_str(), "127.0.0.1" | "localhost" | "::1")
    }
}

/// A port on the loopback that was free a moment ago (for a rendezvous on this machine).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free port on the loopback for the rendezvous")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| map.get(k).cloned())
    }

    const FULL: [(&str, &str); 5] = [
        ("WORLD_SIZE", "2"),
        ("RANK", "1"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
    ];

    #[test]
    fn reads_torchrun_variables() {
        assert_eq!(launch(&[]).unwrap(), None);
        let l = launch(&FULL).unwrap().unwrap();
        assert_eq!(
            (l.world_size, l.rank, l.local_rank, l.master_port),
            (2, 1, 1, 29500)
        );
        assert!(l.is_loopback());
        assert_eq!(l.run_id, "");
        let mut with_id = FULL.to_vec();
        with_id.push((RUN_ID_VAR, "3f2a"));
        assert_eq!(launch(&with_id).unwrap().unwrap().run_id, "3f2a");
    }

    #[test]
    fn refuses_missing_or_malformed_variables_by_name() {
        for (key, value, expected) in [
            ("RANK", "2", "RANK=2 is not below WORLD_SIZE=2"),
            ("RANK", "x", "RANK=\"x\" is not a rank number"),
            ("WORLD_SIZE", "0", "WORLD_SIZE=0"),
            ("MASTER_PORT", "0", "MASTER_PORT=\"0\" is not a port number"),
            ("MASTER_PORT", "70000", "MASTER_PORT=\"70000\""),
            ("MASTER_ADDR", " ", "MASTER_ADDR is empty"),
        ] {
            let vars: Vec<(&str, &str)> = FULL
                .iter()
                .map(|&(k, v)| if k == key { (k, value) } else { (k, v) })
                .collect();
            let err = launch(&vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{key}={value}: {err}");
        }
        let without_port: Vec<_> = FULL
            .iter()
            .copied()
            .filter(|(k, _)| *k != "MASTER_PORT")
            .collect();
        let err = launch(&without_port).unwrap_err().to_string();
        assert!(err.starts_with("MASTER_PORT is not set"), "{err}");
    }
}
