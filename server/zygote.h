// Zygote: the daemon's side of its pre-started `ffid-worker --zygote`
// (the fork server, server/worker/zygote.h), from which every worker comes.
//
// Get() starts the zygote for a worker executable on first use (and again
// if it died) with posix_spawn on one long-lived internal thread: the
// zygote arms PR_SET_PDEATHSIG, which fires when the spawning *thread*
// exits, and gRPC retires idle threads. The zygote gets a minimal
// environment (WorkerEnvironment(): not the daemon's), default signal
// dispositions, an empty signal
// mask and its own process group (so a Ctrl-C meant for the daemon does
// not kill it before the daemon can stop its workers).
//
// Spawn() asks it for a worker and returns the worker's pid and a pidfd
// (signals through the pidfd never hit a recycled pid). The zygote, the
// worker's parent, reaps it; WaitExit() returns the wait status it
// reports. A reader thread receives the zygote's events.
//
// Who dies with whom: a worker dies with the zygote (its PDEATHSIG), the
// zygote with the daemon (its PDEATHSIG; it also exits when the daemon's
// end of its socket closes). If the zygote dies while the daemon lives,
// its workers die with it: every WaitExit() for them returns UNAVAILABLE,
// and the next Get() starts a new zygote.
//
// Thread-safe. Zygotes are never destroyed (a shared_ptr keeps each alive
// as long as a worker of it is known).
#ifndef FFID_SERVER_ZYGOTE_H_
#define FFID_SERVER_ZYGOTE_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/worker/protocol.pb.h"

namespace ffid::server {

class Zygote {
 public:
  // The live zygote for `worker_path`, started if there is none (or the
  // last one died). UNAVAILABLE + WORKER_START_FAILED naming the path if it
  // cannot run.
  static absl::StatusOr<std::shared_ptr<Zygote>> Get(
      const std::string& worker_path);

  ~Zygote();
  Zygote(const Zygote&) = delete;
  Zygote& operator=(const Zygote&) = delete;

  struct Child {
    pid_t pid = 0;
    // Owned by the caller; -1 if the kernel has no pidfds.
    int pidfd = -1;
  };
  // Starts a worker for `session_tag` under `policy`. `fds` (kept open
  // here) become its fds 3, 4, ...: the channel, the crash-report pipe,
  // then anything else. UNAVAILABLE + WORKER_START_FAILED if the zygote is
  // gone or the clone failed.
  absl::StatusOr<Child> Spawn(const std::string& session_tag,
                              const worker::WorkerPolicy& policy,
                              const std::vector<int>& fds);

  // Waits for the zygote to report the end of `pid` (one of its workers),
  // until `deadline`: the wait status, or nullopt at the deadline.
  // UNAVAILABLE if the zygote ended first (the worker died with it, how is
  // unknown). A status is returned once; later calls wait again.
  absl::StatusOr<std::optional<int>> WaitExit(pid_t pid, absl::Time deadline);

  // Drops `pid`'s exit status, now or when it arrives: nobody will wait
  // for it.
  void Forget(pid_t pid);

  // The zygote's own pid.
  pid_t pid() const { return pid_; }
  bool alive() const;

 private:
  Zygote(pid_t pid, int control_fd);
  void ReaderLoop();

  const pid_t pid_;
  const int control_fd_;
  std::thread reader_;

  mutable absl::Mutex mu_;
  absl::CondVar changed_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  struct PendingSpawn {
    bool done = false;
    absl::StatusOr<Child> result = Child();
  };
  std::map<uint64_t, PendingSpawn*> spawns_ ABSL_GUARDED_BY(mu_);
  // Exit statuses reported and not yet collected, by pid.
  std::map<pid_t, int> exits_ ABSL_GUARDED_BY(mu_);
  // Pids whose status is to be dropped when it arrives.
  std::set<pid_t> forgotten_ ABSL_GUARDED_BY(mu_);
  bool dead_ ABSL_GUARDED_BY(mu_) = false;
};

// Runs `job` on the daemon's long-lived spawn thread and waits for it.
// Anything spawned there keeps its PR_SET_PDEATHSIG armed until the daemon
// exits.
void RunOnSpawnThread(const std::function<void()>& job);

// The zygote's (and so every worker's) environment: PATH=/usr/local/bin:
// /usr/bin:/bin, HOME=/tmp, TMPDIR=/tmp, plus TZ, ASAN_OPTIONS,
// UBSAN_OPTIONS, LSAN_OPTIONS and TSAN_OPTIONS when the daemon has them
// (ASAN_OPTIONS with LeakSanitizer off in AddressSanitizer builds: its
// exit-time tracer is refused by the worker's seccomp policy). Nothing else
// of the daemon's environment.
std::vector<std::string> WorkerEnvironment();

}  // namespace ffid::server

#endif  // FFID_SERVER_ZYGOTE_H_
