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

/// Reads every tensor (on the CPU) and the metadata of a safetensors file.
pub fn load(path: &Path) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
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
        std::fs::write(&p, &std::fs::read(&p).unwrap()[..40]).unwrap();
        let err = format!("{:#}", load(&p).unwrap_err());
        assert!(err.contains("not a valid safetensors file"), "{err}");
    }
}
