// call_latency_bench: the latency of one ffid Call against baselines measured
// in the same run (see bench/README.md and DESIGN.md "Performance targets").
//
// Figures, each timed per round trip (median and p99):
//   echo_process - a unary Echo RPC (16-byte payload) to bench/echo_server,
//           a sync gRPC server in a process of its own (as the daemon is) on
//           a temporary unix socket: the floor a Call is held to.
//   echo  - the same Echo to a server in this process (reference: no
//           process wake-up on the server's side).
//   server_info - GetServerInfo on the daemon: its gRPC path, no worker.
//   call_raw - the Call RPC with a CallRequest built once (no client
//           library): server_info plus the daemon -> worker hop.
//   call  - Session::Call of `int fx_add(int, int)` on the real daemon (a
//           child process on its own temporary unix socket) and its worker;
//           the client sends it on a CallStream kept open. It and
//           echo_process are timed in alternating rounds (kRounds).
//   echo_stream_process - the Echo's 16 bytes there and back on one
//           EchoStream kept open to bench/echo_server (reference: what one
//           message each way costs, as a call on a CallStream pays).
//   call_async - CallAsync on the Connect stream, one at a time
//           (reference).
//   ffi   - ffi_call of a local function with a prepared cif, in-process.
//   callback - a callback round trip as native code sees it: the callbacks
//           fixture's fxc_time_calls calls a client callback (int echo(int),
//           a C++ std::function) 3,000 times and times each call with
//           CLOCK_MONOTONIC: worker -> daemon -> client's Connect stream ->
//           client -> back to the waiting native thread.
//   call_cb - Session::Call of fxc_call_once, which calls that callback
//           once: a whole call with one callback inside.
// The daemon is stopped with SIGTERM at the end (and, should this process die
// first, by PR_SET_PDEATHSIG); nothing is left behind.
#include <ffi.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "bench/echo_service.grpc.pb.h"
#include "bench/echo_service.pb.h"
#include "benchmark/benchmark.h"
#include "absl/types/span.h"
#include "clients/cpp/ffid/arena.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "grpcpp/grpcpp.h"

namespace ffid::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Sizes of the run; --quick (the smoke run CI makes) shrinks them.
int kWarmupRoundTrips = 200;
int kRoundTrips = 3000;
// The Call and the echo it is held to are timed in this many alternating
// rounds (kRoundTrips in all), so that the machine's drift over a run (the
// other vCPU waking, frequency, other processes) falls on both alike.
int kRounds = 10;
// ffi_call is too fast to time one by one: each sample is the mean of a batch.
constexpr int kFfiBatch = 1000;
int kFfiBatches = 2000;
// Calls in flight at once on the Connect stream, and how many in all.
int kPipelinedCalls = 20000;
// Bytes moved by Write + Read and by the gRPC streams they are compared to.
uint64_t kBulkBytes = uint64_t{64} << 20;
constexpr uint64_t kStreamChunk = uint64_t{1} << 20;
int kBulkRepeats = 7;
int kSessionCreates = 20;
// Calls in one Batch.
int kBatchCalls = 10000;
constexpr double kCallVsEchoTarget = 1.3;

// Scalar figures for bench/run (--figures_json), by key.
std::map<std::string, double>& Figures() {
  static auto* figures = new std::map<std::string, double>();
  return *figures;
}

// Per-round-trip latencies in microseconds, by figure name.
std::map<std::string, std::vector<double>>& Samples() {
  static auto* samples = new std::map<std::string, std::vector<double>>();
  return *samples;
}

double Percentile(std::vector<double> values, double fraction) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t index = std::min(
      values.size() - 1, static_cast<size_t>(fraction * (values.size() - 1) + 0.5));
  return values[index];
}

// Untimed round trips before timing `key`: fewer when an earlier round of
// it warmed the path up already.
int Warmup(const std::string& key) {
  return Samples()[key].empty() ? kWarmupRoundTrips : kWarmupRoundTrips / 10;
}

// Records one timed round trip with the framework and in our samples.
void Record(benchmark::State& state, std::vector<double>& samples,
            Clock::duration elapsed) {
  const double seconds = std::chrono::duration<double>(elapsed).count();
  state.SetIterationTime(seconds);
  samples.push_back(seconds * 1e6);
}

void SetCounters(benchmark::State& state, const std::vector<double>& samples) {
  state.counters["median_us"] = Percentile(samples, 0.5);
  state.counters["p99_us"] = Percentile(samples, 0.99);
}

// ---------------------------------------------------------------- echo

class EchoServiceImpl final : public EchoService::Service {
  grpc::Status Echo(grpc::ServerContext*, const EchoRequest* request,
                    EchoResponse* response) override {
    response->set_payload(request->payload());
    return grpc::Status::OK;
  }
  grpc::Status Upload(grpc::ServerContext*,
                      grpc::ServerReader<EchoRequest>* reader,
                      EchoResponse* response) override {
    EchoRequest chunk;
    uint64_t received = 0;
    while (reader->Read(&chunk)) received += chunk.payload().size();
    response->set_received(received);
    return grpc::Status::OK;
  }
  grpc::Status Download(grpc::ServerContext*, const DownloadRequest* request,
                        grpc::ServerWriter<EchoResponse>* writer) override {
    EchoResponse chunk;
    const uint64_t step = std::max<uint64_t>(1, request->chunk());
    const std::string block(step, 'd');
    for (uint64_t sent = 0; sent < request->size(); sent += step) {
      chunk.set_payload(block.data(), std::min(step, request->size() - sent));
      if (!writer->Write(chunk)) break;
    }
    return grpc::Status::OK;
  }
};

// The same channel settings as ffid::client::Client::Connect, so both figures
// pay for the same transport.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

// Times one unary RPC per iteration into Samples()[key], after
// kWarmupRoundTrips untimed ones: `round_trip(context)` makes it on a fresh
// context (made before the clock starts) and says whether it answered
// right; the first that did not stops the benchmark with `failure`.
template <typename RoundTrip>
void TimeUnary(benchmark::State& state, const char* key, RoundTrip round_trip,
               const char* failure) {
  for (int i = 0; i < Warmup(key); ++i) {
    grpc::ClientContext context;
    (void)round_trip(context);
  }
  std::vector<double>& samples = Samples()[key];
  for (auto _ : state) {
    grpc::ClientContext context;
    const Clock::time_point start = Clock::now();
    const bool answered_right = round_trip(context);
    Record(state, samples, Clock::now() - start);
    if (!answered_right) {
      state.SkipWithError(failure);
      return;
    }
  }
  SetCounters(state, samples);
}

