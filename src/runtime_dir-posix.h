// The bridge's private runtime folder: mode 0700, random name, removed at exit.
// It holds the FIFO of a fifo-style pool (and, later, the socket).
#pragma once

#include <string>

namespace jobbridge {

class RuntimeDir {
 public:
  RuntimeDir() = default;
  RuntimeDir(RuntimeDir&& other) noexcept;
  RuntimeDir& operator=(RuntimeDir&&) = delete;
  RuntimeDir(const RuntimeDir&) = delete;
  ~RuntimeDir();

  // Creates "jobbridge-XXXXXX" under $XDG_RUNTIME_DIR, else $TMPDIR, else /tmp
  // (empty variables count as unset). Returns false and sets *err, naming the
  // folder and the variable to change, when it cannot be created.
  bool Create(std::string* err);

  // Removes the folder and everything in it. Returns false and sets *err when
  // the folder cannot be removed.
  bool Remove(std::string* err);

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace jobbridge
