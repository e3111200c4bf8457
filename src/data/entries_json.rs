//! An annotation file's JSON list read straight into its entries: streamed from the file (never
//! held whole, never parsed into a generic JSON tree), at most [`MAX_ANNOTATION_BYTES`], UTF-8
//! checked as it is read.
use crate::io::escape::shown;
use crate::io::regular_file::{open_regular, size_in_words, ReadFault};
use crate::UsageError;
use anyhow::Result;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The largest annotation file read (256 MiB): the published ones are a few tens of MB (CUHK-PEDES'
/// `reid_raw.json` is about 15 MB), and entries read from this much stay well within memory.
pub const MAX_ANNOTATION_BYTES: u64 = 256 << 20;

/// One annotation entry as written: an image with its person id and captions (not yet checked).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `train`, `test`, or anything else for validation (`formats::split_index`).
    pub split: String,
    pub id: i64,
    /// The image path, relative to `imgs/`.
    pub path: String,
    pub captions: Vec<String>,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Every entry of the JSON list `file`, in order, with its `split` when present (required when
/// `need_split`); each entry's image path is under `image_key`, other keys are skipped. A file
/// that is not a regular file, is over [`MAX_ANNOTATION_BYTES`], is not UTF-8 (a leading BOM is
/// skipped) or JSON, or has an entry without the keys and types of an entry is a [`UsageError`]
/// naming the file (and the entry).
pub fn read_entries(
    file: &Path,
    image_key: &str,
    need_split: bool,
) -> Result<Vec<(Option<String>, Entry)>> {
    let name = shown(file);
    let (handle, meta) = open_regular(file).map_err(|f| match f {
        ReadFault::Io(e) => UsageError(format!("cannot read {name}: {e}")),
        other => UsageError(format!("annotation file {name} is {other}")),
    })?;
    if meta.len() > MAX_ANNOTATION_BYTES {
        return Err(UsageError(format!(
            "annotation file {name} has {} bytes, over the {} limit for annotation files",
            meta.len(),
            size_in_words(MAX_ANNOTATION_BYTES)
        ))
        .into());
    }
    let mut reader = BufReader::with_capacity(
        1 << 16,
        Utf8Checked {
            inner: handle.take(MAX_ANNOTATION_BYTES),
            offset: 0,
            pending: Vec::new(),
        },
    );
    let fault = RefCell::new(None);
    let parsed = skip_bom(&mut reader)
        .map_err(serde_json::Error::io)
        .and_then(|()| {
            let mut de = serde_json::Deserializer::from_reader(&mut reader);
            let list = EntryList {
                keys: Keys {
                    image_key,
                    need_split,
                },
                fault: &fault,
            };
            let entries = list.deserialize(&mut de)?;
            de.end()?;
            Ok(entries)
        });
    parsed.map_err(|e| refusal(&name, e, fault.into_inner()).into())
}

/// Skips a UTF-8 byte order mark at the start of `reader`.
fn skip_bom(reader: &mut impl BufRead) -> std::io::Result<()> {
    let head = reader.fill_buf()?;
    if head.starts_with(UTF8_BOM) {
        reader.consume(UTF8_BOM.len());
    }
    Ok(())
}

/// The one-line refusal of annotation file `name` for `e`, given the entry fault recorded (which
/// counts only when `e` is about the data, not the JSON's syntax).
fn refusal(name: &str, e: serde_json::Error, fault: Option<(usize, String)>) -> UsageError {
    use serde_json::error::Category;
    match (e.classify(), fault) {
        (Category::Data, Some((i, m))) => UsageError(format!("{name} entry {i}: {m}")),
        (Category::Io, _) => {
            let io = std::io::Error::from(e);
            match io.get_ref().and_then(|r| r.downcast_ref::<InvalidUtf8>()) {
                Some(InvalidUtf8(at)) => UsageError(format!(
                    "{name}: invalid UTF-8 at byte offset {at} (expected UTF-8 JSON)"
                )),
                None => UsageError(format!("cannot read {name}: {io}")),
            }
        }
        (_, _) => UsageError(format!(
            "{name}: invalid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        )),
    }
}

/// A reader's bytes at this offset do not start a valid UTF-8 character.
#[derive(Debug)]
struct InvalidUtf8(u64);

impl std::fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid UTF-8 at byte offset {}", self.0)
    }
}

impl std::error::Error for InvalidUtf8 {}

/// A reader that checks that what it passes on is UTF-8, failing with [`InvalidUtf8`].
struct Utf8Checked<R> {
    inner: R,
    /// Bytes passed on and checked, not counting `pending`.
    offset: u64,
    /// The start of a character split between two reads.
    pending: Vec<u8>,
}

impl<R: Read> Read for Utf8Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let bad = |at: u64| std::io::Error::new(std::io::ErrorKind::InvalidData, InvalidUtf8(at));
        let n = self.inner.read(buf)?;
        if n == 0 && !self.pending.is_empty() {
            return Err(bad(self.offset));
        }
        let mut start = 0;
        while !self.pending.is_empty() && start < n {
            self.pending.push(buf[start]);
            start += 1;
            match std::str::from_utf8(&self.pending) {
                Ok(_) => {
                    self.offset += self.pending.len() as u64;
                    self.pending.clear();
                }
                Err(e) if e.error_len().is_some() => return Err(bad(self.offset)),
                Err(_) => {}
            }
        }
        match std::str::from_utf8(&buf[start..n]) {
            Ok(_) => self.offset += (n - start) as u64,
            Err(e) => {
                let valid = e.valid_up_to();
                if e.error_len().is_some() {
                    return Err(bad(self.offset + valid as u64));
                }
                self.offset += valid as u64;
                self.pending.extend_from_slice(&buf[start + valid..n]);
            }
        }
        Ok(n)
    }
}

