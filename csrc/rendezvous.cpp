// See rendezvous.hpp.
#include "rendezvous.hpp"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace ccma {

namespace {

// The key under which rank 0 publishes its run's id.
const char* const kRunKey = "ccma/run_id";

} // namespace

c10::intrusive_ptr<c10d::Store> rendezvous(
    const std::string& master_addr,
    int port,
    int rank,
    int world,
    std::chrono::milliseconds timeout,
    const std::string& run_id) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<std::uint16_t>(port);
  opts.isServer = rank == 0;
  opts.numWorkers = static_cast<std::size_t>(world);
  // Counted only once the run id matched, so that a stranger never counts as one of the ranks.
  opts.waitWorkers = false;
  opts.timeout = timeout;
  c10::intrusive_ptr<c10d::TCPStore> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(master_addr, opts);
  } catch (const c10::DistNetworkError& e) {
    if (rank != 0) {
      throw;
    }
    throw Refused(Refusal::kPortUnavailable, e.what_without_backtrace());
  }
  if (rank == 0) {
    store->set(kRunKey, std::vector<uint8_t>(run_id.begin(), run_id.end()));
  } else {
    store->wait({kRunKey}, timeout);
    auto theirs = store->get(kRunKey);
    std::string id(theirs.begin(), theirs.end());
    if (id != run_id) {
      throw Refused(Refusal::kOtherRun, id);
    }
  }
  store->waitForWorkers();
  return std::move(store);
}

} // namespace ccma
