// One-line messages on stderr, each prefixed "jobbridge: " like make's.
#pragma once

#include <cstdio>
#include <string>

namespace jobbridge {

// A path or value for a message: whole up to 200 bytes, else its start and
// its end around "..." (a 5000-byte FIFO path named twice made a 10 KB line).
inline std::string Shortened(const std::string& text) {
  constexpr size_t kMax = 200, kHead = 120, kTail = 60;
  if (text.size() <= kMax) return text;
  return text.substr(0, kHead) + "...(" + std::to_string(text.size() - kHead - kTail) +
         " bytes)..." + text.substr(text.size() - kTail);
}

// A second place every message also goes, or -1: while a daemon starts, the
// stderr of the `jobbridge daemon` that started it (its own stderr is its log
// by then: bridge_daemon.cc, MoveOutputToLog).
inline int& LogCopyFd() {
  static int fd = -1;
  return fd;
}

inline void LogLine(const char* kind, const std::string& message) {
  std::fprintf(stderr, "jobbridge: %s%s\n", kind, message.c_str());
  if (LogCopyFd() >= 0) dprintf(LogCopyFd(), "jobbridge: %s%s\n", kind, message.c_str());
}

inline void LogError(const std::string& message) { LogLine("", message); }

inline void LogInfo(const std::string& message) { LogError(message); }

inline void LogWarning(const std::string& message) { LogLine("warning: ", message); }

}  // namespace jobbridge
