// The control protocol's structs to and from JSON. Reading checks every type itself (no
// nlohmann exception is thrown by a well-typed read), and a catch-all turns an allocation
// failure into an Error, so nothing a peer sends can throw out of a parser.
#include "livefs/protocol.h"

#include <cstring>
#include <limits>
#include <type_traits>

namespace livefs::protocol {

using nlohmann::json;

namespace {

// ---- reading: one overload per value type ----------------------------------------------

std::unexpected<Error> bad(const std::string& where, const std::string& why) {
  return fail(EINVAL, where + ": " + why);
}

const char* type_name(const json& v) { return v.type_name(); }

Status read(const json& v, std::string& out, const std::string& where) {
  if (!v.is_string()) return bad(where, std::string("a string expected, not ") + type_name(v));
  out = v.get_ref<const std::string&>();
  return {};
}

Status read(const json& v, bool& out, const std::string& where) {
  if (!v.is_boolean()) return bad(where, std::string("a boolean expected, not ") + type_name(v));
  out = v.get<bool>();
  return {};
}

Status read(const json& v, double& out, const std::string& where) {
  if (!v.is_number()) return bad(where, std::string("a number expected, not ") + type_name(v));
  out = v.get<double>();
  return {};
}

template <class Int>
requires(std::is_integral_v<Int> && !std::is_same_v<Int, bool>) Status
    read(const json& v, Int& out, const std::string& where) {
  if (v.is_number_unsigned()) {
    auto n = v.get<uint64_t>();
    if (n > static_cast<uint64_t>(std::numeric_limits<Int>::max()))
      return bad(where, std::to_string(n) + " is out of range");
    out = static_cast<Int>(n);
    return {};
  }
  if (v.is_number_integer()) {
    auto n = v.get<int64_t>();
    if constexpr (std::is_unsigned_v<Int>) {
      // A non-negative number built from a signed type (on the wire it parses as unsigned).
      if (n < 0 || static_cast<uint64_t>(n) > std::numeric_limits<Int>::max())
        return bad(where, std::to_string(n) + " is out of range");
      out = static_cast<Int>(n);
      return {};
    } else {
      if (n < static_cast<int64_t>(std::numeric_limits<Int>::min()) ||
          n > static_cast<int64_t>(std::numeric_limits<Int>::max()))
        return bad(where, std::to_string(n) + " is out of range");
      out = static_cast<Int>(n);
      return {};
    }
  }
  return bad(where, std::string("an integer expected, not ") + type_name(v));
}

template <class T>
Status read(const json& v, std::vector<T>& out, const std::string& where);
template <class T>
Status read(const json& v, std::optional<T>& out, const std::string& where);

// Structs: each has a read_fields(object, out, where).
template <class T>
concept Struct = requires(const json& j, T& t, const std::string& w) {
  { read_fields(j, t, w) } -> std::same_as<Status>;
};

template <Struct T>
Status read(const json& v, T& out, const std::string& where) {
  if (!v.is_object()) return bad(where, std::string("an object expected, not ") + type_name(v));
  return read_fields(v, out, where);
}

template <class T>
Status read(const json& v, std::vector<T>& out, const std::string& where) {
  if (!v.is_array()) return bad(where, std::string("an array expected, not ") + type_name(v));
  out.clear();
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    T item{};
    if (auto st = read(v[i], item, where + "[" + std::to_string(i) + "]"); !st) return st;
    out.push_back(std::move(item));
  }
  return {};
}

// null is "none", like a missing field.
template <class T>
Status read(const json& v, std::optional<T>& out, const std::string& where) {
  if (v.is_null()) {
    out.reset();
    return {};
  }
  T value{};
  if (auto st = read(v, value, where); !st) return st;
  out = std::move(value);
  return {};
}

// A member of `obj`: a missing one is an error, unless `out` is optional (then nullopt).
template <class T>
Status field(const json& obj, const char* key, T& out, const std::string& where) {
  auto it = obj.find(key);
  std::string at = where + "." + key;
  if (it == obj.end()) {
    if constexpr (requires { out.reset(); }) {
      out.reset();
      return {};
    } else {
      return bad(where, std::string("missing field \"") + key + "\"");
    }
  }
  return read(*it, out, at);
}

// A member that may be missing (then `out` keeps its default).
template <class T>
Status optional_field(const json& obj, const char* key, T& out, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return {};
  return read(*it, out, where + "." + key);
}

// Reads every listed field, stopping at the first error.
#define LIVEFS_FIELDS(...)          \
  do {                              \
    for (Status st : {__VA_ARGS__}) \
      if (!st) return st;           \
  } while (0)

}  // namespace

