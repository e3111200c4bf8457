//! The C interface of the shim in `csrc/`: c10d (`c10d.cpp`, for the process groups of
//! [`crate::dist`]) and what `tch` does not bind (`torch_ext.cpp`: CUDA autocast and matmul
//! precision for [`crate::model::amp`], pinned host memory for [`crate::data::host_buffer`], fused Adam and the
//! foreach zeroing of gradients for [`crate::train::optimizer`], gradients as views of a flat
//! buffer for [`crate::train::parallel`], the CUDA caching allocator's statistics for
//! [`crate::device`]). Tensors cross as `tch`'s `at::Tensor` pointers; a failed call
//! returns null or 0 and leaves a `malloc`ed message in `err`.
use std::ffi::{c_char, c_int, c_void};
use tch::Tensor;

/// An `at::Tensor*` (what `tch`'s `Tensor::as_mut_ptr` gives).
type CTensor = c_void;

extern "C" {
    pub fn ccma_string_free(s: *mut c_char);
    pub fn ccma_nccl_compiled() -> c_int;
    pub fn ccma_nccl_runtime_version() -> *mut c_char;
    pub fn ccma_group_new(
        backend: *const c_char,
        master_addr: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        device: c_int,
        interface: *const c_char,
        hostname: *const c_char,
        run_id: *const c_char,
        refused: *mut c_int,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    pub fn ccma_group_free(group: *mut c_void);
    pub fn ccma_all_reduce_sum(group: *mut c_void, t: *mut CTensor, err: *mut *mut c_char)
        -> c_int;
    pub fn ccma_all_gather(
        group: *mut c_void,
        t: *mut CTensor,
        err: *mut *mut c_char,
    ) -> *mut CTensor;
    pub fn ccma_broadcast(
        group: *mut c_void,
        t: *mut CTensor,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn ccma_store_set(
        group: *mut c_void,
        key: *const c_char,
        value: *const c_char,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn ccma_store_get(
        group: *mut c_void,
        key: *const c_char,
        timeout_ms: i64,
        value: *mut *mut c_char,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn ccma_store_check(
        group: *mut c_void,
        key: *const c_char,
        present: *mut c_int,
        err: *mut *mut c_char,
    ) -> c_int;

    pub fn ccma_autocast_cuda_state() -> c_int;
    pub fn ccma_autocast_cuda_enter(dtype: c_int) -> c_int;
    pub fn ccma_autocast_cuda_exit(previous: c_int);
    pub fn ccma_autocast_cuda_set_enabled(enabled: c_int) -> c_int;
    pub fn ccma_set_cuda_matmul_tf32(tf32: c_int);
    pub fn ccma_matmul_precision(backend: c_int) -> c_int;
    pub fn ccma_empty_pinned(
        like: *mut CTensor,
        sizes: *const i64,
        ndim: c_int,
        device: c_int,
        err: *mut *mut c_char,
    ) -> *mut CTensor;
    pub fn ccma_cuda_memory(device: c_int, out: *mut i64, err: *mut *mut c_char) -> c_int;
    pub fn ccma_cuda_reset_peak(device: c_int, err: *mut *mut c_char) -> c_int;
    pub fn ccma_foreach_zero(ts: *const *mut CTensor, n: i64, err: *mut *mut c_char) -> c_int;
    pub fn ccma_set_grad(var: *mut CTensor, grad: *mut CTensor, err: *mut *mut c_char) -> c_int;
    pub fn ccma_fused_adam(
        params: *const *mut CTensor,
        grads: *const *mut CTensor,
        exp_avgs: *const *mut CTensor,
        exp_avg_sqs: *const *mut CTensor,
        n: i64,
        step: *mut CTensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        decoupled: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
}

/// Runs a shim call that reports failure through `err`: its result, or the shim's message.
pub fn call<T>(
    f: impl FnOnce(*mut *mut c_char) -> T,
    failed: impl Fn(&T) -> bool,
) -> Result<T, String> {
    let mut err: *mut c_char = std::ptr::null_mut();
    let out = f(&mut err);
    match failed(&out) {
        true => Err(take_string(err).unwrap_or_else(|| "unknown error".into())),
        false => Ok(out),
    }
}

/// `ccma_group_new`'s `refused`: rank 0 cannot serve the store on its port (`ccma::Refusal` in
/// `csrc/rendezvous.hpp`).
pub const REFUSED_PORT_UNAVAILABLE: c_int = 1;
/// `ccma_group_new`'s `refused`: the store on the port is another run's; `err` is that run's id.
pub const REFUSED_OTHER_RUN: c_int = 2;

/// Takes ownership of a string the shim allocated.
pub fn take_string(s: *mut c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string from `copy_string` in the shim, freed once here.
    let text = unsafe { std::ffi::CStr::from_ptr(s) }
        .to_string_lossy()
        .into_owned();
    unsafe { ccma_string_free(s) };
    Some(text)
}

/// A tensor the shim returned (a new `at::Tensor` on the heap).
pub fn take_tensor(t: *mut CTensor) -> Tensor {
    // SAFETY: the shim allocates it with `new at::Tensor`, which `tch` frees on drop.
    unsafe { Tensor::from_ptr(t.cast()) }
}
