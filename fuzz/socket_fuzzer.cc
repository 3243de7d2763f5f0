// libFuzzer target for the socket jobserver's server side (docs/PROTOCOL.md):
// the input is a program of client actions (connect, send bytes, half-close,
// close, read grants, take or give back a legacy token, run the loop) played
// against the real SocketServer and Broker, with a real Ledger and a pipe
// LegacyPool, on one libuv loop. Clients are socketpairs adopted by the
// server, so no client process is needed. After every action the budget's
// invariants are checked; at the end every slot must come back. Run by
// scripts/fuzz.sh; seeds in fuzz/corpus/socket/.
//
// The program: byte 0 sets the budget (1..8). Each further byte is one
// action: its low 3 bits pick one of 8 client slots, its high 5 bits index
// kActions. kWrite takes a length byte and that many data bytes (mapped so
// most become '+' or '-'); kFlood takes one byte (how far past the cap).
// Actions that make no sense (a second connect on a slot, a read on none)
// do nothing.
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "broker.h"
#include "core/ledger.h"
#include "endpoints/legacy_pool.h"
#include "endpoints/socket_server.h"
#include "loop_test_util.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace {

using test_util::Queued;

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "socket_fuzzer: invariant broken: %s\n", what);
  std::abort();  // libFuzzer reports the input that got here
}

enum Action : uint8_t {
  kOpen,
  kWrite,
  kPlus,
  kMinus,
  kHalfClose,
  kClose,
  kRead,
  kLegacyTake,
  kLegacyGive,
  kRun,
  kFlood
};

// 32 entries, weighted: byte >> 3 picks one.
constexpr Action kActions[32] = {
    kOpen,  kOpen,  kOpen,      kWrite,      kWrite,      kWrite,      kWrite,      kWrite,
    kWrite, kWrite, kPlus,      kPlus,       kPlus,       kMinus,      kMinus,      kMinus,
    kRead,  kRead,  kRead,      kRead,       kRun,        kRun,        kRun,        kRun,
    kClose, kClose, kHalfClose, kLegacyTake, kLegacyTake, kLegacyGive, kLegacyGive, kFlood,
};

constexpr int kSlots = 8;
constexpr int kMaxWaiting = SocketServer::kMaxWaitingPerConnection;
// A flood costs the server kMaxWaiting requests (~15 ms under the
// sanitizers); two show the cap and the turns between two floods.
constexpr int kMaxFloods = 2;

// What one client did and saw, from its side of the socket.
struct Client {
  UniqueFd fd;  // the client's end; invalid once it closed it
  ConnectionId id = 0;
  int pluses = 0;       // '+' bytes sent (the server may not have read them yet)
  int minuses = 0;      // '-' bytes sent
  int grants_read = 0;  // grant bytes read
  bool half_closed = false;
  bool saw_eof = false;  // read EOF or a reset, or a send failed: the server dropped it
  // It sent what the protocol forbids, or may forbid (a '-' for a grant it
  // had not read, a '+' past the cap by its own count): the server may close it.
  bool rogue = false;

  int Believed() const { return grants_read - minuses; }  // slots it may run jobs on
  int Requests() const { return 1 + pluses; }
};

