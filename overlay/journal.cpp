// The generation journal: record encoding, replay, and durable appends.
#include "overlay/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "common/atomic_file.h"
#include "common/text.h"

namespace livefs::overlay {

namespace {

bool needs_escape(unsigned char c) { return c <= ' ' || c == '%' || c >= 0x7f; }

std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (needs_escape(c)) {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  // An empty path (the root) must still be one word.
  return out.empty() ? std::string("%") : out;
}

std::optional<std::string> unescape(std::string_view s) {
  if (s == "%") return std::string();
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    unsigned v = 0;
    auto r = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
    if (r.ec != std::errc() || r.ptr != s.data() + i + 3) return std::nullopt;
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

template <class T>
bool parse_num(std::string_view s, T& out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && !s.empty();
}

std::string checksum_hex(std::string_view payload) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(payload.data(), payload.size())));
  return buf;
}

Status write_all(Sys& sys, int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = sys.write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("write");
    }
    if (n == 0) return fail(EIO, "write: no progress");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A booted identity is any bytes; where people read it (notes, errors), it is escaped.
std::string shown(std::string_view identity) { return escape(identity); }

}  // namespace

const char* op_name(JournalOp op) {
  switch (op) {
    case JournalOp::apply:
      return "apply";
    case JournalOp::rollback:
      return "rollback";
    case JournalOp::reset:
      return "reset";
    case JournalOp::hotfix:
      return "hotfix";
    case JournalOp::booted:
      return "booted";
  }
  return "?";
}

std::optional<JournalOp> parse_op(std::string_view name) {
  if (name == "apply") return JournalOp::apply;
  if (name == "rollback") return JournalOp::rollback;
  if (name == "reset") return JournalOp::reset;
  if (name == "hotfix") return JournalOp::hotfix;
  if (name == "booted") return JournalOp::booted;
  return std::nullopt;
}

std::string encode_record(const JournalRecord& r) {
  // A booted record's identity takes the place of the paths (the format stays one shape).
  std::vector<std::string> identity;
  if (r.op == JournalOp::booted) identity.push_back(r.booted_identity);
  const auto& words = r.op == JournalOp::booted ? identity : r.paths;
  std::string payload = std::to_string(r.seq) + ' ' + op_name(r.op) + ' ' +
                        std::to_string(r.generation) + ' ' + r.layer.hex() + ' ' +
                        std::to_string(r.time_ns) + ' ' + std::to_string(words.size());
  for (const auto& p : words) payload += ' ' + escape(p);
  return payload + ' ' + checksum_hex(payload);
}

Result<JournalRecord> decode_record(std::string_view line) {
  size_t last = line.rfind(' ');
  if (last == std::string_view::npos) return fail(EBADMSG, "journal record: no checksum");
  std::string_view payload = line.substr(0, last);
  if (line.substr(last + 1) != checksum_hex(payload)) {
    return fail(EBADMSG, "journal record: checksum mismatch");
  }
  auto words = split_words(payload);
  if (words.size() < 6) return fail(EBADMSG, "journal record: too few fields");
  JournalRecord r;
  size_t npaths = 0;
  auto op = parse_op(words[1]);
  auto layer = store::ObjectId::parse_hex(words[3]);
  if (!parse_num(words[0], r.seq) || !op || !parse_num(words[2], r.generation) || !layer ||
      !parse_num(words[4], r.time_ns) || !parse_num(words[5], npaths) ||
      words.size() != 6 + npaths) {
    return fail(EBADMSG, "journal record: malformed fields");
  }
  r.op = *op;
  r.layer = *layer;
  for (size_t i = 0; i < npaths; ++i) {
    auto p = unescape(words[6 + i]);
    if (!p) return fail(EBADMSG, "journal record: malformed path");
    r.paths.push_back(std::move(*p));
  }
  if (r.op == JournalOp::booted) {
    if (r.paths.size() != 1 || r.paths[0].empty()) {
      return fail(EBADMSG, "journal record: a booted record without an identity");
    }
    r.booted_identity = std::move(r.paths[0]);
    r.paths.clear();
  }
  return r;
}

