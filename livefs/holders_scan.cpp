#include "livefs/holders_scan.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <iterator>

#include "common/unique_fd.h"
#include "livefs/control.h"

namespace livefs::cli {

using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Writes all of `data` to the non-blocking `fd` before `deadline`.
Status write_all(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return fail_errno("write(holder scanner)");
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, ms_left(deadline)) == 0) return fail(ETIMEDOUT, "holder scanner");
  }
  return {};
}

// Reads `fd` (non-blocking) to its end before `deadline`.
Result<std::string> read_all(int fd, Clock::time_point deadline) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return out;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return fail_errno("read(holder scanner)");
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) == 0) return fail(ETIMEDOUT, "holder scanner");
  }
}

}  // namespace

Result<std::vector<host::Holder>> scan_holders_isolated(const std::filesystem::path& root,
                                                        const std::vector<std::string>& paths,
                                                        std::chrono::milliseconds timeout) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) < 0) return fail_errno("pipe");
  UniqueFd in_r(in[0]), in_w(in[1]);
  if (::pipe2(out, O_CLOEXEC) < 0) return fail_errno("pipe");
  UniqueFd out_r(out[0]), out_w(out[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_r.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), 1);
  // Nothing else, above all not the FUSE device (stderr stays: the daemon's log output).
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  char arg0[] = "livefs";
  std::string arg1 = kHoldersScannerArg;
  char* argv[] = {arg0, arg1.data(), nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return std::unexpected(make_error(rc, "spawn the holder scanner"));
  in_r.reset();
  out_w.reset();
  ::fcntl(in_w.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(out_r.get(), F_SETFL, O_NONBLOCK);

  auto deadline = Clock::now() + timeout;
  // The child reads its whole request before it answers: write, then read.
  Status sent =
      write_all(in_w.get(), wire_line(json{{"root", root.string()}, {"paths", paths}}), deadline);
  in_w.reset();
  Result<std::string> answer =
      sent ? read_all(out_r.get(), deadline) : Result<std::string>(std::unexpected(sent.error()));
  if (!answer) ::kill(pid, SIGKILL);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (!answer) return std::unexpected(answer.error());
  // Malformed answers (wrong types) become an error here, never an exception.
  json r = parse_wire_line(*answer).value_or(json());
  if (!r.is_object())
    return fail(EPROTO, "holder scanner: no answer (exit status " + std::to_string(wstatus) + ")");
  if (!r.value("ok", false)) return fail(EIO, r.value("error", "holder scanner failed"));
  std::vector<host::Holder> holders;
  try {
    for (const json& h : r.at("holders")) {
      holders.push_back(host::Holder{.pid = h.at("pid").get<pid_t>(),
                                     .command = h.at("command").get<std::string>(),
                                     .path = h.at("path").get<std::string>(),
                                     .how = h.at("how").get<std::string>(),
                                     .unit = h.at("unit").get<std::string>()});
    }
  } catch (const json::exception& e) {
    return fail(EPROTO, std::string("holder scanner: malformed answer: ") + e.what());
  }
  return holders;
}

json holder_json(const host::Holder& h) {
  return {
      {"pid", h.pid}, {"command", h.command}, {"path", h.path}, {"how", h.how}, {"unit", h.unit}};
}

int run_holders_scanner() {
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  json request = parse_wire_line(input).value_or(json());
  json answer;
  if (!request.is_object() || !request.contains("root") || !request.contains("paths") ||
      !request.at("root").is_string() || !request.at("paths").is_array()) {
    answer = {{"ok", false}, {"error", "holder scanner: bad request"}};
  } else {
    try {
      auto found = host::find_stale_holders(request.at("root").get<std::string>(),
                                            request.at("paths").get<std::vector<std::string>>(),
                                            "/proc", ::getppid());
      if (!found) {
        answer = {{"ok", false}, {"error", found.error().message()}};
      } else {
        json list = json::array();
        for (const host::Holder& h : *found) list.push_back(holder_json(h));
        answer = {{"ok", true}, {"holders", list}};
      }
    } catch (const std::exception& e) {
      answer = {{"ok", false}, {"error", std::string("holder scanner: ") + e.what()}};
    }
  }
  // Command names and paths are bytes (a process may call itself anything).
  std::string text = wire_line(answer);
  return std::fwrite(text.data(), 1, text.size(), stdout) == text.size() && std::fflush(stdout) == 0
             ? 0
             : 1;
}

}  // namespace livefs::cli