// read_fields is found by argument-dependent lookup from the templates above, so these live
// in the protocol namespace itself (declared before their first use through Struct).
Status read_fields(const json& j, SwitchStats& x, const std::string& w);
Status read_fields(const json& j, Change& x, const std::string& w);
Status read_fields(const json& j, KeptChange& x, const std::string& w);
Status read_fields(const json& j, RebootNeed& x, const std::string& w);
Status read_fields(const json& j, ConfigChange& x, const std::string& w);
Status read_fields(const json& j, EtcConflict& x, const std::string& w);
Status read_fields(const json& j, EtcMerge& x, const std::string& w);
Status read_fields(const json& j, PackageGroup& x, const std::string& w);
Status read_fields(const json& j, AddedPackage& x, const std::string& w);
Status read_fields(const json& j, Origin& x, const std::string& w);
Status read_fields(const json& j, Generation& x, const std::string& w);
Status read_fields(const json& j, HistoryRecord& x, const std::string& w);
Status read_fields(const json& j, HotfixWatch& x, const std::string& w);
Status read_fields(const json& j, HotfixFile& x, const std::string& w);
Status read_fields(const json& j, HotfixState& x, const std::string& w);
Status read_fields(const json& j, Loading& x, const std::string& w);
Status read_fields(const json& j, HolderScan& x, const std::string& w);
Status read_fields(const json& j, StagingNow& x, const std::string& w);
Status read_fields(const json& j, FileIo& x, const std::string& w);
Status read_fields(const json& j, StatusReply& x, const std::string& w);
Status read_fields(const json& j, DiffReply& x, const std::string& w);
Status read_fields(const json& j, ApplyReply& x, const std::string& w);
Status read_fields(const json& j, GoBackReply& x, const std::string& w);
Status read_fields(const json& j, StageReply& x, const std::string& w);
Status read_fields(const json& j, HotfixWatchReply& x, const std::string& w);
Status read_fields(const json& j, HotfixAddReply& x, const std::string& w);
Status read_fields(const json& j, HotfixListReply& x, const std::string& w);
Status read_fields(const json& j, HotfixResetReply& x, const std::string& w);
Status read_fields(const json& j, UmountReply& x, const std::string& w);
Status read_fields(const json& j, RestartPlanReply& x, const std::string& w);
}  // namespace livefs::protocol

// host::Holder lives in livefs::host: its reader is found there.
namespace livefs::host {
Status read_fields(const nlohmann::json& j, Holder& x, const std::string& w);
Status read_fields(const nlohmann::json& j, StaleProcess& x, const std::string& w);
Status read_fields(const nlohmann::json& j, UnitRestart& x, const std::string& w);
Status read_fields(const nlohmann::json& j, SessionRestart& x, const std::string& w);
}  // namespace livefs::host

