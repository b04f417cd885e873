// The replies of a real daemon, field for field, are what the reply structs hold: each raw
// answer parses into its struct and prints back unchanged. A field the daemon adds without
// adding it to livefs/protocol.h would vanish from `--json`; this test names it.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <string>

#include "livefs/control.h"
#include "livefs/protocol.h"
#include "support/temp_dir.h"

namespace livefs::protocol {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using livefs::testing::TempDir;
using livefs::testing::write_file;

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class ReplyShapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_file(dir_ / "booted/bin/tool", "tool 1\n", 0755);
    write_file(dir_ / "staged/bin/tool", "tool 2\n", 0755);
    write_file(dir_ / "staged/bin/new", "new\n", 0755);
    write_file(dir_ / "hot/file", "hot\n");
    fs::create_directories(dir_ / "mnt");
    std::string out;
    int rc = livefs::testing::run(
        std::string(LIVEFS_BINARY) + " mount --booted " + quote((dir_ / "booted").string()) +
            " --staged " + quote((dir_ / "staged").string()) + " --state " +
            quote(state().string()) + " " + quote((dir_ / "mnt").string()) + " 2>&1",
        &out);
    ASSERT_EQ(rc, 0) << out;
    mounted_ = true;
  }
  void TearDown() override {
    if (!mounted_) return;
    std::string out;
    livefs::testing::run(
        std::string(LIVEFS_BINARY) + " umount --wait --state " + quote(state().string()) + " 2>&1",
        &out);
    ::umount2((dir_ / "mnt").c_str(), MNT_DETACH);
  }
  fs::path state() const { return dir_ / "state"; }

  // Sends `request` as the CLI does; the raw answer must be ok and reprint unchanged.
  template <class Reply>
  void expect_same_shape(const Request& request) {
    auto raw = cli::call_daemon(state(), to_json(request));
    ASSERT_TRUE(raw.has_value()) << raw.error().message();
    ASSERT_EQ(raw->value("ok", false), true) << command_name(request) << ": " << raw->dump();
    auto reply = parse_reply<Reply>(*raw);
    ASSERT_TRUE(reply.has_value()) << command_name(request) << ": " << reply.error().message();
    json printed = ok_reply(*reply);
    for (const auto& [key, value] : raw->items())
      EXPECT_TRUE(printed.contains(key))
          << command_name(request) << ": the daemon's field \"" << key
          << "\" is not in the reply struct (livefs/protocol.h)";
    EXPECT_EQ(printed, *raw) << command_name(request);
  }

  TempDir dir_{"livefs-reply-shape"};
  bool mounted_ = false;
};

TEST_F(ReplyShapeTest, EveryReplyOfARealDaemonIsItsStruct) {
  expect_same_shape<StatusReply>(StatusRequest{});
  expect_same_shape<DiffReply>(DiffRequest{});
  ApplyRequest dry;
  dry.all = true;
  dry.allow_replace = true;
  dry.dry_run = true;
  expect_same_shape<ApplyReply>(dry);
  ApplyRequest apply = dry;
  apply.dry_run = false;
  expect_same_shape<ApplyReply>(apply);
  expect_same_shape<StatusReply>(StatusRequest{});
  expect_same_shape<GoBackReply>(RollbackRequest{});
  expect_same_shape<ApplyReply>(apply);
  expect_same_shape<HotfixAddReply>(
      HotfixAddRequest{.source = (dir_ / "hot/file").string(), .at = "share/hot"});
  expect_same_shape<HotfixWatchReply>(
      HotfixWatchRequest{.source = (dir_ / "hot").string(), .at = "lib/hot"});
  expect_same_shape<HotfixListReply>(HotfixListRequest{});
  expect_same_shape<StatusReply>(StatusRequest{});
  expect_same_shape<GoBackReply>(ResetRequest{});
  expect_same_shape<HotfixResetReply>(HotfixResetRequest{});
  expect_same_shape<RestartPlanReply>(RestartPlanRequest{});
  expect_same_shape<UmountReply>(UmountRequest{});
}

}  // namespace
}  // namespace livefs::protocol
