// Fault injection under load: 8 concurrent clients make a random mix of
// good calls and every fault kind of faults_fixture.c on RESTART sessions,
// while a killer thread SIGKILLs random workers from outside. Asserts that
// the daemon never dies, every call gets an answer (the right result or a
// specific error), and that afterwards no worker process, daemon fd or
// session is left and the daemon's memory is back near its baseline.
//
// CI runs a short version. FFID_FAULT_LOAD_CALLS=N sets the calls per
// client (default 150, 60 under ASan) for a long run, e.g. 8 x 6000 calls with about
// 10,000 faults: see docs/architecture.md for the figures.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::MakeInt;
using client::MakeString;

constexpr int kClients = 8;

int CallsPerClient() {
  const char* text = std::getenv("FFID_FAULT_LOAD_CALLS");
  int calls = 0;
  if (text != nullptr && absl::SimpleAtoi(text, &calls) && calls > 0) {
    return calls;
  }
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return 60;  // Sanitized workers start several times slower
#else
  return 150;
#endif
}

// The pids of live workers of daemon `daemon`: every process whose
// command line names ffid-worker and --parent-pid=<daemon>, except the
// zygote itself (its workers show "--worker" where it says "--zygote") and
// its spares ("--spare", waiting for a session), or only the spares.
std::vector<pid_t> WorkersOf(pid_t daemon, bool spares = false) {
  std::vector<pid_t> pids;
  const std::string parent = absl::StrCat("--parent-pid=", daemon);
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return pids;
  while (dirent* entry = readdir(proc)) {
    pid_t pid;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    // read(), not a stream: the process may vanish while we read, and
    // libstdc++'s filebuf throws on ESRCH.
    std::string cmdline;
    int fd = open(absl::StrCat("/proc/", pid, "/cmdline").c_str(),
                  O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char buffer[4096];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
      cmdline.append(buffer, static_cast<size_t>(n));
    }
    close(fd);
    if (cmdline.find("ffid-worker") == std::string::npos) continue;
    if (cmdline.find("--zygote") != std::string::npos) continue;
    // A whole argument ("--max-spares=N" is on every command line).
    const bool spare =
        cmdline.find(std::string("\0--spare\0", 9)) != std::string::npos;
    if (spare != spares) continue;
    for (absl::string_view arg : absl::StrSplit(cmdline, '\0')) {
      if (arg == parent) pids.push_back(pid);
    }
  }
  closedir(proc);
  return pids;
}

// Whether descriptor `fd` of `pid` is an ELF file: the crash symbolizer
// keeps the objects it has read open, a bounded cache (64 files), so the
// first crash in a library adds a few by design.
bool IsElfFile(pid_t pid, const char* fd) {
  const std::string path = absl::StrCat("/proc/", pid, "/fd/", fd);
  // Regular files only: opening a pipe's entry would read from the pipe.
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  std::ifstream file(path, std::ios::binary);
  char magic[4] = {};
  return file.read(magic, sizeof(magic)) &&
         std::string(magic, sizeof(magic)) == "\x7f" "ELF";
}

// The daemon's descriptors, less the symbolizer's cached ELF files.
int CountFds(pid_t pid) {
  int count = 0;
  DIR* dir = opendir(absl::StrCat("/proc/", pid, "/fd").c_str());
  if (dir == nullptr) return -1;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.' && !IsElfFile(pid, entry->d_name)) ++count;
  }
  closedir(dir);
  return count;
}

// What each of the daemon's descriptors is, for the failure message.
std::string FdTargets(pid_t pid) {
  std::string all;
  const std::string dir_path = absl::StrCat("/proc/", pid, "/fd");
  DIR* dir = opendir(dir_path.c_str());
  if (dir == nullptr) return all;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    char target[512];
    const ssize_t length =
        readlink(absl::StrCat(dir_path, "/", entry->d_name).c_str(), target,
                 sizeof(target) - 1);
    absl::StrAppend(&all, entry->d_name, "=",
                    length > 0 ? std::string(target, length) : "?", " ");
  }
  closedir(dir);
  return all;
}

// A field of /proc/PID/status in kB ("VmRSS") or a count ("Threads").
int64_t StatusField(pid_t pid, absl::string_view field) {
  std::ifstream file(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(file, line)) {
    if (!absl::StartsWith(line, absl::StrCat(field, ":"))) continue;
    std::istringstream values(line.substr(field.size() + 1));
    int64_t value = -1;
    values >> value;
    return value;
  }
  return -1;
}

