//! Opening and reading a file from elsewhere: a regular file only, never blocking on a FIFO or
//! device, never more than a stated number of bytes. Every image `ccma` opens (training, testing,
//! `check`, galleries, `serve`) is opened here, by [`open_regular`].
use crate::UsageError;
use anyhow::Result;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest image file read (64 MiB): far above a photo's size (a 50-megapixel JPEG is about
/// 20 MB), small enough that reading one never strains memory.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// `bytes` as in "the ... limit" of an error: "64 MiB" when whole MiB, else "N-byte".
pub fn size_in_words(bytes: u64) -> String {
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

/// Why a file could not be opened or read as a regular file within a limit.
#[derive(Debug)]
pub enum ReadFault {
    /// It could not be opened or read.
    Io(std::io::Error),
    /// It is not a regular file: what it is ([`irregular_kind`]).
    Irregular(&'static str),
    /// It holds more bytes than this limit.
    TooLarge(u64),
}

impl std::fmt::Display for ReadFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFault::Io(e) => write!(f, "cannot read it: {e}"),
            ReadFault::Irregular(kind) => write!(f, "{kind}, not a regular file"),
            ReadFault::TooLarge(limit) => {
                write!(f, "larger than the {} limit", size_in_words(*limit))
            }
        }
    }
}

/// `path` (links followed) opened for reading, with the metadata of the opened file, which must
/// be a regular file. `O_NONBLOCK` makes opening a FIFO return at once (and has no effect on a
/// regular file's reads); `O_NOCTTY` keeps a terminal from becoming ours. The type is checked on
/// the opened handle, so a file swapped for a FIFO or a device after it was listed is refused,
/// never read; callers that must send only what they listed compare the metadata's device and
/// inode with the listed ones.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), ReadFault> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadFault::Io)?;
    let meta = file.metadata().map_err(ReadFault::Io)?;
    if !meta.is_file() {
        return Err(ReadFault::Irregular(irregular_kind(meta.file_type())));
    }
    Ok((file, meta))
}

/// The bytes of the regular file `path` ([`open_regular`]), at most `limit` of them: the size is
/// checked on the opened file before any byte is read, and no more than `limit` bytes are read
/// even from a file that grows meanwhile.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadFault> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(ReadFault::TooLarge(limit));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadFault::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadFault::TooLarge(limit));
    }
    Ok(bytes)
}

/// `path` opened as [`open_regular`] does, `what` naming it in errors (e.g. "noise file"): a FIFO,
/// device, socket or folder is a [`UsageError`] naming the file.
pub fn open_regular_file(path: &Path, what: &str) -> Result<(File, Metadata)> {
    open_regular(path).map_err(|f| fault_error(f, path, what))
}

/// The bytes of `path` (see [`read_bounded`]), `what` naming it in errors (e.g. "image"). A FIFO,
/// device, socket or folder, and a file over the limit, are a [`UsageError`] naming the file.
pub fn read_regular_file(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    read_bounded(path, limit).map_err(|f| fault_error(f, path, what))
}

/// `fault` as the error of reading `what` at `path`.
fn fault_error(fault: ReadFault, path: &Path, what: &str) -> anyhow::Error {
    let shown = crate::io::escape::shown(path);
    match fault {
        ReadFault::Io(e) => anyhow::Error::new(e).context(format!("cannot read {what} {shown}")),
        ReadFault::Irregular(kind) => anyhow::Error::new(UsageError(format!(
            "{what} {shown} is {kind}, expected a regular file"
        ))),
        ReadFault::TooLarge(limit) => anyhow::Error::new(UsageError(format!(
            "{what} {shown} is larger than the {} limit for {what} files",
            size_in_words(limit)
        ))),
    }
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
