// The C API of the client library: handles, reference counts, deadlines and
// cancellation. Moving slots is the Transport's job (transport.h); this file
// only decides when to try again and when to give up.
//
// A client is freed when the caller has closed it and no slot, pending or
// running acquire refers to it any more, so a slot can always be given back.
#include "client/jobbridge_client.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "client/transport.h"
#include "core/makeflags.h"
#include "util/eintr.h"

using jobbridge::UniqueFd;
using jobbridge::client::Attempt;
using jobbridge::client::Grant;
using jobbridge::client::Transport;

struct jobbridge_client {
  std::atomic<int> references{1};
  std::unique_ptr<Transport> transport;
  std::atomic<bool> cancelled{false};
  UniqueFd cancel_fd;  // an eventfd: written by cancel, never read, so it stays readable
};

struct jobbridge_slot {
  jobbridge_client* client;
  Grant grant;
};

struct jobbridge_pending {
  jobbridge_client* client;
  Attempt attempt;
};

namespace {

static_assert(std::atomic<bool>::is_always_lock_free, "cancel must be async-signal-safe");

// How long to wait before connecting again when the server's backlog is full.
constexpr int kBacklogRetryMs = 10;

jobbridge_client* Ref(jobbridge_client* client) {
  client->references.fetch_add(1, std::memory_order_relaxed);
  return client;
}

void Unref(jobbridge_client* client) {
  if (client->references.fetch_sub(1, std::memory_order_acq_rel) == 1) delete client;
}

// No exception may cross into C; the only one these paths can throw is
// std::bad_alloc, from building a string.
template <typename F>
int NoThrow(F&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (...) {
    return -EIO;
  }
}

void CopyText(const std::string& text, char* buf, size_t size) {
  if (buf == nullptr || size == 0) return;
  size_t n = std::min(text.size(), size - 1);
  std::memcpy(buf, text.data(), n);
  buf[n] = '\0';
}

// Wraps a freshly opened transport in a handle.
int NewClient(int rc, std::unique_ptr<Transport> transport, std::string* why,
              jobbridge_client** out) {
  if (rc < 0) return rc;
  UniqueFd cancel_fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!cancel_fd.valid()) {
    int error = errno;
    *why = std::string("eventfd: ") + strerror(error);
    return -error;
  }
  auto* client = new (std::nothrow) jobbridge_client;
  if (client == nullptr) return -ENOMEM;
  client->transport = std::move(transport);
  client->cancel_fd = std::move(cancel_fd);
  *out = client;
  return 0;
}

template <typename Open>
int OpenClient(jobbridge_client** out, char* why_buf, size_t why_size, Open&& open) {
  if (out == nullptr) return -EINVAL;
  *out = nullptr;
  std::string why;
  int rc = NoThrow([&] {
    std::unique_ptr<Transport> transport;
    int opened = open(&transport, &why);
    return NewClient(opened, std::move(transport), &why, out);
  });
  if (rc < 0) {
    if (why.empty()) why = jobbridge_strerror(rc);
    CopyText(why, why_buf, why_size);
  }
  return rc;
}

// JOBBRIDGE_IMPLICIT_SLOT: "0" or "1" decides whether the client has an
// implicit slot; unset or empty leaves it to the mode's rule.
enum class ImplicitRule { kDefault, kNever, kAlways };

int ReadImplicitRule(ImplicitRule* rule, std::string* why) {
  const char* value = getenv("JOBBRIDGE_IMPLICIT_SLOT");
  std::string text = value != nullptr ? value : "";
  if (text.empty()) {
    *rule = ImplicitRule::kDefault;
  } else if (text == "0") {
    *rule = ImplicitRule::kNever;
  } else if (text == "1") {
    *rule = ImplicitRule::kAlways;
  } else {
    *why = "JOBBRIDGE_IMPLICIT_SLOT is '" + text + "'; it must be 0, 1 or unset";
    return -EINVAL;
  }
  return 0;
}

