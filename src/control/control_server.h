// The control socket (docs/CONTROL.md): `control.sock` in the runtime
// folder, beside the token socket and never consuming a slot. One JSON
// request per line, one reply line each, answered by the Delegate.
//
// It must never stall the token service, whatever a client sends: a line
// longer than kMaxControlLineBytes gets an error reply and the connection is
// closed; at most kRequestsPerTurn requests of one connection are answered
// per turn of the loop (the rest wait for the next turn, and the connection
// is not read meanwhile); a client whose unread replies pass
// kMaxPendingBytes (it floods without reading) is closed; at most
// kMaxConnections at once (more are told so and closed); a client of
// another uid is refused before any byte.
#pragma once

#include <uv.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "endpoints/unix_listener.h"
#include "util/unique_fd.h"

namespace jobbridge {

// Names the control socket to COMMAND's tree (jobbridge status finds it
// there). Each jobbridge names its own, or none when it could not open one.
inline constexpr const char* kControlVariable = "JOBBRIDGE_CONTROL";

class ControlServer {
 public:
  class Delegate {
   public:
    virtual ~Delegate() = default;
    // The body of a "status" / "holders" reply (without version, ok, id).
    virtual nlohmann::json Status() = 0;
    virtual nlohmann::json Holders() = 0;
    // Changes the budget to `jobs` and sets *body to the reply's fields.
    // Returns false and sets *err, saying why not (joined to an outer
    // budget, ...), when it is refused.
    virtual bool Resize(int jobs, nlohmann::json* body, std::string* err) = 0;
    // Ends COMMAND's tree as a SIGTERM to jobbridge would; a daemon stops
    // taking new clients and ends once its holders are done or after
    // `timeout_ms` (-1: kDefaultStopTimeoutMs). True when the asker gets a
    // last line when it has ended (a daemon's summary, EndWaiters).
    virtual bool Stop(int64_t timeout_ms) = 0;
  };

  static constexpr size_t kMaxConnections = 16;
  static constexpr size_t kMaxPendingBytes = 1 << 20;
  static constexpr int kRequestsPerTurn = 32;

  ControlServer(uv_loop_t* loop, Delegate* delegate);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds and listens on `path` (mode 0600). Returns false and sets *err.
  bool Listen(const std::string& path, std::string* err);
  // Takes a connected socket as if accepted (tests, the fuzzer). Returns
  // false when it was refused (and closed).
  bool Adopt(UniqueFd fd);
  // Closes the listener and every connection; run the loop afterwards. The
  // connections that asked a daemon to stop are kept for EndWaiters.
  void Shutdown();
  // After Shutdown: the connections waiting for a daemon's last line (their
  // replies so far written), for the caller to write it and close them.
  std::vector<UniqueFd> TakeEndWaiters() { return std::move(end_waiters_); }

  size_t connection_count() const { return connections_.size(); }
  // Connections closed for breaking the limits above, so far.
  int64_t closed_for_abuse() const { return closed_for_abuse_; }

 private:
  struct Connection;
  static void OnEvents(uv_poll_t* handle, int status, int events);
  static void OnNextTurn(uv_idle_t* idle);
  void ReadFrom(Connection* connection);
  // Answers up to kRequestsPerTurn complete lines; false: it was closed.
  bool Answer(Connection* connection);
  std::string AnswerLine(Connection* connection, const std::string& line);
  void Send(Connection* connection, const std::string& reply);
  bool Flush(Connection* connection);  // false: it was closed
  void Watch(Connection* connection);
  // Closes a connection whose sending side is shut once all it asked is
  // answered and written.
  void FinishIfDone(Connection* connection);
  void Close(Connection* connection, bool abuse);

  uv_loop_t* loop_;
  Delegate* delegate_;
  UnixListener listener_;
  // Answers what was left over, once per turn of the loop (an idle handle:
  // a 0 ms timer started from its own callback runs again in the same turn).
  uv_idle_t* next_turn_ = nullptr;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Connection*> connections_;
  int64_t closed_for_abuse_ = 0;
  std::vector<UniqueFd> end_waiters_;
};

}  // namespace jobbridge
