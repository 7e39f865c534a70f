// Runs the real ffid-worker binary over a socketpair, as the daemon does.
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "gtest/gtest.h"
#include "server/worker/channel.h"
#include "server/worker/protocol.pb.h"

#ifndef FFID_WORKER_PATH
#error "FFID_WORKER_PATH must name the ffid-worker binary"
#endif

namespace ffid::worker {
namespace {

constexpr char kTag[] = "c0ffee00";

std::string RealPathOf(const char* soname) {
  void* dl = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (dl == nullptr) return "";
  link_map* map = nullptr;
  std::string path;
  if (::dlinfo(dl, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr) {
    if (char* real = ::realpath(map->l_name, nullptr)) {
      path = real;
      std::free(real);
    }
  }
  ::dlclose(dl);
  return path;
}

struct ExitStatus {
  bool exited = false;
  int code = -1;
  bool signaled = false;
  int signal = 0;
};

// A started worker: its pid, our end of the channel, and its stderr.
struct Worker {
  pid_t pid = -1;
  std::unique_ptr<FrameChannel> channel;
  int stderr_fd = -1;
  int worker_fd_number = -1;

  ~Worker() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (stderr_fd >= 0) ::close(stderr_fd);
  }

  // Waits up to 10 s for the worker to end.
  ExitStatus Wait() {
    ExitStatus result;
    int status = 0;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (true) {
      pid_t done = ::waitpid(pid, &status, WNOHANG);
      if (done == pid) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "worker " << pid << " did not exit";
        return result;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid = -1;
    if (WIFEXITED(status)) {
      result.exited = true;
      result.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      result.signaled = true;
      result.signal = WTERMSIG(status);
    }
    return result;
  }

  std::string Stderr() {
    std::string out;
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(stderr_fd, buffer, sizeof(buffer))) > 0) {
      out.append(buffer, static_cast<size_t>(n));
    }
    return out;
  }
};

// Starts ffid-worker with the worker's socket end at fd `child_fd` (so the
// test controls which number it gets) and `args` after the binary name.
// "{fd}" in an argument is replaced by that number. `leak_fd` (if >= 0) is
// inherited without FD_CLOEXEC, to check that the worker closes it.
std::unique_ptr<Worker> StartWorker(std::vector<std::string> args,
                                    int leak_fd = -1) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  int err[2];
  EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
  auto worker = std::make_unique<Worker>();
  // Move the worker's end somewhere with room below, like a daemon with
  // many descriptors open.
  const int child_fd = 40;
  worker->worker_fd_number = child_fd;
  std::vector<std::string> argv_strings = {FFID_WORKER_PATH};
  for (std::string& arg : args) {
    const size_t at = arg.find("{fd}");
    if (at != std::string::npos) arg.replace(at, 4, std::to_string(child_fd));
    argv_strings.push_back(arg);
  }
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid == 0) {
    // dup2 clears FD_CLOEXEC on the new descriptor.
    if (::dup2(fds[1], child_fd) < 0 || ::dup2(err[1], 2) < 0) _exit(126);
    if (leak_fd >= 0) ::fcntl(leak_fd, F_SETFD, 0);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  EXPECT_GT(pid, 0);
  ::close(fds[1]);
  ::close(err[1]);
  worker->pid = pid;
  worker->channel = std::make_unique<FrameChannel>(fds[0]);
  worker->stderr_fd = err[0];
  return worker;
}

std::unique_ptr<Worker> StartWorker() {
  return StartWorker({"--channel-fd={fd}", absl::StrCat("--session-tag=", kTag),
                      absl::StrCat("--parent-pid=", ::getpid())});
}

WorkerResponse RoundTrip(Worker& worker, const WorkerRequest& request) {
  EXPECT_TRUE(worker.channel->Send(request).ok());
  WorkerResponse response;
  absl::Status status = worker.channel->Receive(&response);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(response.id(), request.id());
  EXPECT_EQ(response.status().code(), 0) << response.status().message();
  return response;
}

v1::TypeDescriptor Scalar(v1::ScalarKind kind) {
  v1::TypeDescriptor type;
  type.set_scalar(kind);
  return type;
}

