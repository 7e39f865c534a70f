// hop_bench: where the time of one Call goes inside the daemon, hop by hop
// (see docs/performance.md, "One Call, hop by hop").
//
// Each figure times one layer of the call path with the layers above it cut
// away, so the differences between them are the hops:
//   executor_call   - the worker's own work for `Call fx_add(2, 3)`:
//                     Executor::Execute in this process (handle lookup,
//                     argument encoding, ffi_call, result decoding), no
//                     channel. Timed in batches (it is too fast to time
//                     one by one).
//   frame_codec     - serializing a WorkerRequest{call} and parsing it,
//                     then the same for the WorkerResponse: the protobuf
//                     work both ends of the hop do per call.
//   channel_echo    - the transport alone: a call-sized WorkerRequest sent
//                     over the daemon<->worker channel to a forked process
//                     that answers with a call-sized WorkerResponse.
//   futex_echo      - what a shared-memory ring with futex wake-ups (and
//                     no spinning) would pay instead: the same frames,
//                     serialized into and parsed from memory shared with
//                     a forked process, each side sleeping in FUTEX_WAIT
//                     until the other bumps a sequence word and wakes it.
//                     Compare with channel_echo, same run.
//   executor_batch_step - one step of a Batch of 10,000 such calls, run by
//                     Executor::Execute in this process.
//   batch_step_codec - serializing and parsing that batch's request and
//                     response, per step (each hop pays it once per side).
//   worker_execute  - WorkerProcess::Execute of the same call on a real
//                     ffid-worker (no sandbox): the daemon<->worker hop as
//                     the daemon pays it (the calling thread reading the
//                     answer itself, the worker's dispatcher, both
//                     codecs).
// Prints "name | median_us | p99_us" lines, and with --figures_json=FILE
// writes them as JSON for bench/run.
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "ffi/declaration_parser.h"
#include "server/worker/channel.h"
#include "server/worker/executor.h"
#include "server/worker/protocol.pb.h"
#include "server/worker_process.h"

namespace ffid::bench {
namespace {

using Clock = std::chrono::steady_clock;
using worker::WorkerRequest;
using worker::WorkerResponse;

int round_trips = 5000;
int executor_batches = 500;
int batch_steps = 10000;
int batch_repeats = 20;
constexpr int kExecutorBatch = 200;

double Percentile(std::vector<double> values, double fraction) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t index = std::min(
      values.size() - 1,
      static_cast<size_t>(fraction * (values.size() - 1) + 0.5));
  return values[index];
}

double Micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

struct Figure {
  std::string name;
  double median_us;
  double p99_us;
};

std::vector<Figure>& Figures() {
  static auto* figures = new std::vector<Figure>();
  return *figures;
}

void Report(const std::string& name, const std::vector<double>& samples) {
  Figure figure{name, Percentile(samples, 0.5), Percentile(samples, 0.99)};
  std::printf("%-16s | %10.3f | %10.3f\n", name.c_str(), figure.median_us,
              figure.p99_us);
  std::fflush(stdout);
  Figures().push_back(figure);
}

[[noreturn]] void Die(absl::string_view what, const absl::Status& status) {
  std::fprintf(stderr, "hop_bench: %s: %s\n", std::string(what).c_str(),
               status.ToString().c_str());
  std::exit(1);
}

WorkerRequest LoadRequest(const std::string& fixture) {
  WorkerRequest request;
  request.mutable_load_library()->set_name(fixture);
  return request;
}

WorkerRequest ResolveRequest(const std::string& library) {
  absl::StatusOr<v1::FunctionDeclaration> declaration =
      ffi::ParseFunctionDeclaration("int fx_add(int a, int b)");
  if (!declaration.ok()) Die("parsing fx_add", declaration.status());
  WorkerRequest request;
  v1::ResolveFunctionRequest* resolve = request.mutable_resolve_function();
  resolve->set_library(library);
  resolve->set_symbol("fx_add");
  *resolve->mutable_type() = declaration->type();
  return request;
}

WorkerRequest CallRequest(const std::string& function) {
  WorkerRequest request;
  request.set_id(1);
  v1::CallRequest* call = request.mutable_call();
  call->set_function(function);
  call->add_arguments()->set_int_value(2);
  call->add_arguments()->set_int_value(3);
  return request;
}

// The worker's own work, without any channel.
void BenchExecutor(const std::string& fixture) {
  worker::Executor executor("b0a7b0a7");
  WorkerResponse loaded = executor.Execute(LoadRequest(fixture));
  if (loaded.status().code() != 0) {
    Die("loading the fixture", absl::InternalError(loaded.status().message()));
  }
  WorkerResponse resolved = executor.Execute(
      ResolveRequest(loaded.load_library().library()));
  if (resolved.status().code() != 0) {
    Die("resolving fx_add", absl::InternalError(resolved.status().message()));
  }
  const WorkerRequest call =
      CallRequest(resolved.resolve_function().function());
  std::vector<double> samples;
  for (int b = 0; b < executor_batches; ++b) {
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < kExecutorBatch; ++i) {
      WorkerResponse response = executor.Execute(call);
      if (response.call().result().int_value() != 5) {
        Die("calling fx_add", absl::InternalError("wrong result"));
      }
    }
    samples.push_back(Micros(Clock::now() - start) / kExecutorBatch);
  }
  Report("executor_call", samples);

