// session_bench: how long creating a session and recovering from a crash
// take, against baselines measured in the same run (DESIGN.md: "a worker
// crash is detected and the session restarted in under 10 ms").
//
// Figures (median and p99 over kRounds, after kWarmup):
//   spawn_true     - posix_spawn + waitpid of /bin/true: the floor of any
//                    process start on this machine.
//   create_plain   - CreateSession + DeleteSession on a daemon started with
//                    --no-sandbox (rlimits only).
//   create_sandbox - the same on a daemon with every sandbox layer the
//                    kernel offers (namespaces, mount view, Landlock,
//                    seccomp).
//   call           - a Call of fx_add on a live session.
//   crash_restart  - a Call of ff_null_deref on a RESTART session with the
//                    fixture loaded and two functions resolved: the answer
//                    arrives once the crash was detected, the new worker
//                    started and the library and functions restored.
//   next_call      - the first fx_add after that restart.
//   crash_detect   - a Call of ff_null_deref on a NEVER session: crash
//                    detection and report alone.
//   *_nospare      - the same on a daemon whose zygote keeps no spare
//                    workers (FFID_ZYGOTE_SPARES=0): each worker is a clone
//                    into new namespaces plus its sandbox set-up, as before
//                    spares existed.
// Daemons are started with the test harness (tests/testing/daemon.h) and
// stopped at the end.
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "tests/testing/daemon.h"

extern char** environ;

namespace ffid::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kWarmup = 10;
constexpr int kRounds = 200;
constexpr int kCrashRounds = 20;

struct Figure {
  std::string name;
  double median_us = 0;
  double p99_us = 0;
};

Figure Measure(const std::string& name, int rounds,
               const std::function<bool()>& once) {
  std::vector<double> samples;
  for (int i = 0; i < kWarmup + rounds; ++i) {
    auto start = Clock::now();
    if (!once()) {
      std::fprintf(stderr, "%s failed\n", name.c_str());
      std::exit(1);
    }
    double us = std::chrono::duration<double, std::micro>(Clock::now() - start)
                    .count();
    if (i >= kWarmup) samples.push_back(us);
  }
  std::sort(samples.begin(), samples.end());
  Figure figure{name, samples[samples.size() / 2],
                samples[std::min(samples.size() - 1, samples.size() * 99 / 100)]};
  return figure;
}

Figure SortedFigure(std::string name, std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return Figure{std::move(name), samples[samples.size() / 2],
                samples[samples.size() - 1]};
}

