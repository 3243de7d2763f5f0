/* A client for the jobserver a build tool inherits: the socket jobserver of
 * docs/PROTOCOL.md (JOBSERVERV2), else the Robust Jobserver's semaphore
 * (ROBUST_JOBSERVER=sysvsem:ID), else the GNU make jobserver named in
 * CARGO_MAKEFLAGS / MAKEFLAGS / MFLAGS.
 *
 * C99, no global state. Every function that can fail returns 0 (or a
 * non-negative value where said) on success and a negative errno value on
 * failure; jobbridge_strerror() turns one into a sentence. A thread-safe
 * function may be called on one client from several threads at once.
 *
 * Typical use:
 *
 *   jobbridge_client* client;
 *   int rc = jobbridge_client_open_env(&client, NULL, 0);
 *   if (rc == -ENOENT) { ... no jobserver: use your own -j ... }
 *   jobbridge_slot* slot;
 *   rc = jobbridge_client_acquire(client, -1, &slot);
 *   if (rc == 0) { run_one_job(); jobbridge_slot_release(slot); }
 *   jobbridge_client_close(client);
 *
 * Open one client per process. A client may own the process's implicit slot
 * (the one make gave it when it started it; see jobbridge_client_open_env):
 * a second client would use that slot twice.
 */
#ifndef JOBBRIDGE_CLIENT_H_
#define JOBBRIDGE_CLIENT_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct jobbridge_client jobbridge_client;   /* one jobserver */
typedef struct jobbridge_slot jobbridge_slot;       /* one held job slot */
typedef struct jobbridge_pending jobbridge_pending; /* an acquire in progress */

typedef enum jobbridge_mode {
  JOBBRIDGE_MODE_SOCKET = 1,      /* JOBSERVERV2: one connection per slot */
  JOBBRIDGE_MODE_LEGACY_PIPE = 2, /* --jobserver-auth=R,W (inherited pipe) */
  JOBBRIDGE_MODE_LEGACY_FIFO = 3, /* --jobserver-auth=fifo:PATH */
  JOBBRIDGE_MODE_SYSVSEM = 4      /* ROBUST_JOBSERVER=sysvsem:ID: a semaphore unit per slot */
} jobbridge_mode;

/* ---- Opening and closing ------------------------------------------------
 * The open functions store a new client in *out (set to NULL on failure).
 * When `why` is not NULL and `why_size` > 0, a failure also writes a
 * NUL-terminated sentence naming the variable, fd or path at fault there
 * (truncated to why_size bytes). None of them takes a slot or connects. */

/* From the environment: JOBSERVERV2 if it is set and not empty, else
 * ROBUST_JOBSERVER if it is set and not empty, else the first of
 * CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS that is set (the last --jobserver-auth=
 * or --jobserver-fds= word in it counts). Why that order: docs/PROTOCOL.md,
 * "Which jobserver a client uses".
 *
 * ROBUST_JOBSERVER (sysvsem mode): "sysvsem:ID", a System V set of one
 * semaphore; each slot is a unit taken with semop(-1, SEM_UNDO) and given
 * back with +1 (the kernel gives back a dead process's units). It fails with
 * -EINVAL when the value is malformed, names another method or a set of
 * more than one semaphore; -EPIPE when the set does not exist (its server
 * is gone); -EACCES when it belongs to another user. A semaphore cannot be
 * polled: an acquire that cannot take a unit at once waits on a thread
 * blocked in semop (seen by the server as a waiter), in slices of 50 ms, so
 * a cancelled or timed-out acquire's thread ends within 50 ms and gives back
 * a unit it got too late; jobbridge_pending_fd is an eventfd that thread
 * signals. The implicit slot follows the socket mode's rule.
 *
 * The implicit slot: a process that make started as one of its jobs already
 * runs on that job's slot. Such a client hands out that slot first, without
 * a connection or a token, and again whenever no slot of this client holds
 * it; every further slot connects (socket) or reads a token (legacy).
 * Legacy mode always has it. Socket mode has it when MAKELEVEL is set and
 * not empty (make exports MAKELEVEL to every recipe; jobbridge does not set
 * it for its COMMAND); without it, a socket client that make started would
 * hold make's slot and a socket slot for one job, and N such recipes under
 * make -jN would deadlock. JOBBRIDGE_IMPLICIT_SLOT overrides the rule for
 * every open function: "0" never uses an implicit slot (every slot connects
 * or reads a token), "1" always uses one (even without MAKELEVEL, and for
 * jobbridge_client_open_socket); unset or empty keeps the rule. Like make's
 * own rule, several clients started in parallel by one recipe each believe
 * they own its implicit slot.
 *
 * Returns -ENOENT when there is no jobserver (nothing set, no jobserver word,
 * or negative fds such as make's "-2,-2"); -EINVAL when JOBSERVERV2 is not an
 * absolute path of at most 107 bytes, the jobserver word is malformed, or
 * JOBBRIDGE_IMPLICIT_SLOT is other than 0, 1 or empty;
 * -EBADF when a named fd is not open or not a pipe, or the FIFO is missing
 * or not a FIFO; -EPIPE when W is a named FIFO that no one reads any more
 * (the jobserver is gone); -ENOMEM; another -errno when a private description of
 * the pool cannot be opened (-ENOSYS: no /proc). */