// A make job owns its slot: make exports MAKELEVEL to every recipe.
bool StartedByMake() {
  const char* level = getenv("MAKELEVEL");
  return level != nullptr && level[0] != '\0';
}

int OpenAuth(const std::string& auth_text, bool implicit_slot, std::unique_ptr<Transport>* out,
             std::string* why) {
  std::string origin = "--jobserver-auth=" + auth_text;
  jobbridge::JobserverAuth auth;
  if (auth_text.starts_with("fifo:")) {
    auth = {jobbridge::JobserverAuth::Kind::kFifo, -1, -1, auth_text.substr(5)};
    if (auth.fifo_path.empty()) {
      *why = origin + " names no FIFO path";
      return -EINVAL;
    }
  } else {
    jobbridge::Makeflags flags;
    if (auth_text.find_first_of(" \t\n") != std::string::npos ||
        !jobbridge::ParseMakeflags(origin, &flags, why) ||
        flags.auth.kind == jobbridge::JobserverAuth::Kind::kNone) {
      *why = "'" + auth_text + "' is neither R,W (two fd numbers) nor fifo:PATH";
      return -EINVAL;
    }
    auth = flags.auth;
  }
  return jobbridge::client::OpenLegacyTransport(auth, origin, implicit_slot, out, why);
}

int OpenEnv(std::unique_ptr<Transport>* out, std::string* why) {
  // A bad JOBBRIDGE_IMPLICIT_SLOT matters only when there is a jobserver.
  ImplicitRule rule;
  std::string rule_why;
  int rule_rc = ReadImplicitRule(&rule, &rule_why);
  // The crash-safe protocols first, the socket (pollable: the whole API works
  // natively) before the semaphore (docs/PROTOCOL.md, "Which jobserver a
  // client uses"). In both a make job owns its slot (MAKELEVEL).
  for (auto [variable, open] :
       {std::pair{"JOBSERVERV2", &jobbridge::client::OpenSocketTransport},
        std::pair{"ROBUST_JOBSERVER", &jobbridge::client::OpenSemaphoreTransport}}) {
    const char* value = getenv(variable);
    if (value == nullptr || value[0] == '\0') continue;
    if (rule_rc < 0) {
      *why = rule_why;
      return rule_rc;
    }
    bool implicit_slot =
        rule == ImplicitRule::kAlways || (rule == ImplicitRule::kDefault && StartedByMake());
    return open(value, variable, implicit_slot, out, why);
  }
  auto source = jobbridge::SelectMakeflags([](const char* name) { return getenv(name); });
  if (!source) {
    *why =
        "no jobserver: none of JOBSERVERV2, ROBUST_JOBSERVER, CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS "
        "is set";
    return -ENOENT;
  }
  jobbridge::Makeflags flags;
  std::string err;
  if (!jobbridge::ParseMakeflags(source->value, &flags, &err)) {
    *why = source->variable + ": " + err;
    return -EINVAL;
  }
  bool has_jobserver = flags.auth.kind == jobbridge::JobserverAuth::Kind::kPipe ||
                       flags.auth.kind == jobbridge::JobserverAuth::Kind::kFifo;
  if (rule_rc < 0 && has_jobserver) {
    *why = rule_why;
    return rule_rc;
  }
  return jobbridge::client::OpenLegacyTransport(flags.auth, source->variable,
                                                rule != ImplicitRule::kNever, out, why);
}

// The time left for poll(): -1 for no deadline, else milliseconds rounded up.
class Deadline {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Deadline(int timeout_ms)
      : forever_(timeout_ms < 0), end_(Clock::now() + std::chrono::milliseconds(timeout_ms)) {}

  int RemainingMs() const {
    if (forever_) return -1;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(end_ - Clock::now()).count();
    return static_cast<int>(std::clamp<decltype(left)>(left, 0, INT_MAX));
  }

  bool Expired() const { return !forever_ && Clock::now() >= end_; }

 private:
  bool forever_;
  Clock::time_point end_;
};

