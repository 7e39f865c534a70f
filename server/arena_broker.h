// ArenaBroker: hands sessions' arena memfds to local clients.
//
// It listens on a unix socket beside the daemon's own (mode 0600, in the
// daemon's 0700 directory). OpenArena, a session RPC, issues a one-time
// token (128 random bits, valid for kTokenLifetime); a client connects,
// writes the token and a newline, and gets back one byte 0 with the memfd
// attached (SCM_RIGHTS), or a nonzero byte and an error message. The token
// is the capability: only a caller allowed to use the session through gRPC
// gets one (the place where per-principal checks apply is OpenArena's
// session lookup; this socket adds the file-system check of who may connect
// at all).
//
// Thread-safe. One thread accepts and serves connections one at a time
// (each is a token and a reply; a client that sends nothing is dropped
// after a second). The destructor stops it and removes the socket.
#ifndef FFID_SERVER_ARENA_BROKER_H_
#define FFID_SERVER_ARENA_BROKER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/session_arena.h"

namespace ffid::server {

class ArenaBroker {
 public:
  static constexpr absl::Duration kTokenLifetime = absl::Seconds(30);

  // Listens on `socket_path` (replacing a stale socket file there).
  static absl::StatusOr<std::unique_ptr<ArenaBroker>> Start(
      std::string socket_path);

  ~ArenaBroker();
  ArenaBroker(const ArenaBroker&) = delete;
  ArenaBroker& operator=(const ArenaBroker&) = delete;

  const std::string& socket_path() const { return socket_path_; }

  // A token that gives `arena`'s memfd to the first connection presenting
  // it within kTokenLifetime. The broker keeps the arena only weakly.
  std::string IssueToken(const std::shared_ptr<SessionArena>& arena);

 private:
  ArenaBroker(std::string socket_path, int listen_fd, int wake_read,
              int wake_write);
  void AcceptLoop();
  void Serve(int connection);

  struct Grant {
    std::weak_ptr<SessionArena> arena;
    absl::Time expires;
  };

  const std::string socket_path_;
  const int listen_fd_;
  // A pipe whose write end the destructor closes to wake the accept loop.
  const int wake_read_;
  int wake_write_;
  std::thread thread_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Grant> grants_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ffid::server

#endif  // FFID_SERVER_ARENA_BROKER_H_
