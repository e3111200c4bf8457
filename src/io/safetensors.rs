//! Safetensors files: named tensors plus string metadata, written atomically (checkpoints, feature
//! files, caches).
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        other => bail!("cannot store tensors of kind {other:?}"),
    })
}

/// A tensor as safetensors writes it: a contiguous CPU tensor's bytes are borrowed where they
/// lie; any other tensor is copied to the host (once) when its turn to be written comes, one at a
/// time.
struct Entry {
    t: Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
    len: usize,
}

impl View for &Entry {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if self.len == 0 {
            return Cow::Borrowed(&[]); // an empty tensor may have no data pointer
        }
        let host = |t: &Tensor| t.device() == tch::Device::Cpu && t.is_contiguous();
        match host(&self.t) {
            // SAFETY: a contiguous CPU tensor of exactly `len` (> 0) bytes, alive as long as
            // `self`.
            true => Cow::Borrowed(unsafe {
                std::slice::from_raw_parts(self.t.data_ptr() as *const u8, self.len)
            }),
            false => {
                // One host copy: the tensor is copied straight into the buffer written.
                let mut buf = vec![0u8; self.len];
                let size = self.t.size();
                // SAFETY: `buf` holds exactly `len` bytes, a contiguous tensor of this size and
                // kind; the tensor over it is dropped before `buf` is returned.
                let mut host = unsafe {
                    Tensor::from_blob(
                        buf.as_mut_ptr(),
                        &size,
                        &contiguous_strides(&size),
                        self.t.kind(),
                        tch::Device::Cpu,
                    )
                };
                host.copy_(&self.t);
                drop(host);
                Cow::Owned(buf)
            }
        }
    }

    fn data_len(&self) -> usize {
        self.len
    }
}

/// Row-major strides of a tensor of `size`.
fn contiguous_strides(size: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * size[i + 1].max(1);
    }
    strides
}

/// Writes `tensors` (any device) and `metadata` to `path` atomically: a crash or a failed write
/// leaves the previous file intact and no partial file behind. The data streams to the file:
/// CPU tensors are not copied, others are copied to the host one at a time.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let mut entries: Vec<(String, Entry)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach();
        entries.push((
            name.clone(),
            Entry {
                dtype: dtype_of(t.kind()).with_context(|| format!("tensor {name}"))?,
                shape: t.size().iter().map(|&d| d as usize).collect(),
                len: t.numel() * t.kind().elt_size_in_bytes(),
                t,
            },
        ));
    }
    let views = entries.iter().map(|(name, e)| (name.as_str(), e));
    let metadata = Some(metadata.clone());
    super::atomic::write_atomic_at(path, |tmp| {
        safetensors::serialize_to_file(views, &metadata, tmp).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(e) => e.into(),
            other => anyhow::anyhow!("{other:?}"),
        })
    })
}

/// A safetensors file's content: named tensors and string metadata.
pub type Contents = (Vec<(String, Tensor)>, HashMap<String, String>);

/// One tensor's entry in a safetensors header.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The tensor kind of a safetensors dtype name.
fn kind_of(dtype: &str) -> Option<Kind> {
    Some(match dtype {
        "F32" => Kind::Float,
        "F64" => Kind::Double,
        "F16" => Kind::Half,
        "BF16" => Kind::BFloat16,
        "I64" => Kind::Int64,
        "I32" => Kind::Int,
        "I16" => Kind::Int16,
        "I8" => Kind::Int8,
        "U8" => Kind::Uint8,
        "BOOL" => Kind::Bool,
        _ => return None,
    })
}