std::unique_ptr<client::Client> ConnectTo(const testing::Daemon& daemon) {
  absl::StatusOr<std::unique_ptr<client::Client>> client =
      client::Client::Connect(daemon.address());
  if (!client.ok()) {
    std::fprintf(stderr, "connect: %s\n", client.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*client);
}

Figure CreateDelete(const std::string& name, client::Client& client) {
  client::SessionOptions options;
  options.attach_stream = false;
  return Measure(name, kRounds, [&] {
    absl::StatusOr<std::unique_ptr<client::Session>> session =
        client.CreateSession(options);
    return session.ok() && (*session)->Delete().ok();
  });
}

// crash_restart and next_call (see above) on a RESTART session of
// `client`'s daemon, plus call.
bool MeasureRestart(client::Client& client, const std::string& suffix,
                    Figure* call_figure, Figure* restart, Figure* next_call) {
  client::SessionOptions options;
  options.restart_policy = v1::RESTART_POLICY_RESTART;
  absl::StatusOr<std::unique_ptr<client::Session>> session =
      client.CreateSession(options);
  if (!session.ok()) return false;
  absl::StatusOr<client::Library> fixture =
      (*session)->LoadLibrary(testing::FixturePath());
  if (!fixture.ok()) return false;
  absl::StatusOr<client::Function> add =
      (*session)->ResolveFunction(*fixture, "int fx_add(int a, int b)");
  absl::StatusOr<client::Function> crash =
      (*session)->ResolveFunction(*fixture, "void ff_null_deref(void)");
  if (!add.ok() || !crash.ok()) return false;
  if (call_figure != nullptr) {
    *call_figure = Measure("call", kRounds, [&] {
      return (*session)
          ->Call(*add, {client::MakeInt(1), client::MakeInt(2)})
          .ok();
    });
  }
  // Each crash must come at least a second after the previous restart, or
  // the session counts it towards a crash loop and backs off.
  std::vector<double> restart_samples;
  std::vector<double> next_samples;
  for (int i = 0; i < kCrashRounds; ++i) {
    absl::SleepFor(absl::Milliseconds(1100));
    auto start = Clock::now();
    absl::StatusOr<v1::CallResponse> crashed = (*session)->Call(*crash, {});
    auto restarted = Clock::now();
    if (crashed.ok() ||
        std::string(crashed.status().message()).find("was restarted") ==
            std::string::npos) {
      std::fprintf(stderr, "no restart: %s\n",
                   crashed.status().ToString().c_str());
      return false;
    }
    if (!(*session)->Call(*add, {client::MakeInt(1), client::MakeInt(2)}).ok()) {
      return false;
    }
    auto next = Clock::now();
    restart_samples.push_back(
        std::chrono::duration<double, std::micro>(restarted - start).count());
    next_samples.push_back(
        std::chrono::duration<double, std::micro>(next - restarted).count());
  }
  *restart = SortedFigure("crash_restart" + suffix, restart_samples);
  *next_call = SortedFigure("next_call" + suffix, next_samples);
  (void)(*session)->Delete();
  return true;
}

int Run() {
  Figure spawn = Measure("spawn_true", kRounds, [] {
    pid_t pid;
    char arg0[] = "/bin/true";
    char* argv[] = {arg0, nullptr};
    if (posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) != 0) {
      return false;
    }
    int status;
    return waitpid(pid, &status, 0) == pid;
  });

  testing::DaemonOptions plain_options;
  plain_options.extra_flags = {"--no-sandbox"};
  absl::StatusOr<std::unique_ptr<testing::Daemon>> plain =
      testing::Daemon::Start(plain_options);
  absl::StatusOr<std::unique_ptr<testing::Daemon>> sandboxed =
      testing::Daemon::Start();
  // The same without the zygote's spare workers: every worker a clone
  // into new namespaces plus its sandbox set-up.
  testing::DaemonOptions cold_options;
  cold_options.environment["FFID_ZYGOTE_SPARES"] = "0";
  absl::StatusOr<std::unique_ptr<testing::Daemon>> cold =
      testing::Daemon::Start(cold_options);
  if (!plain.ok() || !sandboxed.ok() || !cold.ok()) {
    std::fprintf(stderr, "cannot start the daemons\n");
    return 1;
  }
  std::unique_ptr<client::Client> plain_client = ConnectTo(**plain);
  std::unique_ptr<client::Client> client = ConnectTo(**sandboxed);
  std::unique_ptr<client::Client> cold_client = ConnectTo(**cold);
  Figure create_plain = CreateDelete("create_plain", *plain_client);
  Figure create_sandbox = CreateDelete("create_sandbox", *client);
  Figure create_sandbox_cold =
      CreateDelete("create_sandbox_nospare", *cold_client);

  Figure call;
  Figure crash_restart;
  Figure next_call;
  Figure crash_restart_cold;
  Figure next_call_cold;
  if (!MeasureRestart(*client, "", &call, &crash_restart, &next_call) ||
      !MeasureRestart(*cold_client, "_nospare", nullptr, &crash_restart_cold,
                      &next_call_cold)) {
    return 1;
  }
  // A crash without restart (NEVER session): detection and report only.
  std::vector<double> detect_samples;
  for (int i = 0; i < kCrashRounds; ++i) {
    absl::StatusOr<std::unique_ptr<client::Session>> victim =
        client->CreateSession();
    if (!victim.ok()) return 1;
    absl::StatusOr<client::Library> library =
        (*victim)->LoadLibrary(testing::FixturePath());
    if (!library.ok()) return 1;
    absl::StatusOr<client::Function> null_deref =
        (*victim)->ResolveFunction(*library, "void ff_null_deref(void)");
    if (!null_deref.ok()) return 1;
    auto start = Clock::now();
    if ((*victim)->Call(*null_deref, {}).ok()) return 1;
    detect_samples.push_back(
        std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  Figure crash_detect = SortedFigure("crash_detect", detect_samples);

  std::printf("\n%-24s | %12s | %12s\n", "figure", "median us", "p99 us");
  for (const Figure& f : {spawn, create_plain, create_sandbox,
                          create_sandbox_cold, call, crash_detect,
                          crash_restart, next_call, crash_restart_cold,
                          next_call_cold}) {
    std::printf("%-24s | %12.1f | %12.1f\n", f.name.c_str(), f.median_us,
                f.p99_us);
  }
  std::printf("\n(crash_restart and next_call: %d crashes, p99 column = max)\n",
              kCrashRounds);
  std::printf("create_sandbox / spawn_true   = %.1fx\n",
              create_sandbox.median_us / spawn.median_us);
  std::printf("create_sandbox / create_plain = %.2fx\n",
              create_sandbox.median_us / create_plain.median_us);
  std::printf("crash_restart / call          = %.1fx  (target: restart < 10 ms: %s)\n",
              crash_restart.median_us / call.median_us,
              crash_restart.median_us < 10000 ? "met" : "NOT met");
  std::printf("crash_restart_nospare / crash_restart = %.2fx\n",
              crash_restart_cold.median_us / crash_restart.median_us);
  return 0;
}

}  // namespace
}  // namespace ffid::bench

int main() { return ffid::bench::Run(); }