Status apply_record(JournalState& state, const JournalRecord& r) {
  if (r.seq != state.next_seq) {
    return fail(EBADMSG, "journal record " + std::to_string(r.seq) + ": expected sequence " +
                             std::to_string(state.next_seq));
  }
  switch (r.op) {
    case JournalOp::apply:
      if (r.generation < state.next_generation || r.layer.is_zero()) {
        return fail(EBADMSG, "journal record " + std::to_string(r.seq) +
                                 ": apply of a stale generation " + std::to_string(r.generation));
      }
      state.stack.push_back(Generation{r.generation, r.layer, r.time_ns, r.paths});
      state.next_generation = r.generation + 1;
      break;
    case JournalOp::rollback: {
      // To any generation below the live one (`rollback --to N`); records written before
      // that existed always name the one right below, which this reads the same way.
      auto it = std::find_if(state.stack.begin(), state.stack.end(),
                             [&](const Generation& g) { return g.number == r.generation; });
      if (state.stack.size() < 2 || it == state.stack.end() || it + 1 == state.stack.end()) {
        return fail(EBADMSG, "journal record " + std::to_string(r.seq) +
                                 ": rollback to generation " + std::to_string(r.generation) +
                                 " does not match the generation stack");
      }
      state.stack.erase(it + 1, state.stack.end());
      break;
    }
    case JournalOp::reset:
      if (r.generation != 0) {
        return fail(EBADMSG, "journal record " + std::to_string(r.seq) + ": reset to " +
                                 std::to_string(r.generation));
      }
      state.stack.resize(1);
      break;
    case JournalOp::hotfix:
      if (r.generation != state.stack.back().number) {
        return fail(EBADMSG, "journal record " + std::to_string(r.seq) + ": hotfix on generation " +
                                 std::to_string(r.generation) + ", live is " +
                                 std::to_string(state.stack.back().number));
      }
      state.hotfix_layer = r.layer;
      state.hotfix_time_ns = r.time_ns;
      break;
    case JournalOp::booted:
      if (r.booted_identity.empty() || !r.layer.is_zero() ||
          r.generation != state.stack.back().number) {
        return fail(EBADMSG, "journal record " + std::to_string(r.seq) +
                                 ": booted record does not fit the generation stack");
      }
      // A journal belongs to one booted tree: open() sets a journal aside rather than
      // name a second tree in it.
      if (!state.booted_identity.empty() && state.booted_identity != r.booted_identity) {
        return fail(EBADMSG, "journal record " + std::to_string(r.seq) + ": booted tree " +
                                 shown(r.booted_identity) + " in the journal of " +
                                 shown(state.booted_identity));
      }
      state.booted_identity = r.booted_identity;
      break;
  }
  state.history.push_back(r);
  ++state.history_records;
  if (state.history.size() > JournalState::kHistoryKept) state.history.pop_front();
  state.next_seq = r.seq + 1;
  return {};
}

namespace {

JournalState initial_state() {
  JournalState s;
  s.stack.push_back(Generation{});
  return s;
}

// Replays and also returns the byte length of the valid prefix (for truncating a torn
// tail before the next append).
JournalState replay_prefix(std::string_view contents, size_t& valid_bytes) {
  JournalState state = initial_state();
  valid_bytes = 0;
  size_t pos = 0;
  size_t lineno = 0;
  while (pos < contents.size()) {
    ++lineno;
    size_t nl = contents.find('\n', pos);
    bool complete = nl != std::string_view::npos;
    std::string_view line = contents.substr(pos, complete ? nl - pos : std::string_view::npos);
    size_t next = complete ? nl + 1 : contents.size();
    bool is_last = next >= contents.size();
    auto record = complete ? decode_record(line)
                           : Result<JournalRecord>(fail(EBADMSG, "journal record: torn"));
    if (!record) {
      if (is_last) {
        state.warnings.push_back("journal line " + std::to_string(lineno) +
                                 ": ignoring a torn last record (" + record.error().context + ")");
        return state;
      }
      JournalState bad = initial_state();
      bad.history = std::move(state.history);
      bad.history_records = state.history_records;
      bad.booted_identity = std::move(state.booted_identity);
      bad.error = make_error(
          EBADMSG, "journal line " + std::to_string(lineno) + ": " +
                       record.error().context.substr(std::string_view("journal record: ").size()) +
                       " (a record after it is valid: not a torn append)");
      return bad;
    }
    if (auto st = apply_record(state, *record); !st) {
      JournalState bad = initial_state();
      bad.history = std::move(state.history);
      bad.history_records = state.history_records;
      bad.booted_identity = std::move(state.booted_identity);
      bad.error =
          make_error(EBADMSG, "journal line " + std::to_string(lineno) + ": " + st.error().context);
      return bad;
    }
    pos = next;
    valid_bytes = pos;
  }
  return state;
}

}  // namespace

