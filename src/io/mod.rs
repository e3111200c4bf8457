//! Files: atomic writes, the rule for output paths, safetensors with string metadata,
//! fingerprints of files for cache keys, bounded reads of regular files, NumPy `.npy` integer
//! vectors, the names of a run folder's files, file text made safe to print.
pub mod atomic;
pub mod escape;
pub mod fingerprint;
pub mod npy;
pub mod output_path;
pub mod pickle;
pub mod regular_file;
pub mod run_files;
pub mod safetensors;
pub mod text;

pub use atomic::{write_atomic, write_atomic_with};
pub use regular_file::{read_regular_file, MAX_IMAGE_BYTES};
