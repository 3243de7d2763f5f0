#include "core/makeflags.h"

#include "core/numbers.h"

namespace jobbridge {

namespace {

constexpr std::string_view kAuthPrefix = "--jobserver-auth=";
constexpr std::string_view kFdsPrefix = "--jobserver-fds=";
// make's getopt reads this abbreviation as --jobserver-auth=; ninja, gcc and
// jobserver-rs do not look at it (JobserverWords).
constexpr std::string_view kMakeOnlyPrefix = "--jobserver-a=";

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n'; }

// make escapes whitespace and backslashes inside a word with a backslash.
std::vector<std::string> SplitWords(std::string_view text) {
  std::vector<std::string> words;
  std::string current;
  bool in_word = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      current += c;
      current += text[++i];
      in_word = true;
    } else if (c == '\\') {
      // A lone backslash at the very end escapes nothing; kept as it is, it
      // would escape the space before a word written after it (found by
      // fuzz/makeflags_fuzzer.cc). Kept escaped, it stays one backslash.
      current += "\\\\";
      in_word = true;
    } else if (IsSpace(c)) {
      if (in_word) words.push_back(std::move(current));
      current.clear();
      in_word = false;
    } else {
      current += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(current));
  return words;
}

std::string Unescape(std::string_view word) {
  std::string out;
  for (size_t i = 0; i < word.size(); ++i) {
    if (word[i] == '\\' && i + 1 < word.size()) ++i;
    out += word[i];
  }
  return out;
}

bool ParseAuthValue(std::string_view word, std::string_view value, JobserverAuth* auth,
                    std::string* err) {
  if (value.starts_with("fifo:")) {
    std::string path = Unescape(value.substr(5));
    if (path.empty()) {
      *err = "'" + std::string(word) + "' names no FIFO path";
      return false;
    }
    *auth = {JobserverAuth::Kind::kFifo, -1, -1, path};
    return true;
  }
  size_t comma = value.find(',');
  int r = 0, w = 0;
  if (comma == std::string_view::npos || !ParseWholeNumber(value.substr(0, comma), &r) ||
      !ParseWholeNumber(value.substr(comma + 1), &w)) {
    *err = "'" + std::string(word) + "' is neither R,W (two fd numbers) nor fifo:PATH";
    return false;
  }
  if (r < 0 || w < 0) {
    *auth = {JobserverAuth::Kind::kDisabled, r, w, ""};
  } else {
    *auth = {JobserverAuth::Kind::kPipe, r, w, ""};
  }
  return true;
}

// make's single-letter flags: "kn" in MAKEFLAGS, "-kn" in MFLAGS.
bool IsFlagCluster(std::string_view word) {
  if (word.starts_with('-')) word.remove_prefix(1);
  if (word.empty()) return false;
  for (char c : word) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
  }
  return true;
}

bool IsJobsWord(std::string_view word) {
  if (word == "--jobs" || word.starts_with("--jobs=")) return true;
  if (!word.starts_with("-j")) return false;
  int n = 0;
  return word.size() == 2 || (ParseWholeNumber(word.substr(2), &n) && n >= 0);
}

bool IsJobserverWord(std::string_view word) {
  return word.starts_with(kAuthPrefix) || word.starts_with(kFdsPrefix) ||
         word.starts_with(kMakeOnlyPrefix);
}

std::string JoinWords(const std::vector<std::string>& words) {
  std::string text;
  for (const std::string& word : words) {
    if (!text.empty()) text += ' ';
    text += word;
  }
  return text;
}

}  // namespace

bool ParseMakeflags(std::string_view text, Makeflags* out, std::string* err) {
  Makeflags result;
  result.words = SplitWords(text);
  for (size_t i = 0; i < result.words.size(); ++i) {
    const std::string& word = result.words[i];
    if (word == "--") break;  // variable assignments follow
    if (i == 0 && !IsJobsWord(word) && IsFlagCluster(word)) {
      result.dry_run = word.find('n') != std::string::npos;
      continue;
    }
    if (IsJobserverWord(word)) {
      size_t eq = word.find('=');
      if (!ParseAuthValue(word, std::string_view(word).substr(eq + 1), &result.make_auth, err)) {
        return false;
      }
      if (!word.starts_with(kMakeOnlyPrefix)) result.auth = result.make_auth;
    } else if (IsJobsWord(word)) {
      int n = 0;
      std::string_view digits = word.starts_with("--jobs=") ? std::string_view(word).substr(7)
                                : word.starts_with("-j")    ? std::string_view(word).substr(2)
                                                            : std::string_view();
      result.jobs = ParseWholeNumber(digits, &n) ? n : 0;
    }
  }
  *out = std::move(result);
  return true;
}