/// What an entry's keys are.
#[derive(Clone, Copy)]
struct Keys<'a> {
    image_key: &'a str,
    need_split: bool,
}

/// The list of entries; the first entry that fails records its index and what is wrong.
struct EntryList<'a> {
    keys: Keys<'a>,
    fault: &'a RefCell<Option<(usize, String)>>,
}

impl<'de> DeserializeSeed<'de> for EntryList<'_> {
    type Value = Vec<(Option<String>, Entry)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntryList<'_> {
    type Value = Vec<(Option<String>, Entry)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of annotation entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let mut fault = None;
            let next = seq.next_element_seed(OneEntry {
                keys: self.keys,
                fault: &mut fault,
            });
            match next {
                Ok(Some(e)) => out.push(e),
                Ok(None) => return Ok(out),
                Err(e) => {
                    let why = fault.unwrap_or_else(|| "expected an object".to_string());
                    *self.fault.borrow_mut() = Some((out.len(), why));
                    return Err(e);
                }
            }
        }
    }
}

/// One entry; what is wrong with it goes to `fault`.
struct OneEntry<'a> {
    keys: Keys<'a>,
    fault: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for OneEntry<'_> {
    type Value = (Option<String>, Entry);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OneEntry<'_> {
    type Value = (Option<String>, Entry);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an annotation entry (an object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let image_key = self.keys.image_key;
        let (mut split, mut id, mut path, mut captions) = (None, None, None, None);
        let fault = self.fault;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "split" => {
                    split = Some(typed(map.next_value(), fault, || {
                        "`split` must be a string".into()
                    })?)
                }
                "id" => {
                    id = Some(typed(map.next_value(), fault, || {
                        "`id` must be an integer".into()
                    })?)
                }
                "captions" => {
                    captions = Some(typed(map.next_value(), fault, || {
                        "`captions` must be a list of strings".into()
                    })?)
                }
                k if k == image_key => {
                    path = Some(typed(map.next_value(), fault, || {
                        format!("`{image_key}` must be a string")
                    })?)
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = [
            ("split", split.is_none() && self.keys.need_split),
            ("id", id.is_none()),
            (image_key, path.is_none()),
            ("captions", captions.is_none()),
        ]
        .into_iter()
        .find(|(_, absent)| *absent);
        if let Some((k, _)) = missing {
            let why = format!("missing key `{k}`");
            *fault = Some(why.clone());
            return Err(de::Error::custom(why));
        }
        let entry = Entry {
            split: String::new(),
            id: id.unwrap_or_default(),
            path: path.unwrap_or_default(),
            captions: captions.unwrap_or_default(),
        };
        Ok((split, entry))
    }
}

/// `value`; when it is an error (a value of the wrong type), the entry's fault is `why`.
fn typed<T, E>(
    value: Result<T, E>,
    fault: &mut Option<String>,
    why: impl FnOnce() -> String,
) -> Result<T, E> {
    value.inspect_err(|_| *fault = Some(why()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte per read, so every character is split between reads.
    struct ByteByByte<'a>(&'a [u8]);

    impl Read for ByteByByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    /// Everything `bytes` gives through [`Utf8Checked`], or the offset it refuses.
    fn checked(bytes: &[u8]) -> Result<Vec<u8>, u64> {
        let mut out = Vec::new();
        let mut reader = Utf8Checked {
            inner: ByteByByte(bytes),
            offset: 0,
            pending: Vec::new(),
        };
        match reader.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) => Err(e
                .get_ref()
                .and_then(|r| r.downcast_ref::<InvalidUtf8>())
                .expect("an InvalidUtf8 error")
                .0),
        }
    }

    #[test]
    fn utf8_is_checked_across_reads_and_refused_by_offset() {
        let text = "a é ü € 𝄞 z".as_bytes();
        assert_eq!(checked(text), Ok(text.to_vec()));
        // A Latin-1 é (0xE9) before an ASCII letter, a lone continuation byte, a sequence cut
        // off by the end.
        assert_eq!(checked(b"ab\xE9l"), Err(2));
        assert_eq!(checked("é\u{80}".as_bytes()).map(|_| ()), Ok(()));
        assert_eq!(checked(b"abc\x80"), Err(3));
        assert_eq!(checked("ab\u{20AC}".as_bytes()[..4].as_ref()), Err(2));
    }
}
