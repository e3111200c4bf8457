//! The one rule for a path a command writes: never one of that command's inputs, never inside a
//! folder it reads, and an existing file only when the user says so (`--force`) or when the name
//! is one `ccma` chose itself.
use crate::UsageError;
use anyhow::{bail, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether an existing file at the output path may be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refused: the user named the path and did not give the flag `allow` (named in the error).
    Refuse { allow: &'static str },
    /// Replaced: the user allowed it, or the name is one `ccma` chose for its own file.
    Replace,
}

impl Existing {
    /// `Replace` when the user gave the flag `allow`, else `Refuse`.
    pub fn allowed_by(given: bool, allow: &'static str) -> Existing {
        match given {
            true => Existing::Replace,
            false => Existing::Refuse { allow },
        }
    }
}

/// Refuses `out` as the output of a command that reads `inputs` (files or folders; those that do
/// not exist are skipped): when it is one of the inputs (the same file, links followed, by device
/// and inode), lies inside an input folder (where it would be read as an input), is a folder, or
/// exists and `existing` is `Refuse`. Each refusal is one line naming the path, a usage error.
pub fn check(out: &Path, inputs: &[PathBuf], existing: Existing) -> Result<()> {
    let target = std::fs::metadata(out).ok();
    let resolved = resolve(out);
    for input in inputs {
        let Ok(meta) = std::fs::metadata(input) else {
            continue;
        };
        if meta.is_dir() {
            let dir = std::fs::canonicalize(input).unwrap_or_else(|_| input.clone());
            if resolved.starts_with(&dir) {
                bail!(UsageError(format!(
                    "{} is inside {}, a folder this command reads: write it outside that folder",
                    out.display(),
                    input.display()
                )));
            }
        } else if target
            .as_ref()
            .is_some_and(|t| (t.dev(), t.ino()) == (meta.dev(), meta.ino()))
        {
            bail!(UsageError(format!(
                "{} is {}, an input of this command: choose another output path",
                out.display(),
                input.display()
            )));
        }
    }
    match target {
        Some(t) if t.is_dir() => bail!(UsageError(format!(
            "{} is a folder: give a file path to write",
            out.display()
        ))),
        Some(_) => match existing {
            Existing::Refuse { allow } => bail!(UsageError(format!(
                "{} already exists: pass {allow} to replace it, or choose another path",
                out.display()
            ))),
            Existing::Replace => Ok(()),
        },
        None => Ok(()),
    }
}

/// `path` absolute with links resolved as far as it exists (the rest appended as written).
fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut head = abs.as_path();
    let mut tail = Vec::new();
    while let Some(parent) = head.parent() {
        tail.push(head.file_name().unwrap_or_default().to_owned());
        if let Ok(p) = std::fs::canonicalize(parent) {
            return tail.iter().rev().fold(p, |p, part| p.join(part));
        }
        head = parent;
    }
    abs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_folders_and_existing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.safetensors");
        std::fs::write(&input, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(&input, &hard).unwrap();
        let gallery = dir.path().join("photos");
        std::fs::create_dir(&gallery).unwrap();
        let inputs = vec![input.clone(), gallery.clone()];
        let refused =
            |out: &Path, existing| format!("{:#}", check(out, &inputs, existing).unwrap_err());
        for out in [&input, &link, &hard] {
            assert!(refused(out, Existing::Replace).contains("an input of this command"));
        }
        for out in [gallery.join("sheet.png"), gallery.join("new/../sheet.png")] {
            assert!(refused(&out, Existing::Replace).contains("a folder this command reads"));
        }
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"mine").unwrap();
        let refuse = Existing::Refuse { allow: "FLAG" };
        assert!(refused(&other, refuse).contains("already exists: pass FLAG to replace it"));
        check(&other, &inputs, Existing::Replace).unwrap();
        check(&dir.path().join("new.png"), &inputs, refuse).unwrap();
        assert!(refused(dir.path(), Existing::Replace).contains("is a folder"));
    }
}
