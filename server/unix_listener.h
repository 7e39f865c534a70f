// The daemon's unix socket listener, which records who connects.
//
// gRPC does not hand a server the credentials of a unix-socket peer, so the
// daemon accepts unix connections itself: UnixListener binds the socket
// (mode 0600; the caller prepares its directory), accepts on its own thread,
// reads each connection's SO_PEERCRED, gives it a 4 MiB send buffer (big
// Read answers), records "unix:UID" in a PeerRegistry
// under the descriptor, and hands the descriptor to the running gRPC server
// (grpc::AddInsecureChannelFromFd), whose calls then report the peer
// "fd:N". The registry entry for a number is replaced when the kernel
// reuses it for the next connection, before that connection is handed over.
//
// Thread-safe: Start() once, Stop() from any thread (idempotent; also run by
// the destructor). The server must outlive Stop().
#ifndef FFID_SERVER_UNIX_LISTENER_H_
#define FFID_SERVER_UNIX_LISTENER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "grpcpp/server.h"
#include "server/access.h"

namespace ffid::server {

class UnixListener {
 public:
  UnixListener(std::string path, std::shared_ptr<PeerRegistry> peers);
  ~UnixListener();
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  // Binds and listens on the path (which must not exist) with mode 0600.
  // FAILED_PRECONDITION naming the path and errno on failure.
  [[nodiscard]] absl::Status Bind();

  // Starts accepting connections for `server`.
  void Start(grpc::Server* server);

  // Stops accepting and closes the listening socket (connections already
  // handed to gRPC stay). Does not remove the path.
  void Stop();

 private:
  void AcceptLoop(grpc::Server* server);

  const std::string path_;
  const std::shared_ptr<PeerRegistry> peers_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // an eventfd that ends AcceptLoop
  std::atomic<bool> stopped_{false};
  std::thread thread_;
};

}  // namespace ffid::server

#endif  // FFID_SERVER_UNIX_LISTENER_H_