WorkerRequest Load(uint64_t id, const std::string& path) {
  WorkerRequest request;
  request.set_id(id);
  request.mutable_load_library()->set_name(path);
  return request;
}

WorkerRequest Resolve(uint64_t id, const std::string& library,
                      const std::string& symbol, v1::TypeDescriptor result,
                      std::vector<v1::TypeDescriptor> parameters,
                      bool variadic = false) {
  WorkerRequest request;
  request.set_id(id);
  auto* resolve = request.mutable_resolve_function();
  resolve->set_library(library);
  resolve->set_symbol(symbol);
  *resolve->mutable_type()->mutable_return_type() = std::move(result);
  for (auto& parameter : parameters) {
    *resolve->mutable_type()->add_parameters()->mutable_type() =
        std::move(parameter);
  }
  resolve->mutable_type()->set_variadic(variadic);
  return request;
}

WorkerRequest Call(uint64_t id, const std::string& function,
                   std::vector<v1::Value> arguments,
                   bool capture_errno = false) {
  WorkerRequest request;
  request.set_id(id);
  request.mutable_call()->set_function(function);
  for (auto& argument : arguments) {
    *request.mutable_call()->add_arguments() = std::move(argument);
  }
  request.mutable_call()->set_capture_errno(capture_errno);
  return request;
}

v1::Value Int(int64_t i) {
  v1::Value v;
  v.set_int_value(i);
  return v;
}

TEST(WorkerExecutableTest, LoadsResolvesAndCallsCos) {
  std::unique_ptr<Worker> worker = StartWorker();
  WorkerResponse loaded = RoundTrip(*worker, Load(1, RealPathOf("libm.so.6")));
  const std::string lib = loaded.load_library().library();
  EXPECT_EQ(lib.rfind(absl::StrCat("lib_", kTag, "_"), 0), 0u) << lib;

  WorkerResponse resolved = RoundTrip(
      *worker, Resolve(2, lib, "cos", Scalar(v1::SCALAR_KIND_DOUBLE),
                       {Scalar(v1::SCALAR_KIND_DOUBLE)}));
  v1::Value half;
  half.set_double_value(0.5);
  WorkerResponse called = RoundTrip(
      *worker, Call(3, resolved.resolve_function().function(), {half}));
  EXPECT_EQ(called.call().result().double_value(), std::cos(0.5));

  // Closing the channel ends the worker cleanly.
  worker->channel.reset();
  ExitStatus status = worker->Wait();
  EXPECT_TRUE(status.exited);
  EXPECT_EQ(status.code, 0);
}

TEST(WorkerExecutableTest, ErrorsTravelAsStatusWithReason) {
  std::unique_ptr<Worker> worker = StartWorker();
  WorkerRequest request = Load(7, "/nonexistent/libx.so");
  ASSERT_TRUE(worker->channel->Send(request).ok());
  WorkerResponse response;
  ASSERT_TRUE(worker->channel->Receive(&response).ok());
  EXPECT_EQ(response.id(), 7u);
  absl::Status status = StatusFromProto(response.status());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_LIBRARY_NOT_FOUND);
}

TEST(WorkerExecutableTest, PipelinedRequestsAnswerInOrder) {
  std::unique_ptr<Worker> worker = StartWorker();
  WorkerResponse loaded = RoundTrip(*worker, Load(1, RealPathOf("libc.so.6")));
  WorkerResponse resolved = RoundTrip(
      *worker, Resolve(2, loaded.load_library().library(), "labs",
                       Scalar(v1::SCALAR_KIND_LONG),
                       {Scalar(v1::SCALAR_KIND_LONG)}));
  const std::string fn = resolved.resolve_function().function();
  constexpr int kCalls = 200;
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(worker->channel->Send(Call(1000 + i, fn, {Int(-i)})).ok());
  }
  for (int i = 0; i < kCalls; ++i) {
    WorkerResponse response;
    ASSERT_TRUE(worker->channel->Receive(&response).ok());
    EXPECT_EQ(response.id(), static_cast<uint64_t>(1000 + i));
    const v1::Value& result = response.call().result();
    const int64_t value = result.has_uint_value()
                              ? static_cast<int64_t>(result.uint_value())
                              : result.int_value();
    EXPECT_EQ(value, i);
  }
}

