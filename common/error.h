// The one error type of livefs: an errno-style code plus the context it happened in.
// Inside, everything returns Result<T>; the code becomes an errno only at an edge (a FUSE
// reply, a process exit status, a control-socket answer).
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <utility>

namespace livefs {

struct Error {
  int code = 0;         // an errno value (EIO for corrupt data, EINVAL for bad input, ...)
  std::string context;  // what was being done, e.g. "openat(objects/ab/cd…)"

  // "context: strerror(code)" — the one-line form users see.
  std::string message() const;
  // The errno's symbolic name ("ENOENT"), for log lines and JSON.
  const char* code_name() const;
};

// The single factory: every Error is built here so the message form stays uniform.
inline Error make_error(int code, std::string context) { return Error{code, std::move(context)}; }
// For a failed system call: takes errno as it is now.
inline Error errno_error(std::string context) { return make_error(errno, std::move(context)); }

template <class T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline std::unexpected<Error> fail(int code, std::string context) {
  return std::unexpected(make_error(code, std::move(context)));
}
inline std::unexpected<Error> fail_errno(std::string context) {
  return std::unexpected(errno_error(std::move(context)));
}

// Adds an outer context: "import(/usr): openat(bin/ls): Permission denied".
inline Error with_context(Error e, const std::string& outer) {
  e.context = outer + ": " + e.context;
  return e;
}

}  // namespace livefs
