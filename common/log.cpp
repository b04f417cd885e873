// Per-component spdlog loggers sharing one sink and one level.
#include "common/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>

namespace livefs {
namespace {

struct Registry {
  std::mutex mutex;  // guards sink and level; spdlog's own registry guards the loggers
  spdlog::sink_ptr sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  spdlog::level::level_enum level = spdlog::level::info;
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

std::shared_ptr<spdlog::logger> logger(const std::string& component) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  if (auto existing = spdlog::get(component)) return existing;
  auto l = std::make_shared<spdlog::logger>(component, r.sink);
  l->set_level(r.level);
  l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  // Written through at once: a daemon killed with SIGKILL keeps its last words.
  l->flush_on(spdlog::level::info);
  spdlog::register_logger(l);
  return l;
}

void set_log_level(spdlog::level::level_enum level) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.level = level;
  spdlog::apply_all([level](const std::shared_ptr<spdlog::logger>& l) { l->set_level(level); });
}

void log_to_file(const std::string& path) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
  spdlog::apply_all([&r](const std::shared_ptr<spdlog::logger>& l) {
    l->sinks().clear();
    l->sinks().push_back(r.sink);
  });
}

}  // namespace livefs
