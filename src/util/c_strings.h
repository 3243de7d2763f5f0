// argv/envp for exec: pointers into `strings` (which must outlive them),
// ending with nullptr.
#pragma once

#include <string>
#include <vector>

namespace jobbridge {

inline std::vector<char*> CStrings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (const std::string& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace jobbridge
