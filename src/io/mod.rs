//! Files: atomic writes, the rule for output paths, safetensors with string metadata, fingerprints of files for cache keys.
pub mod atomic;
pub mod fingerprint;
pub mod output_path;
pub mod pickle;
pub mod safetensors;

pub use atomic::{write_atomic, write_atomic_with};
