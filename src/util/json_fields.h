// Reading fields of JSON that came from outside (a trace file, a peer on a
// control socket): each getter checks the type and falls back to a
// default, so no shape of input can throw (STYLE.md rule 2).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace jobbridge::json_fields {

// Beyond this a count or a time in microseconds is nonsense (35 years).
inline constexpr int64_t kMaxMagnitude = int64_t{1} << 50;

inline std::string Str(const nlohmann::json& object, const char* key,
                       const std::string& fallback = "") {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// A number within [-kMaxMagnitude, kMaxMagnitude] (a fraction is dropped);
// `fallback` for anything else.
inline int64_t Int(const nlohmann::json& object, const char* key, int64_t fallback = 0) {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return fallback;
  double value = it->get<double>();
  if (!(value >= -static_cast<double>(kMaxMagnitude) &&
        value <= static_cast<double>(kMaxMagnitude))) {
    return fallback;
  }
  return static_cast<int64_t>(value);
}

inline bool Bool(const nlohmann::json& object, const char* key, bool fallback = false) {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  return it != object.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

// The object at `key`, or an empty one.
inline const nlohmann::json& Obj(const nlohmann::json& object, const char* key) {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  if (!object.is_object()) return kEmpty;
  auto it = object.find(key);
  return it != object.end() && it->is_object() ? *it : kEmpty;
}

}  // namespace jobbridge::json_fields