JournalState replay(std::string_view contents) {
  size_t valid = 0;
  return replay_prefix(contents, valid);
}

namespace {

// Longer identities are not booted trees but a caller's mistake.
constexpr size_t kMaxIdentity = 4096;

Result<std::string> read_all(Sys& sys, int fd, const std::filesystem::path& path) {
  std::string contents;
  char buf[65536];
  for (off_t off = 0;;) {
    ssize_t n = sys.pread(fd, buf, sizeof buf, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("read(" + path.string() + ")");
    }
    if (n == 0) return contents;
    contents.append(buf, static_cast<size_t>(n));
    off += n;
  }
}

// A file-name-safe reminder of whose journal it was (the full identity is inside it).
std::string short_identity(std::string_view identity) {
  if (identity.empty()) return "unidentified";
  std::string out;
  for (unsigned char c : identity.substr(0, 40)) {
    bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_';
    out += safe ? static_cast<char>(c) : '_';
  }
  return out;
}

std::string utc_stamp() {
  time_t now = ::time(nullptr);
  tm t{};
  gmtime_r(&now, &t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &t);
  return buf;
}

// Renames the journal `name` in `dirfd` to a name of its own (never over another file);
// returns that name. Made durable by the directory fsync of the new journal's creation.
Result<std::string> set_aside(Sys& sys, int dirfd, const std::string& name,
                              std::string_view identity) {
  std::string base = name + "." + utc_stamp() + "." + short_identity(identity);
  for (int n = 0; n < 1000; ++n) {
    std::string target = n == 0 ? base : base + "." + std::to_string(n);
    if (sys.renameat2(dirfd, name.c_str(), dirfd, target.c_str(), RENAME_NOREPLACE) == 0) {
      return target;
    }
    if (errno == EEXIST) continue;
    if (errno != EINVAL) return fail_errno("rename(" + name + ", " + target + ")");
    // No RENAME_NOREPLACE on this file system: a link refuses an existing name as well.
    if (sys.linkat(dirfd, name.c_str(), dirfd, target.c_str(), 0) == 0) {
      if (sys.unlinkat(dirfd, name.c_str(), 0) != 0) return fail_errno("unlink(" + name + ")");
      return target;
    }
    if (errno == EEXIST) continue;
    return fail_errno("link(" + name + ", " + target + ")");
  }
  return fail(EEXIST, "set aside " + name + ": every name is taken");
}

}  // namespace