namespace livefs::protocol {

// ---- requests ------------------------------------------------------------------------------

namespace {

template <class T>
struct RequestName;
#define LIVEFS_REQUEST(Type, name)             \
  template <>                                  \
  struct RequestName<Type> {                   \
    static constexpr const char* value = name; \
  };
LIVEFS_REQUEST(StatusRequest, "status")
LIVEFS_REQUEST(DiffRequest, "diff")
LIVEFS_REQUEST(ApplyRequest, "apply")
LIVEFS_REQUEST(RollbackRequest, "rollback")
LIVEFS_REQUEST(ResetRequest, "reset")
LIVEFS_REQUEST(StageRequest, "stage")
LIVEFS_REQUEST(HotfixWatchRequest, "hotfix_watch")
LIVEFS_REQUEST(HotfixAddRequest, "hotfix_add")
LIVEFS_REQUEST(HotfixListRequest, "hotfix_list")
LIVEFS_REQUEST(HotfixResetRequest, "hotfix_reset")
LIVEFS_REQUEST(UmountRequest, "umount")
LIVEFS_REQUEST(RestartPlanRequest, "restart_plan")
#undef LIVEFS_REQUEST

// The request bodies: fields beside "cmd". A request without fields has no overload of
// these and writes/reads nothing.
void put_fields(json& j, const DiffRequest& r) { j["by_package"] = r.by_package; }
void put_fields(json& j, const ApplyRequest& r) {
  j["patterns"] = r.patterns;
  j["packages"] = r.packages;
  j["all"] = r.all;
  j["allow_replace"] = r.allow_replace;
  j["dry_run"] = r.dry_run;
  if (r.etc) j["etc"] = true;
  if (r.with_deps) j["with_deps"] = true;
  if (r.ignore_deps) j["ignore_deps"] = true;
}
void put_fields(json& j, const RollbackRequest& r) {
  if (r.to) j["to"] = *r.to;
}
void put_fields(json& j, const StageRequest& r) {
  if (r.commit) j["commit"] = *r.commit;
  if (r.remote) j["remote"] = *r.remote;
  if (r.ref) j["ref"] = *r.ref;
}
void put_fields(json& j, const HotfixWatchRequest& r) {
  j["source"] = r.source;
  j["at"] = r.at;
}
void put_fields(json& j, const HotfixAddRequest& r) {
  j["source"] = r.source;
  j["at"] = r.at;
}
void put_fields(json& j, const HotfixResetRequest& r) {
  if (r.prefix) j["prefix"] = *r.prefix;
}

// Flags and lists of a request may be left out (they default to false and empty); what a
// request cannot do without is required.
Status get_fields(const json& j, DiffRequest& r, const std::string& w) {
  return optional_field(j, "by_package", r.by_package, w);
}
Status get_fields(const json& j, ApplyRequest& r, const std::string& w) {
  LIVEFS_FIELDS(optional_field(j, "patterns", r.patterns, w),
                optional_field(j, "packages", r.packages, w), optional_field(j, "all", r.all, w),
                optional_field(j, "allow_replace", r.allow_replace, w),
                optional_field(j, "dry_run", r.dry_run, w), optional_field(j, "etc", r.etc, w),
                optional_field(j, "with_deps", r.with_deps, w),
                optional_field(j, "ignore_deps", r.ignore_deps, w));
  if (r.with_deps && r.ignore_deps)
    return bad(w, "\"with_deps\" and \"ignore_deps\" exclude each other");
  return {};
}
Status get_fields(const json& j, RollbackRequest& r, const std::string& w) {
  return field(j, "to", r.to, w);
}
Status get_fields(const json& j, StageRequest& r, const std::string& w) {
  LIVEFS_FIELDS(field(j, "commit", r.commit, w), field(j, "remote", r.remote, w),
                field(j, "ref", r.ref, w));
  if (r.remote.has_value() != r.ref.has_value())
    return bad(w, "\"remote\" and \"ref\" go together");
  if (r.remote && r.commit) return bad(w, "\"commit\" and \"remote\" exclude each other");
  return {};
}
Status get_fields(const json& j, HotfixWatchRequest& r, const std::string& w) {
  LIVEFS_FIELDS(field(j, "source", r.source, w), field(j, "at", r.at, w));
  return {};
}
Status get_fields(const json& j, HotfixAddRequest& r, const std::string& w) {
  LIVEFS_FIELDS(field(j, "source", r.source, w), field(j, "at", r.at, w));
  return {};
}
Status get_fields(const json& j, HotfixResetRequest& r, const std::string& w) {
  return field(j, "prefix", r.prefix, w);
}

template <class T>
Result<Request> parse_as(const json& j) {
  T r{};
  if constexpr (requires(std::string w) { get_fields(j, r, w); }) {
    if (auto st = get_fields(j, r, std::string("request ") + RequestName<T>::value); !st)
      return std::unexpected(st.error());
  }
  return Request(std::move(r));
}

template <class... T>
Result<Request> parse_any(const std::string& cmd, const json& j, std::variant<T...>*) {
  Result<Request> out = fail(EINVAL, "request: unknown command \"" + cmd + "\"");
  (void)((cmd == RequestName<T>::value ? (out = parse_as<T>(j), true) : false) || ...);
  return out;
}

}  // namespace

const char* command_name(const Request& request) {
  return std::visit([](const auto& r) { return RequestName<std::decay_t<decltype(r)>>::value; },
                    request);
}

json to_json(const Request& request) {
  return std::visit(
      [](const auto& r) {
        json j = {{"cmd", RequestName<std::decay_t<decltype(r)>>::value}};
        if constexpr (requires { put_fields(j, r); }) put_fields(j, r);
        return j;
      },
      request);
}

Result<Request> parse_request(const json& value) {
  try {
    if (!value.is_object())
      return fail(EINVAL, std::string("request: an object expected, not ") + type_name(value));
    std::string cmd;
    if (auto st = field(value, "cmd", cmd, "request"); !st) return std::unexpected(st.error());
    return parse_any(cmd, value, static_cast<Request*>(nullptr));
  } catch (const std::exception& e) {
    return fail(ENOMEM, std::string("request: ") + e.what());
  }
}

// ---- writing -------------------------------------------------------------------------------

namespace {

template <class T>
json array_of(const std::vector<T>& items) {
  json out = json::array();
  for (const auto& x : items) out.push_back(to_json(x));
  return out;
}

json optional_string(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

}  // namespace

json to_json(const SwitchStats& x) {
  return {{"from_generation", x.from_generation},
          {"to_generation", x.to_generation},
          {"changed_paths", x.changed_paths},
          {"invalidations", x.invalidations},
          {"seconds", x.seconds}};
}

json to_json(const Change& x) {
  json j = {{"path", x.path}, {"kind", x.kind}, {"kernel", x.kernel}};
  if (x.reboot) j["reboot"] = *x.reboot;
  return j;
}

json to_json(const KeptChange& x) {
  return {{"path", x.path}, {"kind", x.kind}, {"reason", x.reason}};
}

json to_json(const RebootNeed& x) {
  return {{"what", x.what}, {"reason", x.reason}, {"items", x.items}, {"restart", x.restart}};
}

json to_json(const ConfigChange& x) { return {{"path", x.path}, {"kind", x.kind}}; }

json to_json(const EtcConflict& x) { return {{"path", x.path}, {"reason", x.reason}}; }

json to_json(const EtcMerge& x) {
  return {{"updated", x.updated},
          {"added", x.added},
          {"removed", x.removed},
          {"conflicts", array_of(x.conflicts)}};
}

json to_json(const PackageGroup& x) {
  json j = {{"package", x.package},
            {"old_version", x.old_version},
            {"new_version", x.new_version},
            {"paths", x.paths}};
  if (x.goes_with) j["goes_with"] = *x.goes_with;
  return j;
}

json to_json(const AddedPackage& x) { return {{"package", x.package}, {"because", x.because}}; }

json to_json(const Holder& x) {
  return {
      {"pid", x.pid}, {"command", x.command}, {"path", x.path}, {"how", x.how}, {"unit", x.unit}};
}

json to_json(const Origin& x) {
  json j = {{"kind", x.kind}, {"dir", x.dir}, {"system_root", x.system_root}, {"subdir", x.subdir}};
  if (!x.checksum.empty()) {
    j["checksum"] = x.checksum;
    j["version"] = x.version;
    j["osname"] = x.osname;
    if (x.deployserial) j["deployserial"] = *x.deployserial;
  }
  return j;
}

json to_json(const Generation& x) {
  return {{"number", x.number}, {"op", x.op},
          {"paths", x.paths},   {"path_count", x.path_count},
          {"layer", x.layer},   {"time_ns", x.time_ns},
          {"time", x.time}};
}

json to_json(const HistoryRecord& x) {
  return {{"seq", x.seq},
          {"op", x.op},
          {"generation", x.generation},
          {"path_count", x.path_count},
          {"time", x.time}};
}

json to_json(const HotfixWatch& x) {
  return {{"source", x.source},           {"at", x.at},
          {"entries", x.entries},         {"changes", x.changes},
          {"last_change", x.last_change}, {"error", x.error}};
}

json to_json(const HotfixFile& x) { return {{"source", x.source}, {"at", x.at}}; }

json to_json(const HotfixState& x) {
  return {{"watches", array_of(x.watches)},
          {"adds", array_of(x.adds)},
          {"layer_entries", x.layer_entries}};
}

json to_json(const Loading& x) {
  json j = {{"phase", x.phase}, {"entries", x.entries}};
  if (x.expected) j["expected"] = *x.expected;
  if (x.percent) j["percent"] = *x.percent;
  return j;
}

json to_json(const HolderScan& x) {
  return {{"current", x.current},
          {"scanning", x.scanning},
          {"finished", x.finished},
          {"seconds", x.seconds},
          {"error", optional_string(x.error)}};
}

json to_json(const StagingNow& x) {
  json j = {{"what", x.what}, {"files", x.files}};
  if (x.expected) j["expected"] = *x.expected;
  if (x.percent) j["percent"] = *x.percent;
  return j;
}

json to_json(const FileIo& x) {
  return {{"libfuse", x.libfuse},
          {"passthrough", x.passthrough},
          {"why_not", x.why_not},
          {"backing_files", x.backing_files},
          {"fallbacks", x.fallbacks}};
}

json to_json(const StatusReply& x) {
  json j = {{"pid", x.pid},
            {"booted", x.booted},
            {"staged", x.staged},
            {"booted_origin", to_json(x.booted_origin)},
            {"staged_origin", to_json(x.staged_origin)},
            {"store", x.store},
            {"mountpoint", x.mountpoint},
            {"live_generation", x.live_generation},
            {"generations", array_of(x.generations)},
            {"history", array_of(x.history)},
            {"history_records", x.history_records},
            {"hotfix", to_json(x.hotfix)},
            {"warnings", x.warnings},
            {"journal_error", optional_string(x.journal_error)},
            {"last_switch", x.last_switch ? to_json(*x.last_switch) : json(nullptr)},
            {"stage_error", optional_string(x.stage_error)},
            {"journal_note", x.journal_note},
            {"journal_set_aside", x.journal_set_aside},
            {"config_note", x.config_note},
            {"loading", x.loading ? to_json(*x.loading) : json(nullptr)},
            {"staging", x.staging ? to_json(*x.staging) : json(nullptr)},
            {"holders", array_of(x.holders)}};
  if (x.holders_scan) j["holders_scan"] = to_json(*x.holders_scan);
  if (x.file_io) j["file_io"] = to_json(*x.file_io);
  if (x.reboot_needed_for) j["reboot_needed_for"] = array_of(*x.reboot_needed_for);
  return j;
}

json to_json(const DiffReply& x) {
  json j = {{"live_generation", x.live_generation},
            {"staged", x.staged},
            {"changes", array_of(x.changes)},
            {"config_changes", array_of(x.config_changes)},
            {"config_note", x.config_note}};
  if (x.packages) j["packages"] = array_of(*x.packages);
  return j;
}

json to_json(const ApplyReply& x) {
  json j = {{"dry_run", x.dry_run},
            {"applied", array_of(x.applied)},
            {"skipped_kernel", x.skipped_kernel}};
  if (x.kept) j["kept"] = array_of(*x.kept);
  if (x.generation) j["generation"] = *x.generation;
  if (x.switch_stats) j["switch"] = to_json(*x.switch_stats);
  if (x.holders) j["holders"] = array_of(*x.holders);
  if (x.holders_scan) j["holders_scan"] = to_json(*x.holders_scan);
  if (x.etc) j["etc"] = to_json(*x.etc);
  if (x.note) j["note"] = *x.note;
  if (x.added_packages) j["added_packages"] = array_of(*x.added_packages);
  if (x.dependency_problems) j["dependency_problems"] = *x.dependency_problems;
  return j;
}

json to_json(const GoBackReply& x) {
  json j = {{"op", x.op}, {"generation", x.generation}, {"switch", to_json(x.switch_stats)}};
  if (x.note) j["note"] = *x.note;
  if (x.etc_restored) j["etc_restored"] = *x.etc_restored;
  if (x.etc_error) j["etc_error"] = *x.etc_error;
  if (x.etc_kept) j["etc_kept"] = *x.etc_kept;
  return j;
}

json to_json(const StageReply& x) {
  return {{"staged", x.staged},
          {"staged_origin", to_json(x.staged_origin)},
          {"pending", x.pending},
          {"files", x.files},
          {"files_as_booted", x.files_as_booted},
          {"files_reused", x.files_reused},
          {"files_read", x.files_read},
          {"bytes_read", x.bytes_read},
          {"pull_seconds", x.pull_seconds},
          {"seconds", x.seconds}};
}

json to_json(const HotfixWatchReply& x) {
  return {{"source", x.source},
          {"at", x.at},
          {"entries", x.entries},
          {"switch", to_json(x.switch_stats)}};
}

json to_json(const HotfixAddReply& x) {
  return {{"source", x.source}, {"at", x.at}, {"switch", to_json(x.switch_stats)}};
}

json to_json(const HotfixListReply& x) {
  json j = to_json(x.hotfix);
  j["files"] = x.files;
  return j;
}

json to_json(const HotfixResetReply& x) {
  return {{"removed_paths", x.removed_paths},
          {"removed_watches", x.removed_watches},
          {"generation", x.generation},
          {"switch", to_json(x.switch_stats)}};
}

json to_json(const UmountReply& x) {
  json j = {{"users", x.users}, {"mountpoint", x.mountpoint}, {"detached", x.detached}};
  if (x.pid) j["pid"] = *x.pid;
  return j;
}

json to_json(const StaleProcess& x) {
  return {{"pid", x.pid},
          {"command", x.command},
          {"unit", x.unit},
          {"paths", x.paths},
          {"scripts", x.scripts}};
}

json to_json(const UnitRestart& x) {
  return {{"unit", x.unit},
          {"manager", x.manager},
          {"restart", x.restart},
          {"note", x.note},
          {"processes", array_of(x.processes)}};
}

json to_json(const SessionRestart& x) {
  return {{"session", x.session}, {"slice", x.slice}, {"processes", array_of(x.processes)}};
}

json to_json(const RestartPlanReply& x) {
  return {{"units", array_of(x.plan.units)},
          {"sessions", array_of(x.plan.sessions)},
          {"interpreters", array_of(x.plan.interpreters)},
          {"processes", array_of(x.plan.processes)},
          {"own_unit", x.plan.own_unit},
          {"holders_scan", to_json(x.holders_scan)}};
}

// ---- reading -------------------------------------------------------------------------------

Status read_fields(const json& j, SwitchStats& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "from_generation", x.from_generation, w),
                field(j, "to_generation", x.to_generation, w),
                field(j, "changed_paths", x.changed_paths, w),
                field(j, "invalidations", x.invalidations, w), field(j, "seconds", x.seconds, w));
  return {};
}

