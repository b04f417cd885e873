// The daemon's control socket: accepts connections, checks the peer, decodes one request,
// dispatches it to the route of its command, and writes the answer. Nothing else.
//
// Each connection is answered on a thread of its own, so a long request (a stage that
// imports a commit, an apply that waits for the booted manifest) never keeps `status` or
// `diff` waiting. Routes that change the daemon's state are `exclusive`: they run one at a
// time (in arrival order at the mutex), while shared routes run beside them and beside each
// other.
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/unique_fd.h"

namespace livefs::cli {

class ControlServer {
 public:
  // A route's answer; `stop_after` set: the daemon stops once the answer is written.
  using Handler = std::function<nlohmann::json(const nlohmann::json& request, bool& stop_after)>;
  struct Route {
    bool exclusive = true;
    Handler handler;
  };

  ControlServer(UniqueFd listener, std::map<std::string, Route> routes,
                std::function<void()> on_stop);
  ~ControlServer();  // shutdown(); serve() must have returned

  // Accepts until shutdown(); returns when the listener is shut down and every connection
  // has been answered.
  void serve();
  // Makes serve() return (after the connections in flight). Safe from any thread.
  void shutdown();

 private:
  void answer_connection(UniqueFd conn);
  nlohmann::json answer(int conn, bool& stop_after) noexcept;
  nlohmann::json dispatch(const nlohmann::json& request, bool& stop_after);

  UniqueFd listener_;
  const std::map<std::string, Route> routes_;
  const std::function<void()> on_stop_;
  std::atomic<bool> stopping_{false};
  std::mutex exclusive_;  // held by an exclusive route while it runs

  // Connection threads, owned by serve()'s thread: joined when done, all of them before
  // serve() returns.
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::list<Worker> workers_;
  void join_workers(bool all);
};

}  // namespace livefs::cli