// Waits (bounded) until daemon `daemon` has no worker left.
bool WaitForProcessGoneAll(pid_t daemon) {
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!WorkersOf(daemon).empty()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

// Waits (bounded) until the daemon's descriptors are back to `baseline`;
// returns the last count.
int WaitForFds(pid_t daemon, int baseline) {
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  int count = CountFds(daemon);
  while (count > baseline && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
    count = CountFds(daemon);
  }
  return count;
}

// One fault kind: what to call, and the reasons its failure may carry.
struct Fault {
  const char* declaration;
  std::vector<v1::Value> arguments;
  std::set<std::string> reasons;
  bool with_deadline = false;
};

std::vector<Fault> Faults() {
  std::vector<Fault> faults = {
      {"void ff_null_deref(void)", {}, {"WORKER_CRASHED"}},
      {"void ff_abort(void)", {}, {"WORKER_CRASHED"}},
      {"void ff_exit(int status)", {MakeInt(3)}, {"WORKER_CRASHED"}},
      {"int ff_stack_overflow(int depth)", {MakeInt(0)}, {"WORKER_CRASHED"}},
      {"void ff_endless_loop(void)", {}, {"DEADLINE_EXCEEDED", ""}, true},
      {"int ff_open_socket(void)", {}, {"SANDBOX_VIOLATION"}},
      {"int ff_fork_bomb(void)", {}, {"SANDBOX_VIOLATION"}},
      {"int ff_close_fd(int fd)", {MakeInt(3)}, {"WORKER_CRASHED"}},
      {"int ff_write_garbage(int fd)", {MakeInt(3)}, {"WORKER_CRASHED"}},
  };
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // (RLIMIT_AS is not applied to sanitized workers.)
  faults.push_back({"int ff_alloc_touch(uint64_t bytes)",
                    {client::MakeUint(uint64_t{2} << 30)},
                    {"RESOURCE_LIMIT"}});
#endif
  return faults;
}

struct Tally {
  std::atomic<int> good{0};
  std::atomic<int> faults{0};
  std::atomic<int> killed_by_outsider{0};
  std::atomic<int> sessions{0};
  // Calls spent on a session whose setup an outside kill interrupted.
  std::atomic<int> setup_failed{0};
  std::atomic<int> unexplained{0};
  std::mutex mu;
  std::vector<std::string> problems;
  void Problem(std::string what) {
    ++unexplained;
    std::lock_guard<std::mutex> lock(mu);
    if (problems.size() < 20) problems.push_back(std::move(what));
  }
};

class FaultLoadTest : public FfidTest {
 protected:
  void RunClient(int index, int calls, Tally& tally) {
    std::unique_ptr<client::Client> client = Connect();
    ASSERT_NE(client, nullptr);
    std::mt19937 random(1000 + index);
    const std::vector<Fault> faults = Faults();
    std::unique_ptr<client::Session> session;
    client::Library library;
    std::map<std::string, client::Function> functions;
    auto open = [&]() -> bool {
      client::SessionOptions options;
      options.restart_policy = v1::RESTART_POLICY_RESTART;
      options.limits.set_address_space_bytes(uint64_t{1} << 30);
      absl::StatusOr<std::unique_ptr<client::Session>> created =
          client->CreateSession(options);
      if (!created.ok()) {
        tally.Problem(absl::StrCat("CreateSession: ", created.status().ToString()));
        return false;
      }
      session = std::move(*created);
      ++tally.sessions;
      functions.clear();
      absl::StatusOr<client::Library> loaded = session->LoadLibrary(FixturePath());
      if (!loaded.ok()) {
        // The killer got the new worker first: a specific error all the same.
        if (client::ErrorReason(loaded.status()) != "WORKER_CRASHED") {
          tally.Problem(absl::StrCat("LoadLibrary: ", loaded.status().ToString()));
        }
        (void)session->Delete();
        return false;
      }
      library = *loaded;
      return true;
    };
    auto resolve = [&](const std::string& declaration)
        -> absl::StatusOr<client::Function> {
      auto it = functions.find(declaration);
      if (it != functions.end()) return it->second;
      absl::StatusOr<client::Function> function =
          session->ResolveFunction(library, declaration);
      if (function.ok()) functions[declaration] = *function;
      return function;
    };
    for (int i = 0; i < calls; ++i) {
      if (session == nullptr && !open()) {
        session.reset();
        ++tally.setup_failed;
        continue;
      }
      const bool fault = random() % 100 < 12;
      absl::Status status;
      std::set<std::string> expected;
      if (fault) {
        const Fault& kind = faults[random() % faults.size()];
        expected = kind.reasons;
        client::CallOptions options;
        if (kind.with_deadline) options.timeout = absl::Milliseconds(100);
        absl::StatusOr<client::Function> function = resolve(kind.declaration);
        status = function.status();
        if (function.ok()) {
          status = session->Call(*function, kind.arguments, options).status();
        }
        ++tally.faults;
        if (status.ok()) {
          tally.Problem(absl::StrCat(kind.declaration, " succeeded"));
          continue;
        }
      } else {
        const int a = static_cast<int>(random() % 1000);
        absl::StatusOr<client::Function> add = resolve("int fx_add(int a, int b)");
        status = add.status();
        if (add.ok()) {
          absl::StatusOr<v1::CallResponse> sum =
              session->Call(*add, {MakeInt(a), MakeInt(1)});
          status = sum.status();
          if (sum.ok()) {
            std::optional<Integer> value = IntegerOf(sum->result());
            if (!value.has_value() || *value != a + 1) {
              tally.Problem(absl::StrCat("fx_add(", a, ", 1) gave ",
                                         sum->result().ShortDebugString()));
            }
            ++tally.good;
            continue;
          }
        }
      }
      // A failure: the fault's own reason, or the outside killer's doing
      // (WORKER_CRASHED), or a session that gave up after a crash loop.
      const std::string reason = client::ErrorReason(status);
      const std::string message(status.message());
      const bool killed = reason == "WORKER_CRASHED";
      if (expected.count(reason) == 0 && !killed) {
        tally.Problem(absl::StrCat("unexpected error: ", status.ToString()));
      }
      if (!fault) ++tally.killed_by_outsider;
      if (absl::StrContains(message, "gave up") ||
          status.code() == absl::StatusCode::kFailedPrecondition) {
        // A crash loop ended the session: start another.
        (void)session->Delete();
        session.reset();
      }
    }
    if (session != nullptr) (void)session->Delete();
  }
};

TEST_F(FaultLoadTest, DaemonSurvivesFaultsAndOutsideKillsUnderLoad) {
  const pid_t daemon_pid = daemon().pid();
  // The test's own session (FfidTest) ends here, so the baseline counts
  // nothing but the daemon.
  functions_.clear();
  session_.reset();
  client_.reset();
  // Warm up (gRPC and allocator pools), then take the baseline.
  Tally warmup;
  RunClient(99, 30, warmup);
  ASSERT_TRUE(WaitForProcessGoneAll(daemon_pid));
  absl::SleepFor(absl::Milliseconds(200));  // let gRPC close the connection
  const int base_fds = CountFds(daemon_pid);
  const int64_t base_rss_kb = StatusField(daemon_pid, "VmRSS");
  ASSERT_GT(base_fds, 0);

  const int calls = CallsPerClient();
  Tally tally;
  std::atomic<bool> done{false};
  std::atomic<int> outside_kills{0};
  std::thread killer([&] {
    std::mt19937 random(7);
    while (!done) {
      absl::SleepFor(absl::Milliseconds(20 + random() % 40));
      // Spares too: one killed before it was handed out is replaced.
      std::vector<pid_t> workers = WorkersOf(daemon_pid);
      for (pid_t spare : WorkersOf(daemon_pid, true)) workers.push_back(spare);
      if (workers.empty()) continue;
      if (kill(workers[random() % workers.size()], SIGKILL) == 0) {
        ++outside_kills;
      }
    }
  });
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] { RunClient(i, calls, tally); });
  }
  for (std::thread& client : clients) client.join();
  done = true;
  killer.join();

  std::fprintf(stderr,
               "fault load: %d clients x %d calls: %d good, %d faults, %d "
               "outside kills (%d calls hit by them), %d sessions (%d "
               "interrupted during setup)\n",
               kClients, calls, tally.good.load(), tally.faults.load(),
               outside_kills.load(), tally.killed_by_outsider.load(),
               tally.sessions.load(), tally.setup_failed.load());
  ASSERT_TRUE(daemon().IsRunning()) << "the daemon died";
  EXPECT_EQ(daemon().pid(), daemon_pid);
  EXPECT_EQ(tally.unexplained.load(), 0)
      << ::testing::PrintToString(tally.problems);
  EXPECT_EQ(tally.good + tally.faults + tally.killed_by_outsider +
                tally.setup_failed,
            kClients * calls)
      << "some calls got no answer";
  EXPECT_GT(tally.faults.load(), 0);

  // Nothing left behind: every session was deleted by its client.
  EXPECT_TRUE(WaitForProcessGoneAll(daemon_pid))
      << "workers left: " << ::testing::PrintToString(WorkersOf(daemon_pid));
  // Spares, one per recent policy, stay by design; never more.
  EXPECT_LE(WorkersOf(daemon_pid, true).size(), 4u);
  EXPECT_LE(WaitForFds(daemon_pid, base_fds), base_fds)
      << "the daemon leaks descriptors: " << FdTargets(daemon_pid);
  const int64_t rss_kb = StatusField(daemon_pid, "VmRSS");
  std::fprintf(stderr, "daemon VmRSS: baseline %lld kB, after %lld kB\n",
               static_cast<long long>(base_rss_kb),
               static_cast<long long>(rss_kb));
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // Allocator caches may keep a little; a leak per session or call would
  // show as far more than this.
  EXPECT_LT(rss_kb, base_rss_kb + 16 * 1024);
#endif
  // The daemon still serves.
  client_ = Connect();
  ASSERT_NE(client_, nullptr);
  session_ = NewSession();
  ASSERT_NE(session_, nullptr);
}

}  // namespace
}  // namespace ffid::testing