Status read_fields(const json& j, Change& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "path", x.path, w), field(j, "kind", x.kind, w),
                field(j, "kernel", x.kernel, w), field(j, "reboot", x.reboot, w));
  return {};
}

Status read_fields(const json& j, KeptChange& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "path", x.path, w), field(j, "kind", x.kind, w),
                field(j, "reason", x.reason, w));
  return {};
}

Status read_fields(const json& j, RebootNeed& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "what", x.what, w), field(j, "reason", x.reason, w),
                field(j, "items", x.items, w), field(j, "restart", x.restart, w));
  return {};
}

Status read_fields(const json& j, ConfigChange& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "path", x.path, w), field(j, "kind", x.kind, w));
  return {};
}

Status read_fields(const json& j, EtcConflict& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "path", x.path, w), field(j, "reason", x.reason, w));
  return {};
}

Status read_fields(const json& j, EtcMerge& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "updated", x.updated, w), field(j, "added", x.added, w),
                field(j, "removed", x.removed, w), field(j, "conflicts", x.conflicts, w));
  return {};
}

Status read_fields(const json& j, PackageGroup& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "package", x.package, w), field(j, "old_version", x.old_version, w),
                field(j, "new_version", x.new_version, w), field(j, "paths", x.paths, w),
                field(j, "goes_with", x.goes_with, w));
  return {};
}

