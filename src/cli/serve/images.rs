//! The image files a server may send, fixed at start: each listed file with its identity (device
//! and inode), checked again on the opened file at every request, so that a file swapped since
//! start (for a link to elsewhere, a FIFO, another file) is never sent; and the names the API
//! shows for them, relative to their common folder (no absolute path leaves the machine).
use crate::io::regular_file::{open_regular, ReadFault};
use crate::retrieval::gallery::IMAGE_EXTENSIONS;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file's identity on its machine: (device, inode).
type FileId = (u64, u64);

/// One image a server may send.
pub struct Listed {
    pub path: PathBuf,
    /// Its identity at start; `None` when it was not then a regular file inside its folder.
    id: Option<FileId>,
}

/// An image opened to send: the file, its length, its content type.
pub struct Opened {
    pub file: std::fs::File,
    pub len: u64,
    pub content_type: &'static str,
}

/// `files` as listed now. With `inside`, a file whose real path (links resolved) is not inside
/// that folder is never sent (a gallery folder's links were checked when it was listed; this
/// keeps a link swapped in since then out). Nothing is opened, so nothing here can block.
pub fn list(files: &[PathBuf], inside: Option<&Path>) -> Vec<Listed> {
    let root = inside.map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()));
    files
        .iter()
        .map(|path| {
            let inside = root
                .as_ref()
                .is_none_or(|r| path.canonicalize().is_ok_and(|real| real.starts_with(r)));
            let id = std::fs::metadata(path)
                .ok()
                .filter(|m| inside && m.is_file())
                .map(|m| (m.dev(), m.ino()));
            Listed {
                path: path.clone(),
                id,
            }
        })
        .collect()
}

/// `image` opened to send: a jpg or png by name, a regular file (opened without blocking) that
/// is still the file listed at start, of at most [`crate::io::MAX_IMAGE_BYTES`]; else why not.
pub fn open(image: &Listed) -> Result<Opened, String> {
    let content_type = image_type(&image.path).ok_or("not a jpg or png file")?;
    let Some(listed) = image.id else {
        return Err("not a regular file inside the gallery at start".into());
    };
    let (file, meta) = open_regular(&image.path).map_err(|f| match f {
        ReadFault::Io(e) => format!("cannot open it: {e}"),
        other => other.to_string(),
    })?;
    if (meta.dev(), meta.ino()) != listed {
        return Err("no longer the file listed at start".into());
    }
    if meta.len() > crate::io::MAX_IMAGE_BYTES {
        return Err(ReadFault::TooLarge(crate::io::MAX_IMAGE_BYTES).to_string());
    }
    Ok(Opened {
        file,
        len: meta.len(),
        content_type,
    })
}

/// The content type of a gallery image, by its extension.
fn image_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_string_lossy().to_lowercase();
    match ext.as_str() {
        e if !IMAGE_EXTENSIONS.contains(&e) => None,
        "png" => Some("image/png"),
        _ => Some("image/jpeg"),
    }
}

/// Each of `files` named relative to the deepest folder that holds them all (`sub/c.png` for a
/// gallery's `/data/gallery/sub/c.png`): what the API shows.
pub fn relative_names(files: &[PathBuf]) -> Vec<String> {
    let mut common: Option<&Path> = files.first().and_then(|f| f.parent());
    for f in files {
        while let Some(c) = common {
            if f.starts_with(c) {
                break;
            }
            common = c.parent();
        }
    }
    files
        .iter()
        .map(|f| {
            let name = common.and_then(|c| f.strip_prefix(c).ok()).unwrap_or(f);
            name.to_string_lossy().into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_to_the_common_folder() {
        let files: Vec<PathBuf> = ["/d/g/a.jpg", "/d/g/sub/b.png", "/d/g/c.jpg"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(relative_names(&files), ["a.jpg", "sub/b.png", "c.jpg"]);
        let apart: Vec<PathBuf> = ["/x/a.jpg", "/y/b.jpg"].iter().map(PathBuf::from).collect();
        assert_eq!(relative_names(&apart), ["x/a.jpg", "y/b.jpg"]);
        assert_eq!(relative_names(&[PathBuf::from("/d/one.png")]), ["one.png"]);
        let relative: Vec<PathBuf> = ["a.jpg", "b/c.jpg"].iter().map(PathBuf::from).collect();
        assert_eq!(relative_names(&relative), ["a.jpg", "b/c.jpg"]);
    }
}
