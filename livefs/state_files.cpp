// Parsing and writing config.json and hotfix.json (state_files.h).
#include "livefs/state_files.h"

#include <nlohmann/json.hpp>

#include "livefs/control.h"

namespace livefs::cli {
namespace {

using nlohmann::json;

Result<json> parse_object(std::string_view text, const std::string& what) {
  json value = json::parse(text, nullptr, false);
  if (value.is_discarded())
    return fail(EBADMSG, what + ": not JSON (move it away to start without it)");
  if (!value.is_object())
    return fail(EBADMSG, what + ": not a JSON object (move it away to start without it)");
  return decode_wire(value);
}

// A string field; "" when absent; an error when present with another type.
Result<std::string> string_field(const json& object, const char* key, const std::string& what) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::string();
  if (!it->is_string()) return fail(EBADMSG, what + ": \"" + key + "\" is not a string");
  return it->get<std::string>();
}

Result<std::vector<HotfixPlace>> places(const json& object, const char* key,
                                        const std::string& what) {
  std::vector<HotfixPlace> out;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return out;
  if (!it->is_array()) return fail(EBADMSG, what + ": \"" + key + "\" is not an array");
  for (const json& item : *it) {
    if (!item.is_object())
      return fail(EBADMSG, what + ": an entry of \"" + key + "\" is not an object");
    auto source = string_field(item, "source", what);
    if (!source) return std::unexpected(source.error());
    auto at = string_field(item, "at", what);
    if (!at) return std::unexpected(at.error());
    if (source->empty() || (*source)[0] != '/')
      return fail(EBADMSG, what + ": a source of \"" + key + "\" is not an absolute path");
    out.push_back(HotfixPlace{*source, *at});
  }
  return out;
}

}  // namespace

Result<DaemonConfig> parse_daemon_config(std::string_view text, const std::string& what) {
  auto object = parse_object(text, what);
  if (!object) return std::unexpected(object.error());
  DaemonConfig config;
  for (auto [key, field] : {std::pair{"booted_key", &config.booted_key},
                            std::pair{"staged_commit", &config.staged_commit},
                            std::pair{"staged_pending", &config.staged_pending}}) {
    auto value = string_field(*object, key, what);
    if (!value) return std::unexpected(value.error());
    *field = std::move(*value);
  }
  return config;
}

Result<HotfixConfig> parse_hotfix_config(std::string_view text, const std::string& what) {
  auto object = parse_object(text, what);
  if (!object) return std::unexpected(object.error());
  HotfixConfig config;
  auto watches = places(*object, "watches", what);
  if (!watches) return std::unexpected(watches.error());
  auto adds = places(*object, "adds", what);
  if (!adds) return std::unexpected(adds.error());
  config.watches = std::move(*watches);
  config.adds = std::move(*adds);
  return config;
}

std::string hotfix_config_text(const HotfixConfig& config) {
  json watches = json::array(), adds = json::array();
  for (const auto& w : config.watches)
    watches.push_back({{"source", w.source.string()}, {"at", w.at}});
  for (const auto& a : config.adds) adds.push_back({{"source", a.source.string()}, {"at", a.at}});
  return encode_wire(json{{"watches", watches}, {"adds", adds}}).dump(2) + "\n";
}

}  // namespace livefs::cli
