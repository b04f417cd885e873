// Test support: a real HTTP server (`python3 -m http.server`) serving a directory on
// 127.0.0.1, for OSTree pulls from an archive repository; killed at scope exit.
#pragma once

#include <sys/types.h>

#include <filesystem>

namespace livefs::testing {

// A free loopback TCP port (bound then released; the server binds it right after).
int free_port();

class HttpServer {
 public:
  HttpServer(const std::filesystem::path& dir, int port);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Waits (bounded, 10 s) until the server accepts connections.
  bool wait_ready() const;
  // http://127.0.0.1:PORT
  std::string url() const;

 private:
  int port_;
  pid_t pid_ = -1;
};

}  // namespace livefs::testing
