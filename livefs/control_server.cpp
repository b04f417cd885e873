// The control socket's server: accept, peer check, decode, dispatch, answer.
#include "livefs/control_server.h"

#include <sys/socket.h>

#include <cstring>

#include "common/log.h"
#include "livefs/control.h"

namespace livefs::cli {

using nlohmann::json;

namespace {

std::shared_ptr<spdlog::logger> log() { return livefs::logger("control"); }

// More connections than this at once are answered one after the other by the accept thread
// (a client that floods the socket must not make the daemon spawn without bound).
constexpr size_t kMaxConnectionThreads = 32;

}  // namespace

ControlServer::ControlServer(UniqueFd listener, std::map<std::string, Route> routes,
                             std::function<void()> on_stop)
    : listener_(std::move(listener)), routes_(std::move(routes)), on_stop_(std::move(on_stop)) {}

ControlServer::~ControlServer() { shutdown(); }

void ControlServer::shutdown() {
  stopping_ = true;
  ::shutdown(listener_.get(), SHUT_RDWR);
}

void ControlServer::join_workers(bool all) {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (all || it->done->load()) {
      it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

void ControlServer::serve() {
  while (!stopping_) {
    int raw = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (raw < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (!stopping_) log()->error("accept: {}", std::strerror(errno));
      break;
    }
    UniqueFd conn(raw);
    timeval tv{5, 0};
    ::setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    join_workers(false);
    if (workers_.size() >= kMaxConnectionThreads) {
      answer_connection(std::move(conn));
      continue;
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    try {
      std::thread t([this, done, c = std::move(conn)]() mutable {
        answer_connection(std::move(c));
        done->store(true);
      });
      workers_.push_back({std::move(t), std::move(done)});
    } catch (const std::system_error& e) {
      log()->warn("thread: {}", e.what());
    }
  }
  join_workers(true);
}

void ControlServer::answer_connection(UniqueFd conn) {
  bool stop_after = false;
  json response = answer(conn.get(), stop_after);
  if (auto st = write_line(conn.get(), wire_line(response)); !st)
    log()->warn("{}", st.error().message());
  conn.reset();
  if (stop_after && on_stop_) on_stop_();
}

// Nothing a peer sends, and no path or name in the trees, can make this throw: the daemon
// serves /usr and must not exit.
json ControlServer::answer(int conn, bool& stop_after) noexcept {
  try {
    auto peer = peer_credentials(conn);
    if (!peer) return error_response(peer.error());
    if (!peer_allowed(*peer)) {
      log()->warn("refused pid {} uid {}", peer->pid, peer->uid);
      // The request is read (never acted on) so that closing with it unread does not reset
      // the connection before the refusal reaches the peer.
      (void)read_line(conn, 4096);
      json r = error_response(make_error(EACCES, refusal_message(*peer)));
      r["error"] = refusal_message(*peer);
      return r;
    }
    auto line = read_line(conn);
    if (!line) return error_response(line.error());
    auto request = parse_wire_line(*line);
    if (!request) return error_response(request.error());
    return dispatch(*request, stop_after);
  } catch (const std::exception& e) {
    // A malformed request (wrong JSON types) or an allocation failure.
    try {
      return error_response(make_error(EINVAL, std::string("bad request: ") + e.what()));
    } catch (...) {
    }
  } catch (...) {
  }
  return json();
}

json ControlServer::dispatch(const json& request, bool& stop_after) {
  if (!request.is_object() || !request.contains("cmd") || !request.at("cmd").is_string())
    return error_response(make_error(EINVAL, "bad request"));
  std::string cmd = request.at("cmd").get<std::string>();
  auto route = routes_.find(cmd);
  if (route == routes_.end()) return error_response(make_error(EINVAL, "unknown command " + cmd));
  log()->debug("{}", cmd);
  if (!route->second.exclusive) return route->second.handler(request, stop_after);
  std::lock_guard lock(exclusive_);
  return route->second.handler(request, stop_after);
}

}  // namespace livefs::cli
