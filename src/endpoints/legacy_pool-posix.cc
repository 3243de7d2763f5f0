#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "endpoints/legacy_pool.h"
#include "util/eintr.h"
#include "util/fifo_pair.h"
#include "util/private_description.h"
#include "util/token_io.h"
#include "util/unique_fd.h"

namespace jobbridge {

namespace {

// Two pipes: children read tokens from the first and write them back into
// the second, so every returned token passes through the bridge, which
// decides whether it goes back to the legacy side or to a socket client. With
// one shared pipe a client that returns a token and wants another reads its
// own token straight back, and no one else ever gets it (docs/ARCHITECTURE.md,
// "Sharing one budget"). `--jobserver-auth=R,W` allows the two to differ.
class PipePool : public LegacyPool {
 public:
  bool Init(std::string* err) {
    int tokens[2], returns[2];
    if (pipe2(tokens, O_CLOEXEC) != 0 || pipe2(returns, O_CLOEXEC) != 0) {
      *err = WithErrno("creating the jobserver pipes");
      return false;
    }
    shared_read_.Reset(tokens[0]);
    feed_.Reset(tokens[1]);
    returns_.Reset(returns[0]);
    shared_write_.Reset(returns[1]);
    // The feed and returns ends are the bridge's alone: no child shares their
    // descriptions, so they may be made non-blocking in place. The read end
    // of the token pipe is shared: the bridge reads it through its own.
    for (int fd : {feed_.get(), returns_.get()}) fcntl(fd, F_SETFL, O_NONBLOCK);
    private_read_ = OpenPrivateDescription(tokens[0], O_RDONLY, err);
    return private_read_.valid();
  }

  JobserverAuth Auth() const override {
    return {JobserverAuth::Kind::kPipe, shared_read_.get(), shared_write_.get(), ""};
  }
  PoolNames Names() const override { return {Auth(), {}}; }
  std::vector<int> InheritedFds() const override {
    if (!shared_read_.valid()) return {};
    return {shared_read_.get(), shared_write_.get()};
  }
  int Count(std::string* err) const override {
    int fed = CountIn(feed_.get(), err);
    int returned = CountIn(returns_.get(), err);
    return fed < 0 || returned < 0 ? -1 : fed + returned;
  }
  int Drain(std::string* err) override {
    int returned = DrainFd(returns_.get(), err);
    int fed = DrainFd(private_read_.get(), err);
    return fed < 0 || returned < 0 ? -1 : fed + returned;
  }
  int Available(std::string* err) const override { return CountIn(feed_.get(), err); }
  int Take(int max, std::string* err) override { return ReadTokens(private_read_.get(), max, err); }
  int TakeReturned(int max, std::string* err) override {
    return ReadTokens(returns_.get(), max, err);
  }
  int PrivateReadFd() const override { return private_read_.get(); }
  int ReturnsFd() const override { return returns_.get(); }
  int FeedFd() const override { return feed_.get(); }
  bool Put(int count, std::string* err) override { return PutFd(feed_.get(), count, err); }
  void CloseInherited() override {
    shared_read_.Reset();
    shared_write_.Reset();
  }

 private:
  UniqueFd shared_read_, shared_write_;  // inherited by children, left blocking
  UniqueFd feed_;                        // the bridge writes tokens for the children here
  UniqueFd returns_;                     // and reads back what they return here
  UniqueFd private_read_;                // the bridge's own description of shared_read_
};

class FifoPool : public LegacyPool {
 public:
  ~FifoPool() override {
    if (!path_.empty()) unlink(path_.c_str());
  }

  bool Init(const std::string& dir, std::string* err) {
    std::string path = dir + "/pool.fifo";
    if (path.find_first_of(" \t\n\\") != std::string::npos) {
      *err = "the FIFO path " + path +
             " contains whitespace or a backslash, which MAKEFLAGS cannot carry to ninja; "
             "set TMPDIR to a folder without them";
      return false;
    }
    if (mkfifo(path.c_str(), 0600) != 0) {
      *err = WithErrno("creating the jobserver FIFO " + path);
      return false;
    }
    path_ = path;
    // O_RDWR: the bridge is both a reader and a writer, so opening never
    // blocks and the FIFO never sees EOF while the bridge runs.
    int fd = RetryOnEintr([&] { return open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC); });
    if (fd < 0) {
      *err = WithErrno("opening the jobserver FIFO " + path);
      return false;
    }
    private_.Reset(fd);
    return OpenFifoPair(path, &inherited_, err);
  }

  JobserverAuth Auth() const override { return {JobserverAuth::Kind::kFifo, -1, -1, path_}; }
  PoolNames Names() const override {
    return {{JobserverAuth::Kind::kPipe, inherited_.read_end.get(), inherited_.write_end.get(), ""},
            Auth()};
  }
  std::vector<int> InheritedFds() const override {
    return {inherited_.read_end.get(), inherited_.write_end.get()};
  }
  int Count(std::string* err) const override { return CountIn(private_.get(), err); }
  int Drain(std::string* err) override { return DrainFd(private_.get(), err); }
  int Available(std::string* err) const override { return CountIn(private_.get(), err); }
  int Take(int max, std::string* err) override { return ReadTokens(private_.get(), max, err); }
  int TakeReturned(int /*max*/, std::string* /*err*/) override { return 0; }
  int PrivateReadFd() const override { return private_.get(); }
  int ReturnsFd() const override { return -1; }
  int FeedFd() const override { return -1; }
  bool Put(int count, std::string* err) override { return PutFd(private_.get(), count, err); }
  void CloseInherited() override {
    // Children open the FIFO by path; removing it stops newcomers.
    if (!path_.empty()) unlink(path_.c_str());
    path_.clear();
    inherited_ = {};
  }

 private:
  std::string path_;
  UniqueFd private_;
  FifoPair inherited_;  // R,W for the clients that cannot open a path
};

}  // namespace

bool ParseLegacyStyle(const std::string& text, LegacyStyle* style) {
  if (text == "pipe") {
    *style = LegacyStyle::kPipe;
  } else if (text == "fifo") {
    *style = LegacyStyle::kFifo;
  } else {
    return false;
  }
  return true;
}

std::unique_ptr<LegacyPool> LegacyPool::Create(LegacyStyle style, int tokens,
                                               const std::string& dir, std::string* err) {
  std::unique_ptr<LegacyPool> pool;
  if (style == LegacyStyle::kPipe) {
    auto pipe_pool = std::make_unique<PipePool>();
    if (!pipe_pool->Init(err)) return nullptr;
    pool = std::move(pipe_pool);
  } else {
    auto fifo_pool = std::make_unique<FifoPool>();
    if (!fifo_pool->Init(dir, err)) return nullptr;
    pool = std::move(fifo_pool);
  }
  if (tokens > 0 && !pool->Put(tokens, err)) return nullptr;
  return pool;
}

}  // namespace jobbridge