Result<Journal> Journal::open(const std::filesystem::path& path, std::string_view booted_identity,
                              UnidentifiedJournal unidentified, Sys& sys,
                              const std::function<bool(std::string_view)>& earlier) {
  if (booted_identity.size() > kMaxIdentity) {
    return fail(EINVAL, "journal(" + path.string() + "): a booted identity of " +
                            std::to_string(booted_identity.size()) + " bytes");
  }
  const std::string identity(booted_identity);
  std::filesystem::path dir_path = path.parent_path().empty() ? "." : path.parent_path();
  const std::string name = path.filename().string();
  UniqueFd dir(sys.openat(AT_FDCWD, dir_path.c_str(), O_RDONLY | O_DIRECTORY, 0));
  if (!dir) return fail_errno("open(" + dir_path.string() + ")");

  // A new journal is written whole, its booted record included, so there is never a
  // journal that names no tree (nor a half-created one).
  auto create = [&]() -> Result<Journal> {
    std::string contents;
    if (!identity.empty()) {
      JournalRecord r;
      r.seq = 1;
      r.op = JournalOp::booted;
      r.time_ns = now_ns();
      r.booted_identity = identity;
      contents = encode_record(r) + '\n';
    }
    if (auto st = write_file_atomic(dir.get(), name, contents, 0600, sys); !st) {
      return std::unexpected(with_context(st.error(), "create journal " + path.string()));
    }
    Journal j;
    j.path_ = path;
    j.sys_ = &sys;
    j.fd_ = UniqueFd(sys.openat(dir.get(), name.c_str(), O_RDWR | O_APPEND | O_NOFOLLOW, 0));
    if (!j.fd_) return fail_errno("open(" + path.string() + ")");
    j.state_ = replay(contents);
    j.size_ = contents.size();
    return j;
  };

  UniqueFd fd(sys.openat(dir.get(), name.c_str(), O_RDWR | O_APPEND | O_NOFOLLOW, 0));
  if (!fd) {
    if (errno != ENOENT) return fail_errno("open(" + path.string() + ")");
    return create();
  }
  auto contents = read_all(sys, fd.get(), path);
  if (!contents) return std::unexpected(contents.error());
  size_t valid = 0;
  JournalState state = replay_prefix(*contents, valid);

  if (!identity.empty()) {
    const std::string& old = state.booted_identity;
    bool other_tree = !old.empty() && old != identity && !(earlier && earlier(old));
    bool names_none = old.empty() && (!state.history.empty() || state.error);
    if (other_tree || (names_none && unidentified == UnidentifiedJournal::set_aside)) {
      auto aside = set_aside(sys, dir.get(), name, old);
      if (!aside) return std::unexpected(with_context(aside.error(), "journal"));
      auto fresh = create();
      if (!fresh) return fresh;
      fresh->state_.set_aside = path.parent_path() / *aside;
      fresh->state_.note =
          (other_tree
               ? "the booted tree changed (was " + shown(old) + ", now " + shown(identity) + ")"
               : "the journal names no booted tree (written by an older livefs) and is "
                 "not taken as " +
                     shown(identity) + "'s") +
          ": starting at generation 0; the old journal is kept as " +
          fresh->state_.set_aside.string();
      return fresh;
    }
  }

  Journal j;
  j.path_ = path;
  j.sys_ = &sys;
  j.fd_ = std::move(fd);
  j.state_ = std::move(state);
  j.size_ = contents->size();
  // A torn tail is cut off so the next append starts on a record boundary. A corrupt
  // journal is left exactly as it is, for the operator to inspect.
  if (!j.state_.error && valid < contents->size()) {
    if (sys.ftruncate(j.fd_.get(), static_cast<off_t>(valid)) != 0 || sys.fsync(j.fd_.get()) != 0) {
      return fail_errno("truncate torn tail(" + path.string() + ")");
    }
    j.size_ = valid;
  }
  if (!identity.empty() && j.state_.booted_identity.empty() && !j.state_.error) {
    bool had_records = !j.state_.history.empty();
    if (auto st = j.stamp(identity); !st) {
      // Still this tree's journal; the next start adopts it again.
      j.state_.warnings.push_back("could not record the booted tree in the journal: " +
                                  st.error().message());
    } else if (had_records) {
      j.state_.note = "the journal named no booted tree (written by an older livefs): taken as " +
                      shown(identity) + "'s";
    }
  }
  return j;
}