// Waits until `fd` is readable (fd < 0: only until `cap_ms` passes), or the
// client is cancelled. Returns 0 to try again, -ETIMEDOUT, -ECANCELED, -errno.
int Wait(jobbridge_client* client, int fd, const Deadline& deadline, int cap_ms = -1) {
  for (;;) {
    int remaining = deadline.RemainingMs();
    int timeout = cap_ms < 0 ? remaining : remaining < 0 ? cap_ms : std::min(remaining, cap_ms);
    pollfd fds[2] = {{client->cancel_fd.get(), POLLIN, 0}, {fd, POLLIN, 0}};
    int n = poll(fds, fd >= 0 ? 2 : 1, timeout);
    if (n < 0 && errno == EINTR) continue;  // with the time left recomputed
    if (n < 0) return -errno;
    if (client->cancelled.load()) return -ECANCELED;
    if (n > 0 || timeout != remaining) return 0;
    return -ETIMEDOUT;
  }
}

// Makes the request, waiting out a full listen backlog.
int StartWaiting(jobbridge_client* client, Attempt* attempt, const Deadline& deadline) {
  for (;;) {
    if (client->cancelled.load()) return -ECANCELED;
    int rc = client->transport->Start(attempt);
    if (rc != -EAGAIN) return rc;
    rc = Wait(client, -1, deadline, kBacklogRetryMs);
    if (rc < 0) return rc;
  }
}

int Acquire(jobbridge_client* client, int timeout_ms, Grant* grant) {
  Deadline deadline(timeout_ms);
  Attempt attempt;  // dropped on every way out: closing a connection drops its request
  if (int rc = StartWaiting(client, &attempt, deadline); rc < 0) return rc;
  for (;;) {
    if (client->cancelled.load()) return -ECANCELED;
    int rc = client->transport->TryFinish(&attempt, grant);
    if (rc != -EAGAIN) return rc;
    // Checked here too, not only when poll() times out: an fd that keeps
    // waking us with nothing to take (other readers win the token) must not
    // stretch the deadline.
    if (deadline.Expired()) return -ETIMEDOUT;
    if (attempt.fd() < 0) {
      if (rc = client->transport->MakePollable(&attempt); rc < 0) return rc;
    }
    if (rc = Wait(client, attempt.fd(), deadline); rc < 0) return rc;
  }
}

jobbridge_slot* NewSlot(jobbridge_client* client, Grant grant) {
  auto* slot = new (std::nothrow) jobbridge_slot{client, std::move(grant)};
  if (slot == nullptr) {
    client->transport->Release(&grant);
    return nullptr;
  }
  Ref(client);
  return slot;
}

}  // namespace

