// The service manager's readiness protocol (systemd's Type=notify, as sd_notify(3) documents
// it): newline-separated VARIABLE=VALUE assignments in one datagram to the Unix socket named
// by $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@'). Written here
// rather than linked from libsystemd: a dozen lines, and the daemon stays free of it.
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"

namespace livefs {

// Sends `state` (e.g. "READY=1\nSTATUS=serving /usr") when $NOTIFY_SOCKET is set; without it,
// does nothing and succeeds. Never blocks (MSG_DONTWAIT): a manager that is not reading
// must not stall the daemon.
Status notify_service_manager(std::string_view state);

// The same to an explicit socket address (what $NOTIFY_SOCKET holds), for tests.
Status notify_socket(const std::string& address, std::string_view state);

}  // namespace livefs