Result<JournalRecord> Journal::prepare(JournalOp op, const store::ObjectId& layer,
                                       std::vector<std::string> paths) const {
  if (state_.error) {
    return fail(state_.error->code,
                "journal is corrupt, refusing to record: " + state_.error->context);
  }
  if (broken_) {
    return fail(broken_->code,
                "journal refuses to record after a failed append it could not "
                "cut off (restart to recover): " +
                    broken_->context);
  }
  JournalRecord r;
  r.seq = state_.next_seq;
  r.op = op;
  r.time_ns = now_ns();
  switch (op) {
    case JournalOp::apply:
      if (layer.is_zero()) return fail(EINVAL, "apply: no layer");
      r.generation = state_.next_generation;
      r.layer = layer;
      r.paths = std::move(paths);
      break;
    case JournalOp::rollback:
      if (state_.stack.size() < 2) return fail(EINVAL, "rollback: already at generation 0");
      r.generation = state_.stack[state_.stack.size() - 2].number;
      r.layer = state_.stack[state_.stack.size() - 2].layer;
      break;
    case JournalOp::reset:
      r.generation = 0;
      break;
    case JournalOp::hotfix:
      r.generation = state_.stack.back().number;
      r.layer = layer;
      r.paths = std::move(paths);
      break;
    case JournalOp::booted:
      return fail(EINVAL, "booted: recorded by Journal::open only");
  }
  return r;
}

Status Journal::append(std::string_view line) {
  Sys& sys = *sys_;
  Status written = write_all(sys, fd_.get(), line);
  if (written && sys.fdatasync(fd_.get()) != 0) written = fail_errno("fdatasync");
  if (written) {
    size_ += line.size();
    return {};
  }
  // Whatever part of the record reached the file must go: the next record would be glued
  // to it. fsync, not fdatasync: the size is what changes.
  Error e = with_context(written.error(), "journal(" + path_.string() + ")");
  if (sys.ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0 || sys.fsync(fd_.get()) != 0) {
    int code = errno;
    broken_ = make_error(code, "journal(" + path_.string() + "): cutting a failed append (" +
                                   e.message() + ") back to " + std::to_string(size_) + " bytes");
    return std::unexpected(*broken_);
  }
  return std::unexpected(std::move(e));
}

Status Journal::stamp(const std::string& identity) {
  JournalRecord r;
  r.seq = state_.next_seq;
  r.op = JournalOp::booted;
  r.generation = state_.stack.back().number;
  r.time_ns = now_ns();
  r.booted_identity = identity;
  if (auto st = append(encode_record(r) + '\n'); !st) return st;
  return apply_record(state_, r);
}

Result<JournalRecord> Journal::commit(JournalOp op, const store::ObjectId& layer,
                                      std::vector<std::string> paths) {
  auto r = prepare(op, layer, std::move(paths));
  if (!r) return r;
  return commit_prepared(std::move(*r));
}

Result<JournalRecord> Journal::prepare_rollback_to(uint64_t target) const {
  auto r = prepare(JournalOp::rollback, {}, {});
  if (!r) return r;
  const auto& stack = state_.stack;
  auto it = std::find_if(stack.begin(), stack.end(),
                         [&](const Generation& g) { return g.number == target; });
  if (it == stack.end() || it + 1 == stack.end()) {
    std::string on;
    for (auto g = stack.begin(); g + 1 != stack.end(); ++g)
      on += (on.empty() ? "" : ", ") + std::to_string(g->number);
    return fail(
        EINVAL,
        "rollback --to " + std::to_string(target) + ": generation " + std::to_string(target) +
            (it == stack.end() ? " is not on the generation stack" : " is the live generation") +
            " (below the live generation " + std::to_string(stack.back().number) + ": " + on + ")");
  }
  r->generation = it->number;
  r->layer = it->layer;
  return r;
}

Result<JournalRecord> Journal::commit_rollback_to(uint64_t target) {
  auto r = prepare_rollback_to(target);
  if (!r) return r;
  return commit_prepared(std::move(*r));
}

Result<JournalRecord> Journal::commit_prepared(JournalRecord r) {
  if (auto st = append(encode_record(r) + '\n'); !st) return std::unexpected(st.error());
  if (auto st = apply_record(state_, r); !st) return std::unexpected(st.error());
  return r;
}

}  // namespace livefs::overlay
