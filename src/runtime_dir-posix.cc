#include "runtime_dir-posix.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
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
  std::vector<std::string> names;
  if (DIR* dir = opendir(path_.c_str())) {
    while (dirent* entry = readdir(dir)) {
      std::string name = entry->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    closedir(dir);
  }
  for (const std::string& name : names) unlink(Join(name).c_str());
  if (rmdir(path_.c_str()) != 0 && errno != ENOENT) {
    *err = "cannot remove the runtime folder " + path_ + ": " + strerror(errno);
    return false;
  }
  path_.clear();
  return true;
}

}  // namespace jobbridge
