//! Data-parallel plumbing: which rank this process is ([`env`], torchrun's variables) and the
//! process group that connects the ranks ([`group`], libtorch's own c10d engine: its TCP store for
//! rendezvous, Gloo for CPU tensors, NCCL for CUDA tensors, reached through the shim,
//! `src/shim.rs`).
pub mod env;
pub mod group;

pub use env::{free_port, Launch};
pub use group::{Backend, Group};

/// Runs `f` on each rank of a group of `inputs.len()` ranks, threads of this process joined by
/// Gloo on the loopback (a fresh port, `run_id`, `timeout`), rank r with `inputs[r]`, and returns
/// what each returned, in rank order; a rank's panic is raised again here. For exercising the
/// collectives within one process.
pub fn on_loopback_ranks<I: Send + 'static, T: Send + 'static>(
    inputs: Vec<I>,
    run_id: &str,
    timeout: std::time::Duration,
    f: impl Fn(Group, I) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let port = free_port().expect("a free port on the loopback");
    let (f, world) = (std::sync::Arc::new(f), inputs.len());
    let threads: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(rank, input)| {
            let (f, launch) = (f.clone(), Launch::loopback(rank, world, port, run_id));
            std::thread::spawn(move || {
                let group = Group::connect(&launch, Backend::Gloo, timeout)
                    .unwrap_or_else(|e| panic!("rank {rank} could not join: {e:#}"));
                f(group, input)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}
