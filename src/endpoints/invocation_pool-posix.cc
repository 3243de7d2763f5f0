#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <limits>

#include "endpoints/invocation_pool.h"
#include "util/eintr.h"
#include "util/private_description.h"
#include "util/token_io.h"

namespace jobbridge {

std::unique_ptr<InvocationPool> InvocationPool::Create(std::string* err) {
  std::unique_ptr<InvocationPool> pool(new InvocationPool);
  int tokens[2], returns[2], life[2];
  if (pipe2(tokens, O_CLOEXEC) != 0) {
    *err = WithErrno("creating an invocation's token pipe");
    return nullptr;
  }
  pool->token_read_.Reset(tokens[0]);
  pool->token_write_.Reset(tokens[1]);
  if (pipe2(returns, O_CLOEXEC) != 0) {
    *err = WithErrno("creating an invocation's returns pipe");
    return nullptr;
  }
  pool->returns_read_.Reset(returns[0]);
  pool->returns_write_.Reset(returns[1]);
  if (pipe2(life, O_CLOEXEC) != 0) {
    *err = WithErrno("creating an invocation's life pipe");
    return nullptr;
  }
  pool->life_read_.Reset(life[0]);
  pool->life_write_.Reset(life[1]);
  // The bridge's ends are its own: non-blocking in place. The token pipe's
  // read end is shared with the invocation (make sets O_NONBLOCK on it), so
  // the bridge unstocks through a description of its own.
  for (int fd : {pool->token_write_.get(), pool->returns_read_.get(), pool->life_read_.get()}) {
    fcntl(fd, F_SETFL, O_NONBLOCK);
  }
  pool->token_private_read_ = OpenPrivateDescription(tokens[0], O_RDONLY, err);
  if (!pool->token_private_read_.valid()) return nullptr;
  return pool;
}

InvocationPool::ChildFds InvocationPool::child_fds() const {
  return {token_read_.get(), returns_write_.get(), life_write_.get()};
}

void InvocationPool::CloseChildEnds() {
  token_read_.Reset();
  returns_write_.Reset();
  life_write_.Reset();
}

bool InvocationPool::Stock(int count, std::string* err) {
  int before = CountIn(token_write_.get(), err);
  if (before < 0) return false;
  bool ok = PutFd(token_write_.get(), count, err);
  if (ok) {
    books_.given += count;
    return true;
  }
  // Count what did get in: the pipe was full part way.
  std::string ignored;
  int after = CountIn(token_write_.get(), &ignored);
  if (after > before) books_.given += after - before;
  return false;
}

bool InvocationPool::StockLent(std::string* err) {
  if (!Stock(1, err)) return false;
  books_.lent = 1;
  return true;
}

int InvocationPool::Stocked(std::string* err) const { return CountIn(token_write_.get(), err); }

int InvocationPool::Unstock(int max, std::string* err) {
  int got = ReadTokens(token_private_read_.get(), max, err);
  if (got > 0) books_.given -= got;
  return got;
}

int InvocationPool::TakeReturned(std::string* err) {
  int got = DrainFd(returns_read_.get(), err);
  if (got > 0) books_.returned += got;
  return got;
}

bool InvocationPool::Ended() {
  if (ended_) return true;
  // The bridge holds no write end (CloseChildEnds), and nobody writes into
  // the life pipe: any readiness is end of file.
  pollfd life{life_read_.get(), POLLIN, 0};
  ended_ = RetryOnEintr([&] { return poll(&life, 1, 0); }) == 1;
  return ended_;
}

InvocationPool::Books InvocationPool::Close(std::string* err) {
  if (TakeReturned(err) < 0) return books_;
  if (Unstock(std::numeric_limits<int>::max(), err) < 0) return books_;
  // Every token read out of the pool either came back (returned, or into
  // the token pipe: unstocked) or is still held; a dropped token was never
  // the pool's. A lender's token stocked and left here drains as one more
  // than was given: not surplus.
  int out = books_.given - books_.returned + books_.dropped;
  books_.reclaimed = out > 0 ? out : 0;
  books_.surplus = books_.dropped + std::max(-out - books_.lent, 0);
  return books_;
}

}  // namespace jobbridge