class Program {
 public:
  Program(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool Next(uint8_t* byte) {
    if (pos_ >= size_) return false;
    *byte = data_[pos_++];
    return true;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Most bytes become '+' or '-'; '+' and '-' stay; a few are garbage.
char MapByte(uint8_t byte) {
  if (byte == '+' || byte == '-') return static_cast<char>(byte);
  if ((byte & 0x3f) == 0x3f) return static_cast<char>(byte);  // 0x3f, 0x7f, 0xbf, 0xff
  return (byte & 1) ? '+' : '-';
}

class Harness {
 public:
  explicit Harness(int budget) : budget_(budget), ledger_(budget) {
    std::string err;
    Check(uv_loop_init(&loop_) == 0, "uv_loop_init");
    // As RunBridge does: the command's implicit slot, N-1 in the pool.
    Check(ledger_.Grant(kCommandOwner, 1, &err), "grant the command's slot");
    if (budget > 1) Check(ledger_.Grant(kLegacyOwner, budget - 1, &err), "fill the pool");
    pool_ = LegacyPool::Create(LegacyStyle::kPipe, budget - 1, "/nonexistent", &err);
    Check(pool_ != nullptr, "create the pipe pool");
    broker_ = std::make_unique<Broker>(&loop_, &ledger_, pool_.get());
    server_ = std::make_unique<SocketServer>(&loop_, broker_.get());
    broker_->Start(server_.get());
  }

  void Run(Program* program);
  void Finish();

 private:
  Client* At(int slot) { return slots_[slot] < 0 ? nullptr : &clients_[slots_[slot]]; }
  void Open(int slot);
  void Send(Client* client, const std::string& bytes);
  void Read(Client* client);
  void Close(int slot);
  void LegacyTake();
  void LegacyGive();
  void CheckInvariants();
  void CheckClient(const Client& client, int* running, size_t* lower, size_t* upper);
  bool RunUntil(const std::function<bool()>& done) { return test_util::RunLoopUntil(&loop_, done); }
  int PoolCount() {
    std::string err;
    int n = pool_->Count(&err);
    Check(n >= 0, "count the pool");
    return n;
  }

  int budget_;
  uv_loop_t loop_{};
  Ledger ledger_;
  std::unique_ptr<LegacyPool> pool_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<SocketServer> server_;
  std::vector<Client> clients_;  // every connection of the run, in opening order
  int slots_[kSlots] = {-1, -1, -1, -1, -1, -1, -1, -1};  // index into clients_, or -1
  int legacy_held_ = 0;  // tokens the fuzzer, as a legacy client, took and holds
  int floods_ = 0;
};

void Harness::Run(Program* program) {
  uint8_t op = 0;
  while (program->Next(&op)) {
    int slot = op & 7;
    Client* client = At(slot);
    uint8_t arg = 0;
    switch (kActions[op >> 3]) {
      case kOpen:
        if (!client) Open(slot);
        break;
      case kWrite: {
        if (!program->Next(&arg)) break;
        std::string bytes;
        for (int i = 0, n = 1 + arg % 16; i < n && program->Next(&arg); ++i) {
          bytes += MapByte(arg);
        }
        if (client) Send(client, bytes);
        break;
      }
      case kPlus:
        if (client) Send(client, "+");
        break;
      case kMinus:  // a well-behaved release, of a slot it holds
        if (client && client->Believed() > 0) Send(client, "-");
        break;
      case kFlood:  // around the cap of waiting requests; slow, so twice a run at most
        if (!program->Next(&arg)) break;
        if (client && floods_ < kMaxFloods) {
          ++floods_;
          int to_cap = kMaxWaiting - (client->Requests() - client->grants_read);
          Send(client, std::string(std::max(0, to_cap - 2 + arg % 5), '+'));
        }
        break;
      case kHalfClose:
        if (client && !client->half_closed) {
          Check(shutdown(client->fd.get(), SHUT_WR) == 0, "shutdown(SHUT_WR)");
          client->half_closed = true;
        }
        break;
      case kClose:
        if (client) Close(slot);
        break;
      case kRead:
        if (client) Read(client);
        break;
      case kLegacyTake:
        LegacyTake();
        break;
      case kLegacyGive:
        LegacyGive();
        break;
      case kRun:
        uv_run(&loop_, UV_RUN_NOWAIT);
        break;
    }
    CheckInvariants();
  }
}

void Harness::Open(int slot) {
  int ends[2];
  Check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) == 0,
        "socketpair");
  Client client;
  client.fd.Reset(ends[0]);
  client.id = server_->Adopt(UniqueFd(ends[1]));
  Check(client.id != 0, "a connection of our own uid was refused");
  slots_[slot] = static_cast<int>(clients_.size());
  clients_.push_back(std::move(client));
}

// Sends what fits and books each byte sent as the server will judge it.
void Harness::Send(Client* client, const std::string& bytes) {
  if (client->half_closed || bytes.empty()) return;
  ssize_t n = send(client->fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0) {
    Check(errno == EAGAIN || errno == EPIPE || errno == ECONNRESET, "send failed oddly");
    if (errno != EAGAIN) client->saw_eof = true;
    return;
  }
  for (ssize_t i = 0; i < n; ++i) {
    if (bytes[i] == '+') {
      ++client->pluses;
      // By its own count; the server's is never higher (grants it did not
      // read yet are no longer waiting).
      if (client->Requests() - client->grants_read > kMaxWaiting) client->rogue = true;
    } else if (bytes[i] == '-') {
      if (client->Believed() <= 0) client->rogue = true;
      ++client->minuses;
    } else {
      client->rogue = true;
    }
  }
}

void Harness::Read(Client* client) {
  char buffer[512];
  for (;;) {
    ssize_t n = recv(client->fd.get(), buffer, sizeof buffer, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      Check(n == 0 || errno == ECONNRESET, "recv failed oddly");
      client->saw_eof = true;
      return;
    }
    for (ssize_t i = 0; i < n; ++i) Check(buffer[i] == '+', "a grant byte is not '+'");
    client->grants_read += static_cast<int>(n);
    Check(client->grants_read <= client->Requests(), "more grants read than requests sent");
  }
}

void Harness::Close(int slot) {
  clients_[slots_[slot]].fd.Reset();
  slots_[slot] = -1;
}

void Harness::LegacyTake() {
  int fd = pool_->InheritedFds()[0];  // blocking, as children get it: poll first
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) != 1) return;
  char token = 0;
  Check(read(fd, &token, 1) == 1, "read a legacy token that poll said was there");
  ++legacy_held_;
}

