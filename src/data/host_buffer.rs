//! Host tensors that batches are written into in place: allocated once per batch, in pinned
//! (page-locked) memory when the batch goes to a CUDA card (so that its copy there can be
//! asynchronous), and filled where they lie, with no intermediate buffer copied in.
use crate::shim;
use anyhow::{anyhow, Result};
use tch::kind::Element;
use tch::{Device, Tensor};

/// A new contiguous host tensor of `shape` and `T`'s type, its contents unset: in pinned memory
/// allocated for CUDA device `pin`, when given.
pub fn host_tensor<T: Element>(shape: &[i64], pin: Option<usize>) -> Result<Tensor> {
    let Some(device) = pin else {
        return Ok(Tensor::empty(shape, (T::KIND, Device::Cpu)));
    };
    let mut like = Tensor::empty([0], (T::KIND, Device::Cpu));
    // SAFETY: a live tensor and `shape.len()` sizes, alive until the call returns; the shim
    // returns a new tensor.
    shim::call(
        |err| unsafe {
            shim::ccma_empty_pinned(
                like.as_mut_ptr().cast(),
                shape.as_ptr(),
                shape.len() as i32,
                device as i32,
                err,
            )
        },
        |p| p.is_null(),
    )
    .map(shim::take_tensor)
    .map_err(|e| anyhow!("cannot allocate pinned host memory for cuda:{device}: {e}"))
}

/// The elements of `t`, a contiguous host tensor of `T`'s type made by [`host_tensor`] that
/// nothing else reads while the slice lives.
pub fn elements_mut<T: Element>(t: &mut Tensor) -> &mut [T] {
    assert!(
        t.kind() == T::KIND && t.device() == Device::Cpu && t.is_contiguous(),
        "a contiguous host tensor of the element type"
    );
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: checked above: `n` contiguous elements of type `T` on the host, borrowed mutably
    // through `t` for the slice's life.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, n) }
}

/// `values` in a new host tensor of `shape` (pinned for CUDA device `pin`, when given): one copy.
pub fn host_from_slice<T: Element + Copy>(
    values: &[T],
    shape: &[i64],
    pin: Option<usize>,
) -> Result<Tensor> {
    let mut t = host_tensor::<T>(shape, pin)?;
    elements_mut::<T>(&mut t).copy_from_slice(values);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_tensor_is_written_in_place() {
        let mut t = host_tensor::<f32>(&[2, 3], None).unwrap();
        elements_mut::<f32>(&mut t).copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(t.size(), [2, 3]);
        assert_eq!(t.double_value(&[1, 0]), 4.0);
        let ids = host_from_slice(&[7i64, 8, 9, 10], &[2, 2], None).unwrap();
        assert!(ids.equal(&Tensor::from_slice(&[7i64, 8, 9, 10]).view([2, 2])));
        assert_eq!(host_tensor::<i64>(&[0], None).unwrap().numel(), 0);
    }
}
