// Reading the Robust Jobserver's variable (ROBUST_JOBSERVER=sysvsem:ID,
// docs/PROTOCOL.md): shared by the client library and by a jobbridge that
// joins an outer semaphore (outer_budget-posix.cc), so both accept and
// refuse the same values with the same words. Pure string work.
#pragma once

#include <string>

namespace jobbridge {

// Parses `value` ("sysvsem:ID", ID a decimal set id). Returns false and sets
// *why, naming `named` (the variable, for messages), when it is not
// METHOD:VALUE, names another method, or ID is not a decimal int.
bool ParseRobustJobserver(const std::string& value, const std::string& named, int* set,
                          std::string* why);

}  // namespace jobbridge
