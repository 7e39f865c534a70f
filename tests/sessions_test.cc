// Session lifecycle and daemon operations: deleting a session or a client
// going away ends its worker; idle sessions expire; health checking and
// reflection answer; the socket is private; the daemon stops cleanly.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <thread>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"
#include "tests/testing/subprocess.h"

namespace ffid::testing {
namespace {

using client::MakeInt;
using ::testing::HasSubstr;

class SessionsTest : public FfidTest {};

// The process ids of a process's children.
std::set<pid_t> ChildrenOf(pid_t pid) {
  std::set<pid_t> children;
  const std::string tasks = absl::StrCat("/proc/", pid, "/task");
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return children;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream file(absl::StrCat(tasks, "/", entry->d_name, "/children"));
    pid_t child;
    while (file >> child) children.insert(child);
  }
  closedir(dir);
  return children;
}

// Whether `pid` serves a session: a worker says "--worker" on its command
// line. A spare waiting for a session says "--spare", and a child the
// zygote has just cloned still says "--zygote" until it renames itself.
bool IsSessionWorker(pid_t pid) {
  // read(), not a stream: the process may vanish while we read, and
  // libstdc++'s filebuf throws on ESRCH.
  int fd = open(absl::StrCat("/proc/", pid, "/cmdline").c_str(),
                O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string cmdline;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
    cmdline.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  // A whole argument (the last one).
  return cmdline.find(std::string("\0--worker\0", 10)) != std::string::npos;
}

// The daemon's workers: the children of its zygote, its only child; with
// `skip_spares`, only those serving a session (a spare just handed out
// says "--spare" until it has read its session).
std::set<pid_t> WorkersOf(pid_t daemon, bool skip_spares = false) {
  std::set<pid_t> workers;
  for (pid_t zygote : ChildrenOf(daemon)) {
    for (pid_t worker : ChildrenOf(zygote)) {
      if (!skip_spares || IsSessionWorker(worker)) workers.insert(worker);
    }
  }
  return workers;
}

// Polls `session` until the daemon no longer knows it.
bool WaitForSessionGone(client::Client& client, const std::string& id,
                        absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    v1::GetSessionRequest request;
    request.set_session(id);
    v1::GetSessionResponse response;
    grpc::ClientContext context;
    absl::Status status = client::StatusFromGrpc(
        client.stub().GetSession(&context, request, &response));
    if (client::ErrorReason(status) == "SESSION_NOT_FOUND") return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

std::string Concat(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  (void)buffer.Dump(&slices);
  std::string out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

// Calls a unary method by name with a hand-serialized request; the health
// and reflection protos are not installed on this machine, and their wire
// format is tiny.
absl::StatusOr<std::string> GenericUnary(std::shared_ptr<grpc::Channel> channel,
                                         const std::string& method,
                                         const std::string& request) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::CompletionQueue queue;
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&context, method, request_buffer, &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (!status.ok()) return client::StatusFromGrpc(status);
  return Concat(response);
}

// Sends one request on a bidirectional stream and collects the responses.
absl::StatusOr<std::vector<std::string>> GenericBidi(
    std::shared_ptr<grpc::Channel> channel, const std::string& method,
    const std::string& request) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::CompletionQueue queue;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, method, &queue);
  void* tag;
  bool ok = false;
  auto step = [&](int id) {
    ok = false;
    queue.Next(&tag, &ok);
    return ok && tag == reinterpret_cast<void*>(id);
  };
  std::vector<std::string> responses;
  call->StartCall(reinterpret_cast<void*>(1));
  if (step(1)) {
    grpc::Slice slice(request);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    if (step(2)) {
      call->WritesDone(reinterpret_cast<void*>(3));
      if (step(3)) {
        for (;;) {
          grpc::ByteBuffer response;
          call->Read(&response, reinterpret_cast<void*>(4));
          if (!step(4)) break;
          responses.push_back(Concat(response));
        }
      }
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (!status.ok()) return client::StatusFromGrpc(status);
  return responses;
}

TEST_F(SessionsTest, DeleteSessionEndsTheWorker) {
  std::unique_ptr<client::Session> session = NewSession();
  ASSERT_NE(session, nullptr);
  const pid_t worker = session->worker_pid();
  ASSERT_GT(worker, 0);
  EXPECT_EQ(kill(worker, 0), 0) << "the worker is not running";
  EXPECT_TRUE(WorkersOf(daemon().pid()).count(worker) > 0)
      << "worker " << worker << " is not a child of the daemon's zygote";
  ASSERT_TRUE(session->Delete().ok());
  EXPECT_TRUE(WaitForProcessGone(worker, absl::Seconds(10)))
      << "worker " << worker << " outlived its session";
  EXPECT_THAT(session->Get(), HasReason("SESSION_NOT_FOUND"));
}

TEST_F(SessionsTest, DestroyingTheSessionObjectEndsTheWorker) {
  std::unique_ptr<client::Session> session = NewSession();
  ASSERT_NE(session, nullptr);
  const pid_t worker = session->worker_pid();
  const std::string id = session->id();
  session.reset();
  EXPECT_TRUE(WaitForProcessGone(worker, absl::Seconds(10)));
  EXPECT_TRUE(WaitForSessionGone(*client_, id, absl::Seconds(1)));
}

TEST_F(SessionsTest, ClientThatDisconnectsLosesItsSession) {
  // A session kept by a raw Connect stream and never deleted.
  v1::CreateSessionRequest create;
  v1::CreateSessionResponse created;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(
        client_->stub().CreateSession(&context, create, &created).ok());
  }
  const std::string id = created.session().id();
  const pid_t worker = created.session().worker_pid();
  grpc::ClientContext stream_context;
  auto stream = client_->stub().Connect(&stream_context);
  v1::ConnectRequest attach;
  attach.mutable_attach()->set_session(id);
  ASSERT_TRUE(stream->Write(attach));
  v1::ConnectResponse attached;
  ASSERT_TRUE(stream->Read(&attached));
  EXPECT_EQ(attached.attached().session().id(), id);
  // Still there while the stream is open.
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(kill(worker, 0), 0);
  // The client goes away without a word.
  stream_context.TryCancel();
  (void)stream->Finish();
  EXPECT_TRUE(WaitForSessionGone(*client_, id, absl::Seconds(10)));
  EXPECT_TRUE(WaitForProcessGone(worker, absl::Seconds(10)));
}

TEST_F(SessionsTest, ClientProcessKilledMidCallLosesItsSession) {
  const std::set<pid_t> before = WorkersOf(daemon().pid(), true);
  std::vector<std::string> argv = {
      FfictlPath(), "--address", daemon().address(), "call", FixturePath(),
      "void fx_sleep_ms(int ms)", "30000"};
  std::vector<char*> pointers;
  for (std::string& arg : argv) pointers.push_back(arg.data());
  pointers.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t ffictl = 0;
  ASSERT_EQ(posix_spawn(&ffictl, argv[0].c_str(), &actions, nullptr,
                        pointers.data(), environ),
            0);
  posix_spawn_file_actions_destroy(&actions);
  // Wait for its worker to appear (ffictl built with sanitizers starts
  // slowly on a loaded machine: the wait is generous, and ends early).
  pid_t worker = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (worker == 0 && absl::Now() < deadline) {
    for (pid_t child : WorkersOf(daemon().pid(), true)) {
      if (before.count(child) == 0) worker = child;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (worker == 0) {
    const bool ffictl_running = waitpid(ffictl, nullptr, WNOHANG) == 0;
    kill(ffictl, SIGKILL);
    waitpid(ffictl, nullptr, 0);
    FAIL() << "no worker appeared for ffictl's session within 60s; ffictl "
           << (ffictl_running ? "was still running" : "had exited")
           << "; workers before: " << ::testing::PrintToString(before)
           << ", now (spares included): "
           << ::testing::PrintToString(WorkersOf(daemon().pid()));
  }
  absl::SleepFor(absl::Milliseconds(500));  // into the sleep call
  kill(ffictl, SIGKILL);
  int status;
  waitpid(ffictl, &status, 0);
  EXPECT_TRUE(WaitForProcessGone(worker, absl::Seconds(10)))
      << "worker " << worker << " outlived its killed client";
  EXPECT_TRUE(daemon().IsRunning());
}

TEST_F(SessionsTest, IdleSessionWithoutStreamExpires) {
  client::SessionOptions options;
  options.attach_stream = false;
  options.idle_timeout = absl::Seconds(1);
  std::unique_ptr<client::Session> session = NewSession(options);
  ASSERT_NE(session, nullptr);
  const pid_t worker = session->worker_pid();
  absl::StatusOr<v1::Session> state = session->Get();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->idle_timeout().seconds(), 1);
  // Watched from outside only: every request would restart the idle clock.
  EXPECT_TRUE(WaitForProcessGone(worker, absl::Seconds(15)))
      << "the idle session's worker is still running";
  EXPECT_THAT(session->Get(), HasReason("SESSION_NOT_FOUND"));
}

TEST_F(SessionsTest, AttachedStreamKeepsAnIdleSessionAlive) {
  client::SessionOptions options;
  options.idle_timeout = absl::Seconds(1);
  std::unique_ptr<client::Session> session = NewSession(options);
  ASSERT_NE(session, nullptr);
  absl::SleepFor(absl::Milliseconds(2500));
  absl::StatusOr<v1::Session> state = session->Get();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->state(), v1::SESSION_STATE_ACTIVE);
}

TEST_F(SessionsTest, HealthCheckAnswersServing) {
  // HealthCheckRequest{service: ""} is the empty message;
  // HealthCheckResponse{status: SERVING} is field 1 = 1: 08 01.
  absl::StatusOr<std::string> response = GenericUnary(
      client_->channel(), "/grpc.health.v1.Health/Check", std::string());
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(*response, std::string("\x08\x01", 2));
}

TEST_F(SessionsTest, ReflectionListsTheService) {
  // ServerReflectionRequest{list_services: "*"}: field 7, length 1, '*'.
  absl::StatusOr<std::vector<std::string>> responses =
      GenericBidi(client_->channel(),
                  "/grpc.reflection.v1alpha.ServerReflection/"
                  "ServerReflectionInfo",
                  std::string("\x3a\x01*", 3));
  ASSERT_TRUE(responses.ok()) << responses.status();
  ASSERT_EQ(responses->size(), 1u);
  EXPECT_THAT(responses->front(), HasSubstr("ffid.v1.Ffi"));
}

TEST_F(SessionsTest, SocketIsPrivate) {
  struct stat info;
  ASSERT_EQ(stat(daemon().socket_path().c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0600);
}

TEST_F(SessionsTest, DefaultAddressUsesTheRuntimeDirectory) {
  absl::StatusOr<std::string> runtime_dir = MakeTempDir("ffid-xdg");
  ASSERT_TRUE(runtime_dir.ok()) << runtime_dir.status();
  DaemonOptions options;
  options.omit_listen = true;
  options.environment["XDG_RUNTIME_DIR"] = *runtime_dir;
  options.default_address = "unix:" + *runtime_dir + "/ffid/ffid.sock";
  {
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    struct stat info;
    ASSERT_EQ(stat((*runtime_dir + "/ffid").c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0700);
    ASSERT_EQ(stat((*runtime_dir + "/ffid/ffid.sock").c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600);
    // ffictl finds it by the same rule.
    absl::StatusOr<ProcessResult> result = RunProcess(
        {FfictlPath(), "call", FixturePath(), "int fx_add(int, int)", "2",
         "3"},
        {{"XDG_RUNTIME_DIR", *runtime_dir}, {"FFID_ADDRESS", std::nullopt}});
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->exit_code, 0) << result->err;
    EXPECT_EQ(result->out, "5\n");
    EXPECT_TRUE((*daemon)->Stop().ok());
  }
  RemoveTree(*runtime_dir);
}

TEST_F(SessionsTest, DaemonStopsCleanlyAndEndsItsWorkers) {
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  absl::StatusOr<std::unique_ptr<client::Client>> client =
      client::Client::Connect((*daemon)->address());
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::unique_ptr<client::Session>> session =
      (*client)->CreateSession();
  ASSERT_TRUE(session.ok()) << session.status();
  const pid_t worker = (*session)->worker_pid();
  absl::Status stopped = (*daemon)->Stop();
  EXPECT_TRUE(stopped.ok()) << stopped;
  EXPECT_TRUE(WaitForProcessGone(worker, absl::Seconds(10)))
      << "worker " << worker << " outlived the daemon";
  session->reset();  // its DeleteSession fails quietly
}

TEST_F(SessionsTest, RestartedDaemonServesAgain) {
  const std::string old_id = session_->id();
  ASSERT_TRUE(daemon().Restart().ok());
  std::unique_ptr<client::Client> client = Connect();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::unique_ptr<client::Session>> session =
      client->CreateSession();
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_TRUE(WaitForSessionGone(*client, old_id, absl::Seconds(1)));
  absl::StatusOr<client::Library> library =
      (*session)->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  absl::StatusOr<client::Function> add =
      (*session)->ResolveFunction(*library, "int fx_add(int a, int b)");
  ASSERT_TRUE(add.ok()) << add.status();
  absl::StatusOr<v1::CallResponse> response =
      (*session)->Call(*add, {MakeInt(2), MakeInt(2)});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->result(), IsInteger(4));
}

// Workers must outlive whichever daemon thread happened to start them: the
// gRPC server grows and shrinks its thread pool under load.
TEST_F(SessionsTest, WorkersSurviveConcurrentLoad) {
  constexpr int kSessions = 8;
  std::vector<std::unique_ptr<client::Session>> sessions(kSessions);
  std::vector<client::Function> sleeps(kSessions);
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(kSessions);
  // Created concurrently, so that several daemon threads start workers.
  for (int i = 0; i < kSessions; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<std::unique_ptr<client::Session>> session =
          client_->CreateSession();
      if (!session.ok()) {
        results[i] = session.status();
        return;
      }
      sessions[i] = std::move(*session);
      absl::StatusOr<client::Library> library =
          sessions[i]->LoadLibrary(FixturePath());
      if (!library.ok()) {
        results[i] = library.status();
        return;
      }
      absl::StatusOr<client::Function> sleep =
          sessions[i]->ResolveFunction(*library, "void fx_sleep_ms(int ms)");
      if (!sleep.ok()) {
        results[i] = sleep.status();
        return;
      }
      sleeps[i] = *sleep;
    });
  }
  for (std::thread& thread : threads) thread.join();
  threads.clear();
  for (int i = 0; i < kSessions; ++i) ASSERT_TRUE(results[i].ok()) << results[i];
  // Two rounds of concurrent slow calls, with a pause between them for the
  // server's surplus threads to retire.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kSessions; ++i) {
      threads.emplace_back([&, i] {
        results[i] = sessions[i]->Call(sleeps[i], {MakeInt(200)}).status();
      });
    }
    for (std::thread& thread : threads) thread.join();
    threads.clear();
    for (int i = 0; i < kSessions; ++i) {
      EXPECT_TRUE(results[i].ok())
          << "round " << round << ", session " << i << " (worker "
          << sessions[i]->worker_pid() << "): " << results[i];
    }
    absl::SleepFor(absl::Seconds(1));
  }
}

TEST_F(SessionsTest, ManySessionsHaveTheirOwnWorkers) {
  std::vector<std::unique_ptr<client::Session>> sessions;
  std::set<pid_t> workers;
  std::set<std::string> ids;
  for (int i = 0; i < 8; ++i) {
    sessions.push_back(NewSession());
    ASSERT_NE(sessions.back(), nullptr);
    workers.insert(sessions.back()->worker_pid());
    ids.insert(sessions.back()->id());
  }
  EXPECT_EQ(workers.size(), 8u);
  EXPECT_EQ(ids.size(), 8u);
  sessions.clear();
  for (pid_t worker : workers) {
    EXPECT_TRUE(WaitForProcessGone(worker, absl::Seconds(10))) << worker;
  }
}

}  // namespace
}  // namespace ffid::testing
