//! Files: atomic writes, safetensors with string metadata, fingerprints of files for cache keys.
pub mod atomic;
pub mod fingerprint;
pub mod pickle;
pub mod safetensors;
pub mod text;

pub use atomic::{write_atomic, write_atomic_with};