Status read_fields(const json& j, AddedPackage& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "package", x.package, w), field(j, "because", x.because, w));
  return {};
}

Status read_fields(const json& j, Origin& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "kind", x.kind, w), field(j, "dir", x.dir, w),
                field(j, "system_root", x.system_root, w), field(j, "subdir", x.subdir, w),
                optional_field(j, "checksum", x.checksum, w));
  // The OSTree fields belong to a checksum (to_json writes them with one only): without it,
  // they are not read, so that a side parses to what it prints.
  if (x.checksum.empty()) return {};
  LIVEFS_FIELDS(optional_field(j, "version", x.version, w),
                optional_field(j, "osname", x.osname, w),
                field(j, "deployserial", x.deployserial, w));
  return {};
}

Status read_fields(const json& j, Generation& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "number", x.number, w), field(j, "op", x.op, w),
                field(j, "paths", x.paths, w), field(j, "path_count", x.path_count, w),
                field(j, "layer", x.layer, w), field(j, "time_ns", x.time_ns, w),
                field(j, "time", x.time, w));
  return {};
}

Status read_fields(const json& j, HistoryRecord& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "seq", x.seq, w), field(j, "op", x.op, w),
                field(j, "generation", x.generation, w), field(j, "path_count", x.path_count, w),
                field(j, "time", x.time, w));
  return {};
}

