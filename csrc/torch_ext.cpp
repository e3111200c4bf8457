// What `tch` does not bind, for `src/shim.rs`: CUDA autocast through libtorch's device-typed
// functions, the float32 matmul precision of CUDA, pinning without the deprecated device argument,
// gradients (zeroed by one foreach call, or set to views of a flat buffer), the CUDA caching
// allocator's statistics and libtorch's fused Adam over tensor lists. Tensors are `at::Tensor*`, the pointers `tch` uses.
// Functions that can fail catch C++ exceptions and report them as a message in `*err` (free it
// with ccma_string_free).
#include "shim.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/DeviceGuard.h>

#include <string>
#include <vector>

namespace {

std::vector<at::Tensor> tensor_list(at::Tensor** ts, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(*ts[i]);
  }
  return out;
}

} // namespace

extern "C" {

// CUDA autocast's state on this thread: bit 0 whether it is enabled, bits 8-15 its
// lower-precision `c10::ScalarType`.
int ccma_autocast_cuda_state() {
  int enabled = at::autocast::is_autocast_enabled(at::kCUDA) ? 1 : 0;
  int dtype = static_cast<int>(at::autocast::get_autocast_dtype(at::kCUDA));
  return enabled | (dtype << 8);
}

// Enters a CUDA autocast region in `dtype` (a `c10::ScalarType` code), as `torch.autocast`'s
// `__enter__` does; returns the state to give `ccma_autocast_cuda_exit`, or -1 if libtorch
// refused the type.
int ccma_autocast_cuda_enter(int dtype) {
  int previous = ccma_autocast_cuda_state();
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, static_cast<at::ScalarType>(dtype));
  } catch (...) {
    return -1;
  }
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::increment_nesting();
  return previous;
}

// Leaves the region `ccma_autocast_cuda_enter` opened, restoring `previous`; the cast cache is
// cleared when the outermost region closes, as `torch.autocast`'s `__exit__` does.
void ccma_autocast_cuda_exit(int previous) {
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  at::autocast::set_autocast_enabled(at::kCUDA, (previous & 1) != 0);
  at::autocast::set_autocast_dtype(at::kCUDA, static_cast<at::ScalarType>(previous >> 8));
}

// Switches CUDA autocast on or off on this thread (inside a region, for what must stay in fp32);
// returns whether it was on.
int ccma_autocast_cuda_set_enabled(int enabled) {
  bool was = at::autocast::is_autocast_enabled(at::kCUDA);
  at::autocast::set_autocast_enabled(at::kCUDA, enabled != 0);
  return was ? 1 : 0;
}

// CUDA float32 matmuls in TF32 (`tf32` 1) or IEEE fp32 (0), as
// `torch.backends.cuda.matmul.allow_tf32`. libtorch 2.11's `setFloat32MatmulPrecision` would set
// oneDNN's CPU float32 matmuls too (bf16 passes under "medium"), and the per-backend
// `setFloat32Precision(CUDA, MATMUL, ..)` alone leaves the legacy value behind, which
// `allowTF32CuBLAS` (read by cuBLAS matmuls) checks against it and refuses to mix.
// `setAllowTF32CuBLAS` sets both for CUDA and no other backend.
void ccma_set_cuda_matmul_tf32(int tf32) {
  at::globalContext().setAllowTF32CuBLAS(tf32 != 0);
}

// The float32 precision of the matmuls of `backend` (0 CUDA, 1 oneDNN, the CPU's) as libtorch
// reports it: 0 none (the default: IEEE), 1 ieee, 2 tf32, 3 bf16.
int ccma_matmul_precision(int backend) {
  auto b = backend == 0 ? at::Float32Backend::CUDA : at::Float32Backend::MKLDNN;
  return static_cast<int>(at::globalContext().float32Precision(b, at::Float32Op::MATMUL));
}