  // The same call as the steps of one Batch: per step.
  WorkerRequest batch;
  batch.set_id(2);
  for (int i = 0; i < batch_steps; ++i) {
    *batch.mutable_batch()->add_steps()->mutable_call() = call.call();
  }
  samples.clear();
  for (int b = 0; b < batch_repeats; ++b) {
    const Clock::time_point start = Clock::now();
    WorkerResponse response = executor.Execute(batch);
    samples.push_back(Micros(Clock::now() - start) / batch_steps);
    if (response.batch().results_size() != batch_steps) {
      Die("running the batch", absl::InternalError(response.status().message()));
    }
  }
  Report("executor_batch_step", samples);

  // What one batch step costs in protobuf: the request parsed and the
  // response serialized once per hop.
  WorkerResponse answer = executor.Execute(batch);
  samples.clear();
  std::string buffer;
  for (int b = 0; b < batch_repeats; ++b) {
    const Clock::time_point start = Clock::now();
    batch.SerializeToString(&buffer);
    WorkerRequest parsed_request;
    parsed_request.ParseFromString(buffer);
    answer.SerializeToString(&buffer);
    WorkerResponse parsed_response;
    parsed_response.ParseFromString(buffer);
    samples.push_back(Micros(Clock::now() - start) / batch_steps);
  }
  Report("batch_step_codec", samples);
}

// Serializing and parsing a call's request and response.
void BenchCodec() {
  WorkerRequest request = CallRequest("fn_b0a7b0a7_0123456789abcdef0123456789abcdef");
  WorkerResponse response;
  response.set_id(1);
  response.mutable_status();
  response.mutable_call()->mutable_result()->set_int_value(5);
  std::vector<double> samples;
  std::string buffer;
  for (int b = 0; b < executor_batches; ++b) {
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < kExecutorBatch; ++i) {
      request.SerializeToString(&buffer);
      WorkerRequest parsed_request;
      parsed_request.ParseFromString(buffer);
      response.SerializeToString(&buffer);
      WorkerResponse parsed_response;
      parsed_response.ParseFromString(buffer);
    }
    samples.push_back(Micros(Clock::now() - start) / kExecutorBatch);
  }
  Report("frame_codec", samples);
}

// The transport alone, to a forked process that answers every frame.
void BenchChannelEcho() {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    Die("socketpair", absl::InternalError(std::strerror(errno)));
  }
  const pid_t child = fork();
  if (child == 0) {
    ::close(fds[0]);
    worker::FrameChannel channel(fds[1]);
    WorkerResponse answer;
    answer.mutable_status();
    answer.mutable_call()->mutable_result()->set_int_value(5);
    WorkerRequest request;
    while (channel.Receive(&request).ok()) {
      answer.set_id(request.id());
      if (!channel.Send(answer).ok()) break;
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  {
    worker::FrameChannel channel(fds[0]);
    WorkerRequest request =
        CallRequest("fn_b0a7b0a7_0123456789abcdef0123456789abcdef");
    WorkerResponse response;
    std::vector<double> samples;
    for (int i = 0; i < round_trips / 10 + round_trips; ++i) {
      const Clock::time_point start = Clock::now();
      if (!channel.Send(request).ok() || !channel.Receive(&response).ok()) {
        Die("channel echo", absl::InternalError("the echo process failed"));
      }
      if (i >= round_trips / 10) samples.push_back(Micros(Clock::now() - start));
    }
    Report("channel_echo", samples);
  }
  int status = 0;
  waitpid(child, &status, 0);
}

// One side's frame and the other's turn, in memory both processes map.
struct FutexMailbox {
  // Bumped by the daemon's side when a request is in `frame`, and by the
  // worker's side when the answer is: each side sleeps on the other's.
  std::atomic<uint32_t> requests{0};
  std::atomic<uint32_t> answers{0};
  uint32_t size = 0;  // of the frame in `frame`; 0 ends the echo
  char frame[4096];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free,
              "the futex word must be a plain 32-bit word");

// Sleeps until `word` is no longer `seen` (no spinning: a 2-vCPU machine
// has no core to spare for it), and returns its new value.
uint32_t AwaitChange(std::atomic<uint32_t>& word, uint32_t seen) {
  for (;;) {
    const uint32_t now = word.load(std::memory_order_acquire);
    if (now != seen) return now;
    // Shared between processes, so not FUTEX_PRIVATE_FLAG.
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, seen,
            nullptr, nullptr, 0);
  }
}