Status read_fields(const json& j, HotfixWatch& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "source", x.source, w), field(j, "at", x.at, w),
                field(j, "entries", x.entries, w), field(j, "changes", x.changes, w),
                field(j, "last_change", x.last_change, w), field(j, "error", x.error, w));
  return {};
}

Status read_fields(const json& j, HotfixFile& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "source", x.source, w), field(j, "at", x.at, w));
  return {};
}

Status read_fields(const json& j, HotfixState& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "watches", x.watches, w), field(j, "adds", x.adds, w),
                field(j, "layer_entries", x.layer_entries, w));
  return {};
}

Status read_fields(const json& j, Loading& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "phase", x.phase, w), field(j, "entries", x.entries, w),
                field(j, "expected", x.expected, w), field(j, "percent", x.percent, w));
  return {};
}

Status read_fields(const json& j, HolderScan& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "current", x.current, w), field(j, "scanning", x.scanning, w),
                field(j, "finished", x.finished, w), field(j, "seconds", x.seconds, w),
                field(j, "error", x.error, w));
  return {};
}

Status read_fields(const json& j, StagingNow& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "what", x.what, w), field(j, "files", x.files, w),
                field(j, "expected", x.expected, w), field(j, "percent", x.percent, w));
  return {};
}

Status read_fields(const json& j, FileIo& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "libfuse", x.libfuse, w), field(j, "passthrough", x.passthrough, w),
                field(j, "why_not", x.why_not, w), field(j, "backing_files", x.backing_files, w),
                field(j, "fallbacks", x.fallbacks, w));
  return {};
}

