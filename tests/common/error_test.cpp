// livefs::Error formatting and the Result helpers.
#include "common/error.h"

#include <gtest/gtest.h>

namespace livefs {
namespace {

TEST(Error, MessageNamesContextAndErrno) {
  Error e = make_error(ENOENT, "openat(usr/bin/ls)");
  EXPECT_EQ(e.message(), "openat(usr/bin/ls): No such file or directory");
  EXPECT_STREQ(e.code_name(), "ENOENT");
}

TEST(Error, OuterContextIsPrepended) {
  Error e = with_context(make_error(EACCES, "openat(x)"), "import(/tmp/t)");
  EXPECT_EQ(e.context, "import(/tmp/t): openat(x)");
}

TEST(Error, FailProducesUnexpected) {
  auto f = []() -> Result<int> { return fail(EINVAL, "parse"); };
  auto r = f();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
}

}  // namespace
}  // namespace livefs
