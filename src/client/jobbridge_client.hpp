// A header-only C++ wrapper over jobbridge_client.h: move-only owners that
// close the client, give a slot back and abandon a pending acquire when they
// go out of scope. Errors are returned as the C API returns them (0 or a
// negative errno value, see jobbridge_client.h); nothing here throws except
// std::bad_alloc from building a std::string.
//
//   jobbridge::Client client;
//   if (int rc = jobbridge::Client::OpenEnv(&client); rc < 0) return rc;
//   jobbridge::Slot slot;
//   if (int rc = client.Acquire(&slot); rc < 0) return rc;
//   run_one_job();  // the slot goes back when `slot` is destroyed
#pragma once

#include <cerrno>
#include <cstddef>
#include <string>
#include <utility>

#include "jobbridge_client.h"

namespace jobbridge {

// One held job slot; destroying it (or Release) gives it back.
class Slot {
 public:
  Slot() = default;
  explicit Slot(jobbridge_slot* slot) noexcept : slot_(slot) {}
  Slot(Slot&& other) noexcept : slot_(std::exchange(other.slot_, nullptr)) {}
  Slot& operator=(Slot&& other) noexcept {
    if (this != &other) {
      Release();
      slot_ = std::exchange(other.slot_, nullptr);
    }
    return *this;
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  ~Slot() { Release(); }

  // Gives the slot back now. Returns 0 (also when there is none) or what
  // jobbridge_slot_release returns.
  int Release() noexcept {
    return slot_ == nullptr ? 0 : jobbridge_slot_release(std::exchange(slot_, nullptr));
  }

  bool held() const noexcept { return slot_ != nullptr; }
  explicit operator bool() const noexcept { return held(); }
  jobbridge_slot* get() const noexcept { return slot_; }
  // Hands the C handle to the caller, who must release it.
  jobbridge_slot* Detach() noexcept { return std::exchange(slot_, nullptr); }

 private:
  jobbridge_slot* slot_ = nullptr;
};

// An acquire for an event loop (see jobbridge_client_acquire_start); destroying
// it abandons the request.
class PendingAcquire {
 public:
  PendingAcquire() = default;
  explicit PendingAcquire(jobbridge_pending* pending) noexcept : pending_(pending) {}
  PendingAcquire(PendingAcquire&& other) noexcept
      : pending_(std::exchange(other.pending_, nullptr)) {}
  PendingAcquire& operator=(PendingAcquire&& other) noexcept {
    if (this != &other) {
      Abandon();
      pending_ = std::exchange(other.pending_, nullptr);
    }
    return *this;
  }
  PendingAcquire(const PendingAcquire&) = delete;
  PendingAcquire& operator=(const PendingAcquire&) = delete;
  ~PendingAcquire() { Abandon(); }

  // The fd to watch for POLLIN, or -1 when there is no acquire in progress.
  int fd() const noexcept { return pending_ == nullptr ? -1 : jobbridge_pending_fd(pending_); }

  // Returns 0 and stores the slot in *slot when granted; -EAGAIN when not yet
  // (still pending); -EINVAL when nothing is pending; otherwise the error of
  // jobbridge_client_acquire_finish. Only -EAGAIN leaves it pending.
  int Finish(Slot* slot) noexcept {
    if (pending_ == nullptr || slot == nullptr) return -EINVAL;
    jobbridge_slot* granted = nullptr;
    int rc = jobbridge_client_acquire_finish(pending_, &granted);
    if (rc == -EAGAIN) return rc;
    pending_ = nullptr;
    if (rc == 0) *slot = Slot(granted);
    return rc;
  }

  void Abandon() noexcept { jobbridge_client_acquire_abandon(std::exchange(pending_, nullptr)); }

  bool active() const noexcept { return pending_ != nullptr; }
  explicit operator bool() const noexcept { return active(); }

 private:
  jobbridge_pending* pending_ = nullptr;
};

// One jobserver. Slots and pendings may outlive it (see jobbridge_client_close).
class Client {
 public:
  Client() = default;
  explicit Client(jobbridge_client* client) noexcept : client_(client) {}
  Client(Client&& other) noexcept : client_(std::exchange(other.client_, nullptr)) {}
  Client& operator=(Client&& other) noexcept {
    if (this != &other) {
      jobbridge_client_close(client_);
      client_ = std::exchange(other.client_, nullptr);
    }
    return *this;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() { jobbridge_client_close(client_); }

  // The open functions of jobbridge_client.h; on failure *why (if given)
  // gets the sentence that names the culprit.
  static int OpenEnv(Client* out, std::string* why = nullptr) {
    return Open(out, why, [](jobbridge_client** c, char* w, size_t n) {
      return jobbridge_client_open_env(c, w, n);
    });
  }
  static int OpenSocket(const std::string& path, Client* out, std::string* why = nullptr) {
    return Open(out, why, [&](jobbridge_client** c, char* w, size_t n) {
      return jobbridge_client_open_socket(path.c_str(), c, w, n);
    });
  }
  static int OpenLegacy(const std::string& auth, Client* out, std::string* why = nullptr) {
    return Open(out, why, [&](jobbridge_client** c, char* w, size_t n) {
      return jobbridge_client_open_legacy(auth.c_str(), c, w, n);
    });
  }

  // jobbridge_client_acquire; on success *slot holds the new slot (a slot it
  // held before is given back first).
  int Acquire(Slot* slot, int timeout_ms = -1) noexcept {
    if (slot == nullptr) return -EINVAL;
    jobbridge_slot* granted = nullptr;
    int rc = jobbridge_client_acquire(client_, timeout_ms, &granted);
    if (rc == 0) *slot = Slot(granted);
    return rc;
  }

  // jobbridge_client_acquire_start into *pending (abandoning what it held).
  int AcquireStart(PendingAcquire* pending) noexcept {
    if (pending == nullptr) return -EINVAL;
    jobbridge_pending* started = nullptr;
    int rc = jobbridge_client_acquire_start(client_, &started);
    *pending = PendingAcquire(started);
    return rc;
  }

  int Cancel() noexcept { return jobbridge_client_cancel(client_); }
  int mode() const noexcept { return jobbridge_client_mode(client_); }

  // jobbridge_client_describe; empty when there is no client.
  std::string Describe() const {
    char buf[256];
    int n = jobbridge_client_describe(client_, buf, sizeof buf);
    if (n < 0) return std::string();
    if (static_cast<size_t>(n) < sizeof buf) return std::string(buf, static_cast<size_t>(n));
    std::string text(static_cast<size_t>(n) + 1, '\0');
    jobbridge_client_describe(client_, text.data(), text.size());
    text.resize(static_cast<size_t>(n));
    return text;
  }

  bool valid() const noexcept { return client_ != nullptr; }
  explicit operator bool() const noexcept { return valid(); }
  jobbridge_client* get() const noexcept { return client_; }

 private:
  template <typename F>
  static int Open(Client* out, std::string* why, F&& open) {
    if (out == nullptr) return -EINVAL;
    jobbridge_client* opened = nullptr;
    char buf[512] = {};
    int rc = open(&opened, buf, sizeof buf);
    if (rc == 0) {
      *out = Client(opened);
    } else if (why != nullptr) {
      *why = buf;
    }
    return rc;
  }

  jobbridge_client* client_ = nullptr;
};

}  // namespace jobbridge