Status read_fields(const json& j, StatusReply& x, const std::string& w) {
  LIVEFS_FIELDS(
      field(j, "pid", x.pid, w), field(j, "booted", x.booted, w), field(j, "staged", x.staged, w),
      field(j, "booted_origin", x.booted_origin, w), field(j, "staged_origin", x.staged_origin, w),
      field(j, "store", x.store, w), field(j, "mountpoint", x.mountpoint, w),
      field(j, "live_generation", x.live_generation, w), field(j, "generations", x.generations, w),
      field(j, "history", x.history, w), field(j, "history_records", x.history_records, w),
      field(j, "hotfix", x.hotfix, w), field(j, "warnings", x.warnings, w),
      field(j, "journal_error", x.journal_error, w), field(j, "last_switch", x.last_switch, w),
      field(j, "stage_error", x.stage_error, w), field(j, "journal_note", x.journal_note, w),
      field(j, "journal_set_aside", x.journal_set_aside, w),
      field(j, "config_note", x.config_note, w), field(j, "loading", x.loading, w),
      field(j, "staging", x.staging, w), field(j, "holders", x.holders, w),
      field(j, "holders_scan", x.holders_scan, w),
      field(j, "reboot_needed_for", x.reboot_needed_for, w), field(j, "file_io", x.file_io, w));
  return {};
}

Status read_fields(const json& j, DiffReply& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "live_generation", x.live_generation, w), field(j, "staged", x.staged, w),
                field(j, "changes", x.changes, w), field(j, "config_changes", x.config_changes, w),
                field(j, "config_note", x.config_note, w), field(j, "packages", x.packages, w));
  return {};
}

Status read_fields(const json& j, ApplyReply& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "dry_run", x.dry_run, w), field(j, "applied", x.applied, w),
                field(j, "skipped_kernel", x.skipped_kernel, w), field(j, "kept", x.kept, w),
                field(j, "generation", x.generation, w), field(j, "switch", x.switch_stats, w),
                field(j, "holders", x.holders, w), field(j, "holders_scan", x.holders_scan, w),
                field(j, "etc", x.etc, w), field(j, "note", x.note, w),
                field(j, "added_packages", x.added_packages, w),
                field(j, "dependency_problems", x.dependency_problems, w));
  return {};
}

Status read_fields(const json& j, GoBackReply& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "op", x.op, w), field(j, "generation", x.generation, w),
                field(j, "switch", x.switch_stats, w), field(j, "note", x.note, w),
                field(j, "etc_restored", x.etc_restored, w), field(j, "etc_error", x.etc_error, w),
                field(j, "etc_kept", x.etc_kept, w));
  return {};
}

Status read_fields(const json& j, StageReply& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "staged", x.staged, w), field(j, "staged_origin", x.staged_origin, w),
                field(j, "pending", x.pending, w), field(j, "files", x.files, w),
                field(j, "files_as_booted", x.files_as_booted, w),
                field(j, "files_reused", x.files_reused, w),
                field(j, "files_read", x.files_read, w), field(j, "bytes_read", x.bytes_read, w),
                field(j, "pull_seconds", x.pull_seconds, w), field(j, "seconds", x.seconds, w));
  return {};
}

Status read_fields(const json& j, HotfixWatchReply& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "source", x.source, w), field(j, "at", x.at, w),
                field(j, "entries", x.entries, w), field(j, "switch", x.switch_stats, w));
  return {};
}

Status read_fields(const json& j, HotfixAddReply& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "source", x.source, w), field(j, "at", x.at, w),
                field(j, "switch", x.switch_stats, w));
  return {};
}

Status read_fields(const json& j, HotfixListReply& x, const std::string& w) {
  LIVEFS_FIELDS(read_fields(j, x.hotfix, w), field(j, "files", x.files, w));
  return {};
}

Status read_fields(const json& j, HotfixResetReply& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "removed_paths", x.removed_paths, w),
                field(j, "removed_watches", x.removed_watches, w),
                field(j, "generation", x.generation, w), field(j, "switch", x.switch_stats, w));
  return {};
}

Status read_fields(const json& j, UmountReply& x, const std::string& w) {
  LIVEFS_FIELDS(field(j, "users", x.users, w), field(j, "mountpoint", x.mountpoint, w),
                optional_field(j, "detached", x.detached, w), field(j, "pid", x.pid, w));
  return {};
}

Status read_fields(const json& j, RestartPlanReply& x, const std::string& w) {
  LIVEFS_FIELDS(
      field(j, "units", x.plan.units, w), field(j, "sessions", x.plan.sessions, w),
      field(j, "interpreters", x.plan.interpreters, w), field(j, "processes", x.plan.processes, w),
      field(j, "own_unit", x.plan.own_unit, w), field(j, "holders_scan", x.holders_scan, w));
  return {};
}

}  // namespace livefs::protocol

