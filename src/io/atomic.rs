//! Atomic writes: a temporary file in the same folder, then a rename.
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a reader
/// (or a crash) never sees a half-written file. On failure the temporary file is removed and the
/// previous content of `path` is left untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes).map_err(Into::into))
}

/// Like [`write_atomic`], with the content produced by `fill` writing into the temporary file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    write_atomic_at(path, |tmp| {
        let mut f = std::fs::OpenOptions::new().write(true).open(tmp)?;
        fill(&mut f)
    })
}

/// Like [`write_atomic`], with the content written by `fill` to the temporary file's path (for
/// writers that open the file themselves); the file exists, empty, when `fill` is called.
pub fn write_atomic_at(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(temporary_name(&name.to_string_lossy()));
    let result = (|| -> Result<()> {
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        fill(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {} failed (previous content kept)", path.display()))
}

/// The temporary file a write of `name` goes through: `.<name>.tmp<pid>`.
fn temporary_name(name: &str) -> String {
    format!(".{name}.tmp{}", std::process::id())
}

/// The file whose atomic write (by any process) goes through the temporary file `name`:
/// `Some("best.safetensors")` for `.best.safetensors.tmp4242`, `None` for any other name.
pub fn temporary_target(name: &str) -> Option<&str> {
    let (head, pid) = name.strip_prefix('.')?.rsplit_once(".tmp")?;
    (!head.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_failure_keeps_old() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let err = write_atomic_with(&p, |_| anyhow::bail!("disk full")).unwrap_err();
        assert!(format!("{err:#}").contains("disk full"));
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        assert_eq!(
            temporary_target(&temporary_name("last.safetensors")),
            Some("last.safetensors")
        );
        assert_eq!(
            temporary_target(".best.safetensors.tmp123"),
            Some("best.safetensors")
        );
        for other in ["notes.tmp1", ".x.tmp", ".tmp12", ".x.tmp12a", "x.json.tmp3"] {
            assert_eq!(temporary_target(other), None, "{other}");
        }
    }
}
