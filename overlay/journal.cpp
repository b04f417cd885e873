// The generation journal: record encoding, replay, and durable appends.
#include "overlay/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <charconv>
#include <chrono>
#include <cstdio>

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

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

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
  }
  return "?";
}

std::optional<JournalOp> parse_op(std::string_view name) {
  if (name == "apply") return JournalOp::apply;
  if (name == "rollback") return JournalOp::rollback;
  if (name == "reset") return JournalOp::reset;
  if (name == "hotfix") return JournalOp::hotfix;
  return std::nullopt;
}

std::string encode_record(const JournalRecord& r) {
  std::string payload = std::to_string(r.seq) + ' ' + op_name(r.op) + ' ' +
                        std::to_string(r.generation) + ' ' + r.layer.hex() + ' ' +
                        std::to_string(r.time_ns) + ' ' + std::to_string(r.paths.size());
  for (const auto& p : r.paths) payload += ' ' + escape(p);
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
    case JournalOp::rollback:
      if (state.stack.size() < 2 || state.stack[state.stack.size() - 2].number != r.generation) {
        return fail(EBADMSG, "journal record " + std::to_string(r.seq) +
                                 ": rollback to generation " + std::to_string(r.generation) +
                                 " does not match the generation stack");
      }
      state.stack.pop_back();
      break;
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
  }
  state.history.push_back(r);
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
      bad.error = make_error(
          EBADMSG, "journal line " + std::to_string(lineno) + ": " +
                       record.error().context.substr(std::string_view("journal record: ").size()) +
                       " (a record after it is valid: not a torn append)");
      return bad;
    }
    if (auto st = apply_record(state, *record); !st) {
      JournalState bad = initial_state();
      bad.history = std::move(state.history);
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

Result<Journal> Journal::open(const std::filesystem::path& path) {
  Journal j;
  j.path_ = path;
  struct stat st {};
  bool existed = ::stat(path.c_str(), &st) == 0;
  j.fd_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!j.fd_) return fail_errno("open(" + path.string() + ")");
  if (!existed) {
    if (::fsync(j.fd_.get()) != 0) return fail_errno("fsync(" + path.string() + ")");
    UniqueFd dir(::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir || ::fsync(dir.get()) != 0) {
      return fail_errno("fsync(" + path.parent_path().string() + ")");
    }
  }
  std::string contents;
  char buf[65536];
  for (off_t off = 0;;) {
    ssize_t n = ::pread(j.fd_.get(), buf, sizeof buf, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("read(" + path.string() + ")");
    }
    if (n == 0) break;
    contents.append(buf, static_cast<size_t>(n));
    off += n;
  }
  size_t valid = 0;
  j.state_ = replay_prefix(contents, valid);
  // A torn tail is cut off so the next append starts on a record boundary. A corrupt
  // journal is left exactly as it is, for the operator to inspect.
  if (!j.state_.error && valid < contents.size()) {
    if (::ftruncate(j.fd_.get(), static_cast<off_t>(valid)) != 0 || ::fsync(j.fd_.get()) != 0) {
      return fail_errno("truncate torn tail(" + path.string() + ")");
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
  JournalRecord r;
  r.seq = state_.next_seq;
  r.op = op;
  r.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
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
  }
  return r;
}

Result<JournalRecord> Journal::commit(JournalOp op, const store::ObjectId& layer,
                                      std::vector<std::string> paths) {
  auto r = prepare(op, layer, std::move(paths));
  if (!r) return r;
  std::string line = encode_record(*r) + '\n';
  if (auto st = write_all(fd_.get(), line); !st) {
    return std::unexpected(with_context(st.error(), "journal(" + path_.string() + ")"));
  }
  if (::fdatasync(fd_.get()) != 0) return fail_errno("fdatasync(" + path_.string() + ")");
  if (auto st = apply_record(state_, *r); !st) return std::unexpected(st.error());
  return r;
}

}  // namespace livefs::overlay