// `key`: the samples' name ("echo": the server in this process; "echo_process":
// bench/echo_server in its own process, as the daemon is).
void BM_GrpcEcho(benchmark::State& state, EchoService::Stub* stub,
                 const char* key) {
  EchoRequest request;
  request.set_payload(std::string(16, 'x'));
  EchoResponse response;
  TimeUnary(
      state, key,
      [&](grpc::ClientContext& context) {
        return stub->Echo(&context, request, &response).ok() &&
               response.payload().size() == 16;
      },
      "Echo failed");
}

// 16 bytes there and back on one EchoStream kept open: a call's cost on a
// stream, for reference (the baseline is the unary Echo).
void BM_GrpcEchoStream(benchmark::State& state, EchoService::Stub* stub) {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<EchoRequest, EchoResponse>> stream =
      stub->EchoStream(&context);
  EchoRequest request;
  request.set_payload(std::string(16, 'x'));
  EchoResponse response;
  std::vector<double>& samples = Samples()["echo_stream_process"];
  for (int i = 0; i < kWarmupRoundTrips; ++i) {
    (void)stream->Write(request);
    (void)stream->Read(&response);
  }
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    const bool ok = stream->Write(request) && stream->Read(&response);
    Record(state, samples, Clock::now() - start);
    if (!ok || response.payload().size() != 16) {
      state.SkipWithError("EchoStream failed");
      return;
    }
  }
  stream->WritesDone();
  (void)stream->Finish();
  SetCounters(state, samples);
}

// ---------------------------------------------------------------- ffid

// The daemon binary: this build's, or --ffid_binary's (to compare two
// builds of it in alternating runs).
std::string& DaemonPath() {
  static std::string* const path = new std::string(FFID_BENCH_FFID_PATH);
  return *path;
}

// A server run as a child process (the real daemon, or bench/echo_server)
// listening on a unix socket in a temporary directory; its stderr goes to a
// log file beside it.
class ChildProcess {
 public:
  // The real daemon, allowed the fixtures' directory.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> StartDaemon(
      const std::string& temp_dir) {
    const std::string fixture = FFID_BENCH_FIXTURE_PATH;
    const std::string fixture_dir = fixture.substr(0, fixture.rfind('/'));
    const std::string socket_path = temp_dir + "/ffid.sock";
    std::vector<std::string> args = {
        DaemonPath(), "--listen", "unix:" + socket_path,
        "--allow-library", fixture_dir + "/*"};
    // Naming one --allow-library replaces the defaults: name them again.
    for (const char* glob : {"/lib/*", "/lib64/*", "/usr/lib/*",
                             "/usr/lib64/*", "/usr/local/lib/*"}) {
      args.push_back("--allow-library");
      args.push_back(glob);
    }
    return Start(std::move(args), socket_path, temp_dir + "/ffid.log");
  }

  // The bare echo server in its own process.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> StartEcho(
      const std::string& temp_dir) {
    const std::string socket_path = temp_dir + "/echo-process.sock";
    return Start({FFID_BENCH_ECHO_SERVER_PATH, "unix:" + socket_path},
                 socket_path, temp_dir + "/echo-process.log");
  }

  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      std::vector<std::string> args, const std::string& socket_path,
      const std::string& log_path) {
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);

    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      // Never outlive the bench, even if it crashes.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(127);
      FILE* log = std::fopen(log_path.c_str(), "w");
      if (log != nullptr) dup2(fileno(log), STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
    auto child = std::unique_ptr<ChildProcess>(
        new ChildProcess(pid, "unix:" + socket_path, log_path));
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    struct stat info;
    while (stat(socket_path.c_str(), &info) != 0) {
      int wstatus = 0;
      if (waitpid(pid, &wstatus, WNOHANG) == pid) {
        child->pid_ = 0;
        return absl::UnavailableError(absl::StrCat(
            args[0], " exited before listening; its log:\n", child->Log()));
      }
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            args[0], " did not create ", socket_path, " within 30s; its log:\n",
            child->Log()));
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return child;
  }

  // Stops the server: SIGTERM, then SIGKILL after a grace period.
  ~ChildProcess() {
    if (pid_ == 0) return;
    kill(pid_, SIGTERM);
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    int wstatus = 0;
    while (waitpid(pid_, &wstatus, WNOHANG) == 0) {
      if (absl::Now() > deadline) {
        std::fprintf(stderr, "pid %d did not stop on SIGTERM; killing it\n",
                     static_cast<int>(pid_));
        kill(pid_, SIGKILL);
        waitpid(pid_, &wstatus, 0);
        break;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    std::remove(log_path_.c_str());
  }

  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }

  std::string Log() const {
    std::string text;
    if (FILE* log = std::fopen(log_path_.c_str(), "r")) {
      char buffer[4096];
      size_t n;
      while ((n = std::fread(buffer, 1, sizeof(buffer), log)) > 0) {
        text.append(buffer, n);
      }
      std::fclose(log);
    }
    return text;
  }

 private:
  ChildProcess(pid_t pid, std::string address, std::string log_path)
      : pid_(pid), address_(std::move(address)), log_path_(std::move(log_path)) {}

  pid_t pid_;
  std::string address_;
  std::string log_path_;
};

struct FfidTarget {
  client::Session* session;
  client::Function function;
  // For the callback figures: a session of their own, since a session with
  // callbacks registered reads its Connect stream all the time (which costs
  // its other calls a thread hand-off; see client.h).
  client::Session* callback_session;
  client::Function time_calls;
  client::Function call_once;
  client::Callback echo;
};

