//! Safetensors files: named tensors plus string metadata, written atomically (checkpoints, feature
//! files, caches).
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
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

/// Writes `tensors` (any device; copied to the CPU) and `metadata` to `path` atomically: a crash or
/// a failed write leaves the previous file intact and no partial file behind.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let mut host: Vec<(String, Tensor, Dtype)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        host.push((
            name.clone(),
            t.shallow_clone(),
            dtype_of(t.kind()).with_context(|| format!("tensor {name}"))?,
        ));
    }
    let bytes: Vec<Vec<u8>> = host
        .iter()
        .map(|(_, t, _)| {
            let n = t.numel() * t.kind().elt_size_in_bytes();
            let mut buf = vec![0u8; n];
            // SAFETY: `t` is a contiguous CPU tensor of exactly `n` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(t.data_ptr() as *const u8, buf.as_mut_ptr(), n)
            };
            buf
        })
        .collect();
    let views: Vec<(String, TensorView)> = host
        .iter()
        .zip(&bytes)
        .map(|((name, t, dtype), b)| {
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            Ok((name.clone(), TensorView::new(*dtype, shape, b)?))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let data = safetensors::serialize(views, &Some(metadata.clone()))?;
    super::write_atomic(path, &data)
}

/// One tensor's entry in a safetensors header.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
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
pub fn load(path: &Path) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
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

/// The checked header of a safetensors file and its data section.
fn parse(bytes: &[u8]) -> std::result::Result<(Vec<Parsed>, HashMap<String, String>, &[u8]), String> {
    let not = "not a safetensors file (";
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{not}{} bytes, shorter than the 8-byte header length)", bytes.len()))?;
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
        let e: Entry = serde_json::from_value(v).map_err(|e| {
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
        let meta = HashMap::from([("epoch".to_string(), "7".to_string())]);
        save(
            &p,
            &[
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            &meta,
        )
        .unwrap();
        let (t, m) = load(&p).unwrap();
        let get = |n: &str| &t.iter().find(|(k, _)| k == n).unwrap().1;
        assert!(get("a").equal(&a));
        assert!(get("b").equal(&b));
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
            ("\"dtype\"", "\"dtyp\"", "is not {dtype, shape, data_offsets}"),
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