TEST(WorkerExecutableTest, AbortKillsTheWorkerAndTheChannelSeesEof) {
  std::unique_ptr<Worker> worker = StartWorker();
  WorkerResponse loaded = RoundTrip(*worker, Load(1, RealPathOf("libc.so.6")));
  WorkerResponse resolved =
      RoundTrip(*worker, Resolve(2, loaded.load_library().library(), "abort",
                                 Scalar(v1::SCALAR_KIND_VOID), {}));
  ASSERT_TRUE(
      worker->channel->Send(Call(3, resolved.resolve_function().function(), {}))
          .ok());
  WorkerResponse response;
  absl::Status status = worker->channel->Receive(&response);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  ExitStatus exit_status = worker->Wait();
  EXPECT_TRUE(exit_status.signaled);
  EXPECT_EQ(exit_status.signal, SIGABRT);
}

TEST(WorkerExecutableTest, WorkerIsHardened) {
  // An inherited descriptor the worker must close.
  const int leak = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(leak, 0);
  std::unique_ptr<Worker> worker = StartWorker(
      {"--channel-fd={fd}", absl::StrCat("--session-tag=", kTag)}, leak);
  ::close(leak);
  const std::string libc =
      RoundTrip(*worker, Load(1, RealPathOf("libc.so.6")))
          .load_library()
          .library();
  const std::string dup_fn =
      RoundTrip(*worker, Resolve(2, libc, "dup", Scalar(v1::SCALAR_KIND_INT),
                                 {Scalar(v1::SCALAR_KIND_INT)}))
          .resolve_function()
          .function();
  WorkerResponse leaked =
      RoundTrip(*worker, Call(3, dup_fn, {Int(leak)}, /*capture_errno=*/true));
  EXPECT_EQ(leaked.call().result().int_value(), -1);
  EXPECT_EQ(leaked.call().errno_value(), EBADF);
  // Its channel is still open; stdin/out/err are untouched.
  WorkerResponse channel =
      RoundTrip(*worker, Call(4, dup_fn, {Int(worker->worker_fd_number)}));
  EXPECT_GE(channel.call().result().int_value(), 0);

  // RLIMIT_CORE is 0: getrlimit into worker memory, then read it.
  v1::TypeDescriptor void_pointer;
  void_pointer.mutable_pointer();
  const std::string getrlimit_fn =
      RoundTrip(*worker,
                Resolve(5, libc, "getrlimit", Scalar(v1::SCALAR_KIND_INT),
                        {Scalar(v1::SCALAR_KIND_INT), void_pointer}))
          .resolve_function()
          .function();
  WorkerRequest allocate;
  allocate.set_id(6);
  allocate.mutable_allocate()->set_size(sizeof(rlimit));
  const std::string limit =
      RoundTrip(*worker, allocate).allocate().memory();
  v1::Value limit_pointer;
  limit_pointer.mutable_pointer_value()->set_handle(limit);
  WorkerResponse got =
      RoundTrip(*worker,
                Call(7, getrlimit_fn, {Int(RLIMIT_CORE), limit_pointer}));
  EXPECT_EQ(got.call().result().int_value(), 0);
  WorkerRequest read;
  read.set_id(8);
  read.mutable_read()->mutable_pointer()->set_handle(limit);
  EXPECT_EQ(RoundTrip(*worker, read).read().data(),
            std::string(sizeof(rlimit), '\0'));

  // PR_SET_NO_NEW_PRIVS is on.
  const std::string prctl_fn =
      RoundTrip(*worker, Resolve(9, libc, "prctl", Scalar(v1::SCALAR_KIND_INT),
                                 {Scalar(v1::SCALAR_KIND_INT)},
                                 /*variadic=*/true))
          .resolve_function()
          .function();
  // The kernel wants arguments 2-5 to be zero for this option.
  v1::Value zero;
  zero.set_uint_value(0);
  WorkerRequest get_no_new_privs =
      Call(10, prctl_fn, {Int(PR_GET_NO_NEW_PRIVS), zero, zero, zero, zero});
  for (int i = 0; i < 4; ++i) {
    *get_no_new_privs.mutable_call()->add_variadic_types() =
        Scalar(v1::SCALAR_KIND_UNSIGNED_LONG);
  }
  WorkerResponse no_new_privs = RoundTrip(*worker, get_no_new_privs);
  EXPECT_EQ(no_new_privs.call().result().int_value(), 1);

  // PR_SET_PDEATHSIG is SIGKILL: prctl(PR_GET_PDEATHSIG, int*) with the
  // pointer as a variadic argument.
  WorkerRequest int_slot;
  int_slot.set_id(11);
  int_slot.mutable_allocate()->set_size(sizeof(int));
  const std::string slot = RoundTrip(*worker, int_slot).allocate().memory();
  v1::Value slot_pointer;
  slot_pointer.mutable_pointer_value()->set_handle(slot);
  WorkerRequest get_death_signal =
      Call(12, prctl_fn, {Int(PR_GET_PDEATHSIG), slot_pointer});
  *get_death_signal.mutable_call()->add_variadic_types() = void_pointer;
  EXPECT_EQ(RoundTrip(*worker, get_death_signal).call().result().int_value(),
            0);
  read.set_id(13);
  read.mutable_read()->mutable_pointer()->set_handle(slot);
  const std::string signal_bytes = RoundTrip(*worker, read).read().data();
  int death_signal = 0;
  ASSERT_EQ(signal_bytes.size(), sizeof(death_signal));
  std::memcpy(&death_signal, signal_bytes.data(), sizeof(death_signal));
  EXPECT_EQ(death_signal, SIGKILL);
}

