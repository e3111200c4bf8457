// What `tch` does not bind, for `src/shim.rs`: CUDA autocast through libtorch's device-typed
// functions, the float32 matmul precision, pinning without the deprecated device argument, and
// libtorch's fused Adam over tensor lists. Tensors are `at::Tensor*`, the pointers `tch` uses.
// Functions that can fail catch C++ exceptions and report them as a message in `*err` (free it
// with ccma_string_free).
#include "shim.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
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

// `torch.set_float32_matmul_precision(precision)`: "highest", "high" or "medium".
int ccma_set_float32_matmul_precision(const char* precision, char** err) {
  return ccma::guarded(err, [&] { at::globalContext().setFloat32MatmulPrecision(precision); });
}

// `precision` as libtorch reports it back (0 highest, 1 high, 2 medium).
int ccma_float32_matmul_precision() {
  return static_cast<int>(at::globalContext().float32MatmulPrecision());
}

// `t` copied into pinned (page-locked) host memory, allocated with CUDA device `device` current
// on this thread; null on failure.
at::Tensor* ccma_pin_memory(at::Tensor* t, int device, char** err) {
  at::Tensor* out = nullptr;
  ccma::guarded(err, [&] {
    c10::DeviceGuard guard(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device)));
    out = new at::Tensor(t->pin_memory());
  });
  return out;
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
