// The control server on a real socket: a long exclusive request does not keep shared ones
// waiting, exclusive ones wait for each other, and a bad request is an answer, not a crash.
#include "livefs/control_server.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "livefs/control.h"
#include "support/temp_dir.h"

namespace livefs::cli {
namespace {

using nlohmann::json;

struct Server {
  livefs::testing::TempDir tmp{"livefs-control"};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> exclusive_running{0}, exclusive_max{0};
  std::unique_ptr<ControlServer> server;
  std::thread thread;

  Server() {
    auto listener = listen_control(control_socket_path(tmp.path()));
    EXPECT_TRUE(listener) << listener.error().message();
    auto slow = [this](const json&, bool&) {
      int now = ++exclusive_running;
      exclusive_max = std::max(exclusive_max.load(), now);
      released.wait();
      --exclusive_running;
      return json{{"ok", true}, {"slow", true}};
    };
    std::map<std::string, ControlServer::Route> routes{
        {"slow", {true, slow}},
        {"status",
         {false,
          [](const json&, bool&) {
            return json{{"ok", true}, {"n", 1}};
          }}},
        {"stop", {false, [](const json&, bool& stop) {
                    stop = true;
                    return json{{"ok", true}};
                  }}}};
    server = std::make_unique<ControlServer>(std::move(*listener), routes,
                                             [this] { server->shutdown(); });
    thread = std::thread([this] { server->serve(); });
  }
  ~Server() {
    release.set_value();
    server->shutdown();
    thread.join();
  }
  Result<json> call(const json& request) { return call_daemon(tmp.path(), request); }
};

TEST(ControlServer, SharedRequestsAreAnsweredWhileAnExclusiveOneRuns) {
  Server s;
  auto slow1 = std::async(std::launch::async, [&] { return s.call({{"cmd", "slow"}}); });
  auto slow2 = std::async(std::launch::async, [&] { return s.call({{"cmd", "slow"}}); });
  // One slow request runs (the other waits for it); status still answers, each time.
  while (s.exclusive_running.load() == 0) std::this_thread::yield();
  for (int i = 0; i < 20; ++i) {
    auto st = s.call({{"cmd", "status"}});
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_EQ((*st)["n"], 1);
  }
  s.release.set_value();
  auto a = slow1.get(), b = slow2.get();
  ASSERT_TRUE(a && b);
  EXPECT_EQ((*a)["slow"], true);
  EXPECT_EQ((*b)["slow"], true);
  EXPECT_EQ(s.exclusive_max.load(), 1);  // never two exclusive routes at once
  s.release = std::promise<void>();      // the destructor sets it again
}

TEST(ControlServer, BadRequestsGetAnErrorAndTheServerGoesOn) {
  Server s;
  for (json bad : {json{{"cmd", "nope"}}, json{{"cmd", 42}}, json::array({1, 2}), json{{"x", 1}}}) {
    auto r = s.call(bad);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ((*r)["ok"], false) << r->dump();
  }
  auto st = s.call({{"cmd", "status"}});
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)["ok"], true);
  // A route that asks to stop: answered, then serve() returns.
  auto stop = s.call({{"cmd", "stop"}});
  ASSERT_TRUE(stop);
  EXPECT_EQ((*stop)["ok"], true);
}

}  // namespace
}  // namespace livefs::cli
