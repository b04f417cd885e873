// The typed control protocol (livefs/protocol.h): every request and reply survives the wire
// (bytes that are not UTF-8 included), the JSON the daemon sends today parses into the
// structs and prints back unchanged, and bad input is an EINVAL naming the field, never an
// exception.
#include "livefs/protocol.h"

#include <gtest/gtest.h>

#include <string>

#include "livefs/control.h"

namespace livefs::protocol {
namespace {

using nlohmann::json;

// Through the wire as the CLI sends it and the daemon reads it.
json over_the_wire(const json& j) {
  auto line = cli::wire_line(j);
  auto back = cli::parse_wire_line(line);
  EXPECT_TRUE(back.has_value());
  return back.value_or(json());
}

// A name of bytes that are not UTF-8 (and one of the escape code points, U+10FF41).
const std::string kOddBytes = std::string("caf\xe9/\xff\xfe/x\n y/") + "\xf4\x8f\xbd\x81";

TEST(ProtocolTest, EveryRequestRoundTripsOverTheWire) {
  std::vector<Request> requests = {
      StatusRequest{},
      DiffRequest{.by_package = true},
      ApplyRequest{.patterns = {"bin/*", kOddBytes},
                   .packages = {},
                   .all = false,
                   .allow_replace = true,
                   .dry_run = true},
      ApplyRequest{.patterns = {},
                   .packages = {"libc6", "bash"},
                   .all = false,
                   .allow_replace = false,
                   .dry_run = false},
      RollbackRequest{},
      RollbackRequest{.to = 0},
      RollbackRequest{.to = 12},
      ApplyRequest{.patterns = {},
                   .packages = {},
                   .all = false,
                   .allow_replace = false,
                   .dry_run = true,
                   .etc = true},
      ResetRequest{},
      StageRequest{},
      StageRequest{.commit = "abc123", .remote = {}, .ref = {}},
      StageRequest{.commit = {}, .remote = "origin", .ref = "debian/12/x86_64"},
      HotfixWatchRequest{.source = "/src/" + kOddBytes, .at = "bin"},
      HotfixAddRequest{.source = "/tmp/tool", .at = kOddBytes},
      HotfixListRequest{},
      HotfixResetRequest{},
      HotfixResetRequest{.prefix = kOddBytes},
      UmountRequest{},
      RestartPlanRequest{},
  };
  for (const Request& r : requests) {
    json j = over_the_wire(to_json(r));
    EXPECT_EQ(j.at("cmd"), command_name(r));
    auto back = parse_request(j);
    ASSERT_TRUE(back.has_value()) << j.dump() << ": " << back.error().message();
    EXPECT_EQ(*back, r) << j.dump();
  }
}

TEST(ProtocolTest, RequestsKeepTheirWireNames) {
  // What the CLI sent before the structs (and what a daemon of that time reads).
  EXPECT_EQ(to_json(DiffRequest{.by_package = true}),
            json({{"cmd", "diff"}, {"by_package", true}}));
  ApplyRequest all_a;
  all_a.patterns = {"a"};
  all_a.all = true;
  EXPECT_EQ(to_json(all_a), json({{"cmd", "apply"},
                                  {"patterns", {"a"}},
                                  {"packages", json::array()},
                                  {"all", true},
                                  {"allow_replace", false},
                                  {"dry_run", false}}));
  EXPECT_EQ(to_json(StageRequest{}), json({{"cmd", "stage"}}));
  EXPECT_EQ(to_json(HotfixResetRequest{}), json({{"cmd", "hotfix_reset"}}));
  EXPECT_EQ(to_json(HotfixWatchRequest{.source = "/s", .at = "bin"}),
            json({{"cmd", "hotfix_watch"}, {"source", "/s"}, {"at", "bin"}}));
}

TEST(ProtocolTest, OptionalRequestFieldsDefault) {
  auto r = parse_request(json{{"cmd", "apply"}, {"all", true}});
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ApplyRequest all;
  all.all = true;
  EXPECT_EQ(std::get<ApplyRequest>(*r), all);
  auto reset = parse_request(json{{"cmd", "hotfix_reset"}, {"prefix", nullptr}});
  ASSERT_TRUE(reset.has_value());
  EXPECT_FALSE(std::get<HotfixResetRequest>(*reset).prefix.has_value());
  // A newer client's extra field is not an error.
  EXPECT_TRUE(parse_request(json{{"cmd", "status"}, {"verbose", 3}}).has_value());
}

// The error of parse_request(j): EINVAL, with `needle` in its message.
void expect_bad_request(const json& j, const std::string& needle) {
  Result<Request> r = fail(0, "");
  ASSERT_NO_THROW(r = parse_request(j)) << j.dump();
  ASSERT_FALSE(r.has_value()) << j.dump();
  EXPECT_EQ(r.error().code, EINVAL) << j.dump();
  EXPECT_NE(r.error().context.find(needle), std::string::npos)
      << j.dump() << " -> " << r.error().context;
}

TEST(ProtocolTest, BadRequestsAreEinvalNamingTheField) {
  expect_bad_request(json::array({1, 2}), "an object expected, not array");
  expect_bad_request(json("status"), "an object expected, not string");
  expect_bad_request(json::object(), "missing field \"cmd\"");
  expect_bad_request(json{{"cmd", 7}}, "request.cmd: a string expected, not number");
  expect_bad_request(json{{"cmd", "format_disk"}}, "unknown command \"format_disk\"");
  expect_bad_request(json{{"cmd", "diff"}, {"by_package", "yes"}},
                     "request diff.by_package: a boolean expected, not string");
  expect_bad_request(json{{"cmd", "apply"}, {"patterns", "bin"}},
                     "request apply.patterns: an array expected, not string");
  expect_bad_request(json{{"cmd", "apply"}, {"patterns", {"bin", 3}}},
                     "request apply.patterns[1]: a string expected, not number");
  expect_bad_request(json{{"cmd", "apply"}, {"dry_run", nullptr}},
                     "request apply.dry_run: a boolean expected, not null");
  expect_bad_request(json{{"cmd", "hotfix_watch"}, {"at", "bin"}},
                     "request hotfix_watch: missing field \"source\"");
  expect_bad_request(json{{"cmd", "hotfix_add"}, {"source", "/f"}},
                     "request hotfix_add: missing field \"at\"");
  expect_bad_request(json{{"cmd", "hotfix_add"}, {"source", {{"a", 1}}}, {"at", "x"}},
                     "request hotfix_add.source: a string expected, not object");
  expect_bad_request(json{{"cmd", "stage"}, {"remote", "origin"}}, "go together");
  expect_bad_request(json{{"cmd", "stage"}, {"commit", "c"}, {"remote", "o"}, {"ref", "r"}},
                     "exclude each other");
  expect_bad_request(json{{"cmd", "hotfix_reset"}, {"prefix", false}},
                     "request hotfix_reset.prefix: a string expected, not boolean");
}

TEST(ProtocolTest, RequestLinesThatAreNotJsonNeverThrow) {
  // Whatever arrives, parse_wire_line + parse_request answer with an Error.
  for (std::string line : std::vector<std::string>{
           "", "{", "null", "[]", "{\"cmd\":null}", "{\"cmd\":\"apply\",\"all\":1}",
           std::string("{\"cmd\":\"hotfix_add\",\"source\":\"\xff\",\"at\":\"\xc0\"}"),
           std::string(10000, '[')}) {
    ASSERT_NO_THROW({
      auto j = cli::parse_wire_line(line);
      if (j) (void)parse_request(*j);
    }) << line;
  }
  // Raw bytes that are not UTF-8 are not JSON: a peer sends them escaped (to_wire), so such
  // a line is refused as a whole rather than guessed at.
  auto raw = cli::parse_wire_line("{\"cmd\":\"hotfix_add\",\"source\":\"/a\xff\",\"at\":\"x\"}");
  ASSERT_FALSE(raw.has_value());
  EXPECT_EQ(raw.error().code, EBADMSG);
}

// ---- replies -----------------------------------------------------------------------------

// The daemon's replies as livefs/daemon.cpp built them before the structs (field for field,
// with the types it used). Parsing each into its struct and printing it back must give the
// same JSON: that is what `livefs ... --json` printed before.
json daemon_switch() {
  return {{"from_generation", 3},
          {"to_generation", 4},
          {"changed_paths", size_t{1649}},
          {"invalidations", size_t{17}},
          {"seconds", 0.004512}};
}

json daemon_holders() {
  return json::array(
      {{{"pid", 4242},
        {"command", "python3"},
        {"path", "lib/" + kOddBytes},
        {"how", "mapped"},
        {"unit", "ssh.service"}},
       {{"pid", 1}, {"command", "init"}, {"path", "bin/x"}, {"how", "fd 3"}, {"unit", ""}}});
}

json daemon_status() {
  json deployment = {{"kind", "deployment"},
                     {"dir", "/sysroot/ostree/deploy/debian/deploy/abc.0/usr"},
                     {"system_root", "/sysroot/ostree/deploy/debian/deploy/abc.0"},
                     {"subdir", "usr"},
                     {"checksum", "abcdef0123456789"},
                     {"version", "12.5"},
                     {"osname", "debian"},
                     {"deployserial", 0}};
  json commit = {{"kind", "commit"}, {"dir", ""},     {"system_root", ""}, {"subdir", "usr"},
                 {"checksum", "fe"}, {"version", ""}, {"osname", "debian"}};
  return {{"ok", true},
          {"pid", 1234},
          {"booted", "deployment abcdef012345.0 (version 12.5) of debian"},
          {"staged", "commit fe of debian"},
          {"booted_origin", deployment},
          {"staged_origin", commit},
          {"store", "/var/lib/livefs/store"},
          {"mountpoint", "/usr"},
          {"live_generation", uint64_t{2}},
          {"generations", json::array({{{"number", uint64_t{0}},
                                        {"op", "booted"},
                                        {"paths", json::array()},
                                        {"path_count", size_t{0}},
                                        {"layer", ""},
                                        {"time_ns", int64_t{0}},
                                        {"time", ""}},
                                       {{"number", uint64_t{2}},
                                        {"op", "apply"},
                                        {"paths", {"bin/x", kOddBytes}},
                                        {"path_count", size_t{2}},
                                        {"layer", "0123abcd"},
                                        {"time_ns", int64_t{1764000000123456789}},
                                        {"time", "2025-11-24T16:00:00Z"}}})},
          {"history", json::array({{{"seq", uint64_t{7}},
                                    {"op", "apply"},
                                    {"generation", uint64_t{2}},
                                    {"path_count", size_t{2}},
                                    {"time", "2025-11-24T16:00:00Z"}}})},
          {"history_records", uint64_t{7}},
          {"hotfix",
           {{"watches", json::array({{{"source", "/home/dev/build"},
                                      {"at", "bin"},
                                      {"entries", size_t{3}},
                                      {"changes", uint64_t{12}},
                                      {"last_change", "2025-11-24T16:01:00Z"},
                                      {"error", ""}}})},
            {"adds", json::array({{{"source", "/tmp/f"}, {"at", "lib/f"}}})},
            {"layer_entries", size_t{5}}}},
          {"warnings", {"journal: a torn record was dropped"}},
          {"journal_error", nullptr},
          {"last_switch", daemon_switch()},
          {"stage_error", nullptr},
          {"journal_note", ""},
          {"journal_set_aside", ""},
          {"config_note", "the view serves /usr only"},
          {"loading", nullptr},
          {"staging", nullptr},
          {"holders", daemon_holders()}};
}

json without_ok(json j) {
  j.erase("ok");
  return j;
}

template <class Reply>
void expect_reprints_unchanged(const json& daemon_json) {
  // As the CLI receives it: through the wire.
  json received = over_the_wire(daemon_json);
  auto reply = parse_reply<Reply>(received);
  ASSERT_TRUE(reply.has_value()) << reply.error().message();
  EXPECT_EQ(to_json(*reply), without_ok(daemon_json));
  EXPECT_EQ(ok_reply(*reply), daemon_json);
  // And the struct survives its own round trip.
  auto again = from_json<Reply>(over_the_wire(to_json(*reply)));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *reply);
}

TEST(ProtocolTest, StatusAsTheDaemonSendsItParsesAndReprints) {
  expect_reprints_unchanged<StatusReply>(daemon_status());
  auto reply = parse_reply<StatusReply>(daemon_status());
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->staged_origin.deployserial, std::nullopt);
  EXPECT_EQ(reply->booted_origin.deployserial, 0);
  EXPECT_EQ(reply->generations.at(1).paths.at(1), kOddBytes);
  EXPECT_EQ(reply->holders.at(0).path, "lib/" + kOddBytes);
  EXPECT_EQ(reply->last_switch->changed_paths, 1649u);

