//! Reading a small text file from elsewhere whole: a regular file of at most a stated size, opened
//! without blocking ([`super::regular_file::open_regular`]).
use crate::UsageError;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// The UTF-8 text of `path` (links followed), `what` naming it in errors (e.g. "per-query file").
/// It must be a regular file of at most `limit` bytes, checked before it is read; no more than
/// `limit` bytes are read even from a file that grows meanwhile. Anything else is a
/// [`UsageError`] naming the file.
pub fn read_text(path: &Path, what: &str, limit: u64) -> Result<String> {
    use super::regular_file::{open_regular, ReadFault};
    let shown = super::escape::shown(path);
    let (file, meta) = open_regular(path).map_err(|f| match f {
        ReadFault::Io(e) => UsageError(format!("cannot read {what} {shown}: {e}")),
        ReadFault::Irregular(_) | ReadFault::TooLarge(_) => UsageError(format!(
            "{what} {shown} is not a regular file (expected a file that ccma wrote)"
        )),
    })?;
    if meta.len() > limit {
        bail!(UsageError(format!(
            "{what} {shown} has {} bytes, over the {limit}-byte limit",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {shown}"))?;
    if bytes.len() as u64 > limit {
        bail!(UsageError(format!(
            "{what} {shown} grew past the {limit}-byte limit while it was read"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        UsageError(format!(
            "{what} {shown}: invalid UTF-8 at byte {} (expected UTF-8 text)",
            e.utf8_error().valid_up_to()
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_files_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "hello").unwrap();
        assert_eq!(read_text(&p, "file", 5).unwrap(), "hello");
        let e = format!("{:#}", read_text(&p, "file", 4).unwrap_err());
        assert!(e.contains("has 5 bytes, over the 4-byte limit"), "{e}");
        let e = format!("{:#}", read_text(dir.path(), "file", 4).unwrap_err());
        assert!(e.contains("is not a regular file"), "{e}");
        std::fs::write(&p, b"\xff").unwrap();
        let e = format!("{:#}", read_text(&p, "file", 4).unwrap_err());
        assert!(e.contains("invalid UTF-8 at byte 0"), "{e}");
    }
}
