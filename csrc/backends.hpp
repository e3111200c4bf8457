// Process-group constructors that live in their own translation unit (NCCL needs the CUDA and NCCL
// headers, which only a CUDA build of libtorch comes with).
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>

namespace ccma {

// Whether this build can create NCCL process groups.
bool nccl_compiled();

// The version of the NCCL library loaded at run time ("2.28.9", as `ncclGetVersion` gives it
// through libtorch); empty where NCCL was not compiled in.
std::string nccl_runtime_version();

// An NCCL process group of `world` ranks over `store`, with this thread's current CUDA device set
// to `device` and the group bound to it; throws where NCCL was not compiled in.
c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout,
    int device);

} // namespace ccma
