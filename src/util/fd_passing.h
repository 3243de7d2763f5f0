// Handing open fds to another process over a connected AF_UNIX socket
// (SCM_RIGHTS), with a short message that says what they are. Every fd is
// carried by one sendmsg and taken by one recvmsg, so the socket should be
// SOCK_SEQPACKET: message boundaries are kept and a message is never split.
// On a SOCK_STREAM socket the fds ride on the first byte of the message, a
// short message usually goes out whole, and SendFds fails if it does not.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "util/eintr.h"
#include "util/unique_fd.h"

namespace jobbridge {

// The longest message SendFds sends and ReceiveFds takes.
inline constexpr size_t kMaxFdMessageSize = 4096;
// The most fds one sendmsg carries on Linux (SCM_MAX_FD).
inline constexpr size_t kMaxPassedFds = 253;

namespace fd_passing_internal {

// Control data for kMaxPassedFds fds, aligned as a cmsghdr must be.
union ControlBuffer {
  cmsghdr align;
  char bytes[CMSG_SPACE(kMaxPassedFds * sizeof(int))];
};

// Takes ownership of every fd in the SCM_RIGHTS headers of `msg`, so that
// whichever way the caller returns, none of them leaks.
inline std::vector<UniqueFd> AdoptPassedFds(msghdr* msg) {
  std::vector<UniqueFd> fds;
  for (cmsghdr* header = CMSG_FIRSTHDR(msg); header != nullptr; header = CMSG_NXTHDR(msg, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(header);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof fd);  // CMSG_DATA may be unaligned
      fds.emplace_back(fd);
    }
  }
  return fds;
}

}  // namespace fd_passing_internal

// Sends `message` (1 to kMaxFdMessageSize bytes: a message without a byte
// cannot reliably carry fds) with `fds` (at most kMaxPassedFds) attached, in
// one sendmsg with MSG_NOSIGNAL, retried on EINTR. The caller keeps its own
// copies of `fds`. Returns false and sets *err if the arguments are out of
// range, if sendmsg fails (EPIPE: the peer is gone; EAGAIN: a non-blocking
// socket is full), or if only part of the message went out (a stream socket:
// the fds went with that part, and the peer holds a cut message).
inline bool SendFds(int socket, const std::string& message, const std::vector<int>& fds,
                    std::string* err) {
  if (message.empty() || message.size() > kMaxFdMessageSize) {
    *err = "cannot send fds with a message of " + std::to_string(message.size()) +
           " bytes: it must have 1 to " + std::to_string(kMaxFdMessageSize);
    return false;
  }
  if (fds.size() > kMaxPassedFds) {
    *err = "cannot send " + std::to_string(fds.size()) + " fds in one message: at most " +
           std::to_string(kMaxPassedFds);
    return false;
  }
  iovec payload{const_cast<char*>(message.data()), message.size()};
  msghdr msg{};
  msg.msg_iov = &payload;
  msg.msg_iovlen = 1;
  fd_passing_internal::ControlBuffer control;
  if (!fds.empty()) {
    std::memset(&control, 0, sizeof control);
    msg.msg_control = control.bytes;
    msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* header = CMSG_FIRSTHDR(&msg);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(header), fds.data(), fds.size() * sizeof(int));
  }
  ssize_t sent = RetryOnEintr([&] { return sendmsg(socket, &msg, MSG_NOSIGNAL); });
  if (sent < 0) {
    *err = std::string("cannot send fds: ") + strerror(errno);
    return false;
  }
  if (static_cast<size_t>(sent) != message.size()) {
    *err = "sent only " + std::to_string(sent) + " of the " + std::to_string(message.size()) +
           " bytes that carry the fds: pass fds over a SOCK_SEQPACKET socket";
    return false;
  }
  return true;
}

// Receives one message of SendFds with one recvmsg (MSG_CMSG_CLOEXEC, retried
// on EINTR): sets *message to its bytes and *fds to the fds that came with
// it, all close-on-exec. Returns false and sets *err, leaving both empty and
// every fd that arrived closed, if recvmsg fails, if the peer closed the
// connection ("the peer closed the connection"), if more than `max_fds` fds
// came (they are all closed: the message is lost), if this process had no
// room for every fd sent (RLIMIT_NOFILE: "out of fds"), or if the message
// was longer than kMaxFdMessageSize.
inline bool ReceiveFds(int socket, std::string* message, std::vector<UniqueFd>* fds, size_t max_fds,
                       std::string* err) {
  message->clear();
  fds->clear();
  std::string buffer(kMaxFdMessageSize, '\0');
  iovec payload{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &payload;
  msg.msg_iovlen = 1;
  fd_passing_internal::ControlBuffer control;
  size_t room = std::min(max_fds, kMaxPassedFds);
  if (room > 0) {
    msg.msg_control = control.bytes;
    msg.msg_controllen = CMSG_SPACE(room * sizeof(int));
  }
  ssize_t received = RetryOnEintr([&] { return recvmsg(socket, &msg, MSG_CMSG_CLOEXEC); });
  if (received < 0) {
    *err = std::string("cannot receive fds: ") + strerror(errno);
    return false;
  }
  // Owned before anything else is checked: every error path below closes them.
  std::vector<UniqueFd> passed = fd_passing_internal::AdoptPassedFds(&msg);
  if (received == 0) {
    *err = "the peer closed the connection";
    return false;
  }
  // Fewer than fit, cut short: the kernel could not install the rest here
  // (EMFILE), and says so only by MSG_CTRUNC.
  if ((msg.msg_flags & MSG_CTRUNC) != 0 && passed.size() < room) {
    *err = "received only " + std::to_string(passed.size()) +
           " of the fds sent: this process is out of fds (raise its limit: ulimit -n); closed "
           "those that arrived";
    return false;
  }
  // The kernel fills the control buffer to its padded end, so a little more
  // than max_fds may fit without MSG_CTRUNC.
  if ((msg.msg_flags & MSG_CTRUNC) != 0 || passed.size() > max_fds) {
    *err = "received more fds than the " + std::to_string(max_fds) +
           " expected: closed those that arrived";
    return false;
  }
  if ((msg.msg_flags & MSG_TRUNC) != 0) {
    *err = "received a message longer than " + std::to_string(kMaxFdMessageSize) + " bytes";
    return false;
  }
  buffer.resize(static_cast<size_t>(received));
  *message = std::move(buffer);
  *fds = std::move(passed);
  return true;
}

}  // namespace jobbridge
