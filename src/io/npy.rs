//! NumPy's `.npy` format for 1-D integer arrays (format versions 1.0, 2.0 and 3.0): reading one
//! written elsewhere (int64 or int32, either byte order, C order) and writing one (`<i8`, version
//! 1.0, the header padded to 64 bytes as NumPy pads it). A file from elsewhere is hostile: its
//! header is bounded, its length is checked against the header before any array is allocated, and
//! every refusal is one line naming the file and what was expected.
use super::regular_file::open_regular_file;
use crate::UsageError;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The magic string that opens every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The longest header read: NumPy's own default limit (`max_header_size`, 10,000 bytes).
pub const MAX_HEADER_BYTES: usize = 10_000;
/// The header and the data start at a multiple of this (NumPy's `ARRAY_ALIGN`).
const ALIGN: usize = 64;

/// The integer types read, as NumPy's `descr` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntType {
    I64 { big_endian: bool },
    I32 { big_endian: bool },
}

impl IntType {
    fn from_descr(descr: &str) -> Option<IntType> {
        match descr {
            "<i8" => Some(IntType::I64 { big_endian: false }),
            ">i8" => Some(IntType::I64 { big_endian: true }),
            "<i4" => Some(IntType::I32 { big_endian: false }),
            ">i4" => Some(IntType::I32 { big_endian: true }),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            IntType::I64 { .. } => 8,
            IntType::I32 { .. } => 4,
        }
    }

    fn decode(self, b: &[u8]) -> i64 {
        match self {
            IntType::I64 { big_endian } => {
                let a: [u8; 8] = b.try_into().expect("8 bytes");
                match big_endian {
                    true => i64::from_be_bytes(a),
                    false => i64::from_le_bytes(a),
                }
            }
            IntType::I32 { big_endian } => {
                let a: [u8; 4] = b.try_into().expect("4 bytes");
                i64::from(match big_endian {
                    true => i32::from_be_bytes(a),
                    false => i32::from_le_bytes(a),
                })
            }
        }
    }
}

/// An opened `.npy` file whose header says it holds a 1-D integer array of [`NpyVector::len`]
/// entries, and whose size agrees; the entries are read by [`NpyVector::read`].
pub struct NpyVector {
    file: File,
    path: PathBuf,
    what: String,
    dtype: IntType,
    len: usize,
}

/// A refusal of `what` at `path`: one line, "<what> <path>: <reason>".
fn refuse(what: &str, path: &Path, reason: impl std::fmt::Display) -> anyhow::Error {
    UsageError(format!("{what} {}: {reason}", path.display())).into()
}

