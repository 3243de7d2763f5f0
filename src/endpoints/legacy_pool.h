// The legacy GNU make jobserver that the bridge serves to its tree: pipes
// (children inherit R,W: they read tokens from one pipe and write them back
// into another, which only the bridge reads) or a named FIFO (children open
// PATH, and read and write the same FIFO).
//
// The bridge never reads or writes the pool through the descriptions its
// children share: make 4.3 and libuv flip O_NONBLOCK on a description, and
// that flag is shared (docs/ARCHITECTURE.md, "private descriptions"). The pool
// keeps a private non-blocking description of each end for its own I/O.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/makeflags.h"

namespace jobbridge {

enum class LegacyStyle { kPipe, kFifo };

// "pipe" / "fifo"; returns false for anything else.
bool ParseLegacyStyle(const std::string& text, LegacyStyle* style);

class LegacyPool {
 public:
  virtual ~LegacyPool() = default;

  // Creates a pool that holds `tokens` one-byte tokens. A FIFO is created in
  // `dir` (which must exist). Returns null and sets *err on failure.
  static std::unique_ptr<LegacyPool> Create(LegacyStyle style, int tokens, const std::string& dir,
                                            std::string* err);

  // The pool's identity (budget.json): R,W of the pipes, or the FIFO's path.
  virtual JobserverAuth Auth() const = 0;

  // What goes into MAKEFLAGS for the children: R,W for pipes; for a FIFO its
  // path and R,W of two descriptions of it (make 4.3, gcc 12 and jobserver-rs
  // 0.1 read only R,W). Meaningless after CloseInherited.
  virtual PoolNames Names() const = 0;

  // The fds a child must inherit (R and W of Names().pipe).
  virtual std::vector<int> InheritedFds() const = 0;

  // Tokens in the pool right now (FIONREAD; returned ones included), or -1.
  virtual int Count(std::string* err) const = 0;

  // Reads every token that is in the pool now without blocking and returns
  // how many there were, or -1 with *err. Any byte value counts as a token.
  virtual int Drain(std::string* err) = 0;

  // Tokens a client could read right now (FIONREAD of the token pipe or the
  // FIFO; returned tokens the bridge has not passed on are not counted), or -1.
  virtual int Available(std::string* err) const = 0;

  // Reads at most `max` of the tokens a client could read, without blocking
  // (other readers race for them). Returns how many it got (0 when there are
  // none), or -1 with *err. Returned tokens are TakeReturned's.
  virtual int Take(int max, std::string* err) = 0;

  // Reads at most `max` of the tokens that clients wrote back and that no
  // client can read before the bridge passes them on (pipe style only; a FIFO
  // has no such tokens and returns 0). The count, or -1 with *err.
  virtual int TakeReturned(int max, std::string* err) = 0;

  // Readable when clients wrote tokens back that TakeReturned would get; -1
  // for a FIFO, where returned tokens land in the pool directly.
  virtual int ReturnsFd() const = 0;

  // The bridge's non-blocking write end of the token pipe (pipe style; -1 for
  // a FIFO), for the Caretaker, which feeds returned tokens through it when
  // the bridge is gone.
  virtual int FeedFd() const = 0;

  // The bridge's private, non-blocking read end: readable when the pool holds
  // a token. For polling only; read through Take.
  virtual int PrivateReadFd() const = 0;

  // Writes `count` (>= 0) tokens into the pool without blocking. Returns false
  // and sets *err when they do not all fit (some may have been written then).
  virtual bool Put(int count, std::string* err) = 0;

  // Closes the ends the children inherit, so no new child can join. The
  // bridge's private ends stay open for the final Drain.
  virtual void CloseInherited() = 0;
};

}  // namespace jobbridge