// Times `call` (a Session call of something that returns 42) once per
// iteration into Samples()[key], after kWarmupRoundTrips untimed. A failed
// call stops the benchmark with its error, another answer with
// `wrong_answer`.
template <typename Call>
void TimeCalls(benchmark::State& state, const char* key, Call call,
               const char* wrong_answer) {
  for (int i = 0; i < Warmup(key); ++i) (void)call();
  std::vector<double>& samples = Samples()[key];
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    absl::StatusOr<v1::CallResponse> response = call();
    Record(state, samples, Clock::now() - start);
    if (!response.ok()) {
      state.SkipWithError(std::string(response.status().message()).c_str());
      return;
    }
    if (response->result().int_value() != 42) {
      state.SkipWithError(wrong_answer);
      return;
    }
  }
  SetCounters(state, samples);
}

void BM_FfidCall(benchmark::State& state, FfidTarget* target) {
  const std::vector<v1::Value> arguments = {client::MakeInt(2),
                                            client::MakeInt(40)};
  TimeCalls(
      state, "call",
      [&] { return target->session->Call(target->function, arguments); },
      "fx_add(2, 40) did not return 42");
}

// One call at a time on the Connect stream: CallAsync, then wait for it.
void BM_FfidCallOnStream(benchmark::State& state, FfidTarget* target) {
  const std::vector<v1::Value> arguments = {client::MakeInt(2),
                                            client::MakeInt(40)};
  TimeCalls(
      state, "call_async",
      [&] {
        return target->session->CallAsync(target->function, arguments).get();
      },
      "fx_add(2, 40) on the stream did not return 42");
}

// The daemon's own gRPC path, no session or worker: GetServerInfo on a
// channel of its own (the client library's settings).
void BM_ServerInfo(benchmark::State& state, v1::Ffi::Stub* stub) {
  v1::GetServerInfoRequest request;
  v1::GetServerInfoResponse response;
  TimeUnary(
      state, "server_info",
      [&](grpc::ClientContext& context) {
        return stub->GetServerInfo(&context, request, &response).ok();
      },
      "GetServerInfo failed");
}

// The Call RPC without the client library: the CallRequest is built once.
void BM_FfidCallRaw(benchmark::State& state, v1::Ffi::Stub* stub,
                    FfidTarget* target) {
  v1::CallRequest request;
  request.set_session(target->session->id());
  request.set_function(target->function.handle);
  *request.add_arguments() = client::MakeInt(2);
  *request.add_arguments() = client::MakeInt(40);
  v1::CallResponse response;
  TimeUnary(
      state, "call_raw",
      [&](grpc::ClientContext& context) {
        return stub->Call(&context, request, &response).ok() &&
               response.result().int_value() == 42;
      },
      "the raw Call RPC of fx_add(2, 40) failed");
}

void BM_CallbackRoundTrip(benchmark::State& state, FfidTarget* target) {
  client::Session& session = *target->callback_session;
  absl::StatusOr<client::Memory> buffer =
      session.Allocate(sizeof(int64_t) * kRoundTrips);
  if (!buffer.ok()) {
    state.SkipWithError(std::string(buffer.status().message()).c_str());
    return;
  }
  std::vector<double>& samples = Samples()["callback"];
  for (auto _ : state) {
    // Warm-up, then the timed run; the native side times each call.
    for (int count : {kWarmupRoundTrips, kRoundTrips}) {
      absl::StatusOr<v1::CallResponse> response = session.Call(
          target->time_calls, {target->echo.value(), client::MakeInt(count),
                               client::MakePointer(buffer->handle)});
      if (!response.ok()) {
        state.SkipWithError(std::string(response.status().message()).c_str());
        return;
      }
    }
    absl::StatusOr<std::string> bytes =
        session.Read(buffer->handle, 0, sizeof(int64_t) * kRoundTrips);
    if (!bytes.ok()) {
      state.SkipWithError(std::string(bytes.status().message()).c_str());
      return;
    }
    double total = 0;
    for (int i = 0; i < kRoundTrips; ++i) {
      int64_t ns;
      std::memcpy(&ns, bytes->data() + i * sizeof(ns), sizeof(ns));
      samples.push_back(ns / 1e3);
      total += ns / 1e9;
    }
    state.SetIterationTime(total / kRoundTrips);
  }
  (void)session.Free(buffer->handle);
  SetCounters(state, samples);
}

void BM_CallWithCallback(benchmark::State& state, FfidTarget* target) {
  const std::vector<v1::Value> arguments = {target->echo.value(),
                                            client::MakeInt(42)};
  TimeCalls(
      state, "call_cb",
      [&] {
        return target->callback_session->Call(target->call_once, arguments);
      },
      "fxc_call_once(echo, 42) did not return 42");
}

// Bytes per second of `bytes` moved in `elapsed`, in GB/s (10^9).
double GigabytesPerSecond(uint64_t bytes, Clock::duration elapsed) {
  return bytes / std::chrono::duration<double>(elapsed).count() / 1e9;
}