extern "C" {

int jobbridge_client_open_env(jobbridge_client** out, char* why, size_t why_size) {
  return OpenClient(out, why, why_size, OpenEnv);
}

int jobbridge_client_open_socket(const char* path, jobbridge_client** out, char* why,
                                 size_t why_size) {
  return OpenClient(out, why, why_size, [&](std::unique_ptr<Transport>* t, std::string* w) {
    if (path == nullptr) return -EINVAL;
    ImplicitRule rule;
    if (int rc = ReadImplicitRule(&rule, w); rc < 0) return rc;
    return jobbridge::client::OpenSocketTransport(path, "", rule == ImplicitRule::kAlways, t, w);
  });
}

int jobbridge_client_open_legacy(const char* auth, jobbridge_client** out, char* why,
                                 size_t why_size) {
  return OpenClient(out, why, why_size, [&](std::unique_ptr<Transport>* t, std::string* w) {
    if (auth == nullptr) return -EINVAL;
    ImplicitRule rule;
    if (int rc = ReadImplicitRule(&rule, w); rc < 0) return rc;
    return OpenAuth(auth, rule != ImplicitRule::kNever, t, w);
  });
}

void jobbridge_client_close(jobbridge_client* client) {
  if (client != nullptr) Unref(client);
}

int jobbridge_client_mode(const jobbridge_client* client) {
  if (client == nullptr) return -EINVAL;
  return client->transport->Mode();
}

int jobbridge_client_describe(const jobbridge_client* client, char* buf, size_t size) {
  if (client == nullptr || (buf == nullptr && size != 0)) return -EINVAL;
  return NoThrow([&] {
    std::string text = client->transport->Describe();
    CopyText(text, buf, size);
    return static_cast<int>(std::min<size_t>(text.size(), INT_MAX));
  });
}

const char* jobbridge_strerror(int error) {
  switch (error) {
    case 0:
      return "success";
    case -ENOENT:
      return "no jobserver in the environment";
    case -EPIPE:
      return "the jobserver went away";
    case -ECANCELED:
      return "the acquire was cancelled";
    case -ETIMEDOUT:
      return "no job slot became free in time";
    case -EAGAIN:
      return "no job slot is free yet";
    case -EBADF:
      return "the jobserver named in MAKEFLAGS is not an open pipe or FIFO";
    case -EINVAL:
      return "invalid argument or malformed jobserver setting";
    default:
      return strerror(error < 0 ? -error : error);
  }
}

int jobbridge_client_acquire(jobbridge_client* client, int timeout_ms, jobbridge_slot** out) {
  if (client == nullptr || out == nullptr) return -EINVAL;
  *out = nullptr;
  Ref(client);  // a concurrent close must not free what this thread waits on
  Grant grant;
  int rc = Acquire(client, timeout_ms, &grant);
  if (rc == 0) {
    *out = NewSlot(client, std::move(grant));
    if (*out == nullptr) rc = -ENOMEM;
  }
  Unref(client);
  return rc;
}

int jobbridge_slot_release(jobbridge_slot* slot) {
  if (slot == nullptr) return -EINVAL;
  jobbridge_client* client = slot->client;
  int rc = client->transport->Release(&slot->grant);
  delete slot;
  Unref(client);
  return rc;
}

int jobbridge_client_cancel(jobbridge_client* client) {
  if (client == nullptr) return -EINVAL;
  client->cancelled.store(true);
  uint64_t one = 1;
  ssize_t n = jobbridge::RetryOnEintr([&] { return write(client->cancel_fd.get(), &one, 8); });
  return n == 8 || errno == EAGAIN ? 0 : -errno;  // EAGAIN: the counter is full, still readable
}

int jobbridge_client_acquire_start(jobbridge_client* client, jobbridge_pending** out) {
  if (client == nullptr || out == nullptr) return -EINVAL;
  *out = nullptr;
  if (client->cancelled.load()) return -ECANCELED;
  auto* pending = new (std::nothrow) jobbridge_pending{Ref(client), Attempt()};
  if (pending == nullptr) {
    Unref(client);
    return -ENOMEM;
  }
  int rc = client->transport->Start(&pending->attempt);
  if (rc == 0 && pending->attempt.fd() < 0) rc = client->transport->MakePollable(&pending->attempt);
  if (rc < 0) {
    jobbridge_client_acquire_abandon(pending);
    return rc;
  }
  *out = pending;
  return 0;
}

int jobbridge_pending_fd(const jobbridge_pending* pending) {
  if (pending == nullptr) return -EINVAL;
  return pending->attempt.fd();
}

int jobbridge_client_acquire_finish(jobbridge_pending* pending, jobbridge_slot** out) {
  if (pending == nullptr || out == nullptr) return -EINVAL;
  *out = nullptr;
  Grant grant;
  int rc = pending->client->transport->TryFinish(&pending->attempt, &grant);
  if (rc == -EAGAIN) return rc;
  if (rc == 0) {
    *out = NewSlot(pending->client, std::move(grant));
    if (*out == nullptr) rc = -ENOMEM;
  }
  jobbridge_client_acquire_abandon(pending);
  return rc;
}

void jobbridge_client_acquire_abandon(jobbridge_pending* pending) {
  if (pending == nullptr) return;
  jobbridge_client* client = pending->client;
  delete pending;  // closes its connection or epoll set
  Unref(client);
}

}  // extern "C"
