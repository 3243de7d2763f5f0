// Reading whole numbers from command lines and MAKEFLAGS: all of the text
// must be the number ("8", not "8x", " 8" or "").
#pragma once

#include <charconv>
#include <string_view>

namespace jobbridge {

// Returns false (and leaves *value alone) unless `text` is exactly an int.
inline bool ParseWholeNumber(std::string_view text, int* value) {
  int parsed = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), parsed);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return false;
  *value = parsed;
  return true;
}

}  // namespace jobbridge
