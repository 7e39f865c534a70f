// The daemon's supervision of its zygote and workers, against real daemons:
// spare workers (started ahead by the zygote, handed to the next session of
// the same policy), the zygote killed from outside (the daemon starts a new
// one, sessions are created and restarted again), and a daemon that runs
// where user namespaces cannot be created (it says so and serves under the
// remaining layers).
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <dirent.h>
#include <fcntl.h>

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>
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
using ::testing::HasSubstr;
using ::testing::Not;

// /proc/PID/NAME's contents ("" if the process is gone). read(), not a
// stream: libstdc++'s filebuf throws when the process vanishes mid-read.
std::string ProcFile(pid_t pid, const char* name) {
  std::string text;
  int fd = open(absl::StrCat("/proc/", pid, "/", name).c_str(),
                O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
    text.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return text;
}

// /proc/PID/status's PPid, or 0.
pid_t ParentOf(pid_t pid) {
  std::istringstream status(ProcFile(pid, "status"));
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, "PPid:")) continue;
    pid_t parent = 0;
    std::istringstream(line.substr(5)) >> parent;
    return parent;
  }
  return 0;
}

std::string CommandLine(pid_t pid) { return ProcFile(pid, "cmdline"); }

// The children of `parent` with the argument `marker` ("--spare").
std::vector<pid_t> ChildrenOf(pid_t parent, const std::string& marker) {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return pids;
  while (dirent* entry = readdir(proc)) {
    pid_t pid;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    if (ParentOf(pid) != parent) continue;
    std::vector<std::string> args = absl::StrSplit(CommandLine(pid), '\0');
    if (std::find(args.begin(), args.end(), marker) != args.end()) {
      pids.push_back(pid);
    }
  }
  closedir(proc);
  return pids;
}

// Waits until `parent` has a child marked `marker` (a spare is cloned
// after the request that asked for its policy was answered).
std::vector<pid_t> AwaitChildren(pid_t parent, const std::string& marker) {
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  std::vector<pid_t> pids = ChildrenOf(parent, marker);
  while (pids.empty() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
    pids = ChildrenOf(parent, marker);
  }
  return pids;
}

class SupervisionTest : public FfidTest {
 protected:
  // The zygote: the worker's parent (the zygote clones every worker).
  pid_t ZygoteOf(client::Session& session) {
    return ParentOf(session.worker_pid());
  }
};

TEST_F(SupervisionTest, TheNextSessionGetsTheSpareTheZygoteStartedAhead) {
  const pid_t zygote = ZygoteOf(*session_);
  ASSERT_GT(zygote, 1);
  EXPECT_THAT(CommandLine(zygote), HasSubstr("--zygote"));
  // After the test's session started, a spare for its policy waits.
  std::vector<pid_t> spares = AwaitChildren(zygote, "--spare");
  ASSERT_EQ(spares.size(), 1u);
  std::unique_ptr<client::Session> next = NewSession();
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(next->worker_pid(), spares[0]);
  // It serves like any worker, in its own sandbox (and, having read its
  // session, calls itself a worker).
  absl::StatusOr<client::Library> library = next->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  EXPECT_THAT(CommandLine(spares[0]), HasSubstr("--worker"));
  absl::StatusOr<client::Function> add =
      next->ResolveFunction(*library, "int fx_add(int a, int b)");
  ASSERT_TRUE(add.ok()) << add.status();
  absl::StatusOr<v1::CallResponse> sum =
      next->Call(*add, {MakeInt(20), MakeInt(22)});
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_THAT(sum->result(), IsInteger(42));
  absl::StatusOr<v1::Session> state = next->Get();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->sandbox_status().disabled_size(),
            session_->Get()->sandbox_status().disabled_size());
  // And a new spare replaced it.
  std::vector<pid_t> after = AwaitChildren(zygote, "--spare");
  ASSERT_EQ(after.size(), 1u);
  EXPECT_NE(after[0], spares[0]);
}

TEST_F(SupervisionTest, ASpareKilledBeforeUseIsReplacedSilently) {
  const pid_t zygote = ZygoteOf(*session_);
  std::vector<pid_t> spares = AwaitChildren(zygote, "--spare");
  ASSERT_EQ(spares.size(), 1u);
  ASSERT_EQ(kill(spares[0], SIGKILL), 0);
  ASSERT_TRUE(WaitForProcessGone(spares[0], absl::Seconds(10)));
  // The next session still starts (a fresh clone), and is healthy.
  std::unique_ptr<client::Session> next = NewSession();
  ASSERT_NE(next, nullptr);
  EXPECT_NE(next->worker_pid(), spares[0]);
  absl::StatusOr<client::Library> library = next->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  EXPECT_THAT(daemon().Log(), Not(HasSubstr(absl::StrCat(
                                  "worker ", spares[0]))));
}