// gRPC streaming of kBulkBytes up (client stream) and down (server stream)
// in 1 MiB messages, the baseline of Write + Read of as many bytes: how long
// each direction took.
absl::Status StreamUpDown(EchoService::Stub* stub, Clock::duration* up,
                          Clock::duration* down) {
  static const std::string* const block =
      new std::string(kStreamChunk, 'u');
  const Clock::time_point start = Clock::now();
  {
    grpc::ClientContext context;
    EchoResponse response;
    std::unique_ptr<grpc::ClientWriter<EchoRequest>> writer =
        stub->Upload(&context, &response);
    EchoRequest chunk;
    for (uint64_t sent = 0; sent < kBulkBytes; sent += kStreamChunk) {
      chunk.set_payload(*block);
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    if (!writer->Finish().ok() || response.received() != kBulkBytes) {
      return absl::InternalError("Upload failed");
    }
  }
  const Clock::time_point between = Clock::now();
  {
    grpc::ClientContext context;
    DownloadRequest request;
    request.set_size(kBulkBytes);
    request.set_chunk(kStreamChunk);
    std::unique_ptr<grpc::ClientReader<EchoResponse>> reader =
        stub->Download(&context, request);
    EchoResponse chunk;
    uint64_t received = 0;
    while (reader->Read(&chunk)) received += chunk.payload().size();
    if (!reader->Finish().ok() || received != kBulkBytes) {
      return absl::InternalError("Download failed");
    }
  }
  *up = between - start;
  *down = Clock::now() - between;
  return absl::OkStatus();
}

void BM_GrpcStream(benchmark::State& state, EchoService::Stub* stub) {
  std::vector<double> rates;
  std::vector<double> up_rates;
  std::vector<double> down_rates;
  for (auto _ : state) {
    Clock::duration up;
    Clock::duration down;
    const absl::Status streamed = StreamUpDown(stub, &up, &down);
    if (!streamed.ok()) {
      state.SkipWithError(std::string(streamed.message()).c_str());
      return;
    }
    state.SetIterationTime(std::chrono::duration<double>(up + down).count());
    rates.push_back(GigabytesPerSecond(2 * kBulkBytes, up + down));
    up_rates.push_back(GigabytesPerSecond(kBulkBytes, up));
    down_rates.push_back(GigabytesPerSecond(kBulkBytes, down));
  }
  const double rate = Percentile(rates, 0.5);
  state.counters["GB_per_s"] = rate;
  state.counters["up_GB_per_s"] = Percentile(up_rates, 0.5);
  state.counters["down_GB_per_s"] = Percentile(down_rates, 0.5);
  Figures()["grpc_stream_gb_per_s"] = rate;
}

// kBulkBytes up and back down in one unary Echo each way: what one big
// unary message costs this transport (reference for Read/Write, which are
// unary RPCs).
void BM_GrpcUnaryBulk(benchmark::State& state, EchoService::Stub* stub) {
  EchoRequest request;
  request.set_payload(std::string(kBulkBytes, 'u'));
  std::vector<double> rates;
  for (auto _ : state) {
    grpc::ClientContext context;
    EchoResponse response;
    const Clock::time_point start = Clock::now();
    const grpc::Status status = stub->Echo(&context, request, &response);
    const Clock::duration elapsed = Clock::now() - start;
    if (!status.ok() || response.payload().size() != kBulkBytes) {
      state.SkipWithError("the bulk Echo failed");
      return;
    }
    state.SetIterationTime(std::chrono::duration<double>(elapsed).count());
    rates.push_back(GigabytesPerSecond(2 * kBulkBytes, elapsed));
  }
  const double rate = Percentile(rates, 0.5);
  state.counters["GB_per_s"] = rate;
  Figures()["grpc_unary_bulk_gb_per_s"] = rate;
}

// Session::Write of kBulkBytes into an allocation, then Session::Read of
// them back, through gRPC. With ALLOCATION_PLACEMENT_ARENA the daemon copies
// straight between the gRPC message and the session's arena (figure
// `rw_gb_per_s`); heap memory takes the round trip to the worker (figure
// `rw_heap_gb_per_s`, for reference).
//
// With `paired_stub`, each iteration first streams the same bytes up and
// down through it (StreamUpDown): the baseline taken in turn with ffid's
// transfers, so that both see the same load (figure
// `grpc_stream_paired_gb_per_s`, which bench/run divides by).
void BM_FfidReadWrite(benchmark::State& state, FfidTarget* target,
                      v1::AllocationPlacement placement,
                      EchoService::Stub* paired_stub) {
  client::Session& session = *target->session;
  absl::StatusOr<client::Memory> memory =
      session.Allocate(kBulkBytes, "", placement);
  if (!memory.ok()) {
    state.SkipWithError(std::string(memory.status().message()).c_str());
    return;
  }
  const std::string data(kBulkBytes, 'w');
  // Read back into one buffer, as the writes come from one: the baseline
  // receives into one message too.
  std::string back(kBulkBytes, '\0');
  std::vector<double> rates;
  std::vector<double> write_rates;
  std::vector<double> read_rates;
  std::vector<double> paired_rates;
  for (auto _ : state) {
    if (paired_stub != nullptr) {
      Clock::duration up;
      Clock::duration down;
      const absl::Status streamed = StreamUpDown(paired_stub, &up, &down);
      if (!streamed.ok()) {
        state.SkipWithError(std::string(streamed.message()).c_str());
        return;
      }
      paired_rates.push_back(GigabytesPerSecond(2 * kBulkBytes, up + down));
    }
    const Clock::time_point start = Clock::now();
    const absl::Status written = session.Write(memory->handle, 0, data);
    const Clock::time_point between = Clock::now();
    const absl::Status read =
        session.ReadInto(memory->handle, 0, absl::MakeSpan(back));
    const Clock::duration elapsed = Clock::now() - start;
    write_rates.push_back(GigabytesPerSecond(kBulkBytes, between - start));
    read_rates.push_back(
        GigabytesPerSecond(kBulkBytes, Clock::now() - between));
    if (!written.ok() || !read.ok()) {
      state.SkipWithError("Write or Read of the bulk block failed");
      return;
    }
    state.SetIterationTime(std::chrono::duration<double>(elapsed).count());
    rates.push_back(GigabytesPerSecond(2 * kBulkBytes, elapsed));
  }
  (void)session.Free(memory->handle);
  if (back != data) {
    state.SkipWithError("Read did not give back the bytes written");
    return;
  }
  const double rate = Percentile(rates, 0.5);
  state.counters["GB_per_s"] = rate;
  state.counters["write_GB_per_s"] = Percentile(write_rates, 0.5);
  state.counters["read_GB_per_s"] = Percentile(read_rates, 0.5);
  if (!paired_rates.empty()) {
    state.counters["stream_GB_per_s"] = Percentile(paired_rates, 0.5);
    Figures()["grpc_stream_paired_gb_per_s"] = Percentile(paired_rates, 0.5);
  }
  Figures()[placement == v1::ALLOCATION_PLACEMENT_ARENA ? "rw_gb_per_s"
                                                        : "rw_heap_gb_per_s"] =
      rate;
}

// A local client on the mapped arena: kBulkBytes copied into arena memory
// and back out of it through the client's own mapping (no RPC), against
// the same two memcpy()s between private buffers of this process.
void BM_MappedArena(benchmark::State& state, FfidTarget* target) {
  client::Session& session = *target->session;
  absl::StatusOr<std::shared_ptr<client::Arena>> arena = session.MapArena();
  absl::StatusOr<client::Memory> memory =
      arena.ok() ? session.Allocate(kBulkBytes, "",
                                    v1::ALLOCATION_PLACEMENT_ARENA)
                 : absl::StatusOr<client::Memory>(arena.status());
  if (!memory.ok()) {
    state.SkipWithError(std::string(memory.status().message()).c_str());
    return;
  }
  absl::StatusOr<absl::Span<char>> mapped = (*arena)->Bytes(*memory);
  if (!mapped.ok()) {
    state.SkipWithError(std::string(mapped.status().message()).c_str());
    return;
  }
  std::string source(kBulkBytes, 'm');
  std::string back(kBulkBytes, 'b');
  std::string middle(kBulkBytes, 'p');
  // Both destinations faulted in before timing.
  std::memset(mapped->data(), 1, kBulkBytes);
  std::vector<double> mapped_rates;
  std::vector<double> memcpy_rates;
  for (auto _ : state) {
    Clock::time_point start = Clock::now();
    std::memcpy(mapped->data(), source.data(), kBulkBytes);
    std::memcpy(back.data(), mapped->data(), kBulkBytes);
    benchmark::DoNotOptimize(back.data());
    Clock::duration elapsed = Clock::now() - start;
    state.SetIterationTime(std::chrono::duration<double>(elapsed).count());
    mapped_rates.push_back(GigabytesPerSecond(2 * kBulkBytes, elapsed));
    start = Clock::now();
    std::memcpy(middle.data(), source.data(), kBulkBytes);
    std::memcpy(back.data(), middle.data(), kBulkBytes);
    benchmark::DoNotOptimize(back.data());
    elapsed = Clock::now() - start;
    memcpy_rates.push_back(GigabytesPerSecond(2 * kBulkBytes, elapsed));
  }
  (void)session.Free(memory->handle);
  const double mapped_rate = Percentile(mapped_rates, 0.5);
  const double memcpy_rate = Percentile(memcpy_rates, 0.5);
  state.counters["GB_per_s"] = mapped_rate;
  state.counters["memcpy_GB_per_s"] = memcpy_rate;
  Figures()["mapped_gb_per_s"] = mapped_rate;
  Figures()["memcpy_gb_per_s"] = memcpy_rate;
  if (memcpy_rate > 0) {
    Figures()["mapped_vs_memcpy_ratio"] = mapped_rate / memcpy_rate;
  }
}

// kPipelinedCalls calls of fx_add sent with CallAsync on the Connect stream
// without waiting, then every answer collected.
void BM_Pipelined(benchmark::State& state, FfidTarget* target) {
  std::vector<double> rates;
  for (auto _ : state) {
    std::vector<std::future<absl::StatusOr<v1::CallResponse>>> futures;
    futures.reserve(kPipelinedCalls);
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < kPipelinedCalls; ++i) {
      futures.push_back(target->session->CallAsync(
          target->function, {client::MakeInt(i), client::MakeInt(1)}));
    }
    for (int i = 0; i < kPipelinedCalls; ++i) {
      absl::StatusOr<v1::CallResponse> response = futures[i].get();
      if (!response.ok() || response->result().int_value() != i + 1) {
        state.SkipWithError("a pipelined fx_add failed");
        return;
      }
    }
    const Clock::duration elapsed = Clock::now() - start;
    state.SetIterationTime(std::chrono::duration<double>(elapsed).count());
    rates.push_back(kPipelinedCalls /
                    std::chrono::duration<double>(elapsed).count());
  }
  const double rate = Percentile(rates, 0.5);
  state.counters["calls_per_s"] = rate;
  Figures()["pipelined_calls_per_s"] = rate;
}