void Harness::LegacyGive() {
  if (legacy_held_ == 0) return;
  Check(write(pool_->InheritedFds()[1], "+", 1) == 1, "write a legacy token back");
  --legacy_held_;
}

// Bytes this end sent that the server has not read yet (0: it read them all).
int Unread(int fd) {
  int n = -1;
  Check(ioctl(fd, SIOCOUTQ, &n) == 0, "SIOCOUTQ");
  return n;
}

void Harness::CheckInvariants() {
  std::string err;
  Check(ledger_.CheckInvariants(&err), "the ledger's books balance");
  Check(ledger_.free() == 0, "no free slot is left idle after the broker ran");
  Check(ledger_.HeldBy(kCommandOwner) == 1, "the command keeps its implicit slot");
  Check(PoolCount() + legacy_held_ == ledger_.HeldBy(kLegacyOwner),
        "the pool's tokens plus the legacy client's are the ledger's legacy share");
  for (auto [owner, held] : ledger_.Holders()) {
    if (owner.kind == OwnerKind::kSocket) {
      Check(server_->PeerPid(owner.id) >= 0, "only live connections hold slots");
    }
  }
  // The jobs that may run: the command's, the legacy client's, and one per
  // slot each client believes it holds.
  int running = 1 + legacy_held_;
  size_t lower = 0, upper = 0;  // bounds on the requests that must be waiting
  for (const Client& client : clients_) CheckClient(client, &running, &lower, &upper);
  Check(running <= budget_, "no more jobs run than the budget");
  Check(lower <= broker_->waiting() && broker_->waiting() <= upper,
        "the broker's waiting requests are the ones the clients sent and were not granted");
}

void Harness::CheckClient(const Client& client, int* running, size_t* lower, size_t* upper) {
  bool alive = server_->PeerPid(client.id) >= 0;
  bool open = client.fd.valid();
  if (client.saw_eof) Check(!alive, "a client reads EOF only from a dropped connection");
  if (open && !client.rogue) Check(alive, "a client that keeps the protocol is never dropped");
  if (!alive) return;  // it holds nothing (above), and waits for nothing
  int held = ledger_.HeldBy(SocketOwner(client.id));
  int queued = open ? Queued(client.fd.get()) : 0;
  Check(queued >= 0, "FIONREAD");
  // The server granted what the client read or has yet to read (and maybe
  // more, unsent), and took back at most the '-' the client sent.
  Check(held + client.minuses >= client.grants_read + queued,
        "a client holds no slot the ledger does not give it");
  int not_granted = client.Requests() - client.grants_read - queued;
  Check(not_granted >= 0, "the server grants no more than was asked");
  *upper += not_granted;
  if (open) *running += std::max(0, client.Believed());
  if (open && Unread(client.fd.get()) == 0) {
    // The server read and judged every byte sent: the books are exact.
    int waiting = client.Requests() - held - client.minuses;
    Check(waiting >= 0, "a connection holds no more than it asked for");
    Check(waiting <= kMaxWaiting, "no live connection has more than the cap waiting");
    *lower += waiting;
  }
}

void Harness::Finish() {
  while (legacy_held_ > 0) LegacyGive();
  // Liveness: once the legacy side is idle, no request waits while a token
  // sits in the pool (the broker takes idle tokens after kIdleTokenMs).
  Check(RunUntil([&] { return broker_->waiting() == 0 || PoolCount() == 0; }),
        "no request waits for ever while tokens sit in the pool");
  CheckInvariants();
  for (int slot = 0; slot < kSlots; ++slot) {
    if (At(slot)) Close(slot);
  }
  Check(RunUntil([&] { return server_->connection_count() == 0; }),
        "every closed client's connection is closed");
  CheckInvariants();
  Check(broker_->waiting() == 0, "no request of a closed connection still waits");
  Check(ledger_.HeldBy(kLegacyOwner) == budget_ - 1 && PoolCount() == budget_ - 1,
        "every shared slot is back in the pool");
  broker_->Stop();
  server_->Shutdown();
  Check(RunUntil([&] { return !uv_loop_alive(&loop_); }), "every handle closes");
  Check(uv_loop_close(&loop_) == 0, "uv_loop_close");
}

}  // namespace
}  // namespace jobbridge

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  jobbridge::Harness harness(1 + data[0] % 8);
  jobbridge::Program program(data + 1, size - 1);
  harness.Run(&program);
  harness.Finish();
  return 0;
}
