// The protocol's parts for what needs a reboot: a change's reason, apply's kept changes and
// status's reboot_needed_for parse from what the daemon sends and print back unchanged; a
// reply of an older daemon (without them) still parses.
#include <gtest/gtest.h>

#include "livefs/protocol.h"

namespace livefs::protocol {
namespace {

using nlohmann::json;

TEST(RebootProtocol, KeptChangesAndTheirReasonsReprintUnchanged) {
  json reply = {{"ok", true},
                {"dry_run", false},
                {"applied", {{{"path", "bin/tool"}, {"kind", "modified"}, {"kernel", false}}}},
                {"skipped_kernel", {"usr/lib/modules/6.1.0"}},
                {"kept",
                 {{{"path", "usr/lib/modules/6.1.0"},
                   {"kind", "removed"},
                   {"reason", "modules of the running kernel 6.1.0: needs a reboot"}}}}};
  auto parsed = parse_reply<ApplyReply>(reply);
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_TRUE(parsed->kept);
  EXPECT_EQ(parsed->kept->at(0).reason, "modules of the running kernel 6.1.0: needs a reboot");
  EXPECT_EQ(ok_reply(*parsed), reply);

  json diff = {{"ok", true},
               {"live_generation", 0},
               {"staged", "/staged"},
               {"changes",
                {{{"path", "lib/modules/6.1.0"},
                  {"kind", "removed"},
                  {"kernel", true},
                  {"reboot", "modules of the running kernel 6.1.0: needs a reboot"}},
                 {{"path", "bin/tool"}, {"kind", "modified"}, {"kernel", false}}}},
               {"config_changes", json::array()},
               {"config_note", ""}};
  auto d = parse_reply<DiffReply>(diff);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->changes.at(0).reboot, "modules of the running kernel 6.1.0: needs a reboot");
  EXPECT_EQ(d->changes.at(1).reboot, std::nullopt);
  EXPECT_EQ(ok_reply(*d), diff);

  // An older daemon's apply: no "kept".
  reply.erase("kept");
  parsed = parse_reply<ApplyReply>(reply);
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_FALSE(parsed->kept);
}

TEST(RebootProtocol, RebootNeedsParseAndAreChecked) {
  json needs = {{{"what", "kernel_arguments"},
                 {"reason", "the next boot's kernel arguments (second) differ"},
                 {"items", {"", "quiet"}},
                 {"restart", false}},
                {{"what", "processes"},
                 {"reason", "restart them"},
                 {"items", {"42 sleep (ssh.service)"}},
                 {"restart", true}}};
  auto arguments = from_json<RebootNeed>(needs[0]);
  ASSERT_TRUE(arguments) << arguments.error().message();
  EXPECT_EQ(arguments->items, (std::vector<std::string>{"", "quiet"}));
  EXPECT_EQ(to_json(*arguments), needs[0]);
  auto processes = from_json<RebootNeed>(needs[1]);
  ASSERT_TRUE(processes) << processes.error().message();
  EXPECT_TRUE(processes->restart);
  EXPECT_EQ(to_json(*processes), needs[1]);
  needs[0]["restart"] = "no";
  auto bad = from_json<RebootNeed>(needs[0]);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().context.find("restart"), std::string::npos) << bad.error().context;
}

}  // namespace
}  // namespace livefs::protocol
