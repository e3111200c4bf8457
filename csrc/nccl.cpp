// The NCCL process group, compiled when the libtorch in use is a CUDA build that comes with the
// CUDA and NCCL headers (CCMA_WITH_NCCL, set by build.rs).
#include "backends.hpp"

#ifdef CCMA_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <stdexcept>
#include <string>

namespace ccma {

#ifdef CCMA_WITH_NCCL

bool nccl_compiled() {
  return true;
}

std::string nccl_runtime_version() {
  auto [major, minor, patch] = c10d::getNcclVersionTuple();
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout,
    int device) {
  // What `torch.cuda.set_device(LOCAL_RANK)` and `init_process_group(device_id=...)` do: this
  // rank's work goes to its own card, and the communicator is made for it now.
  auto bound = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device));
  c10::cuda::set_device(bound.index());
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
  pg->setBoundDeviceId(bound);
  pg->eagerConnectSingleDevice(bound);
  return pg;
}

#else

bool nccl_compiled() {
  return false;
}

std::string nccl_runtime_version() {
  return "";
}

c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>&,
    int,
    int,
    std::chrono::milliseconds,
    int) {
  throw std::runtime_error(
      "this ccma was built against a libtorch without NCCL (a CPU build, or one without the CUDA "
      "and NCCL headers); use dist_backend: gloo");
}

#endif

} // namespace ccma