// Times Session::Batch of `steps` (kBatchCalls calls in all) to its
// return, once per iteration; `answered_right` checks each response (else
// the benchmark stops with `failure`). The
// median rate goes to the counter and to the figure `key`.
void TimeBatches(benchmark::State& state, FfidTarget& target,
                 const std::vector<v1::BatchStep>& steps, const char* key,
                 const char* failure,
                 bool (*answered_right)(const v1::BatchResponse&)) {
  std::vector<double> rates;
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    absl::StatusOr<v1::BatchResponse> response = target.session->Batch(steps);
    const Clock::duration elapsed = Clock::now() - start;
    if (!response.ok() || !answered_right(*response)) {
      state.SkipWithError(failure);
      return;
    }
    state.SetIterationTime(std::chrono::duration<double>(elapsed).count());
    rates.push_back(kBatchCalls /
                    std::chrono::duration<double>(elapsed).count());
  }
  const double rate = Percentile(rates, 0.5);
  state.counters["calls_per_s"] = rate;
  Figures()[key] = rate;
}

// One Batch of kBatchCalls call steps of fx_add, every result returned; timed
// from Session::Batch (which copies the steps into the request) to its
// return.
void BM_Batch(benchmark::State& state, FfidTarget* target) {
  std::vector<v1::BatchStep> steps(kBatchCalls);
  for (int i = 0; i < kBatchCalls; ++i) {
    v1::CallRequest* call = steps[i].mutable_call();
    call->set_function(target->function.handle);
    *call->add_arguments() = client::MakeInt(i);
    *call->add_arguments() = client::MakeInt(1);
  }
  TimeBatches(state, *target, steps, "batch_steps_calls_per_s",
              "the Batch of fx_add failed",
              [](const v1::BatchResponse& response) {
                return response.results_size() == kBatchCalls &&
                       response.results(kBatchCalls - 1)
                               .call()
                               .result()
                               .int_value() == kBatchCalls;
              });
}

// One Batch of kBatchCalls calls of fx_add as one call_columns step (the
// arguments i and 1 in columns, every result returned in one column);
// timed from Session::Batch to its return.
void BM_BatchColumns(benchmark::State& state, FfidTarget* target) {
  std::vector<v1::BatchStep> steps(1);
  v1::CallColumns* columns = steps[0].mutable_call_columns();
  columns->set_function(target->function.handle);
  columns->set_count(kBatchCalls);
  v1::ValueColumn* first = columns->add_arguments();
  for (int i = 0; i < kBatchCalls; ++i) first->add_int_values(i);
  columns->add_arguments()->add_int_values(1);
  TimeBatches(state, *target, steps, "batch_calls_per_s",
              "the call_columns Batch of fx_add failed",
              [](const v1::BatchResponse& response) {
                if (response.results_size() != 1) return false;
                const v1::ValueColumn& results =
                    response.results(0).call_columns().results();
                return results.int_values_size() == kBatchCalls &&
                       results.int_values(kBatchCalls - 1) == kBatchCalls;
              });
}

