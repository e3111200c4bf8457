//! Tensor views: a tensor rebuilt from its storage by offset, sizes and strides, checked to stay
//! inside the storage.
use super::budget::Budget;
use anyhow::{bail, Context, Result};
use tch::Tensor;

/// Dimensions a tensor may have.
const MAX_DIMS: usize = 32;

/// A copy of the view `(offset, size, stride)` of `storage`, once its element count is within
/// `budget` and its extent within the storage.
pub(super) fn view(
    storage: &Tensor,
    offset: i64,
    size: &[i64],
    stride: &[i64],
    budget: &mut Budget,
) -> Result<Tensor> {
    let describe = || format!("tensor with size {size:?}, stride {stride:?}, offset {offset}");
    if size.len() != stride.len()
        || size.len() > MAX_DIMS
        || size.iter().any(|&s| s < 0)
        || stride.iter().any(|&s| s < 0)
        || offset < 0
    {
        bail!("{} is malformed", describe());
    }
    let kind = storage.kind();
    let bytes = size
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64))
        .and_then(|n| n.checked_mul(kind.elt_size_in_bytes() as u64))
        .with_context(|| format!("{} has too many elements", describe()))?;
    budget.charge(bytes, &describe)?;
    let numel = storage.numel() as i64;
    if bytes == 0 {
        return Ok(Tensor::f_zeros(size, (kind, tch::Device::Cpu))?);
    }
    let last = size.iter().zip(stride).try_fold(offset, |acc, (&n, &s)| {
        (n - 1).checked_mul(s).and_then(|d| acc.checked_add(d))
    });
    match last {
        Some(last) if last < numel => Ok(storage
            .f_as_strided(size, stride, Some(offset))?
            .f_contiguous()?),
        _ => bail!(
            "{} reaches past its storage of {numel} elements",
            describe()
        ),
    }
}
