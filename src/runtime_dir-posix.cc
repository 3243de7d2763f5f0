#include "runtime_dir-posix.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

namespace jobbridge {

namespace {

struct Parent {
  std::string folder;
  std::string variable;  // empty for the /tmp fallback
};

Parent ChooseParent() {
  for (const char* variable : {"XDG_RUNTIME_DIR", "TMPDIR"}) {
    const char* value = std::getenv(variable);
    if (value && *value) return {value, variable};
  }
  return {"/tmp", ""};
}

}  // namespace

RuntimeDir::RuntimeDir(RuntimeDir&& other) noexcept : path_(std::exchange(other.path_, "")) {}

RuntimeDir::~RuntimeDir() {
  std::string ignored;
  Remove(&ignored);
}

bool RuntimeDir::Create(std::string* err) {
  if (!path_.empty()) {
    *err = "internal: the runtime folder " + path_ + " exists already";
    return false;
  }
  Parent parent = ChooseParent();
  std::string templ = parent.folder + "/jobbridge-XXXXXX";
  std::vector<char> buffer(templ.begin(), templ.end());
  buffer.push_back('\0');
  if (!mkdtemp(buffer.data())) {  // mkdtemp creates it with mode 0700
    std::string fix = parent.variable.empty()
                          ? "set TMPDIR to a writable folder"
                          : "set " + parent.variable + " to a writable folder (or unset it)";
    *err =
        "cannot create a runtime folder in " + parent.folder + ": " + strerror(errno) + "; " + fix;
    return false;
  }
  path_ = buffer.data();
  return true;
}

bool RuntimeDir::Remove(std::string* err) {
  if (path_.empty()) return true;
  // The folder is 0700 and its name random, so everything in it is ours.
  // remove_all does not follow symlinks out of it.
  std::error_code error;
  std::filesystem::remove_all(path_, error);
  if (error) {
    *err = "cannot remove the runtime folder " + path_ + ": " + error.message();
    return false;
  }
  path_.clear();
  return true;
}

}  // namespace jobbridge
