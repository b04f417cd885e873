// The control protocol as types: one struct per request and per reply, each with one
// to_json and one parser, shared by the daemon (which parses requests and builds replies),
// the CLI (which builds requests and prints replies) and the tests.
//
// The JSON here is the decoded form: strings hold bytes (paths, command names, messages that
// name paths). control.h's wire_line() / parse_wire_line() map them to and from the wire
// (common/wire_text.h), so a path that is not UTF-8 crosses unchanged.
//
// Parsers never throw: a value of the wrong type, a missing required field or a number out of
// range is Error{EINVAL, "<what>: <field>: <why>"}. Unknown fields are ignored (a newer peer
// may add some). The field names and shapes are the protocol: README.md lists what `--json`
// prints for each command, which is the reply body below (without "ok").
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/error.h"
#include "host/holders.h"
#include "host/restart_plan.h"

namespace livefs::protocol {

// ---- requests: {"cmd": NAME, fields...} ---------------------------------------------------

struct StatusRequest {
  bool operator==(const StatusRequest&) const = default;
};
struct DiffRequest {
  bool by_package = false;
  bool operator==(const DiffRequest&) const = default;
};
struct ApplyRequest {
  std::vector<std::string> patterns;  // paths or globs
  std::vector<std::string> packages;  // package names (excludes patterns and all)
  bool all = false;
  bool allow_replace = false;
  bool dry_run = false;
  bool etc = false;  // also merge /etc (alone: a generation with the same layer)
  // With packages: add the pending packages their requirements need (else an unmet
  // requirement refuses the apply), or apply regardless of requirements.
  bool with_deps = false;
  bool ignore_deps = false;
  bool operator==(const ApplyRequest&) const = default;
};
struct RollbackRequest {
  std::optional<uint64_t> to;  // any generation below the live one; nullopt: one down
  bool operator==(const RollbackRequest&) const = default;
};
struct ResetRequest {
  bool operator==(const ResetRequest&) const = default;
};
// Without commit and remote: the sysroot's pending deployment. remote and ref go together
// (a pull, then its commit is staged).
struct StageRequest {
  std::optional<std::string> commit;
  std::optional<std::string> remote;
  std::optional<std::string> ref;
  bool operator==(const StageRequest&) const = default;
};
struct HotfixWatchRequest {
  std::string source;  // an absolute directory
  std::string at;      // a path in the view
  bool operator==(const HotfixWatchRequest&) const = default;
};
struct HotfixAddRequest {
  std::string source;  // an absolute file
  std::string at;
  bool operator==(const HotfixAddRequest&) const = default;
};
struct HotfixListRequest {
  bool operator==(const HotfixListRequest&) const = default;
};
struct HotfixResetRequest {
  std::optional<std::string> prefix;  // nullopt: the whole hotfix layer
  bool operator==(const HotfixResetRequest&) const = default;
};
struct UmountRequest {
  bool operator==(const UmountRequest&) const = default;
};
// What to restart: the daemon scans for holders again (waiting for that scan) and groups
// them (host/restart_plan.h). `livefs restart` runs systemctl itself.
struct RestartPlanRequest {
  bool operator==(const RestartPlanRequest&) const = default;
};

using Request =
    std::variant<StatusRequest, DiffRequest, ApplyRequest, RollbackRequest, ResetRequest,
                 StageRequest, HotfixWatchRequest, HotfixAddRequest, HotfixListRequest,
                 HotfixResetRequest, UmountRequest, RestartPlanRequest>;

// The "cmd" of a request ("status", "hotfix_watch", ...).
const char* command_name(const Request& request);
nlohmann::json to_json(const Request& request);
// EINVAL for anything that is not one of the requests above (not an object, no "cmd", an
// unknown command, a field of the wrong type, a missing required field).
Result<Request> parse_request(const nlohmann::json& value);

// ---- reply parts ---------------------------------------------------------------------------

// One generation switch of the view (overlay::SwitchStats).
struct SwitchStats {
  uint64_t from_generation = 0;
  uint64_t to_generation = 0;
  uint64_t changed_paths = 0;
  uint64_t invalidations = 0;
  double seconds = 0;
  bool operator==(const SwitchStats&) const = default;
};

// A pending change (diff) or one that an apply selected.
struct Change {
  std::string path;     // relative to the view
  std::string kind;     // store::change_name(): "added", "removed", "modified", ...
  bool kernel = false;  // needs a reboot (reboot says why): never applied live
  // Why it needs a reboot (overlay::reboot_reason), absent when it can go live.
  std::optional<std::string> reboot;
  bool operator==(const Change&) const = default;
};

// A pending change `apply --all` left out because it needs a reboot. A path below one listed
// with the same reason is not listed.
struct KeptChange {
  std::string path;
  std::string kind;
  std::string reason;  // "kernel: needs a reboot", "modules of the running kernel VER: ..."
  bool operator==(const KeptChange&) const = default;
};

// Something a reboot into the staged deployment brings that the live view cannot (status).
struct RebootNeed {
  // "kernel", "kernel_modules", "kernel_arguments", "selinux_policy" or "processes"
  std::string what;
  std::string reason;  // for people
  // The paths (relative to the view); kernel_arguments: the booted and the staged arguments;
  // processes: "PID COMMAND" (and " (UNIT)").
  std::vector<std::string> items;
  bool restart = false;  // processes: restarting them is enough, no reboot
  bool operator==(const RebootNeed&) const = default;
};

// A change of /etc between the deployments (shown by diff; `apply --etc` merges them).
struct ConfigChange {
  std::string path;  // "etc/..."
  std::string kind;
  bool operator==(const ConfigChange&) const = default;
};

// A default of /etc the merge left alone because the administrator changed it.
struct EtcConflict {
  std::string path;  // "etc/..."
  std::string reason;
  bool operator==(const EtcConflict&) const = default;
};

// The /etc merge of `apply --etc` (the plan, in a dry run): paths "etc/...".
struct EtcMerge {
  std::vector<std::string> updated;
  std::vector<std::string> added;
  std::vector<std::string> removed;
  std::vector<EtcConflict> conflicts;
  bool operator==(const EtcMerge&) const = default;
};

// The changes of one package (diff --by-package); package "" holds the unowned paths.
struct PackageGroup {
  std::string package;
  std::string old_version;  // "" when the package is new
  std::string new_version;  // "" when it is removed
  std::vector<std::string> paths;
  // Other pending packages this one needs to go live with (its requirements, or live
  // packages it would break); absent when none.
  std::optional<std::vector<std::string>> goes_with;
  bool operator==(const PackageGroup&) const = default;
};

// A package `apply --package --with-deps` added, and the requirement that brought it in.
struct AddedPackage {
  std::string package;
  std::string because;  // "apt 2.6.2 needs libapt-pkg6.0 (>= 2.6.2)"
  bool operator==(const AddedPackage&) const = default;
};

// A process still using a replaced file: host::Holder, {pid, command, path, how, unit}.
using Holder = host::Holder;

// The restart plan's parts (host/restart_plan.h): a process still using replaced files
// {pid, command, unit, paths, scripts}, a unit {unit, manager, restart, note, processes}, a
// login session {session, slice, processes}.
using StaleProcess = host::StaleProcess;
using UnitRestart = host::UnitRestart;
using SessionRestart = host::SessionRestart;

// Where one side of the view comes from.
struct Origin {
  std::string kind;  // "directory", "deployment", "commit" or "none"
  std::string dir;
  std::string system_root;
  std::string subdir;
  // OSTree sides only (present on the wire when `checksum` is not empty).
  std::string checksum;
  std::string version;
  std::string osname;
  std::optional<int> deployserial;
  bool operator==(const Origin&) const = default;
};

struct Generation {
  uint64_t number = 0;
  std::string op;  // "booted" (generation 0) or "apply"
  std::vector<std::string> paths;
  uint64_t path_count = 0;
  std::string layer;  // the layer tree's id, "" for generation 0
  int64_t time_ns = 0;
  std::string time;  // ISO 8601, "" for generation 0
  bool operator==(const Generation&) const = default;
};

struct HistoryRecord {
  uint64_t seq = 0;
  std::string op;  // overlay::op_name()
  uint64_t generation = 0;
  uint64_t path_count = 0;
  std::string time;
  bool operator==(const HistoryRecord&) const = default;
};

struct HotfixWatch {
  std::string source;
  std::string at;
  uint64_t entries = 0;
  uint64_t changes = 0;
  std::string last_change;
  std::string error;  // "" while it follows its source
  bool operator==(const HotfixWatch&) const = default;
};

struct HotfixFile {
  std::string source;
  std::string at;
  bool operator==(const HotfixFile&) const = default;
};

struct HotfixState {
  std::vector<HotfixWatch> watches;
  std::vector<HotfixFile> adds;
  uint64_t layer_entries = 0;
  bool operator==(const HotfixState&) const = default;
};

// What start-up has not finished yet (the booted manifest, the staged tree, the journal).
struct Loading {
  std::string phase;
  uint64_t entries = 0;  // read so far
  // Where `entries` is expected to end (an estimate: the tree before) and how far that is,
  // 0..99; absent when there is no estimate.
  std::optional<uint64_t> expected;
  std::optional<uint64_t> percent;
  bool operator==(const Loading&) const = default;
};

// The holder scan's last result: it runs after each switch, off the request (apply does not
// wait for it), and again for a status when it is more than a second old.
struct HolderScan {
  bool current = false;   // every switch so far is reflected
  bool scanning = false;  // a scan runs or is about to
  std::string finished;   // when the last scan ended (UTC, ISO 8601); "" before the first
  double seconds = 0;     // how long it took
  std::optional<std::string> error;  // the last scan failed (holders are an earlier one's)
  bool operator==(const HolderScan&) const = default;
};

// A stage running now (`livefs stage`, or a new deployment staged in the background).
struct StagingNow {
  std::string what;                  // e.g. "commit CHECKSUM"
  uint64_t files = 0;                // read so far
  std::optional<uint64_t> expected;  // as Loading's
  std::optional<uint64_t> percent;
  bool operator==(const StagingNow&) const = default;
};

// How the view serves file contents (overlay::FileIo).
struct FileIo {
  std::string libfuse;       // e.g. "libfuse 3.17.2 (built from source, linked statically)"
  bool passthrough = false;  // the kernel reads opened files from their backing files
  std::string why_not;       // when not: why
  uint64_t backing_files = 0;
  uint64_t fallbacks = 0;  // opens served through the daemon although passthrough is on
  bool operator==(const FileIo&) const = default;
};

// ---- replies: {"ok": true, fields...} ------------------------------------------------------

struct StatusReply {
  int pid = 0;
  std::string booted;  // Origin described for people
  std::string staged;
  Origin booted_origin;
  Origin staged_origin;
  std::string store;
  std::string mountpoint;
  uint64_t live_generation = 0;
  std::vector<Generation> generations;
  std::vector<HistoryRecord> history;  // the last records only
  uint64_t history_records = 0;
  HotfixState hotfix;
  std::vector<std::string> warnings;
  std::optional<std::string> journal_error;  // null on the wire when none
  std::optional<SwitchStats> last_switch;
  std::optional<std::string> stage_error;
  std::string journal_note;
  std::string journal_set_aside;
  std::string config_note;
  std::optional<Loading> loading;     // null on the wire once the daemon is ready
  std::optional<StagingNow> staging;  // null on the wire when no stage runs
  std::optional<FileIo> file_io;      // absent from daemons older than passthrough
  std::vector<Holder> holders;
  std::optional<HolderScan> holders_scan;  // absent until the journal is open
  // "reboot still needed for": absent until the daemon is ready.
  std::optional<std::vector<RebootNeed>> reboot_needed_for;
  bool operator==(const StatusReply&) const = default;
};

struct DiffReply {
  uint64_t live_generation = 0;
  std::string staged;
  std::vector<Change> changes;
  std::vector<ConfigChange> config_changes;
  std::string config_note;
  std::optional<std::vector<PackageGroup>> packages;  // with by_package only
  bool operator==(const DiffReply&) const = default;
};

struct ApplyReply {
  bool dry_run = false;
  std::vector<Change> applied;
  std::vector<std::string> skipped_kernel;  // the paths of `kept`
  std::optional<std::vector<KeptChange>> kept;
  // Absent in a dry run.
  std::optional<uint64_t> generation;
  std::optional<SwitchStats> switch_stats;  // "switch" on the wire
  std::optional<std::vector<Holder>> holders;
  std::optional<HolderScan> holders_scan;  // the scan as it stood when the switch was made
  std::optional<EtcMerge> etc;             // with --etc only
  // `apply --all --etc` with no tree change pending: why (the /etc merge is still made).
  std::optional<std::string> note;
  std::optional<std::vector<AddedPackage>> added_packages;      // --with-deps
  std::optional<std::vector<std::string>> dependency_problems;  // --ignore-deps
  bool operator==(const ApplyReply&) const = default;
};

// rollback and reset.
struct GoBackReply {
  std::string op;  // "rollback" or "reset"
  uint64_t generation = 0;
  SwitchStats switch_stats;
  std::optional<std::string> note;
  // The generations whose /etc merge was undone (absent when none was); an undo that
  // failed is retried at the next start (etc_error says why).
  std::optional<std::vector<uint64_t>> etc_restored;
  std::optional<std::string> etc_error;
  // What an undo left in /etc rather than lose the administrator's work ("PATH (why)",
  // PATH relative to /etc).
  std::optional<std::vector<std::string>> etc_kept;
  bool operator==(const GoBackReply&) const = default;
};

struct StageReply {
  std::string staged;
  Origin staged_origin;
  uint64_t pending = 0;
  uint64_t files = 0;
  uint64_t files_as_booted = 0;
  uint64_t files_reused = 0;
  uint64_t files_read = 0;
  uint64_t bytes_read = 0;
  double pull_seconds = 0;
  double seconds = 0;
  bool operator==(const StageReply&) const = default;
};

struct HotfixWatchReply {
  std::string source;
  std::string at;
  uint64_t entries = 0;
  SwitchStats switch_stats;
  bool operator==(const HotfixWatchReply&) const = default;
};

struct HotfixAddReply {
  std::string source;
  std::string at;
  SwitchStats switch_stats;
  bool operator==(const HotfixAddReply&) const = default;
};

struct HotfixListReply {
  HotfixState hotfix;              // its fields at the top level on the wire
  std::vector<std::string> files;  // what the hotfix layer serves (not directories)
  bool operator==(const HotfixListReply&) const = default;
};

struct HotfixResetReply {
  uint64_t removed_paths = 0;
  uint64_t removed_watches = 0;
  uint64_t generation = 0;
  SwitchStats switch_stats;
  bool operator==(const HotfixResetReply&) const = default;
};

struct UmountReply {
  std::vector<pid_t> users;  // processes that still use the detached view
  std::string mountpoint;
  bool detached = true;
  std::optional<pid_t> pid;  // the daemon's (for `umount --wait`)
  bool operator==(const UmountReply&) const = default;
};

// restart_plan: host::RestartPlan's fields at the top level, and the scan it was made from
// (a fresh one: the daemon waits for it, up to a limit; `current` false when it gave up).
struct RestartPlanReply {
  host::RestartPlan plan;
  HolderScan holders_scan;
  bool operator==(const RestartPlanReply&) const = default;
};

// to_json(x): the body of a reply (or a part) without "ok".
nlohmann::json to_json(const SwitchStats& x);
nlohmann::json to_json(const Change& x);
nlohmann::json to_json(const KeptChange& x);
nlohmann::json to_json(const RebootNeed& x);
nlohmann::json to_json(const ConfigChange& x);
nlohmann::json to_json(const EtcConflict& x);
nlohmann::json to_json(const EtcMerge& x);
nlohmann::json to_json(const PackageGroup& x);
nlohmann::json to_json(const AddedPackage& x);
nlohmann::json to_json(const Holder& x);
nlohmann::json to_json(const Origin& x);
nlohmann::json to_json(const Generation& x);
nlohmann::json to_json(const HistoryRecord& x);
nlohmann::json to_json(const HotfixWatch& x);
nlohmann::json to_json(const HotfixFile& x);
nlohmann::json to_json(const HotfixState& x);
nlohmann::json to_json(const Loading& x);
nlohmann::json to_json(const HolderScan& x);
nlohmann::json to_json(const StagingNow& x);
nlohmann::json to_json(const FileIo& x);
nlohmann::json to_json(const StatusReply& x);
nlohmann::json to_json(const DiffReply& x);
nlohmann::json to_json(const ApplyReply& x);
nlohmann::json to_json(const GoBackReply& x);
nlohmann::json to_json(const StageReply& x);
nlohmann::json to_json(const HotfixWatchReply& x);
nlohmann::json to_json(const HotfixAddReply& x);
nlohmann::json to_json(const HotfixListReply& x);
nlohmann::json to_json(const HotfixResetReply& x);
nlohmann::json to_json(const UmountReply& x);
nlohmann::json to_json(const StaleProcess& x);
nlohmann::json to_json(const UnitRestart& x);
nlohmann::json to_json(const SessionRestart& x);
nlohmann::json to_json(const RestartPlanReply& x);

// from_json<T>(body): the inverse of to_json for every type above (an "ok" member is
// ignored). EINVAL naming the field when the body is not such a value.
template <class T>
Result<T> from_json(const nlohmann::json& body);

// The answer the daemon sends: {"ok": true} and the reply's fields.
template <class Reply>
nlohmann::json ok_reply(const Reply& reply) {
  nlohmann::json j = to_json(reply);
  j["ok"] = true;
  return j;
}

// A response as the client reads it: the reply when "ok" is true; else the daemon's error
// (its code from "code", its sentence as the context, so message() is not what to show:
// the sentence is the context). EPROTO when the response is not one of those.
template <class Reply>
Result<Reply> parse_reply(const nlohmann::json& response);

// The errno whose symbolic name (Error::code_name()) is `name`; EIO for an unknown name.
int errno_from_name(std::string_view name);

}  // namespace livefs::protocol