  // The nullable fields set, the others null.
  json j = daemon_status();
  j["journal_error"] = "journal: bad checksum";
  j["stage_error"] = "stage: ENOSPC";
  j["last_switch"] = nullptr;
  j["loading"] = {{"phase", "reading the booted tree"}, {"entries", 51234}};
  j["staging"] = {{"what", "commit fe"}, {"files", 17}};
  j["staged_origin"] = {{"kind", "none"}, {"dir", ""}, {"system_root", ""}, {"subdir", ""}};
  expect_reprints_unchanged<StatusReply>(j);
}

TEST(ProtocolTest, EveryOtherReplyAsTheDaemonSendsItParsesAndReprints) {
  json change = {{"path", "bin/" + kOddBytes}, {"kind", "modified"}, {"kernel", false}};
  json kernel = {{"path", "lib/modules/6.1/vmlinuz"}, {"kind", "added"}, {"kernel", true}};
  json diff = {
      {"ok", true},
      {"live_generation", uint64_t{1}},
      {"staged", "/staged"},
      {"changes", {change, kernel}},
      {"config_changes", json::array({{{"path", "etc/ssh/sshd_config"}, {"kind", "modified"}}})},
      {"config_note", ""}};
  expect_reprints_unchanged<DiffReply>(diff);
  diff["packages"] = json::array(
      {{{"package", "openssh-server"},
        {"old_version", "1:9.2p1-2"},
        {"new_version", "1:9.2p1-2+deb12u3"},
        {"paths", {"bin/x"}}},
       {{"package", ""}, {"old_version", ""}, {"new_version", ""}, {"paths", json::array()}}});
  expect_reprints_unchanged<DiffReply>(diff);

  json dry = {{"ok", true},
              {"dry_run", true},
              {"applied", {change}},
              {"skipped_kernel", {"lib/modules/6.1/vmlinuz"}}};
  expect_reprints_unchanged<ApplyReply>(dry);
  json applied = dry;
  applied["dry_run"] = false;
  applied["generation"] = uint64_t{4};
  applied["switch"] = daemon_switch();
  applied["holders"] = daemon_holders();
  expect_reprints_unchanged<ApplyReply>(applied);
  applied["etc"] = {
      {"updated", {"etc/a.conf"}},
      {"added", {"etc/new", "etc/new/" + kOddBytes}},
      {"removed", json::array()},
      {"conflicts", {{{"path", "etc/b.conf"}, {"reason", "changed by the administrator"}}}}};
  expect_reprints_unchanged<ApplyReply>(applied);

  json back = {
      {"ok", true}, {"op", "rollback"}, {"generation", uint64_t{3}}, {"switch", daemon_switch()}};
  expect_reprints_unchanged<GoBackReply>(back);
  back["op"] = "reset";
  back["note"] = "the hotfix layer stays on top (livefs hotfix reset drops it)";
  expect_reprints_unchanged<GoBackReply>(back);
  back["etc_restored"] = {uint64_t{5}, uint64_t{2}};
  back["etc_error"] = "generation 1: EIO (retried at the next start)";
  expect_reprints_unchanged<GoBackReply>(back);

  expect_reprints_unchanged<StageReply>({{"ok", true},
                                         {"staged", "commit fe of debian"},
                                         {"staged_origin", daemon_status()["staged_origin"]},
                                         {"pending", size_t{1649}},
                                         {"files", uint64_t{6000}},
                                         {"files_as_booted", uint64_t{4570}},
                                         {"files_reused", uint64_t{1}},
                                         {"files_read", uint64_t{1429}},
                                         {"bytes_read", uint64_t{123456789}},
                                         {"pull_seconds", 0.0},
                                         {"seconds", 1.25}});
  expect_reprints_unchanged<HotfixWatchReply>({{"ok", true},
                                               {"source", "/src/" + kOddBytes},
                                               {"at", "bin"},
                                               {"entries", size_t{3}},
                                               {"switch", daemon_switch()}});
  expect_reprints_unchanged<HotfixAddReply>(
      {{"ok", true}, {"source", "/tmp/f"}, {"at", "lib/f"}, {"switch", daemon_switch()}});
  json list = daemon_status()["hotfix"];
  list["ok"] = true;
  list["files"] = {"bin/tool", kOddBytes};
  expect_reprints_unchanged<HotfixListReply>(list);
  expect_reprints_unchanged<HotfixResetReply>({{"ok", true},
                                               {"removed_paths", size_t{3}},
                                               {"removed_watches", size_t{1}},
                                               {"generation", uint64_t{2}},
                                               {"switch", daemon_switch()}});
  expect_reprints_unchanged<UmountReply>(
      {{"ok", true}, {"users", {101, 202}}, {"mountpoint", "/usr"}, {"detached", true}});
  expect_reprints_unchanged<UmountReply>({{"ok", true},
                                          {"users", json::array()},
                                          {"mountpoint", "/usr"},
                                          {"detached", true},
                                          {"pid", 77}});

  json python = {{"pid", 500},
                 {"command", "python3"},
                 {"unit", ""},
                 {"paths", {"lib/python3/" + kOddBytes + ".py", "lib/libc.so.6"}},
                 {"scripts", {"lib/python3/" + kOddBytes + ".py"}}};
  json nginx = {{"pid", 100},
                {"command", "nginx"},
                {"unit", "nginx.service"},
                {"paths", {"sbin/nginx"}},
                {"scripts", json::array()}};
  json plan = {
      {"ok", true},
      {"units",
       {{{"unit", "nginx.service"},
         {"manager", ""},
         {"restart", true},
         {"note", ""},
         {"processes", {nginx}}},
        {{"unit", "pipewire.service"},
         {"manager", "user@1000.service"},
         {"restart", false},
         {"note", "a user's unit"},
         {"processes", json::array()}}}},
      {"sessions",
       {{{"session", "session-3.scope"}, {"slice", "user-1000.slice"}, {"processes", {nginx}}}}},
      {"interpreters", {python}},
      {"processes", json::array()},
      {"own_unit", "livefs-usr.service"},
      {"holders_scan",
       {{"current", true},
        {"scanning", false},
        {"finished", "2024-01-01T00:00:00Z"},
        {"seconds", 0.01},
        {"error", nullptr}}}};
  expect_reprints_unchanged<RestartPlanReply>(plan);
  auto typed = parse_reply<RestartPlanReply>(plan);
  ASSERT_TRUE(typed.has_value());
  EXPECT_EQ(typed->plan.units_to_restart(), std::vector<std::string>{"nginx.service"});
  EXPECT_EQ(typed->plan.interpreters.at(0).scripts.at(0), "lib/python3/" + kOddBytes + ".py");
  plan["units"][0].erase("restart");
  auto missing = parse_reply<RestartPlanReply>(plan);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, EPROTO);
  EXPECT_NE(missing.error().context.find("reply.units[0]: missing field \"restart\""),
            std::string::npos)
      << missing.error().context;
}