// PR_SET_PDEATHSIG fires when the *thread* that started the worker exits,
// not only the process: whoever spawns workers must do it from a thread that
// lives as long as the daemon. This pins that behaviour down.
TEST(WorkerExecutableTest, DiesWithTheThreadThatStartedIt) {
  std::unique_ptr<Worker> worker;
  std::thread spawner([&worker] {
    worker = StartWorker();
    // Once it answers, its death signal is armed.
    RoundTrip(*worker, Load(1, RealPathOf("libm.so.6")));
  });
  spawner.join();
  ExitStatus status = worker->Wait();
  EXPECT_TRUE(status.signaled);
  EXPECT_EQ(status.signal, SIGKILL);
}

TEST(WorkerExecutableTest, BadArgumentsExitWithUsage) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{}, "--channel-fd is required"},
      {{"--channel-fd={fd}"}, "--session-tag is required"},
      {{"--channel-fd=x", "--session-tag=ab"}, "--channel-fd must be"},
      {{"--channel-fd=99", "--session-tag=ab"}, "not an open file descriptor"},
      {{"--channel-fd={fd}", "--session-tag=NOT_HEX"}, "--session-tag must be"},
      {{"--channel-fd={fd}", "--session-tag=ab", "--frobnicate"},
       "unknown argument '--frobnicate'"},
  };
  for (const Case& c : cases) {
    std::unique_ptr<Worker> worker = StartWorker(c.args);
    ExitStatus status = worker->Wait();
    EXPECT_TRUE(status.exited);
    EXPECT_EQ(status.code, 2);
    const std::string err = worker->Stderr();
    EXPECT_NE(err.find(c.message), std::string::npos) << err;
    EXPECT_NE(err.find("usage: ffid-worker"), std::string::npos) << err;
  }
}

TEST(WorkerExecutableTest, ExitsAtOnceWhenTheNamedParentIsNotItsParent) {
  std::unique_ptr<Worker> worker =
      StartWorker({"--channel-fd={fd}", "--session-tag=ab",
                   absl::StrCat("--parent-pid=", ::getpid() + 100000)});
  ExitStatus status = worker->Wait();
  EXPECT_TRUE(status.exited);
  EXPECT_NE(status.code, 0);
}

TEST(WorkerExecutableTest, SpaceSeparatedFlagsWork) {
  std::unique_ptr<Worker> worker =
      StartWorker({"--channel-fd", "{fd}", "--session-tag", kTag});
  WorkerResponse loaded = RoundTrip(*worker, Load(1, RealPathOf("libm.so.6")));
  EXPECT_FALSE(loaded.load_library().library().empty());
}

}  // namespace
}  // namespace ffid::worker
