// See README.md: only the names ProcessGroupGloo.hpp mentions. `setTimeout` is declared because
// an inline function of that header calls it (inside libtorch, never from the shim).
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
