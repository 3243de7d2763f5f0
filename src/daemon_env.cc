#include "daemon_env.h"

#include <cmath>
#include <cstdlib>

#include "child_env.h"
#include "control/control_server.h"
#include "core/makeflags.h"
#include "pool_client.h"

namespace jobbridge {

bool ParseEnvFormat(const std::string& text, EnvFormat* format, std::string* err) {
  if (text == "sh") {
    *format = EnvFormat::kSh;
  } else if (text == "fish") {
    *format = EnvFormat::kFish;
  } else if (text == "github") {
    *format = EnvFormat::kGithub;
  } else if (text == "gitlab") {
    *format = EnvFormat::kGitlab;
  } else {
    *err = "unknown --format '" + text + "': use sh, fish, github or gitlab";
    return false;
  }
  return true;
}

bool ParseDuration(const std::string& text, int64_t* ms, std::string* err) {
  size_t unit = text.find_first_not_of("0123456789.");
  std::string number = text.substr(0, unit),
              suffix = unit == std::string::npos ? "" : text.substr(unit);
  double scale = suffix == "ms"                  ? 1
                 : suffix == "" || suffix == "s" ? 1000
                 : suffix == "m"                 ? 60000
                 : suffix == "h"                 ? 3600000
                                                 : 0;
  char* end = nullptr;
  double value = number.empty() ? -1 : std::strtod(number.c_str(), &end);
  double total = value * scale;
  if (scale == 0 || number.empty() || !end || *end != '\0' || !std::isfinite(total) || total < 1 ||
      total > 30.0 * 86400000) {
    *err = "'" + text + "' is not a duration: give seconds (90), or a number with ms, s, m or h " +
           "(1.5s, 10m), from 1 ms to 30 days";
    return false;
  }
  *ms = static_cast<int64_t>(total);
  return true;
}

std::vector<std::string> DaemonVariables(const DaemonPlaces& places) {
  JobserverAuth fifo{JobserverAuth::Kind::kFifo, -1, -1, places.fifo};
  // Pipes cannot cross separate shells: every variable names the FIFO. The
  // shims give make 4.3 (which reads only R,W) and every tool started
  // through them a pool of its own; CARGO_MAKEFLAGS is marked as jobbridge's
  // (child_env.h), so the make shim clears it below make.
  std::string makeflags = FormatMakeflags({}, places.jobs, fifo);
  std::vector<std::string> variables = {
      "MAKEFLAGS=" + makeflags, "MFLAGS=" + makeflags, "CARGO_MAKEFLAGS=" + makeflags,
      std::string(kCargoMakeflagsMark) + "=" + makeflags, "JOBSERVERV2=" + places.socket};
  if (!places.robust.empty()) variables.push_back("ROBUST_JOBSERVER=" + places.robust);
  if (!places.pools.empty()) variables.push_back(std::string(kPoolsVariable) + "=" + places.pools);
  if (!places.control.empty()) {
    variables.push_back(std::string(kControlVariable) + "=" + places.control);
  }
  variables.push_back(std::string(kDaemonVariable) + "=" + places.runtime);
  return variables;
}

std::string EncodeDaemonEnv(const std::string& path_first,
                            const std::vector<std::string>& variables) {
  std::string text = "ready";
  text += '\0';
  text += path_first;
  text += '\0';
  for (const std::string& variable : variables) {
    text += variable;
    text += '\0';
  }
  text += "end";  // a message cut short at a NUL is not a shorter one
  text += '\0';
  return text;
}

bool DecodeDaemonEnv(const std::string& text, std::string* path_first,
                     std::vector<std::string>* variables) {
  std::vector<std::string> fields;
  size_t start = 0;
  for (size_t end; (end = text.find('\0', start)) != std::string::npos; start = end + 1) {
    fields.push_back(text.substr(start, end - start));
  }
  if (start != text.size() || fields.size() < 3 || fields[0] != "ready" || fields.back() != "end") {
    return false;
  }
  fields.pop_back();
  for (size_t i = 2; i < fields.size(); ++i) {
    if (fields[i].find('=') == std::string::npos || fields[i].front() == '=') return false;
  }
  *path_first = fields[1];
  variables->assign(fields.begin() + 2, fields.end());
  return true;
}

std::string ShQuote(const std::string& value) {
  std::string quoted = "'";
  for (char c : value) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string FishQuote(const std::string& value) {
  std::string quoted = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "'";
}

std::vector<std::string> NamesNotSet(const std::vector<std::string>& variables) {
  std::vector<std::string> names;
  for (const char* name : kDaemonVariableNames) {
    bool set = false;
    for (const std::string& variable : variables)
      set |= variable.starts_with(name + std::string("="));
    if (!set) names.emplace_back(name);
  }
  return names;
}

std::string ShellText(EnvFormat format, const std::vector<std::string>& variables,
                      const std::string& path_first, const std::vector<std::string>& unset) {
  bool fish = format == EnvFormat::kFish;
  std::string text;
  for (const std::string& name : unset) text += (fish ? "set -e " : "unset ") + name + ";\n";
  for (const std::string& variable : variables) {
    size_t equals = variable.find('=');
    std::string name = variable.substr(0, equals), value = variable.substr(equals + 1);
    text += fish ? "set -gx " + name + " " + FishQuote(value) + ";\n"
                 : "export " + name + "=" + ShQuote(value) + ";\n";
  }
  if (!path_first.empty()) {
    // Put first once: a second eval of the same text does not add it again.
    text += fish ? "contains -- " + FishQuote(path_first) + " $PATH; or set -gx PATH " +
                       FishQuote(path_first) + " $PATH;\n"
                 : "case \":$PATH:\" in *:" + ShQuote(path_first) +
                       ":*) ;; *) export PATH=" + ShQuote(path_first) + "\":$PATH\";; esac;\n";
  }
  return text;
}

std::string GithubEnvText(const std::vector<std::string>& variables) {
  std::string text;
  for (const std::string& variable : variables) {
    size_t equals = variable.find('=');
    std::string name = variable.substr(0, equals), value = variable.substr(equals + 1);
    if (value.find('\n') == std::string::npos) {
      text += variable + "\n";
      continue;
    }
    std::string delimiter = "JOBBRIDGE_EOF";
    while (value.find(delimiter) != std::string::npos) delimiter += "_";
    text += name + "<<" + delimiter + "\n" + value + "\n" + delimiter + "\n";
  }
  return text;
}

std::string GithubPathText(const std::string& path_first) {
  return path_first.empty() ? "" : path_first + "\n";
}

}  // namespace jobbridge