/// Headers larger than this are refused (the safetensors format's own limit, 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// Reads every tensor (on the CPU) and the metadata of a safetensors file. The file is checked
/// before any tensor is made, and a failure says which check: the header's length, its JSON, a
/// tensor's dtype, its shape against its bytes, its offsets against the data (which the tensors
/// must cover exactly, as the format requires). Errors are usage errors naming the file.
pub fn load(path: &Path) -> Result<Contents> {
    let fail = |what: String| -> anyhow::Error {
        crate::UsageError(format!("{}: {what}", path.display())).into()
    };
    if !path.is_file() {
        return Err(fail("no such file (expected a safetensors file)".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot be read ({e})")))?;
    let (entries, metadata, data) = parse(&bytes).map_err(fail)?;
    let tensors = entries
        .into_iter()
        .map(|(name, kind, shape, (begin, end))| {
            let t = Tensor::f_from_data_size(&data[begin as usize..end as usize], &shape, kind)
                .map_err(|e| fail(format!("tensor `{name}`: {e}")))?;
            Ok((name, t))
        })
        .collect::<Result<_>>()?;
    Ok((tensors, metadata))
}

/// A tensor of a header: name, kind, shape, byte range in the data.
type Parsed = (String, Kind, Vec<i64>, (u64, u64));

/// A file's tensors, its string metadata and its data section.
type Header<'a> = (Vec<Parsed>, HashMap<String, String>, &'a [u8]);

/// The checked header of a safetensors file and its data section.
fn parse(bytes: &[u8]) -> std::result::Result<Header<'_>, String> {
    let not = "not a safetensors file (";
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "{not}{} bytes, shorter than the 8-byte header length)",
                bytes.len()
            )
        })?;
    let n = u64::from_le_bytes(len_bytes);
    let rest = bytes.len() as u64 - 8;
    if n > MAX_HEADER || n > rest {
        return Err(format!(
            "{not}its header length field says {n} bytes, but {rest} bytes follow and at most {MAX_HEADER} are allowed: truncated or not this format)"
        ));
    }
    let (header, data) = bytes[8..].split_at(n as usize);
    let header = std::str::from_utf8(header)
        .map_err(|_| format!("{not}its {n}-byte header is not UTF-8)"))?;
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(header)
        .map_err(|e| format!("{not}its header is not a JSON object: {e})"))?;
    let mut metadata = HashMap::new();
    let mut entries = Vec::new();
    for (name, v) in fields {
        if name == "__metadata__" {
            metadata = serde_json::from_value(v)
                .map_err(|e| format!("header `__metadata__` is not a map of strings ({e})"))?;
            continue;
        }
        let e: HeaderEntry = serde_json::from_value(v).map_err(|e| {
            format!("tensor `{name}`: header entry is not {{dtype, shape, data_offsets}} ({e})")
        })?;
        let kind = kind_of(&e.dtype)
            .ok_or_else(|| format!("tensor `{name}`: dtype {:?} is not one ccma reads (F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL)", e.dtype))?;
        let (begin, end) = e.data_offsets;
        let size = e
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(kind.elt_size_in_bytes() as u64))
            .filter(|_| e.shape.iter().all(|&d| d <= i64::MAX as u64))
            .ok_or_else(|| format!("tensor `{name}`: shape {:?} has too many elements", e.shape))?;
        if begin > end || end > data.len() as u64 {
            return Err(format!(
                "tensor `{name}`: data offsets [{begin}, {end}] lie outside the {} bytes of data (truncated or corrupt)",
                data.len()
            ));
        }
        if end - begin != size {
            return Err(format!(
                "tensor `{name}`: shape {:?} of {} needs {size} bytes, its data offsets [{begin}, {end}] hold {}",
                e.shape,
                e.dtype,
                end - begin
            ));
        }
        let shape = e.shape.iter().map(|&d| d as i64).collect();
        entries.push((name, kind, shape, (begin, end)));
    }
    entries.sort_by_key(|e| e.3);
    let mut at = 0;
    for (name, _, _, (begin, end)) in &entries {
        if *begin != at {
            return Err(format!(
                "tensor `{name}`: data offsets [{begin}, {end}] overlap another tensor or leave a gap before it (corrupt)"
            ));
        }
        at = *end;
    }
    if at != data.len() as u64 {
        return Err(format!(
            "the tensors cover {at} of the {} bytes of data (corrupt)",
            data.len()
        ));
    }
    Ok((entries, metadata, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_kinds_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let a = Tensor::randn([3, 4], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::from_slice(&[1i64, -2, 3]);
        // Not contiguous: copied to the host rather than borrowed.
        let c = Tensor::randn([2, 3, 5], (Kind::Half, tch::Device::Cpu)).transpose(0, 2);
        let empty = Tensor::zeros([0, 4], (Kind::Float, tch::Device::Cpu));
        let meta = HashMap::from([("epoch".to_string(), "7".to_string())]);
        save(
            &p,
            &[
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
                ("c".into(), c.shallow_clone()),
                ("empty".into(), empty.shallow_clone()),
            ],
            &meta,
        )
        .unwrap();
        let (t, m) = load(&p).unwrap();
        let get = |n: &str| &t.iter().find(|(k, _)| k == n).unwrap().1;
        assert!(get("a").equal(&a));
        assert!(get("b").equal(&b));
        assert_eq!(
            (get("c").kind(), get("c").size()),
            (Kind::Half, vec![5, 3, 2])
        );
        assert!(get("c").equal(&c));
        assert_eq!(get("empty").size(), [0, 4]);
        assert_eq!(m["epoch"], "7");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..40]).unwrap();
        let err = format!("{:#}", load(&p).unwrap_err());
        assert!(err.contains("header length field says"), "{err}");
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        for (from, to, needle) in [
            ("\"F32\"", "\"F9\"", "dtype \"F9\" is not one ccma reads"),
            ("[3,4]", "[3,5]", "shape [3, 5] of F32 needs 60 bytes"),
            ("[3,4]", "[0,4]", "shape [0, 4] of F32 needs 0 bytes"),
            (
                "\"dtype\"",
                "\"dtyp\"",
                "is not {dtype, shape, data_offsets}",
            ),
            ("{", "[", "header is not a JSON object"),
        ] {
            let edited = header.replacen(from, to, 1);
            assert_ne!(edited, header, "{from}");
            let mut b = (edited.len() as u64).to_le_bytes().to_vec();
            b.extend(edited.as_bytes());
            b.extend(&bytes[8 + n..]);
            std::fs::write(&p, &b).unwrap();
            let err = format!("{:#}", load(&p).unwrap_err());
            assert!(err.contains(needle), "{from}: {err}");
        }
    }
}
