#include "control/control_protocol.h"

#include "core/ledger.h"

namespace jobbridge {

namespace {

struct Known {
  const char* name;
  ControlRequest::Kind kind;
};
constexpr Known kKnown[] = {{"status", ControlRequest::Kind::kStatus},
                            {"holders", ControlRequest::Kind::kHolders},
                            {"resize", ControlRequest::Kind::kResize},
                            {"stop", ControlRequest::Kind::kStop}};
constexpr const char* kKnownList = "status, holders, resize, stop";

// The text of a value for a message, cut short: it came from the client.
std::string Quoted(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  return text.size() > 40 ? text.substr(0, 40) + "..." : text;
}

}  // namespace

bool ParseControlRequest(std::string_view line, ControlRequest* request, std::string* err) {
  *request = {};
  nlohmann::json message = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
  if (message.is_discarded()) {
    *err = "not JSON: send one JSON object per line, e.g. {\"request\": \"status\"}";
    return false;
  }
  if (!message.is_object()) {
    *err = "not a JSON object: send one object per line, e.g. {\"request\": \"status\"}";
    return false;
  }
  if (auto id = message.find("id"); id != message.end()) request->id = *id;
  auto name = message.find("request");
  if (name == message.end() || !name->is_string()) {
    *err = std::string("no \"request\" string (one of: ") + kKnownList + ")";
    return false;
  }
  const Known* known = nullptr;
  for (const Known& candidate : kKnown) {
    if (*name == candidate.name) known = &candidate;
  }
  if (!known) {
    *err = "unknown request " + Quoted(*name) + " (known: " + kKnownList + ")";
    return false;
  }
  request->kind = known->kind;
  if (request->kind == ControlRequest::Kind::kStop) {
    auto timeout = message.find("timeout_ms");
    if (timeout == message.end()) return true;
    if (!timeout->is_number_integer() || timeout->get<int64_t>() < 0 ||
        timeout->get<int64_t>() > kMaxStopTimeoutMs) {
      *err = "stop's \"timeout_ms\" must be an integer from 0 to " +
             std::to_string(kMaxStopTimeoutMs) + ", not " + Quoted(*timeout);
      return false;
    }
    request->timeout_ms = timeout->get<int64_t>();
    return true;
  }
  if (request->kind != ControlRequest::Kind::kResize) return true;
  auto jobs = message.find("jobs");
  std::string range = "1 to " + std::to_string(Ledger::kMaxBudget);
  if (jobs == message.end() || !jobs->is_number_integer()) {
    *err = "resize needs \"jobs\": an integer from " + range;
    return false;
  }
  int64_t value = jobs->get<int64_t>();
  if (value < 1 || value > Ledger::kMaxBudget) {
    *err = "resize to " + Quoted(*jobs) + " jobs: the budget must be from " + range;
    return false;
  }
  request->jobs = static_cast<int>(value);
  return true;
}

std::string ControlReply(nlohmann::json body, const nlohmann::json& id) {
  body["version"] = kControlVersion;
  body["ok"] = true;
  if (!id.is_null()) body["id"] = id;
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string ControlError(const std::string& err, const nlohmann::json& id) {
  nlohmann::json body = {{"version", kControlVersion}, {"ok", false}, {"error", err}};
  if (!id.is_null()) body["id"] = id;
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace jobbridge
