// The rendezvous of a run's ranks on libtorch's TCP store, checked so that ranks of two runs
// given the same MASTER_PORT never join each other.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <stdexcept>
#include <string>

namespace ccma {

// Why a rendezvous was refused; the values cross the C interface (`ccma_group_new`).
enum class Refusal : int {
  // Rank 0 cannot serve the store on the port (in use, or not allowed).
  kPortUnavailable = 1,
  // The store on the port belongs to another run; the message is that run's id.
  kOtherRun = 2,
};

struct Refused : std::runtime_error {
  Refused(Refusal why, const std::string& what) : std::runtime_error(what), why(why) {}
  Refusal why;
};

// Rank 0 serves the store on `port` and publishes `run_id` there; every other rank connects to
// `master_addr:port` and goes on only if the store holds the same `run_id`; then every rank waits
// for all `world` to arrive. Throws `Refused` for the two refusals, c10d's errors otherwise.
c10::intrusive_ptr<c10d::Store> rendezvous(
    const std::string& master_addr,
    int port,
    int rank,
    int world,
    std::chrono::milliseconds timeout,
    const std::string& run_id);

} // namespace ccma
