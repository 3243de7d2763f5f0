// Options as make and the GNU tools take them: a long option as "--name=V"
// or "--name V", a short one as "-jV" or "-j V". One reader for every
// command line of jobbridge (the bridge, daemon, stop, status, resize,
// acquire, report), so that each takes every form and names a missing value
// the same way.
#pragma once

#include <string>
#include <vector>

namespace jobbridge {

// Whether `arg` is option `name`: a long one exactly or as "name=...", a
// short one ("-j") as anything that starts with it.
inline bool IsOption(const std::string& arg, const std::string& name) {
  if (!name.starts_with("--")) return arg.starts_with(name);
  return arg == name || arg.starts_with(name + "=");
}

// The value of option `name`, which args[*i] is (IsOption): what follows its
// '=' (or its letter, for a short option), or else the next argument, and
// then *i moves to it. False with *err "NAME needs a value; see HELP" when
// there is none.
inline bool OptionValue(const std::vector<std::string>& args, size_t* i, const std::string& name,
                        const std::string& help, std::string* out, std::string* err) {
  const std::string& arg = args[*i];
  if (arg.size() > name.size()) {
    *out = arg.substr(name.size() + (arg[name.size()] == '=' ? 1 : 0));
    return true;
  }
  if (*i + 1 >= args.size()) {
    *err = name + " needs a value; see " + help;
    return false;
  }
  *out = args[++*i];
  return true;
}

}  // namespace jobbridge