int jobbridge_client_open_env(jobbridge_client** out, char* why, size_t why_size);

/* A socket jobserver at `path`. MAKELEVEL does not count here: the client
 * has an implicit slot only when JOBBRIDGE_IMPLICIT_SLOT is "1". Returns
 * -EINVAL when path is NULL, relative, empty or longer than 107 bytes, or
 * JOBBRIDGE_IMPLICIT_SLOT is other than 0, 1 or empty; -ENOMEM. The socket is
 * only connected to by acquires, so a wrong path shows up there (as -EPIPE). */
int jobbridge_client_open_socket(const char* path, jobbridge_client** out, char* why,
                                 size_t why_size);

/* A legacy jobserver given as the value of --jobserver-auth: "R,W" (two
 * inherited fds of one pipe) or "fifo:PATH" (PATH taken verbatim). It has the
 * implicit slot unless JOBBRIDGE_IMPLICIT_SLOT is "0". Returns what
 * jobbridge_client_open_env returns for the same word. */
int jobbridge_client_open_legacy(const char* auth, jobbridge_client** out, char* why,
                                 size_t why_size);

/* Gives up the caller's handle. Slots and pendings still out keep what they
 * need alive: releasing a slot after closing its client still gives the
 * slot back. Close no client that another thread is blocked on: cancel, wait
 * for the acquire to return, then close. NULL is ignored. */
void jobbridge_client_close(jobbridge_client* client);

/* ---- What the client talks to ------------------------------------------ */

/* The mode (a jobbridge_mode value), or -EINVAL when client is NULL. */
int jobbridge_client_mode(const jobbridge_client* client);

/* Writes a NUL-terminated description of the jobserver into buf, e.g.
 * "socket /run/user/1000/jobbridge-x/socket", "legacy pipe 3,4 (from
 * MAKEFLAGS)" or "legacy fifo /tmp/f (from MAKEFLAGS)". A socket client with
 * the implicit slot adds " (with the implicit slot of a make job)", a legacy
 * client without it " (without the implicit slot)". Returns its full length (like snprintf; the
 * text is truncated when that is >= size), or -EINVAL for a NULL client, or for a NULL buf with a
 * non-zero size. */
int jobbridge_client_describe(const jobbridge_client* client, char* buf, size_t size);

/* A sentence for a value these functions return ("the jobserver went away"
 * for -EPIPE, and so on); strerror's text for other errno values. Never
 * NULL; the string is static. */
const char* jobbridge_strerror(int error);

/* ---- Acquiring and releasing (blocking) ----------------------------------
 * The implicit slot, when the client has one (jobbridge_client_open_env), is
 * handed out first, and whenever no slot of this client holds it; an acquire
 * waiting for a connection or a token takes it instead if it comes back
 * first. Every other slot:
 * Socket mode: each slot is its own connection; connecting asks for the
 * slot, the server's byte grants it, closing gives it back.
 * Legacy mode: a byte read from the pool, released by writing that same
 * byte back. */

