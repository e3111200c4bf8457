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

/// Reads every tensor (on the CPU) and the metadata of a safetensors file.
pub fn load(path: &Path) -> Result<Contents> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        anyhow::anyhow!("{} is not a valid safetensors file: {e:?}", path.display())
    })?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    Ok((tensors, metadata))
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
        std::fs::write(&p, &std::fs::read(&p).unwrap()[..40]).unwrap();
        let err = format!("{:#}", load(&p).unwrap_err());
        assert!(err.contains("not a valid safetensors file"), "{err}");
    }
}
