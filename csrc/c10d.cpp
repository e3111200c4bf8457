// A C interface to libtorch's c10d: the TCP store for rendezvous and the Gloo and NCCL process
// groups, for `src/shim.rs`. Every function catches C++ exceptions and reports them as a
// message in `*err` (free it with ccma_string_free); tensors are `at::Tensor*`, the pointers `tch`
// uses for its tensors.
#include "backends.hpp"
#include "rendezvous.hpp"
#include "shim.hpp"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <string>

using ccma::copy_string;
using ccma::guarded;

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  bool nccl;
};

// Gloo's wait blocks this thread until the collective is done, up to the timeout. NCCL's wait
// without a timeout only makes the current CUDA stream wait for the collective (no CPU polling);
// its watchdog thread holds the timeout and takes the process down when a collective hangs.
void wait(Group* g, const c10::intrusive_ptr<c10d::Work>& work) {
  if (g->nccl) {
    work->wait();
  } else {
    work->wait(g->timeout);
  }
}

c10::intrusive_ptr<c10d::Backend> make_gloo(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout,
    const char* interface,
    const char* hostname) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  if (interface != nullptr) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  } else if (hostname != nullptr) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
}

} // namespace

extern "C" {

void ccma_string_free(char* s) {
  std::free(s);
}

int ccma_nccl_compiled() {
  return ccma::nccl_compiled() ? 1 : 0;
}

// The NCCL library's version at run time (free it with ccma_string_free); null where NCCL was not
// compiled in, or libtorch could not tell.
char* ccma_nccl_runtime_version() {
  char* err = nullptr;
  std::string version;
  ccma::guarded(&err, [&] { version = ccma::nccl_runtime_version(); });
  ccma_string_free(err);
  return version.empty() ? nullptr : ccma::copy_string(version);
}

// Rendezvous at `master_addr:port` as run `run_id` (rank 0 serves the store) and create the
// process group. `backend` is "gloo" or "nccl"; an NCCL rank is bound to CUDA device `device` (its
// LOCAL_RANK) before the group is made, and the group to that device. For Gloo, `interface` or
// else `hostname` picks the network device (both null: the address this machine's hostname
// resolves to). Null on failure, with `*refused` set to a `ccma::Refusal` when the rendezvous was
// refused.
void* ccma_group_new(
    const char* backend,
    const char* master_addr,
    int port,
    int rank,
    int world,
    int64_t timeout_ms,
    int device,
    const char* interface,
    const char* hostname,
    const char* run_id,
    int* refused,
    char** err) {
  Group* group = nullptr;
  *refused = 0;
  guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10::intrusive_ptr<c10d::Store> store;
    try {
      store = ccma::rendezvous(master_addr, port, rank, world, timeout, run_id);
    } catch (const ccma::Refused& e) {
      *refused = static_cast<int>(e.why);
      throw;
    }
    bool nccl = std::string(backend) == "nccl";
    c10::intrusive_ptr<c10d::Backend> pg;
    if (nccl) {
      pg = ccma::make_nccl(store, rank, world, timeout, device);
    } else {
      pg = make_gloo(store, rank, world, timeout, interface, hostname);
    }
    group = new Group{store, pg, timeout, nccl};
  });
  return group;
}

// Leaves the group: NCCL's communicators are shut down first (a normal exit, as
// `destroy_process_group` does), then the group is freed.
void ccma_group_free(void* group) {
  auto* g = static_cast<Group*>(group);
  if (g->nccl) {
    try {
      g->backend->shutdown();
    } catch (...) {
      // Leaving anyway: the destructor aborts what is left.
    }
  }
  delete g;
}

// Sums `t` over all ranks, in place (every rank gets the same result).
int ccma_all_reduce_sum(void* group, at::Tensor* t, char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::vector<at::Tensor> tensors{*t};
    wait(g, g->backend->allreduce(tensors, c10d::AllreduceOptions()));
  });
}

// The `t` of every rank, concatenated along dim 0 in rank order (all ranks pass the same shape).
at::Tensor* ccma_all_gather(void* group, at::Tensor* t, char** err) {
  auto* g = static_cast<Group*>(group);
  at::Tensor* out = nullptr;
  guarded(err, [&] {
    int world = g->backend->getSize();
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < world; ++r) {
      outputs[0].push_back(at::empty_like(*t));
    }
    std::vector<at::Tensor> inputs{*t};
    wait(g, g->backend->allgather(outputs, inputs, c10d::AllgatherOptions()));
    out = new at::Tensor(at::cat(outputs[0], 0));
  });
  return out;
}

// Copies rank `root`'s `t` into every rank's `t`, in place.
int ccma_broadcast(void* group, at::Tensor* t, int root, char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::vector<at::Tensor> tensors{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    wait(g, g->backend->broadcast(tensors, opts));
  });
}

// Sets `key` to `value` in the rendezvous store.
int ccma_store_set(void* group, const char* key, const char* value, char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::string v(value);
    g->store->set(key, std::vector<uint8_t>(v.begin(), v.end()));
  });
}

// Waits up to `timeout_ms` for `key` and copies its value into `*value` (null if it never came).
int ccma_store_get(void* group, const char* key, int64_t timeout_ms, char** value, char** err) {
  auto* g = static_cast<Group*>(group);
  *value = nullptr;
  return guarded(err, [&] {
    try {
      g->store->wait({key}, std::chrono::milliseconds(timeout_ms));
    } catch (const c10::DistStoreError&) {
      return; // not there in time
    }
    auto bytes = g->store->get(key);
    *value = copy_string(std::string(bytes.begin(), bytes.end()));
  });
}

// Whether `key` is in the rendezvous store now (no waiting).
int ccma_store_check(void* group, const char* key, int* present, char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] { *present = g->store->check({key}) ? 1 : 0; });
}

} // extern "C"