// CreateSession (which starts a worker and attaches the Connect stream),
// timed until it returns; the session is then deleted, untimed.
void BM_SessionCreate(benchmark::State& state, client::Client* ffid_client) {
  std::vector<double> samples;
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    absl::StatusOr<std::unique_ptr<client::Session>> session =
        ffid_client->CreateSession();
    const Clock::duration elapsed = Clock::now() - start;
    if (!session.ok()) {
      state.SkipWithError(std::string(session.status().message()).c_str());
      return;
    }
    state.SetIterationTime(std::chrono::duration<double>(elapsed).count());
    samples.push_back(std::chrono::duration<double, std::milli>(elapsed).count());
  }
  const double median = Percentile(samples, 0.5);
  state.counters["median_ms"] = median;
  Figures()["session_create_ms"] = median;
}

// VmRSS of a process in MiB, or -1 if it cannot be read.
double ResidentMiB(pid_t pid) {
  FILE* status = std::fopen(absl::StrCat("/proc/", pid, "/status").c_str(), "r");
  if (status == nullptr) return -1;
  char line[256];
  double kib = -1;
  while (std::fgets(line, sizeof(line), status) != nullptr) {
    if (std::sscanf(line, "VmRSS: %lf kB", &kib) == 1) break;
  }
  std::fclose(status);
  return kib < 0 ? -1 : kib / 1024;
}

// ---------------------------------------------------------------- libffi

extern "C" int LocalAdd(int a, int b) { return a + b; }

void BM_FfiCall(benchmark::State& state) {
  ffi_cif cif;
  ffi_type* arg_types[] = {&ffi_type_sint, &ffi_type_sint};
  if (ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 2, &ffi_type_sint, arg_types) !=
      FFI_OK) {
    state.SkipWithError("ffi_prep_cif failed");
    return;
  }
  int a = 2, b = 40;
  void* values[] = {&a, &b};
  ffi_arg result = 0;
  std::vector<double>& samples = Samples()["ffi"];
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < kFfiBatch; ++i) {
      ffi_call(&cif, FFI_FN(LocalAdd), &result, values);
      benchmark::DoNotOptimize(result);
    }
    const Clock::duration elapsed = Clock::now() - start;
    const double seconds = std::chrono::duration<double>(elapsed).count();
    state.SetIterationTime(seconds / kFfiBatch);
    samples.push_back(seconds * 1e6 / kFfiBatch);
  }
  if (static_cast<int>(result) != 42) state.SkipWithError("wrong result");
  SetCounters(state, samples);
}

// ---------------------------------------------------------------- summary

std::string Us(const std::vector<double>& samples, double fraction) {
  if (samples.empty()) return "n/a";
  const double value = Percentile(samples, fraction);
  return value < 1 ? absl::StrFormat("%.4f us", value)
                   : absl::StrFormat("%.1f us", value);
}

std::string Ratio(const std::vector<double>& numerator,
                  const std::vector<double>& denominator, double fraction) {
  if (numerator.empty() || denominator.empty()) return "n/a";
  return absl::StrFormat("%.2fx", Percentile(numerator, fraction) /
                                      Percentile(denominator, fraction));
}

void PrintSummary() {
  // The Call's baseline: the echo server in a process of its own, as the
  // daemon is.
  const std::vector<double>& echo = Samples()["echo_process"];
  const std::vector<double>& echo_here = Samples()["echo"];
  const std::vector<double>& server_info = Samples()["server_info"];
  const std::vector<double>& call_raw = Samples()["call_raw"];
  const std::vector<double>& call = Samples()["call"];
  // Session::Call goes on a CallStream: what one message each way costs
  // gRPC, and what a call costs on the Connect stream instead.
  const std::vector<double>& echo_stream = Samples()["echo_stream_process"];
  const std::vector<double>& call_async = Samples()["call_async"];
  const std::vector<double>& ffi = Samples()["ffi"];
  const std::vector<double>& callback = Samples()["callback"];
  const std::vector<double>& call_cb = Samples()["call_cb"];
  const char* row = "%-28s | %-10s | %-10s | %-8s | %s\n";
  std::printf("\n");
  std::printf(row, "figure", "ffid", "baseline", "ratio", "target");
  std::printf("%s\n", std::string(78, '-').c_str());
  std::printf(row, "Call vs gRPC echo, median", Us(call, 0.5).c_str(),
              Us(echo, 0.5).c_str(), Ratio(call, echo, 0.5).c_str(),
              absl::StrFormat("<= %.1fx", kCallVsEchoTarget).c_str());
  std::printf(row, "Call vs gRPC echo, p99", Us(call, 0.99).c_str(),
              Us(echo, 0.99).c_str(), Ratio(call, echo, 0.99).c_str(),
              absl::StrFormat("<= %.1fx", kCallVsEchoTarget).c_str());
  std::printf(row, "Call vs echo in this process", Us(call, 0.5).c_str(),
              Us(echo_here, 0.5).c_str(), Ratio(call, echo_here, 0.5).c_str(),
              "(reference)");
  std::printf(row, "GetServerInfo vs echo", Us(server_info, 0.5).c_str(),
              Us(echo, 0.5).c_str(), Ratio(server_info, echo, 0.5).c_str(),
              "(no worker)");
  std::printf(row, "raw Call RPC vs GetServerInfo", Us(call_raw, 0.5).c_str(),
              Us(server_info, 0.5).c_str(),
              Ratio(call_raw, server_info, 0.5).c_str(), "(the worker hop)");
  std::printf(row, "Call vs echo on one stream", Us(call, 0.5).c_str(),
              Us(echo_stream, 0.5).c_str(),
              Ratio(call, echo_stream, 0.5).c_str(), "(reference)");
  std::printf(row, "CallAsync one at a time", Us(call_async, 0.5).c_str(),
              Us(call, 0.5).c_str(), Ratio(call_async, call, 0.5).c_str(),
              "(on Connect)");
  std::printf(row, "Call vs in-process ffi_call", Us(call, 0.5).c_str(),
              Us(ffi, 0.5).c_str(), Ratio(call, ffi, 0.5).c_str(),
              "(reference)");
  std::printf(row, "Callback round trip, median", Us(callback, 0.5).c_str(),
              Us(echo, 0.5).c_str(), Ratio(callback, echo, 0.5).c_str(),
              "(vs echo)");
  std::printf(row, "Callback round trip, p99", Us(callback, 0.99).c_str(),
              Us(echo, 0.99).c_str(), Ratio(callback, echo, 0.99).c_str(),
              "(vs echo)");
  std::printf(row, "Call + 1 callback vs Call", Us(call_cb, 0.5).c_str(),
              Us(call, 0.5).c_str(), Ratio(call_cb, call, 0.5).c_str(),
              "(reference)");
  if (!call.empty() && !echo.empty()) {
    const double ratio = Percentile(call, 0.5) / Percentile(echo, 0.5);
    std::printf("\nCall vs echo (median): %.2fx, target <= %.1fx: %s\n", ratio,
                kCallVsEchoTarget,
                ratio <= kCallVsEchoTarget ? "MET" : "NOT MET");
  }
}