// A new uninitialised host tensor of the `ndim` sizes `sizes` and `like`'s type, in pinned
// (page-locked) memory allocated with CUDA device `device` current on this thread; null on failure.
at::Tensor* ccma_empty_pinned(at::Tensor* like, const int64_t* sizes, int ndim, int device, char** err) {
  at::Tensor* out = nullptr;
  ccma::guarded(err, [&] {
    c10::DeviceGuard guard(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device)));
    auto options = at::TensorOptions().dtype(like->dtype()).pinned_memory(true);
    out = new at::Tensor(at::empty(c10::IntArrayRef(sizes, static_cast<std::size_t>(ndim)), options));
  });
  return out;
}

// Zeroes the `n` tensors `ts` (one device and type) with one foreach call: the gradients of a
// step, in one kernel per group on CUDA instead of one per tensor.
int ccma_foreach_zero(at::Tensor** ts, int64_t n, char** err) {
  return ccma::guarded(err, [&] {
    auto list = tensor_list(ts, n);
    at::_foreach_zero_(list);
  });
}

// Makes `grad` the gradient of `var` (same shape, type and device: a view of a flat buffer that
// autograd then accumulates into in place).
int ccma_set_grad(at::Tensor* var, at::Tensor* grad, char** err) {
  return ccma::guarded(err, [&] {
    TORCH_CHECK(
        grad->sizes() == var->sizes() && grad->dtype() == var->dtype() &&
            grad->device() == var->device(),
        "a gradient must have its variable's shape, type and device");
    var->mutable_grad() = *grad;
  });
}

// The CUDA caching allocator's figures for CUDA device `device`, in bytes, into `out[5]`: allocated
// now, the peak allocated since the last `ccma_cuda_reset_peak`, reserved by the allocator (in
// use or cached), and the driver's free and total memory of that device. 0 with a message where
// libtorch has no CUDA allocator (a CPU build).
int ccma_cuda_memory(int device, int64_t* out, char** err) {
  return ccma::guarded(err, [&] {
    auto index = static_cast<c10::DeviceIndex>(device);
    auto* allocator = c10::getDeviceAllocator(c10::kCUDA);
    auto stats = allocator->getDeviceStats(index);
    auto all = static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    auto [free, total] = allocator->getMemoryInfo(index);
    out[0] = stats.allocated_bytes[all].current;
    out[1] = stats.allocated_bytes[all].peak;
    out[2] = stats.reserved_bytes[all].current;
    out[3] = static_cast<int64_t>(free);
    out[4] = static_cast<int64_t>(total);
  });
}

// Starts a new peak of the bytes allocated on CUDA device `device`.
int ccma_cuda_reset_peak(int device, char** err) {
  return ccma::guarded(err, [&] {
    c10::getDeviceAllocator(c10::kCUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(device));
  });
}

// One step of `torch.optim.Adam` (`decoupled` 0) or `AdamW` (1) with libtorch's fused kernel
// over `n` parameters and their gradients, first and second moments (all f32, one device),
// sharing one learning rate and weight decay; `step` is a f32 scalar on the same device holding
// the step number, already counted.
int ccma_fused_adam(
    at::Tensor** params,
    at::Tensor** grads,
    at::Tensor** exp_avgs,
    at::Tensor** exp_avg_sqs,
    int64_t n,
    at::Tensor* step,
    double lr,
    double beta1,
    double beta2,
    double weight_decay,
    double eps,
    int decoupled,
    char** err) {
  return ccma::guarded(err, [&] {
    auto p = tensor_list(params, n);
    auto g = tensor_list(grads, n);
    auto m = tensor_list(exp_avgs, n);
    auto v = tensor_list(exp_avg_sqs, n);
    std::vector<at::Tensor> steps(static_cast<std::size_t>(n), *step);
    if (decoupled != 0) {
      at::_fused_adamw_(p, g, m, v, {}, steps, lr, beta1, beta2, weight_decay, eps, false, false);
    } else {
      at::_fused_adam_(p, g, m, v, {}, steps, lr, beta1, beta2, weight_decay, eps, false, false);
    }
  });
}

} // extern "C"