std::optional<MakeflagsSource> SelectMakeflags(const GetEnvFn& getenv_fn) {
  for (const char* name : kMakeflagsVariables) {
    if (const char* value = getenv_fn(name)) return MakeflagsSource{name, value};
  }
  return std::nullopt;
}

std::vector<std::string> SplitMakeflags(std::string_view text) { return SplitWords(text); }

std::vector<std::string> WordsWithoutJobserver(const std::vector<std::string>& words) {
  std::vector<std::string> kept;
  bool in_assignments = false;
  for (const std::string& word : words) {
    if (word == "--") in_assignments = true;
    if (!in_assignments && (IsJobsWord(word) || IsJobserverWord(word))) continue;
    kept.push_back(word);
  }
  return kept;
}

std::vector<std::string> JobserverWords(const PoolNames& names) {
  bool pipe = names.pipe.kind == JobserverAuth::Kind::kPipe;
  bool fifo = names.fifo.kind == JobserverAuth::Kind::kFifo;
  std::vector<std::string> words;
  if (pipe) words.push_back(std::string(kAuthPrefix) + FormatAuth(names.pipe));
  if (fifo) words.push_back(std::string(kAuthPrefix) + FormatAuth(names.fifo));
  if (pipe && fifo) words.push_back(std::string(kMakeOnlyPrefix) + FormatAuth(names.pipe));
  return words;
}

std::string WithJobserver(const std::vector<std::string>& words,
                          const std::vector<std::string>& jobserver_words) {
  std::vector<std::string> out;
  bool in_assignments = false, replaced = false;
  for (const std::string& word : words) {
    if (word == "--") in_assignments = true;
    if (in_assignments || !IsJobserverWord(word)) {
      out.push_back(word);
    } else if (!replaced) {
      out.insert(out.end(), jobserver_words.begin(), jobserver_words.end());
      replaced = true;
    }
  }
  return JoinWords(out);
}

std::string WithJobserver(const std::vector<std::string>& words, const JobserverAuth& auth) {
  return WithJobserver(words, {std::string(kAuthPrefix) + FormatAuth(auth)});
}

std::string FormatAuth(const JobserverAuth& auth) {
  switch (auth.kind) {
    case JobserverAuth::Kind::kFifo:
      return "fifo:" + auth.fifo_path;
    case JobserverAuth::Kind::kPipe:
    case JobserverAuth::Kind::kDisabled:
      return std::to_string(auth.read_fd) + "," + std::to_string(auth.write_fd);
    case JobserverAuth::Kind::kNone:
      break;
  }
  return "";
}

namespace {

std::string FormatMakeflagsWords(const std::vector<std::string>& kept, int jobs,
                                 const std::vector<std::string>& jobserver_words) {
  std::vector<std::string> words;
  auto assignments = kept.begin();
  while (assignments != kept.end() && *assignments != "--") ++assignments;
  words.insert(words.end(), kept.begin(), assignments);
  words.push_back(jobs > 0 ? "-j" + std::to_string(jobs) : "-j");
  words.insert(words.end(), jobserver_words.begin(), jobserver_words.end());
  words.insert(words.end(), assignments, kept.end());
  return JoinWords(words);
}

}  // namespace

std::string FormatMakeflags(const std::vector<std::string>& kept, int jobs,
                            const JobserverAuth& auth) {
  std::vector<std::string> jobserver_words;
  if (auth.kind != JobserverAuth::Kind::kNone) {
    jobserver_words.push_back(std::string(kAuthPrefix) + FormatAuth(auth));
  }
  return FormatMakeflagsWords(kept, jobs, jobserver_words);
}

std::string FormatMakeflagsForPool(const std::vector<std::string>& kept, int jobs,
                                   const PoolNames& names) {
  return FormatMakeflagsWords(kept, jobs, JobserverWords(names));
}

}  // namespace jobbridge
