#include "core/robust_jobserver.h"

#include <cstdint>

namespace jobbridge {

bool ParseRobustJobserver(const std::string& value, const std::string& named, int* set,
                          std::string* why) {
  auto colon = value.find(':');
  if (colon == std::string::npos) {
    *why = named + " is '" + value + "'; it must be METHOD:VALUE, such as sysvsem:ID";
    return false;
  }
  std::string method = value.substr(0, colon);
  std::string id_text = value.substr(colon + 1);
  if (method != "sysvsem") {
    *why = named + " names the method '" + method + "'; this client speaks only sysvsem";
    return false;
  }
  bool digits = !id_text.empty() && id_text.size() <= 10 &&
                id_text.find_first_not_of("0123456789") == std::string::npos;
  if (digits) {
    uint64_t id = std::stoull(id_text);
    digits = id <= static_cast<uint64_t>(INT32_MAX);
    *set = static_cast<int>(id);
  }
  if (!digits) {
    *why = named + " names the semaphore set '" + id_text + "'; it must be a decimal id";
    return false;
  }
  return true;
}

}  // namespace jobbridge