void Bump(std::atomic<uint32_t>& word) {
  word.fetch_add(1, std::memory_order_release);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, 1,
          nullptr, nullptr, 0);
}

// The same echo as BenchChannelEcho through shared memory and futexes.
void BenchFutexEcho() {
  void* shared = mmap(nullptr, sizeof(FutexMailbox), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) {
    Die("mmap", absl::InternalError(std::strerror(errno)));
  }
  auto* mailbox = new (shared) FutexMailbox();
  const pid_t child = fork();
  if (child == 0) {
    WorkerResponse answer;
    answer.mutable_status();
    answer.mutable_call()->mutable_result()->set_int_value(5);
    WorkerRequest request;
    uint32_t seen = 0;
    for (;;) {
      seen = AwaitChange(mailbox->requests, seen);
      if (mailbox->size == 0 ||
          !request.ParseFromArray(mailbox->frame, mailbox->size)) {
        break;
      }
      answer.set_id(request.id());
      mailbox->size = answer.ByteSizeLong();
      answer.SerializeToArray(mailbox->frame, sizeof(mailbox->frame));
      Bump(mailbox->answers);
    }
    ::_exit(0);
  }
  WorkerRequest request =
      CallRequest("fn_b0a7b0a7_0123456789abcdef0123456789abcdef");
  WorkerResponse response;
  std::vector<double> samples;
  uint32_t seen = 0;
  for (int i = 0; i < round_trips / 10 + round_trips; ++i) {
    const Clock::time_point start = Clock::now();
    mailbox->size = request.ByteSizeLong();
    request.SerializeToArray(mailbox->frame, sizeof(mailbox->frame));
    Bump(mailbox->requests);
    seen = AwaitChange(mailbox->answers, seen);
    if (!response.ParseFromArray(mailbox->frame, mailbox->size)) {
      Die("futex echo", absl::InternalError("the echo process failed"));
    }
    if (i >= round_trips / 10) samples.push_back(Micros(Clock::now() - start));
  }
  Report("futex_echo", samples);
  mailbox->size = 0;
  Bump(mailbox->requests);
  int status = 0;
  waitpid(child, &status, 0);
  munmap(shared, sizeof(FutexMailbox));
}

// The daemon's side of the hop, on a real worker.
void BenchWorkerExecute(const std::string& worker_path,
                        const std::string& fixture) {
  absl::StatusOr<std::unique_ptr<server::WorkerProcess>> process =
      server::WorkerProcess::Start(worker_path, "b0a7b0a8");
  if (!process.ok()) Die("starting the worker", process.status());
  server::WorkerProcess& worker = **process;
  absl::StatusOr<WorkerResponse> loaded = worker.Execute(
      LoadRequest(fixture), absl::InfiniteFuture(), "loading the fixture");
  if (!loaded.ok()) Die("loading the fixture", loaded.status());
  absl::StatusOr<WorkerResponse> resolved = worker.Execute(
      ResolveRequest(loaded->load_library().library()),
      absl::InfiniteFuture(), "resolving fx_add");
  if (!resolved.ok()) Die("resolving fx_add", resolved.status());
  const WorkerRequest call =
      CallRequest(resolved->resolve_function().function());
  std::vector<double> samples;
  for (int i = 0; i < round_trips / 10 + round_trips; ++i) {
    const Clock::time_point start = Clock::now();
    absl::StatusOr<WorkerResponse> answer =
        worker.Execute(call, absl::InfiniteFuture(), "calling 'fx_add'",
                       "fx_add");
    const Clock::time_point end = Clock::now();
    if (!answer.ok()) Die("calling fx_add", answer.status());
    if (i >= round_trips / 10) samples.push_back(Micros(end - start));
  }
  Report("worker_execute", samples);
  worker.Shutdown();
}