TEST(ProtocolTest, AnOriginsOstreeFieldsBelongToItsChecksum) {
  // Found by fuzz/control_fuzz: "version" without "checksum" parsed, but did not print.
  json j = {{"kind", "directory"}, {"dir", "/b"},     {"system_root", "/b"},
            {"subdir", ""},        {"version", "12"}, {"deployserial", 3}};
  auto origin = from_json<Origin>(j);
  ASSERT_TRUE(origin.has_value());
  EXPECT_EQ(origin->version, "");
  EXPECT_EQ(origin->deployserial, std::nullopt);
  auto again = from_json<Origin>(to_json(*origin));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *origin);
}

TEST(ProtocolTest, ErrorResponsesBecomeTheDaemonsError) {
  json refusal = cli::error_response(make_error(ENOENT, "no hotfix to reset"));
  refusal["error"] = "no hotfix to reset";
  auto r = parse_reply<HotfixResetReply>(over_the_wire(refusal));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(r.error().context, "no hotfix to reset");

  auto unknown = parse_reply<StatusReply>(json{{"ok", false}, {"error", "x"}, {"code", "E?"}});
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, EIO);
  EXPECT_EQ(errno_from_name("EACCES"), EACCES);
  EXPECT_EQ(errno_from_name("EBADMSG"), EBADMSG);
}

