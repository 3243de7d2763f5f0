// One-line messages on stderr, each prefixed "jobbridge: " like make's.
#pragma once

#include <cstdio>
#include <string>

namespace jobbridge {

inline void LogError(const std::string& message) {
  std::fprintf(stderr, "jobbridge: %s\n", message.c_str());
}

inline void LogInfo(const std::string& message) { LogError(message); }

inline void LogWarning(const std::string& message) {
  std::fprintf(stderr, "jobbridge: warning: %s\n", message.c_str());
}

}  // namespace jobbridge