namespace livefs::host {

Status read_fields(const nlohmann::json& j, StaleProcess& x, const std::string& w) {
  using protocol::field;
  LIVEFS_FIELDS(field(j, "pid", x.pid, w), field(j, "command", x.command, w),
                field(j, "unit", x.unit, w), field(j, "paths", x.paths, w),
                field(j, "scripts", x.scripts, w));
  return {};
}

Status read_fields(const nlohmann::json& j, UnitRestart& x, const std::string& w) {
  using protocol::field;
  LIVEFS_FIELDS(field(j, "unit", x.unit, w), field(j, "manager", x.manager, w),
                field(j, "restart", x.restart, w), field(j, "note", x.note, w),
                field(j, "processes", x.processes, w));
  return {};
}

Status read_fields(const nlohmann::json& j, SessionRestart& x, const std::string& w) {
  using protocol::field;
  LIVEFS_FIELDS(field(j, "session", x.session, w), field(j, "slice", x.slice, w),
                field(j, "processes", x.processes, w));
  return {};
}

Status read_fields(const nlohmann::json& j, Holder& x, const std::string& w) {
  using protocol::field;
  LIVEFS_FIELDS(field(j, "pid", x.pid, w), field(j, "command", x.command, w),
                field(j, "path", x.path, w), field(j, "how", x.how, w),
                field(j, "unit", x.unit, w));
  return {};
}

}  // namespace livefs::host

namespace livefs::protocol {

template <class T>
Result<T> from_json(const json& body) {
  try {
    T out{};
    if (auto st = read(body, out, "reply"); !st) return std::unexpected(st.error());
    return out;
  } catch (const std::exception& e) {
    return fail(ENOMEM, std::string("reply: ") + e.what());
  }
}

int errno_from_name(std::string_view name) {
  for (int code = 1; code < 4096; ++code) {
    const char* n = strerrorname_np(code);
    if (n != nullptr && name == n) return code;
  }
  return EIO;
}

template <class Reply>
Result<Reply> parse_reply(const json& response) {
  if (!response.is_object() || !response.contains("ok") || !response.at("ok").is_boolean())
    return fail(EPROTO, "livefs daemon: a response without \"ok\"");
  if (!response.at("ok").get<bool>()) {
    std::string message = "daemon error", code;
    (void)optional_field(response, "error", message, "response");
    (void)optional_field(response, "code", code, "response");
    return std::unexpected(make_error(errno_from_name(code), message));
  }
  auto reply = from_json<Reply>(response);
  if (!reply) {
    return std::unexpected(
        make_error(EPROTO, "livefs daemon: malformed response: " + reply.error().context));
  }
  return reply;
}

#define LIVEFS_INSTANTIATE(T)                        \
  template Result<T> from_json<T>(const json& body); \
  template Result<T> parse_reply<T>(const json& response);
LIVEFS_INSTANTIATE(SwitchStats)
LIVEFS_INSTANTIATE(Change)
LIVEFS_INSTANTIATE(KeptChange)
LIVEFS_INSTANTIATE(RebootNeed)
LIVEFS_INSTANTIATE(ConfigChange)
LIVEFS_INSTANTIATE(EtcConflict)
LIVEFS_INSTANTIATE(EtcMerge)
LIVEFS_INSTANTIATE(PackageGroup)
LIVEFS_INSTANTIATE(AddedPackage)
LIVEFS_INSTANTIATE(Holder)
LIVEFS_INSTANTIATE(Origin)
LIVEFS_INSTANTIATE(Generation)
LIVEFS_INSTANTIATE(HistoryRecord)
LIVEFS_INSTANTIATE(HotfixWatch)
LIVEFS_INSTANTIATE(HotfixFile)
LIVEFS_INSTANTIATE(HotfixState)
LIVEFS_INSTANTIATE(Loading)
LIVEFS_INSTANTIATE(HolderScan)
LIVEFS_INSTANTIATE(StagingNow)
LIVEFS_INSTANTIATE(FileIo)
LIVEFS_INSTANTIATE(StatusReply)
LIVEFS_INSTANTIATE(DiffReply)
LIVEFS_INSTANTIATE(ApplyReply)
LIVEFS_INSTANTIATE(GoBackReply)
LIVEFS_INSTANTIATE(StageReply)
LIVEFS_INSTANTIATE(HotfixWatchReply)
LIVEFS_INSTANTIATE(HotfixAddReply)
LIVEFS_INSTANTIATE(HotfixListReply)
LIVEFS_INSTANTIATE(HotfixResetReply)
LIVEFS_INSTANTIATE(UmountReply)
LIVEFS_INSTANTIATE(StaleProcess)
LIVEFS_INSTANTIATE(UnitRestart)
LIVEFS_INSTANTIATE(SessionRestart)
LIVEFS_INSTANTIATE(RestartPlanReply)
#undef LIVEFS_INSTANTIATE

}  // namespace livefs::protocol
