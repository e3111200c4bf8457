//! Stable fingerprints of files (path, size, modification time) for cache keys.
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// 64-bit FNV-1a of `bytes`, continuing from `h`.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The FNV-1a offset basis: the fingerprint of nothing.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// `path:size:mtime_ns` of one file, with the path made absolute where possible.
pub fn file(path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!(
        "{}:{}:{}",
        abs.display(),
        meta.len(),
        mtime.map_or(0, |d| d.as_nanos())
    ))
}

/// One hash over the fingerprints of `files`, in order.
pub fn files(files: &[PathBuf]) -> Result<u64> {
    let mut h = FNV_START;
    for f in files {
        h = fnv1a(file(f)?.into_bytes(), h);
        h = fnv1a(*b"\n", h);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_content_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"one").unwrap();
        let a = files(std::slice::from_ref(&p)).unwrap();
        assert_eq!(a, files(std::slice::from_ref(&p)).unwrap());
        std::fs::write(&p, b"three").unwrap();
        assert_ne!(a, files(&[p]).unwrap());
        assert_eq!(fnv1a(*b"", FNV_START), FNV_START);
    }
}