/* Waits for one slot and stores it in *out (NULL on failure). timeout_ms < 0
 * waits for ever, 0 only takes a slot that is free right now (rarely so in
 * socket mode, where the server must answer first). Thread-safe.
 * Returns -ETIMEDOUT when the time ran out, -ECANCELED when the client is
 * cancelled (before or during the wait), -EPIPE when the jobserver is gone
 * (socket: connection refused, socket missing, or closed before the grant;
 * legacy: every writer of the pool closed it), -EINVAL for NULL arguments, -ENOMEM, or another
 * -errno from the I/O. A server whose listen backlog is full is retried (every 10 ms) until the
 * timeout. On every failure nothing is held: a request still waiting is dropped. */
int jobbridge_client_acquire(jobbridge_client* client, int timeout_ms, jobbridge_slot** out);

/* Gives the slot back and frees it; slot is invalid afterwards, whatever the
 * result. Thread-safe. Returns 0, -EINVAL for NULL, or (legacy mode) the
 * -errno of writing the token back, in which case the token is lost: -EPIPE
 * when no one reads the pool any more (no SIGPIPE is raised). */
int jobbridge_slot_release(jobbridge_slot* slot);

/* Cancels the client for good: every acquire blocked in jobbridge_client_acquire
 * on it returns -ECANCELED at once, and so does every later acquire and
 * acquire_start. Slots already held stay valid, and pendings already started
 * are not touched (abandon them). Open a new client to acquire again.
 * Async-signal-safe and thread-safe. Returns 0, -EINVAL for NULL, or the
 * -errno of waking the waiters. */
int jobbridge_client_cancel(jobbridge_client* client);

/* ---- Acquiring from a poll()/epoll event loop ----------------------------
 *
 *   jobbridge_pending* p;
 *   if (jobbridge_client_acquire_start(client, &p) == 0) {
 *     watch jobbridge_pending_fd(p) for POLLIN; when it is readable:
 *       rc = jobbridge_client_acquire_finish(p, &slot);
 *       rc == -EAGAIN: keep watching (someone else was faster);
 *       otherwise p is gone: stop watching its fd first; rc == 0 means
 *       *slot is yours, anything else is an error as for acquire.
 *     to give up: stop watching, then jobbridge_client_acquire_abandon(p).
 *   }
 *
 * Level-triggered: the fd stays readable while a slot may be ready, so it may
 * also be tried at once without polling. Each pending has its own fd, so one
 * epoll set can watch many. Do not read, write or close that fd. */

/* Starts an acquire and stores it in *out (NULL on failure). In socket mode
 * this takes the implicit slot if the client has it and it is free (the fd is
 * then readable at once, and abandoning gives the slot back), else connects
 * (the request is made now and served in order). Thread-safe.
 * Returns -ECANCELED after jobbridge_client_cancel, -EPIPE when the socket
 * server is gone, -EAGAIN when its listen backlog is full (try again later),
 * -EINVAL for NULL arguments, -ENOMEM, or another -errno. */
int jobbridge_client_acquire_start(jobbridge_client* client, jobbridge_pending** out);

/* The fd to watch for POLLIN, valid until the pending is finished or
 * abandoned; -EINVAL when pending is NULL. */
int jobbridge_pending_fd(const jobbridge_pending* pending);

/* Completes a pending acquire without blocking. Returns 0 and stores the slot
 * in *out when it is granted; -EAGAIN when it is not granted yet (the pending
 * stays yours); -EPIPE when the socket server is gone; -EINVAL for NULL
 * arguments (the pending stays yours); -ENOMEM or another -errno. On every
 * result but -EAGAIN and -EINVAL the pending is consumed and freed. */
int jobbridge_client_acquire_finish(jobbridge_pending* pending, jobbridge_slot** out);

/* Gives up a pending acquire and frees it (a socket request is dropped by
 * closing its connection; a slot granted meanwhile goes back). NULL is
 * ignored. */
void jobbridge_client_acquire_abandon(jobbridge_pending* pending);

#ifdef __cplusplus
}
#endif

#endif /* JOBBRIDGE_CLIENT_H_ */
