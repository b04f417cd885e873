// Formatting of livefs::Error.
#include "common/error.h"

#include <cstring>

namespace livefs {

std::string Error::message() const {
  if (code == 0) return context;
  return context + ": " + std::strerror(code);
}

const char* Error::code_name() const {
  const char* name = strerrorname_np(code);
  return name != nullptr ? name : "E?";
}

}  // namespace livefs