impl NpyVector {
    /// Opens `path` (`what` names it in errors, e.g. "noise file") and checks its header: the
    /// magic string, a format version 1, 2 or 3, a header of at most [`MAX_HEADER_BYTES`], dtype
    /// int64 or int32 in either byte order, C order, rank 1, and a file exactly as long as that
    /// header and its entries.
    pub fn open(path: &Path, what: &str) -> Result<NpyVector> {
        let (mut file, meta) = open_regular_file(path, what)?;
        let io = || format!("cannot read {what} {}", path.display());
        let mut pre = [0u8; 8];
        let got = read_up_to(&mut file, &mut pre).with_context(io)?;
        if got < 8 || &pre[..6] != MAGIC {
            bail!(refuse(
                what,
                path,
                "not a NumPy .npy file (expected the magic string \\x93NUMPY)"
            ));
        }
        let (major, minor) = (pre[6], pre[7]);
        let len_bytes = match major {
            1 => 2,
            2 | 3 => 4,
            _ => bail!(refuse(
                what,
                path,
                format!("format version {major}.{minor} (expected 1.0, 2.0 or 3.0)")
            )),
        };
        let mut len_field = [0u8; 4];
        if read_up_to(&mut file, &mut len_field[..len_bytes]).with_context(io)? < len_bytes {
            bail!(refuse(what, path, "truncated in its header"));
        }
        let header_len = u32::from_le_bytes(len_field) as usize;
        if header_len > MAX_HEADER_BYTES {
            bail!(refuse(
                what,
                path,
                format!("a header of {header_len} bytes (expected at most {MAX_HEADER_BYTES})")
            ));
        }
        let mut header = vec![0u8; header_len];
        if read_up_to(&mut file, &mut header).with_context(io)? < header_len {
            bail!(refuse(what, path, "truncated in its header"));
        }
        let header = match (major, std::str::from_utf8(&header)) {
            (1 | 2, Ok(h)) if h.is_ascii() => h,
            (3, Ok(h)) => h,
            _ => bail!(refuse(
                what,
                path,
                "its header is not text (expected a Python dict literal)"
            )),
        };
        let fields = Header::parse(header).map_err(|e| refuse(what, path, e))?;
        let dtype = IntType::from_descr(&fields.descr).ok_or_else(|| {
            refuse(
                what,
                path,
                format!(
                    "dtype '{}' (expected int64 or int32: '<i8', '>i8', '<i4' or '>i4')",
                    fields.descr
                ),
            )
        })?;
        if fields.fortran_order {
            bail!(refuse(
                what,
                path,
                "Fortran order (expected C order, fortran_order False)"
            ));
        }
        let &[len] = fields.shape.as_slice() else {
            bail!(refuse(
                what,
                path,
                format!(
                    "an array of rank {} (shape {:?}; expected a 1-D array)",
                    fields.shape.len(),
                    fields.shape
                )
            ));
        };
        let offset = (8 + len_bytes + header_len) as u64;
        let expected = len
            .checked_mul(dtype.size() as u64)
            .and_then(|d| d.checked_add(offset));
        match expected {
            Some(e) if e == meta.len() => {}
            Some(e) if e > meta.len() => bail!(refuse(
                what,
                path,
                format!(
                    "truncated: {} bytes, expected {e} for {len} entries of {}",
                    meta.len(),
                    fields.descr
                )
            )),
            _ => bail!(refuse(
                what,
                path,
                format!(
                    "{} bytes, more than the {len} entries of {} its header names",
                    meta.len(),
                    fields.descr
                )
            )),
        }
        Ok(NpyVector {
            file,
            path: path.to_path_buf(),
            what: what.to_string(),
            dtype,
            len: len as usize,
        })
    }

    /// Entries the header names (the file's size agrees).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, as i64.
    pub fn read(mut self) -> Result<Vec<i64>> {
        let size = self.dtype.size();
        let mut bytes = vec![0u8; self.len * size];
        let got = read_up_to(&mut self.file, &mut bytes)
            .with_context(|| format!("cannot read {} {}", self.what, self.path.display()))?;
        if got < bytes.len() {
            bail!(refuse(
                &self.what,
                &self.path,
                "truncated while it was read"
            ));
        }
        Ok(bytes
            .chunks_exact(size)
            .map(|b| self.dtype.decode(b))
            .collect())
    }
}

/// Reads into `buf` until it is full or the file ends: the bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The three fields of a `.npy` header, a Python dict literal such as
/// `{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }`.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// A value of the header's dict.
#[derive(Debug)]
enum Literal {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

/// A cursor over the header's text.
struct Cursor<'a> {
    rest: &'a str,
}

impl Cursor<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', '\n', '\r']);
    }

    /// Consumes `token` (after spaces) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(token) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        match self.eat(token) {
            true => Ok(()),
            false => Err(format!("its header has no '{token}' where expected")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let quote = match self.rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err("its header has no quoted key where expected".into()),
        };
        let body = &self.rest[1..];
        let end = body
            .find(quote)
            .ok_or("its header has an unterminated string")?;
        let s = body[..end].to_string();
        if s.contains('\\') {
            return Err("its header has an escaped string (expected plain keys and dtypes)".into());
        }
        self.rest = &body[end + 1..];
        Ok(s)
    }

    fn number(&mut self) -> Result<u64, String> {
        self.skip_space();
        let digits = self.rest.len()
            - self
                .rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        let n = self.rest[..digits].parse().map_err(|_| {
            "its header's shape holds something other than whole numbers".to_string()
        })?;
        self.rest = &self.rest[digits..];
        Ok(n)
    }

    fn literal(&mut self) -> Result<Literal, String> {
        self.skip_space();
        if self.eat("True") {
            return Ok(Literal::Bool(true));
        }
        if self.eat("False") {
            return Ok(Literal::Bool(false));
        }
        if self.eat("(") {
            let mut dims = Vec::new();
            while !self.eat(")") {
                dims.push(self.number()?);
                if !self.eat(",") {
                    self.expect(")")?;
                    break;
                }
            }
            return Ok(Literal::Tuple(dims));
        }
        self.string().map(Literal::Str)
    }
}