// --client=ADDRESS: a client of a running daemon for profiling it (see
// docs/performance.md): a session, the fixture, `warm` calls of fx_add, then
// "READY" on stdout and a line awaited on stdin, `calls` calls, "DONE" and
// another line awaited. Between the two lines the daemon and its worker do
// exactly `calls` Calls, so an instruction count (callgrind_control -z at
// READY, -d at DONE) divided by it is the cost of one.
// With --timed: no pauses; prints the median and p99 of the calls instead.
// With --no-stream: the session has no Connect stream attached.
int RunClient(const std::string& address, const std::string& fixture,
              int calls, bool timed, bool stream) {
  absl::StatusOr<std::unique_ptr<client::Client>> connected =
      client::Client::Connect(address);
  if (!connected.ok()) Die("connecting", connected.status());
  client::SessionOptions options;
  options.attach_stream = stream;
  absl::StatusOr<std::unique_ptr<client::Session>> session =
      (*connected)->CreateSession(options);
  if (!session.ok()) Die("creating a session", session.status());
  absl::StatusOr<client::Library> library = (*session)->LoadLibrary(fixture);
  if (!library.ok()) Die("loading the fixture", library.status());
  absl::StatusOr<client::Function> add =
      (*session)->ResolveFunction(*library, "int fx_add(int a, int b)");
  if (!add.ok()) Die("resolving fx_add", add.status());
  auto call = [&] {
    absl::StatusOr<v1::CallResponse> response =
        (*session)->Call(*add, {client::MakeInt(2), client::MakeInt(3)});
    if (!response.ok()) Die("calling fx_add", response.status());
  };
  for (int i = 0; i < 100; ++i) call();
  if (timed) {
    std::vector<double> samples;
    for (int i = 0; i < calls; ++i) {
      const Clock::time_point start = Clock::now();
      call();
      samples.push_back(Micros(Clock::now() - start));
    }
    Report(stream ? "call_stream" : "call_no_stream", samples);
    return 0;
  }
  char line[64];
  std::printf("READY\n");
  std::fflush(stdout);
  if (std::fgets(line, sizeof(line), stdin) == nullptr) return 1;
  for (int i = 0; i < calls; ++i) call();
  std::printf("DONE\n");
  std::fflush(stdout);
  if (std::fgets(line, sizeof(line), stdin) == nullptr) return 1;
  return 0;
}

}  // namespace
}  // namespace ffid::bench

int main(int argc, char** argv) {
  using namespace ffid::bench;  // NOLINT(build/namespaces)
  std::string worker_path = FFID_BENCH_WORKER_PATH;
  std::string fixture = FFID_BENCH_FIXTURE_PATH;
  std::string json_path;
  std::string client_address;
  int calls = 1000;
  bool timed = false;
  bool stream = true;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--quick") {
      round_trips = 300;
      executor_batches = 20;
      batch_steps = 1000;
      batch_repeats = 3;
    } else if (absl::StartsWith(arg, "--figures_json=")) {
      json_path = std::string(arg.substr(std::strlen("--figures_json=")));
    } else if (absl::StartsWith(arg, "--client=")) {
      client_address = std::string(arg.substr(std::strlen("--client=")));
    } else if (arg == "--timed") {
      timed = true;
    } else if (arg == "--no-stream") {
      stream = false;
    } else if (absl::StartsWith(arg, "--calls=")) {
      calls = std::atoi(argv[i] + std::strlen("--calls="));
    } else if (absl::StartsWith(arg, "--worker=")) {
      worker_path = std::string(arg.substr(std::strlen("--worker=")));
    } else {
      std::fprintf(stderr,
                   "usage: hop_bench [--quick] [--figures_json=FILE] "
                   "[--worker=PATH]\n"
                   "       hop_bench --client=ADDRESS [--calls=N] [--timed] "
                   "[--no-stream]\n");
      return 2;
    }
  }
  if (!client_address.empty()) {
    return RunClient(client_address, fixture, calls, timed, stream);
  }
  std::printf("%-16s | %10s | %10s\n", "hop", "median_us", "p99_us");
  // Fork before any thread exists.
  BenchChannelEcho();
  BenchFutexEcho();
  BenchCodec();
  BenchExecutor(fixture);
  BenchWorkerExecute(worker_path, fixture);
  if (!json_path.empty()) {
    FILE* out = std::fopen(json_path.c_str(), "w");
    if (out == nullptr) {
      std::perror(json_path.c_str());
      return 1;
    }
    std::fprintf(out, "{");
    bool first = true;
    for (const Figure& figure : Figures()) {
      std::fprintf(out, "%s\"%s_us_median\": %.3f, \"%s_us_p99\": %.3f",
                   first ? "" : ", ", figure.name.c_str(), figure.median_us,
                   figure.name.c_str(), figure.p99_us);
      first = false;
    }
    std::fprintf(out, "}\n");
    std::fclose(out);
  }
  return 0;
}
