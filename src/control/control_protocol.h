// The control protocol's messages (docs/CONTROL.md): one JSON object per
// line each way. A request names what it wants ("request": "status",
// "holders", "resize" with "jobs", "stop") and may carry an "id", which the
// reply repeats; every reply carries "version" and "ok", and "error" when
// not ok. Pure: no I/O, so the fuzzer (fuzz/control_fuzz.cc) drives it with
// any bytes.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace jobbridge {

// Bumped when a field changes meaning or goes away (new fields do not).
inline constexpr int kControlVersion = 1;
// The longest request line, newline excluded. A longer one is an error reply
// and the connection is closed (its end cannot be found safely).
inline constexpr size_t kMaxControlLineBytes = 4096;

// A daemon's stop waits this long for holders unless told otherwise, and at
// most kMaxStopTimeoutMs (a day).
inline constexpr int64_t kDefaultStopTimeoutMs = 60'000;
inline constexpr int64_t kMaxStopTimeoutMs = 86'400'000;

struct ControlRequest {
  enum class Kind { kStatus, kHolders, kResize, kStop };
  Kind kind = Kind::kStatus;
  int jobs = 0;  // kResize: the new budget, 1..Ledger::kMaxBudget
  // kStop of a daemon: how long to wait for holders (0..kMaxStopTimeoutMs);
  // -1 when absent (kDefaultStopTimeoutMs).
  int64_t timeout_ms = -1;
  nlohmann::json id;  // repeated in the reply; null when absent
};

// Parses one request line (without its newline). Returns false and sets
// *err, naming what is wrong and what is expected, otherwise; *request's id
// is still set when the line was an object with one, for the error reply.
bool ParseControlRequest(std::string_view line, ControlRequest* request, std::string* err);

// A reply line (with its newline): `body`'s fields plus "version", "ok": true
// and the request's "id" when it had one.
std::string ControlReply(nlohmann::json body, const nlohmann::json& id);
// An error reply line: "version", "ok": false, "error": `err`, and "id".
std::string ControlError(const std::string& err, const nlohmann::json& id);

}  // namespace jobbridge