impl Header {
    /// The fields of `text`, each of the three keys exactly once and no other.
    fn parse(text: &str) -> Result<Header, String> {
        let mut c = Cursor { rest: text };
        c.expect("{")?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        while !c.eat("}") {
            let key = c.string()?;
            c.expect(":")?;
            let value = c.literal()?;
            let slot_taken = match (key.as_str(), value) {
                ("descr", Literal::Str(s)) => descr.replace(s).is_some(),
                ("fortran_order", Literal::Bool(b)) => fortran.replace(b).is_some(),
                ("shape", Literal::Tuple(t)) => shape.replace(t).is_some(),
                (k @ ("descr" | "fortran_order" | "shape"), v) => {
                    return Err(format!("its header's '{k}' is {v:?}, of the wrong kind"))
                }
                (k, _) => {
                    return Err(format!(
                        "its header has the key '{k}' (expected only descr, fortran_order, shape)"
                    ))
                }
            };
            if slot_taken {
                return Err(format!("its header names '{key}' twice"));
            }
            if !c.eat(",") {
                c.expect("}")?;
                break;
            }
        }
        c.skip_space();
        if !c.rest.is_empty() {
            return Err("its header has text after the dict".into());
        }
        match (descr, fortran, shape) {
            (Some(descr), Some(fortran_order), Some(shape)) => Ok(Header {
                descr,
                fortran_order,
                shape,
            }),
            _ => Err("its header lacks one of descr, fortran_order, shape".into()),
        }
    }
}

/// `values` as a `.npy` file: format 1.0, dtype `<i8`, shape `(len,)`, as `np.save` writes an
/// int64 vector.
pub fn npy_bytes(values: &[i64]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let header_len = dict.len() + 1 + (ALIGN - unpadded % ALIGN) % ALIGN;
    let mut out = Vec::with_capacity(10 + header_len + 8 * values.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(10 + header_len - 1, b' ');
    out.push(b'\n');
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes `values` to `path` atomically as [`npy_bytes`] makes them.
pub fn write_npy(path: &Path, values: &[i64]) -> Result<()> {
    super::write_atomic(path, &npy_bytes(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_read_back_and_are_aligned() {
        let dir = tempfile::tempdir().unwrap();
        for values in [vec![], vec![3, -1, i64::MAX, i64::MIN], (0..1000).collect()] {
            let p = dir.path().join("a.npy");
            write_npy(&p, &values).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + header_len) % ALIGN, 0);
            assert_eq!(bytes[10 + header_len - 1], b'\n');
            let v = NpyVector::open(&p, "noise file").unwrap();
            assert_eq!(v.len(), values.len());
            assert_eq!(v.read().unwrap(), values);
        }
    }

    #[test]
    fn headers_parse_as_python_writes_them() {
        let h =
            Header::parse("{\"descr\": '>i4', 'shape': (3, 4), 'fortran_order': True}  ").unwrap();
        assert_eq!(
            h,
            Header {
                descr: ">i4".into(),
                fortran_order: true,
                shape: vec![3, 4]
            }
        );
        assert_eq!(
            Header::parse("{'descr': '<i8', 'fortran_order': False, 'shape': (), }")
                .unwrap()
                .shape,
            Vec::<u64>::new()
        );
        for bad in [
            "{'descr': '<i8', 'fortran_order': False}",
            "{'descr': '<i8', 'descr': '<i8', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<i8', 'fortran_order': 0, 'shape': (1,)}",
            "{'descr': '<i8', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), 'x': 1}",
            "{'descr': '<i8', 'fortran_order': False, 'shape': (1,)} x",
            "{'descr': '<i8",
        ] {
            assert!(Header::parse(bad).is_err(), "{bad}");
        }
    }
}
