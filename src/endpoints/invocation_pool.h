// One tool invocation's own legacy pool (docs/LEAKS.md): a make or ninja
// started through a shim gets a token pipe, a returns pipe and a "life" pipe
// of its own, so the bridge can tell what that invocation still holds when
// it ends and give it back.
//
// - Tokens: the bridge stocks the token pipe (Stock) and takes unused tokens
//   back out through a private description (Unstock); the invocation returns
//   tokens into the returns pipe, read by TakeReturned. Every token given and
//   every token back is counted.
// - Life: the write end of the life pipe is inherited without close-on-exec
//   by everything the invocation starts, recipes without '+' included (they
//   do not get the jobserver fds, and outlive a killed make), so its read end
//   sees end of file exactly when the last of them has exited (Ended).
// - Lent slot: the tool runs on a slot its parent holds, outside this pool.
//   A process of it may lend that slot, writing a token it never read (as
//   cc-rs 1.0 does); the bridge stocks that token here again (StockLent, or
//   MarkLent when it was written into the token pipe itself), for this
//   invocation's tree only, and the books count the slot as lent from then
//   on (its lender takes it back unseen: a read like any other).
// - End: Close drains the pool and settles the books: tokens the invocation
//   still held when it ended come back (reclaimed), tokens written back
//   beyond what it took are surplus. The lent slot is neither.
//
// The bridge hands the child ends over (ChildFds) and then closes its own
// copies (CloseChildEnds), keeping no write end of the returns or life pipe.
#pragma once

#include <memory>
#include <string>

#include "util/unique_fd.h"

namespace jobbridge {

class InvocationPool {
 public:
  // What an invocation inherits: R of the token pipe, W of the returns
  // pipe (its `--jobserver-auth=R,W`), and W of the life pipe.
  struct ChildFds {
    int token_read = -1;
    int returns_write = -1;
    int life_write = -1;
  };

  // Tokens given, back and settled when the invocation ended.
  struct Books {
    int given = 0;     // stocked (lent tokens too), less what was unstocked
    int returned = 0;  // written back into the returns pipe
    int dropped = 0;   // written back (into either pipe) and dropped as surplus
    int lent = 0;      // 1 once the tool's implicit slot was lent (see above)
    // Held when it ended: given - returned + dropped, the pool drained first.
    // The lent slot is in neither count: a lender that took it back ended
    // holding it as its own implicit slot, one that did not left it here.
    int reclaimed = 0;
    int surplus = 0;  // written back beyond what it was given: dropped, or found at the end
  };

  // Makes the three pipes. Returns nullptr and sets *err on failure.
  static std::unique_ptr<InvocationPool> Create(std::string* err);

  ChildFds child_fds() const;
  // Closes the bridge's copies of the child ends, once they are handed on.
  void CloseChildEnds();

  // Writes `count` tokens into the token pipe. False with *err when they do
  // not all fit (none is counted as given then beyond those written).
  bool Stock(int count, std::string* err);
  // Tokens in the token pipe now (FIONREAD), or -1 with *err.
  int Stocked(std::string* err) const;
  // Reads back at most `max` unused tokens; how many, or -1 with *err.
  int Unstock(int max, std::string* err);
  // Writes one token into the token pipe for the tool's implicit slot,
  // lent: a token written back beyond what its processes held. False with
  // *err when it does not fit.
  bool StockLent(std::string* err);
  // The tool's implicit slot is lent by a token written into the token pipe
  // itself (a client that reaches it by its path, fifo:/proc/self/fd/R).
  void MarkLent() { books_.lent = 1; }
  // `count` tokens written back beyond what the invocation held were dropped
  // (read out of the returns pipe, or unstocked out of the token pipe).
  void CountDropped(int count) { books_.dropped += count; }
  // Reads every token the invocation wrote back; how many, or -1 with *err.
  int TakeReturned(std::string* err);

  // The bridge's own end of the token pipe (for a ReadWatcher).
  int token_fd() const { return token_write_.get(); }
  // Readable when the invocation wrote a token back, and at its end.
  int returns_fd() const { return returns_read_.get(); }
  // Readable (end of file) when the invocation's last process has exited.
  int life_fd() const { return life_read_.get(); }
  // True once every process of the invocation has exited (non-blocking).
  bool Ended();

  // Drains the pool and settles the books. Call once Ended, or when the
  // bridge shuts down (then what is still out counts as reclaimed).
  Books Close(std::string* err);

  const Books& books() const { return books_; }

 private:
  InvocationPool() = default;

  UniqueFd token_read_, token_write_, token_private_read_;
  UniqueFd returns_read_, returns_write_;
  UniqueFd life_read_, life_write_;
  Books books_;
  bool ended_ = false;
};

}  // namespace jobbridge
