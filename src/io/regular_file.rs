//! Reading a file from elsewhere whole: a regular file only, never blocking on a FIFO or device,
//! never more than a stated number of bytes.
use crate::UsageError;
use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest image file read (64 MiB): far above a photo's size (a 50-megapixel JPEG is about
/// 20 MB), small enough that reading one never strains memory.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// `bytes` as in "the ... limit" of an error: "64 MiB" when whole MiB, else "N-byte".
fn size_in_words(bytes: u64) -> String {
    match bytes % (1 << 20) {
        0 => format!("{} MiB", bytes >> 20),
        _ => format!("{bytes}-byte"),
    }
}

/// What a file that is not a regular one is, in words ("a FIFO").
pub fn irregular_kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// `path` opened for reading without blocking: `O_NONBLOCK` makes opening a FIFO return at once
/// (and has no effect on a regular file's reads); `O_NOCTTY` keeps a terminal from becoming ours.
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// `path` (links followed) opened for reading without blocking, with its metadata, `what` naming
/// it in errors. A FIFO, device, socket or folder is a [`UsageError`] naming the file.
pub fn open_regular_file(path: &Path, what: &str) -> Result<(File, std::fs::Metadata)> {
    let shown = path.display();
    let file = open_nonblocking(path).with_context(|| format!("cannot read {what} {shown}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {what} {shown}"))?;
    if !meta.is_file() {
        bail!(UsageError(format!(
            "{what} {shown} is {}, expected a regular file",
            irregular_kind(meta.file_type())
        )));
    }
    Ok((file, meta))
}

/// The bytes of `path` (links followed), `what` naming it in errors (e.g. "image"). It must be a
/// regular file of at most `limit` bytes: that is checked on the opened file before any byte is
/// read, and no more than `limit` bytes are read even from a file that grows meanwhile. A FIFO,
/// device, socket or folder, and a file over the limit, are a [`UsageError`] naming the file.
pub fn read_regular_file(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    let shown = path.display();
    let (file, meta) = open_regular_file(path, what)?;
    let too_big = || {
        UsageError(format!(
            "{what} {shown} is larger than the {} limit for {what} files",
            size_in_words(limit)
        ))
    };
    if meta.len() > limit {
        bail!(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {shown}"))?;
    if bytes.len() as u64 > limit {
        bail!(too_big());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_limit_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_regular_file(&p, "image", 10).unwrap(), b"0123456789");
        let e = format!("{:#}", read_regular_file(&p, "image", 9).unwrap_err());
        assert!(e.contains("a.png is larger than"), "{e}");

        let fifo = dir.path().join("fifo.png");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_regular_file(&fifo, "image", 10).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(
            e.to_string()
                .contains("fifo.png is a FIFO, expected a regular file"),
            "{e}"
        );
        let e = read_regular_file(Path::new("/dev/zero"), "image", 10).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let e = read_regular_file(dir.path(), "image", 10).unwrap_err();
        assert!(e.to_string().contains("is a folder"), "{e}");
    }
}