// Writes Figures() and the latency percentiles as one JSON object.
bool WriteFigures(const std::string& path) {
  std::map<std::string, double> figures = Figures();
  for (const auto& [name, samples] : Samples()) {
    if (samples.empty()) continue;
    figures[name + "_us_median"] = Percentile(samples, 0.5);
    figures[name + "_us_p99"] = Percentile(samples, 0.99);
  }
  FILE* out = std::fopen(path.c_str(), "w");
  if (out == nullptr) return false;
  std::fprintf(out, "{");
  const char* separator = "\n";
  for (const auto& [key, value] : figures) {
    std::fprintf(out, "%s  \"%s\": %.9g", separator, key.c_str(), value);
    separator = ",\n";
  }
  std::fprintf(out, "\n}\n");
  return std::fclose(out) == 0;
}

int Main(int argc, char** argv) {
  // Our own flags, taken out before Google Benchmark sees the rest.
  std::string figures_path;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--quick") {
      kWarmupRoundTrips = 20;
      kRoundTrips = 200;
      kRounds = 2;
      kFfiBatches = 200;
      kPipelinedCalls = 1000;
      kBulkBytes = uint64_t{4} << 20;
      kBulkRepeats = 1;
      kSessionCreates = 2;
      kBatchCalls = 1000;
    } else if (absl::StartsWith(arg, "--bulk_repeats=")) {
      // More repeats of the 64 MiB transfers (median of N), e.g. to profile
      // them or to tame the noise of a loaded machine.
      if (!absl::SimpleAtoi(arg.substr(std::strlen("--bulk_repeats=")),
                            &kBulkRepeats) ||
          kBulkRepeats < 1) {
        std::fprintf(stderr, "--bulk_repeats wants a count >= 1\n");
        return 2;
      }
    } else if (absl::StartsWith(arg, "--ffid_binary=")) {
      DaemonPath() = std::string(arg.substr(std::strlen("--ffid_binary=")));
    } else if (absl::StartsWith(arg, "--figures_json=")) {
      figures_path = std::string(arg.substr(std::strlen("--figures_json=")));
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;

  char dir_template[] = "/tmp/ffid-bench-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string temp_dir = dir_template;
  int exit_code = 0;
  {
    // The bare gRPC echo server, in this process.
    const std::string echo_address = "unix:" + temp_dir + "/echo.sock";
    EchoServiceImpl echo_service;
    grpc::ServerBuilder builder;
    builder.SetMaxReceiveMessageSize(-1);
    builder.SetMaxSendMessageSize(-1);
    builder.AddListeningPort(echo_address, grpc::InsecureServerCredentials());
    builder.RegisterService(&echo_service);
    std::unique_ptr<grpc::Server> echo_server = builder.BuildAndStart();
    if (echo_server == nullptr) {
      std::fprintf(stderr, "cannot start the echo server on %s\n",
                   echo_address.c_str());
      rmdir(temp_dir.c_str());
      return 1;
    }
    std::shared_ptr<grpc::Channel> echo_channel = MakeChannel(echo_address);
    std::unique_ptr<EchoService::Stub> echo_stub =
        EchoService::NewStub(echo_channel);

    // The same echo service in a process of its own, as the daemon is.
    absl::StatusOr<std::unique_ptr<ChildProcess>> echo_process =
        ChildProcess::StartEcho(temp_dir);
    std::unique_ptr<EchoService::Stub> echo_process_stub;
    if (echo_process.ok()) {
      echo_process_stub =
          EchoService::NewStub(MakeChannel((*echo_process)->address()));
    }

    // The real daemon, a session, the fixture and fx_add.
    absl::StatusOr<std::unique_ptr<ChildProcess>> daemon =
        ChildProcess::StartDaemon(temp_dir);
    std::unique_ptr<v1::Ffi::Stub> ffid_stub;
    std::unique_ptr<client::Client> ffid_client;
    std::unique_ptr<client::Session> session;
    FfidTarget target{};
    absl::Status setup = daemon.status();
    if (setup.ok()) setup = echo_process.status();
    if (setup.ok()) {
      ffid_stub = v1::Ffi::NewStub(MakeChannel((*daemon)->address()));
      absl::StatusOr<std::unique_ptr<client::Client>> connected =
          client::Client::Connect((*daemon)->address());
      setup = connected.status();
      if (setup.ok()) ffid_client = *std::move(connected);
    }
    if (setup.ok()) {
      absl::StatusOr<std::unique_ptr<client::Session>> created =
          ffid_client->CreateSession();
      setup = created.status();
      if (setup.ok()) session = *std::move(created);
    }
    absl::StatusOr<client::Library> library;
    if (setup.ok()) {
      library = session->LoadLibrary(FFID_BENCH_FIXTURE_PATH);
      setup = library.status();
    }
    if (setup.ok()) {
      absl::StatusOr<client::Function> function =
          session->ResolveFunction(*library, "int fx_add(int, int)");
      setup = function.status();
      if (setup.ok()) {
        target.session = session.get();
        target.function = *std::move(function);
      }
    }
    if (setup.ok()) {
      // Loaded for the idle worker's resident size only (see below).
      setup = session->LoadLibrary(FFID_BENCH_CALLBACKS_FIXTURE_PATH).status();
    }
    std::unique_ptr<client::Session> callback_session;
    if (setup.ok()) {
      absl::StatusOr<std::unique_ptr<client::Session>> created =
          ffid_client->CreateSession();
      setup = created.status();
      if (setup.ok()) callback_session = *std::move(created);
    }
    absl::StatusOr<client::Library> callbacks_library;
    if (setup.ok()) {
      callbacks_library =
          callback_session->LoadLibrary(FFID_BENCH_CALLBACKS_FIXTURE_PATH);
      setup = callbacks_library.status();
    }
    if (setup.ok()) {
      target.callback_session = callback_session.get();
      absl::StatusOr<client::Function> time_calls =
          callback_session->ResolveFunction(
              *callbacks_library,
              "long fxc_time_calls(int (*f)(int), int n, int64_t *ns)");
      absl::StatusOr<client::Function> call_once =
          callback_session->ResolveFunction(
              *callbacks_library, "int fxc_call_once(int (*f)(int), int x)");
      absl::StatusOr<client::Callback> echo = callback_session->RegisterCallback(
          "int echo(int)",
          [](client::CallbackContext& context) -> absl::StatusOr<v1::Value> {
            return context.arguments()[0];
          });
      setup = time_calls.ok() ? (call_once.ok() ? echo.status()
                                                : call_once.status())
                              : time_calls.status();
      if (setup.ok()) {
        target.time_calls = *std::move(time_calls);
        target.call_once = *std::move(call_once);
        target.echo = *std::move(echo);
      }
    }

    if (!setup.ok()) {
      std::fprintf(stderr, "cannot set up ffid: %s\n",
                   setup.ToString().c_str());
      exit_code = 1;
    } else {
      benchmark::RegisterBenchmark("grpc_echo_16B", BM_GrpcEcho,
                                   echo_stub.get(), "echo")
          ->Iterations(kRoundTrips)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      // The Call's figure and its baseline, in alternating rounds.
      for (int round = 1; round <= kRounds; ++round) {
        benchmark::RegisterBenchmark(
            absl::StrCat("grpc_echo_16B_process/round:", round).c_str(),
            BM_GrpcEcho, echo_process_stub.get(), "echo_process")
            ->Iterations(kRoundTrips / kRounds)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(
            absl::StrCat("ffid_call_fx_add/round:", round).c_str(),
            BM_FfidCall, &target)
            ->Iterations(kRoundTrips / kRounds)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
      benchmark::RegisterBenchmark("grpc_echo_stream_process",
                                   BM_GrpcEchoStream, echo_process_stub.get())
          ->Iterations(kRoundTrips)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("ffid_server_info", BM_ServerInfo,
                                   ffid_stub.get())
          ->Iterations(kRoundTrips)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("ffid_call_raw", BM_FfidCallRaw,
                                   ffid_stub.get(), &target)
          ->Iterations(kRoundTrips)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("ffid_call_on_stream", BM_FfidCallOnStream,
                                   &target)
          ->Iterations(kRoundTrips)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("ffid_callback_round_trip",
                                   BM_CallbackRoundTrip, &target)
          ->Iterations(1)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("ffid_call_with_one_callback",
                                   BM_CallWithCallback, &target)
          ->Iterations(kRoundTrips)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("ffi_call_in_process", BM_FfiCall)
          ->Iterations(kFfiBatches)
          ->UseManualTime()
          ->Unit(benchmark::kNanosecond);
      benchmark::RegisterBenchmark("ffid_pipelined_calls", BM_Pipelined,
                                   &target)
          ->Iterations(kBulkRepeats)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("ffid_batch", BM_Batch, &target)
          ->Iterations(kBulkRepeats)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("ffid_batch_columns", BM_BatchColumns,
                                   &target)
          ->Iterations(kBulkRepeats)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("grpc_stream_up_down", BM_GrpcStream,
                                   echo_stub.get())
          ->Iterations(kBulkRepeats)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("grpc_unary_bulk", BM_GrpcUnaryBulk,
                                   echo_stub.get())
          ->Iterations(kBulkRepeats)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("ffid_write_read", BM_FfidReadWrite,
                                   &target, v1::ALLOCATION_PLACEMENT_ARENA,
                                   echo_stub.get())
          ->Iterations(kBulkRepeats)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("ffid_write_read_heap", BM_FfidReadWrite,
                                   &target, v1::ALLOCATION_PLACEMENT_HEAP,
                                   nullptr)
          ->Iterations(kBulkRepeats)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("ffid_mapped_arena", BM_MappedArena,
                                   &target)
          ->Iterations(kBulkRepeats * 3)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("ffid_create_session", BM_SessionCreate,
                                   ffid_client.get())
          ->Iterations(kSessionCreates)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      // Idle resident sizes, before the benchmarks grow any buffers: the
      // daemon with its two sessions, and the first session's worker with
      // the two fixture libraries loaded (as before the callback figures
      // moved to a session of their own).
      absl::SleepFor(absl::Milliseconds(200));
      Figures()["daemon_idle_rss_mib"] = ResidentMiB((*daemon)->pid());
      Figures()["worker_idle_rss_mib"] = ResidentMiB(session->worker_pid());
      benchmark::RunSpecifiedBenchmarks();
      PrintSummary();
      if (!figures_path.empty() && !WriteFigures(figures_path)) {
        std::fprintf(stderr, "cannot write %s\n", figures_path.c_str());
        exit_code = 1;
      }
    }

    // Tear down in order: session (its worker), client, daemon, echo.
    session.reset();
    callback_session.reset();
    ffid_client.reset();
    ffid_stub.reset();
    if (daemon.ok()) daemon->reset();
    echo_process_stub.reset();
    if (echo_process.ok()) echo_process->reset();
    echo_stub.reset();
    echo_channel.reset();
    echo_server->Shutdown();
  }
  benchmark::Shutdown();
  std::remove((temp_dir + "/ffid.sock").c_str());
  std::remove((temp_dir + "/echo.sock").c_str());
  std::remove((temp_dir + "/echo-process.sock").c_str());
  rmdir(temp_dir.c_str());
  return exit_code;
}

}  // namespace
}  // namespace ffid::bench

int main(int argc, char** argv) { return ffid::bench::Main(argc, argv); }
