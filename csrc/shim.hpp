// What every C function of the shim shares: C++ exceptions become a `malloc`ed message in `*err`
// (freed by `ccma_string_free`), never an unwinding across the C boundary.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace ccma {

inline char* copy_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// Runs `body`; on an exception stores its message (without libtorch's backtrace) in `*err` and
// returns false.
template <typename F>
bool guarded(char** err, F body) {
  try {
    body();
    return true;
  } catch (const c10::Error& e) {
    *err = copy_string(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = copy_string(e.what());
  } catch (...) {
    *err = copy_string("unknown C++ exception");
  }
  return false;
}

} // namespace ccma