TEST_F(SupervisionTest, AKilledZygoteIsReplacedAndSessionsWorkAgain) {
  // A NEVER session and a RESTART session, both with a worker of the
  // current zygote.
  client::SessionOptions restart;
  restart.restart_policy = v1::RESTART_POLICY_RESTART;
  std::unique_ptr<client::Session> restarting = NewSession(restart);
  ASSERT_NE(restarting, nullptr);
  absl::StatusOr<client::Library> library =
      restarting->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  absl::StatusOr<client::Function> add =
      restarting->ResolveFunction(*library, "int fx_add(int a, int b)");
  ASSERT_TRUE(add.ok()) << add.status();
  const pid_t zygote = ZygoteOf(*session_);
  ASSERT_GT(zygote, 1);
  ASSERT_EQ(ZygoteOf(*restarting), zygote);
  const pid_t never_worker = session_->worker_pid();
  const pid_t restart_worker = restarting->worker_pid();

  ASSERT_EQ(kill(zygote, SIGKILL), 0);
  // Its workers die with it (PR_SET_PDEATHSIG).
  EXPECT_TRUE(WaitForProcessGone(never_worker, absl::Seconds(10)));
  EXPECT_TRUE(WaitForProcessGone(restart_worker, absl::Seconds(10)));

  // The NEVER session says its worker is gone.
  absl::StatusOr<v1::CallResponse> dead =
      Call("int fx_add(int a, int b)", {MakeInt(1), MakeInt(2)});
  EXPECT_THAT(dead, HasReason("WORKER_CRASHED"));
  // The RESTART session gets a worker of a new zygote; its handles hold.
  absl::StatusOr<v1::CallResponse> sum =
      restarting->Call(*add, {MakeInt(2), MakeInt(3)});
  if (!sum.ok()) {
    // The call raced the restart and was failed with the old worker; the
    // next one runs in the new worker.
    EXPECT_THAT(sum, HasReason("WORKER_CRASHED"));
    sum = restarting->Call(*add, {MakeInt(2), MakeInt(3)});
  }
  ASSERT_TRUE(sum.ok()) << sum.status() << "\n" << daemon().Log();
  EXPECT_THAT(sum->result(), IsInteger(5));
  absl::StatusOr<v1::Session> state = restarting->Get();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_NE(state->worker_pid(), restart_worker);
  EXPECT_GE(state->restarts(), 1);
  const pid_t new_zygote = ParentOf(state->worker_pid());
  EXPECT_NE(new_zygote, zygote);
  EXPECT_THAT(CommandLine(new_zygote), HasSubstr("--zygote"));
  // New sessions start again.
  std::unique_ptr<client::Session> fresh = NewSession();
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(ZygoteOf(*fresh), new_zygote);
  absl::StatusOr<client::Library> loaded = fresh->LoadLibrary(FixturePath());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(daemon().Log(),
              HasSubstr(absl::StrCat("the zygote (pid ", zygote, ") ended")));
  EXPECT_TRUE(daemon().IsRunning());
}

// A daemon where creating a user namespace fails: run inside a user
// namespace of its own (root there, so the other namespaces still work)
// whose user.max_user_namespaces is 0.
TEST(NoUserNamespaceTest, TheDaemonSaysWhatIsOffAndServesUnderTheRest) {
  absl::StatusOr<ProcessResult> probe = RunProcess(
      {"/usr/bin/unshare", "--user", "--map-root-user", "sh", "-c",
       "echo 0 > /proc/sys/user/max_user_namespaces && "
       "! unshare --user true 2>/dev/null"},
      {});
  if (!probe.ok() || probe->exit_code != 0) {
    GTEST_SKIP() << "cannot run a process without user namespaces here: "
                 << (probe.ok() ? probe->err : probe.status().ToString());
  }
  DaemonOptions options;
  options.command_prefix = {
      "/usr/bin/unshare", "--user", "--map-root-user", "sh", "-c",
      "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"", "sh"};
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string log = (*daemon)->Log();
  EXPECT_THAT(log, HasSubstr("sandbox: user namespace OFF, network on"));
  EXPECT_THAT(log, HasSubstr("sandbox: off: user_namespace: "));

  absl::StatusOr<std::unique_ptr<client::Client>> connected =
      client::Client::Connect((*daemon)->address(), absl::Seconds(10));
  ASSERT_TRUE(connected.ok()) << connected.status();
  client::Client& client = **connected;
  grpc::ClientContext context;
  v1::GetServerInfoResponse info;
  grpc::Status status = client.stub().GetServerInfo(
      &context, v1::GetServerInfoRequest(), &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(info.sandbox().user_namespace());
  // Root in its own namespace, the daemon still gets the others.
  EXPECT_TRUE(info.sandbox().mount_namespace());
  EXPECT_TRUE(info.sandbox().seccomp());

  absl::StatusOr<std::unique_ptr<client::Session>> session =
      client.CreateSession();
  ASSERT_TRUE(session.ok()) << session.status();
  absl::StatusOr<v1::Session> state = (*session)->Get();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_FALSE(state->sandbox_status().user_namespace());
  EXPECT_FALSE(state->sandbox_status().disabled().empty());
  absl::StatusOr<client::Library> library =
      (*session)->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  absl::StatusOr<client::Function> add =
      (*session)->ResolveFunction(*library, "int fx_add(int a, int b)");
  ASSERT_TRUE(add.ok()) << add.status();
  absl::StatusOr<v1::CallResponse> sum =
      (*session)->Call(*add, {MakeInt(40), MakeInt(2)});
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_THAT(sum->result(), IsInteger(42));
  // The remaining layers still hold: a socket is a violation.
  absl::StatusOr<client::Function> socket_fn =
      (*session)->ResolveFunction(*library, "int ff_open_socket(void)");
  ASSERT_TRUE(socket_fn.ok()) << socket_fn.status();
  EXPECT_THAT((*session)->Call(*socket_fn, {}),
              HasReason("SANDBOX_VIOLATION"));
  session->reset();
  EXPECT_TRUE((*daemon)->Stop().ok()) << (*daemon)->Log();
}

}  // namespace
}  // namespace ffid::testing
