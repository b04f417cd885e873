// How a daemon service answers: a typed value, or a Failure that says whether the request was
// refused (a sentence for the operator: nothing was wrong, the request cannot be done as
// asked) or failed (an Error from below, with its errno). The control server turns both into
// the wire's {"ok": false, ...}; until then they stay Errors.
#pragma once

#include <expected>

#include "common/error.h"

namespace livefs::cli {

struct Failure {
  Error error;
  bool refused = false;
};

template <class T>
using Outcome = std::expected<T, Failure>;

inline std::unexpected<Failure> refused(Error e) {
  return std::unexpected(Failure{std::move(e), true});
}
inline std::unexpected<Failure> failed(Error e) {
  return std::unexpected(Failure{std::move(e), false});
}

}  // namespace livefs::cli
