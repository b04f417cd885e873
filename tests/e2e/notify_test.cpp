// systemd's readiness protocol (Type=notify): with NOTIFY_SOCKET set, the daemon says READY=1
// (with its pid) once the view serves, the live generation in STATUS= after every switch,
// and STOPPING=1 when it unmounts. A datagram socket of the test's stands in for systemd.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>
#include <cstring>

#include "common/service_notify.h"
#include "common/unique_fd.h"
#include "e2e/live_support.h"

namespace livefs::e2e {
namespace {

using livefs::testing::write_file;

// A bound datagram socket: what systemd listens on.
class Manager {
 public:
  explicit Manager(const std::string& address) : address_(address) {
    fd_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, address.data(), address.size());
    socklen_t len = static_cast<socklen_t>(sizeof(sa_family_t) + address.size() + 1);
    if (address[0] == '@') {
      addr.sun_path[0] = '\0';
      --len;
    }
    bound_ = fd_ && ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0;
  }
  bool bound() const { return bound_; }
  // The next message, waiting at most 20 s ("" when none came).
  std::string next() {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 20000) != 1) return "";
    char buf[4096];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }
  // Messages until one contains `want` (at most 20 s each); "" when none did.
  std::string until(const std::string& want) {
    for (int i = 0; i < 20; ++i) {
      std::string m = next();
      if (m.empty()) return "";
      if (m.find(want) != std::string::npos) return m;
    }
    return "";
  }

 private:
  std::string address_;
  UniqueFd fd_;
  bool bound_ = false;
};

TEST(ServiceNotify, AnAbstractOrPathSocketGetsTheMessageAndABadAddressIsAClearError) {
  std::string name = "@livefs-notify-test-" + std::to_string(::getpid());
  Manager abstract(name);
  ASSERT_TRUE(abstract.bound());
  ASSERT_TRUE(notify_socket(name, "READY=1"));
  EXPECT_EQ(abstract.next(), "READY=1");
  auto bad = notify_socket("relative/path", "READY=1");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EINVAL);
  // Without NOTIFY_SOCKET there is nobody to tell: nothing is sent, nothing fails.
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_TRUE(notify_service_manager("READY=1"));
}

TEST(ServiceNotify, TheDaemonSaysReadyTheGenerationAndStopping) {
  LiveWorld w;
  write_file(w.booted / "bin/tool", "1\n");
  write_file(w.staged / "bin/tool", "1\n");
  write_file(w.staged / "bin/new", "new\n");
  w.settle();
  std::string socket = (w.dir / "notify").string();
  Manager manager(socket);
  ASSERT_TRUE(manager.bound());
  ::setenv("NOTIFY_SOCKET", socket.c_str(), 1);
  Ran m = w.mount();
  ::unsetenv("NOTIFY_SOCKET");
  ASSERT_EQ(m.status, 0) << m.out;

  std::string ready = manager.until("READY=1");
  ASSERT_NE(ready, "");
  EXPECT_NE(ready.find("MAINPID=" + std::to_string(daemon_pid(w.state))), std::string::npos)
      << ready;
  EXPECT_NE(ready.find("STATUS=serving " + w.mnt.string() + " at generation 0"), std::string::npos)
      << ready;

  Ran a = w.cmd("apply", "bin/new");
  ASSERT_EQ(a.status, 0) << a.out;
  EXPECT_NE(manager.until("at generation 1"), "");
  Ran u = w.cmd("umount", "--wait");
  ASSERT_EQ(u.status, 0) << u.out;
  EXPECT_NE(manager.until("STOPPING=1"), "");
}

}  // namespace
}  // namespace livefs::e2e
