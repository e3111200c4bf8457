//! Data-parallel plumbing: which rank this process is ([`env`], torchrun's variables) and the
//! process group that connects the ranks ([`group`], libtorch's own c10d engine: its TCP store for
//! rendezvous, Gloo for CPU tensors, NCCL for CUDA tensors, reached through the shim,
//! `src/shim.rs`).
pub mod env;
pub mod group;

pub use env::{free_port, Launch};
pub use group::{Backend, Group};
