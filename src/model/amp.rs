//! Mixed precision: the training forward under CUDA autocast in bf16 with fp32 master weights,
//! and the float32 matmul precision on CUDA (the CPU's stays IEEE fp32).
//!
//! Autocast is switched through libtorch's device-typed functions
//! (`at::autocast::set_autocast_enabled(kCUDA, ..)`, `set_autocast_dtype(kCUDA, ..)`) in the shim:
//! `tch::autocast` calls the device-less `is_enabled` / `set_enabled`, deprecated in libtorch
//! 2.11 and warning on every call, and leaves the type at libtorch's default, fp16, which needs
//! loss scaling. Autocast state is thread-local; a region restores what it found.
use crate::shim;
use anyhow::{anyhow, Result};
use std::ffi::c_int;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// `c10::ScalarType` codes of the autocast candidates.
const SCALAR_TYPES: [(Kind, c_int); 3] = [(Kind::Half, 5), (Kind::Float, 6), (Kind::BFloat16, 15)];

fn scalar_type(kind: Kind) -> c_int {
    SCALAR_TYPES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, c)| *c)
        .expect("an autocast candidate type")
}

/// CUDA autocast on this thread: whether it is on, and its lower-precision type (None if not
/// one of the candidates).
pub fn cuda_autocast() -> (bool, Option<Kind>) {
    // SAFETY: reads thread-local state.
    let state = unsafe { shim::ccma_autocast_cuda_state() };
    let code = state >> 8;
    let kind = SCALAR_TYPES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(k, _)| *k);
    (state & 1 != 0, kind)
}

/// Closes an autocast region on drop (so a panic inside it restores the thread's state too).
struct Region(c_int);

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `self.0` is what `ccma_autocast_cuda_enter` returned on this thread.
        unsafe { shim::ccma_autocast_cuda_exit(self.0) }
    }
}

/// Runs `f` under bf16 autocast when `device` is CUDA, plainly (fp32) otherwise: one region per
/// call, so a training forward opens one. If libtorch refuses bf16, `f` runs in fp32 (and a
/// warning is logged once).
pub fn autocast<T>(device: Device, f: impl FnOnce() -> T) -> T {
    if !device.is_cuda() {
        return f();
    }
    // SAFETY: changes thread-local autocast state, restored by `Region`.
    let previous = unsafe { shim::ccma_autocast_cuda_enter(scalar_type(Kind::BFloat16)) };
    if previous < 0 {
        static WARNED: OnceLock<()> = OnceLock::new();
        WARNED.get_or_init(|| tracing::warn!("libtorch refuses bf16 autocast: running in fp32"));
        return f();
    }
    let _region = Region(previous);
    f()
}

/// The type a linear layer returns inside the region [`autocast`] opens on `device`: `bf16`,
/// `fp16`, or `off` (it returned f32: no autocast, as on the CPU). A probe of two small constant
/// matrices, run without grad; it draws nothing from libtorch's generator.
pub fn autocast_in_effect(device: Device) -> &'static str {
    let x = Tensor::ones([2, 8], (Kind::Float, device));
    let w = Tensor::ones([4, 8], (Kind::Float, device));
    let out = autocast(device, || tch::no_grad(|| x.linear::<Tensor>(&w, None)));
    match out.kind() {
        Kind::BFloat16 => "bf16",
        Kind::Half => "fp16",
        _ => "off",
    }
}

/// Switches CUDA autocast back on on drop where it was on (`.0`).
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: thread-local state, switched off by `full_precision` on this thread.
            unsafe { shim::ccma_autocast_cuda_set_enabled(1) };
        }
    }
}

/// Runs `f` with autocast off: what must stay in fp32 inside an autocast region (the retrieval
/// projections, DCA's difference of attention maps) casts its inputs to f32 and runs in here.
/// Outside a region it is `f()`.
pub fn full_precision<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: thread-local state; switched back on below where it was on.
    let _back = Restore(unsafe { shim::ccma_autocast_cuda_set_enabled(0) } != 0);
    f()
}

/// `t` in f32 when it is in a 16-bit float type, as it is otherwise (f32, f64).
pub fn at_least_f32(t: &Tensor) -> Tensor {
    match t.kind() {
        Kind::Half | Kind::BFloat16 => t.to_kind(Kind::Float),
        _ => t.shallow_clone(),
    }
}

/// Sets the float32 precision of every CUDA matmul in this process from the `matmul_precision`
/// names of `torch.set_float32_matmul_precision`: `highest` (IEEE fp32), `high` (TF32) or
/// `medium` (TF32 too: on CUDA, libtorch 2.11 gives `medium` TF32 matmuls). The CPU's (oneDNN's)
/// float32 matmuls stay IEEE fp32 whatever the setting, so CPU features do not depend on it.
pub fn set_cuda_matmul_precision(precision: &str) -> Result<()> {
    let tf32 = match precision {
        "highest" => 0,
        "high" | "medium" => 1,
        _ => {
            return Err(anyhow!(
                "matmul precision {precision:?}: expected highest, high or medium"
            ))
        }
    };
    // SAFETY: sets a process-wide setting.
    unsafe { shim::ccma_set_cuda_matmul_tf32(tf32) };
    Ok(())
}

/// The float32 precision of CUDA's and of the CPU's (oneDNN's) matmuls, as libtorch reports it:
/// `ieee`, `tf32`, `bf16`, or `default` (none set: IEEE).
pub fn matmul_precisions() -> (&'static str, &'static str) {
    let name = |backend| {
        // SAFETY: reads a process-wide setting.
        match unsafe { shim::ccma_matmul_precision(backend) } {
            1 => "ieee",
            2 => "tf32",
            3 => "bf16",
            _ => "default",
        }
    };
    (name(0), name(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cuda_region_is_bf16_has_fp32_islands_and_restores_the_thread() {
        assert_eq!(
            cuda_autocast(),
            (false, Some(Kind::Half)),
            "libtorch's default"
        );
        let inside = autocast(Device::Cuda(0), || {
            let island = full_precision(cuda_autocast);
            let nested = autocast(Device::Cuda(0), cuda_autocast);
            (cuda_autocast(), island, nested, cuda_autocast())
        });
        let on = (true, Some(Kind::BFloat16));
        assert_eq!(inside, (on, (false, Some(Kind::BFloat16)), on, on));
        assert_eq!(cuda_autocast(), (false, Some(Kind::Half)), "restored");
        assert_eq!(full_precision(cuda_autocast), (false, Some(Kind::Half)));
        assert_eq!(cuda_autocast(), (false, Some(Kind::Half)), "still off");
        autocast(Device::Cpu, || assert!(!cuda_autocast().0));
        assert_eq!(autocast_in_effect(Device::Cpu), "off");
    }

    /// The CPU's matmuls are never touched, so tests running beside this one compute as before.
    #[test]
    fn the_matmul_precision_is_set_on_cuda_only() {
        assert_eq!(matmul_precisions().1, "default", "libtorch's");
        for (name, cuda) in [("medium", "tf32"), ("high", "tf32"), ("highest", "ieee")] {
            set_cuda_matmul_precision(name).unwrap();
            assert_eq!(matmul_precisions(), (cuda, "default"), "{name}");
        }
        let err = set_cuda_matmul_precision("fastest")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"fastest\""), "{err}");
        assert_eq!(matmul_precisions(), ("ieee", "default"));
    }
}