TEST(ProtocolTest, MalformedRepliesAreEprotoNamingTheField) {
  auto expect_eproto = [](const json& response, const std::string& needle) {
    Result<StatusReply> r = fail(0, "");
    ASSERT_NO_THROW(r = parse_reply<StatusReply>(response)) << response.dump();
    ASSERT_FALSE(r.has_value()) << response.dump();
    EXPECT_EQ(r.error().code, EPROTO);
    EXPECT_NE(r.error().context.find(needle), std::string::npos) << r.error().context;
  };
  expect_eproto(json::array(), "without \"ok\"");
  expect_eproto(json{{"ok", "true"}}, "without \"ok\"");
  expect_eproto(json{{"ok", true}}, "reply: missing field \"pid\"");
  json j = daemon_status();
  j["pid"] = "1234";
  expect_eproto(j, "reply.pid: an integer expected, not string");
  j = daemon_status();
  j["pid"] = uint64_t{1} << 40;
  expect_eproto(j, "reply.pid: 1099511627776 is out of range");
  j = daemon_status();
  j["live_generation"] = -1;
  expect_eproto(j, "reply.live_generation: -1 is out of range");
  j = daemon_status();
  j["generations"][1]["paths"][0] = 5;
  expect_eproto(j, "reply.generations[1].paths[0]: a string expected, not number");
  j = daemon_status();
  j["holders"][0].erase("unit");
  expect_eproto(j, "reply.holders[0]: missing field \"unit\"");
  j = daemon_status();
  j["last_switch"] = {{"from_generation", 1}};
  expect_eproto(j, "reply.last_switch: missing field \"to_generation\"");
  j = daemon_status();
  j["hotfix"] = json::array();
  expect_eproto(j, "reply.hotfix: an object expected, not array");
}

}  // namespace
}  // namespace livefs::protocol
