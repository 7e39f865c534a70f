// Tells ThreadSanitizer about absl::Mutex, for tsan builds only.
//
// Debian's abseil is not built with -fsanitize=thread, so TSAN cannot see
// the happens-before edges that absl::Mutex and absl::CondVar create and
// reports every hand-off through them as a data race, even in a trivially
// correct program. The tsan build links these wrappers with
// `-Wl,--wrap=<symbol>` (server/CMakeLists.txt): each call from our code to a
// locking function goes through a wrapper that calls the real one and adds
// the matching __tsan_acquire/__tsan_release on the mutex's address. Readers
// are modelled like writers, which is stricter than needed and never hides a
// race between two writers.
#include <sanitizer/tsan_interface.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

using absl::CondVar;
using absl::Condition;
using absl::Duration;
using absl::Mutex;
using absl::Time;

extern "C" {

// From TSAN's runtime (its dynamic annotations).
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);

}  // extern "C"

namespace {

// absl::Mutex evaluates the absl::Condition of a waiter (a lambda reading
// state the mutex guards) inside its own code, while the lock is held but
// at a point the wrappers cannot mark: in Await* before the lock is given
// up, and in Unlock on behalf of another thread's Await or LockWhen. TSAN
// would order those reads by the wrong edges and report them against the
// writes of the next holder. Reads made inside the real locking functions
// (abseil's own are not instrumented anyway) are therefore not recorded;
// the conditions only read, and only what the mutex guards.
class IgnoreReads {
 public:
  IgnoreReads() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
  ~IgnoreReads() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
  IgnoreReads(const IgnoreReads&) = delete;
  IgnoreReads& operator=(const IgnoreReads&) = delete;
};

// Runs `wait`, a call of one of Mutex's Await or CondVar's Wait functions
// (which give the lock up and take it again), as a release of `mu` before
// and an acquire after, with what abseil reads inside it not recorded.
template <typename WaitCall>
auto AroundWait(Mutex* mu, WaitCall wait) {
  __tsan_release(mu);
  struct Reacquire {
    Mutex* mu;
    ~Reacquire() { __tsan_acquire(mu); }
  } reacquire{mu};
  IgnoreReads ignore;  // ends before the acquire
  return wait();
}

}  // namespace

extern "C" {

// absl::Mutex::Lock()
void __real__ZN4absl7debian35Mutex4LockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex4LockEv(Mutex* mu) {
  __real__ZN4absl7debian35Mutex4LockEv(mu);
  __tsan_acquire(mu);
}

// absl::Mutex::Unlock()
void __real__ZN4absl7debian35Mutex6UnlockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex6UnlockEv(Mutex* mu) {
  __tsan_release(mu);
  {
    IgnoreReads ignore;
    __real__ZN4absl7debian35Mutex6UnlockEv(mu);
  }
}

// absl::Mutex::TryLock()
bool __real__ZN4absl7debian35Mutex7TryLockEv(Mutex* mu);
bool __wrap__ZN4absl7debian35Mutex7TryLockEv(Mutex* mu) {
  bool locked = __real__ZN4absl7debian35Mutex7TryLockEv(mu);
  if (locked) __tsan_acquire(mu);
  return locked;
}

// absl::Mutex::ReaderLock()
void __real__ZN4absl7debian35Mutex10ReaderLockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex10ReaderLockEv(Mutex* mu) {
  __real__ZN4absl7debian35Mutex10ReaderLockEv(mu);
  __tsan_acquire(mu);
}

// absl::Mutex::ReaderUnlock()
void __real__ZN4absl7debian35Mutex12ReaderUnlockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex12ReaderUnlockEv(Mutex* mu) {
  __tsan_release(mu);
  {
    IgnoreReads ignore;
    __real__ZN4absl7debian35Mutex12ReaderUnlockEv(mu);
  }
}

// absl::Mutex::LockWhen(const Condition&)
void __real__ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(
    Mutex* mu, const Condition& condition);
void __wrap__ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(
    Mutex* mu, const Condition& condition) {
  {
    IgnoreReads ignore;
    __real__ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(mu, condition);
  }
  __tsan_acquire(mu);
}

// absl::Mutex::Await(const Condition&): releases and reacquires the lock.
void __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(
    Mutex* mu, const Condition& condition);
void __wrap__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(
    Mutex* mu, const Condition& condition) {
  AroundWait(mu, [&] {
    __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(mu, condition);
  });
}

// absl::Mutex::AwaitWithTimeout(const Condition&, Duration)
bool __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition& condition, Duration timeout);
bool __wrap__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition& condition, Duration timeout) {
  return AroundWait(mu, [&] {
    return __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
        mu, condition, timeout);
  });
}

// absl::Mutex::AwaitWithDeadline(const Condition&, Time)
bool __real__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
    Mutex* mu, const Condition& condition, Time deadline);
bool __wrap__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
    Mutex* mu, const Condition& condition, Time deadline) {
  return AroundWait(mu, [&] {
    return __real__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
        mu, condition, deadline);
  });
}

// absl::CondVar::Wait(Mutex*)
void __real__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(CondVar* cv, Mutex* mu);
void __wrap__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(CondVar* cv,
                                                       Mutex* mu) {
  AroundWait(mu, [&] { __real__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(cv, mu); });
}

// absl::CondVar::WaitWithTimeout(Mutex*, Duration)
bool __real__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(
    CondVar* cv, Mutex* mu, Duration timeout);
bool __wrap__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(
    CondVar* cv, Mutex* mu, Duration timeout) {
  return AroundWait(mu, [&] {
    return __real__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(
        cv, mu, timeout);
  });
}

// absl::CondVar::WaitWithDeadline(Mutex*, Time)
bool __real__ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(
    CondVar* cv, Mutex* mu, Time deadline);
bool __wrap__ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(
    CondVar* cv, Mutex* mu, Time deadline) {
  return AroundWait(mu, [&] {
    return __real__ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(
        cv, mu, deadline);
  });
}

}  // extern "C"

// Abseil's own internals (the deadlock-detection graph behind every nested
// lock, its event tables) are guarded by abseil's internal spin locks,
// which TSAN cannot see either; only the libc calls they make (memmove) are
// intercepted and then misreported. Ignore those calls from inside abseil.
//
// The same for absl::Status: a status with payloads (every ffid error)
// shares one heap representation between its copies, counted with an atomic
// whose release (Status::UnrefNonInlined) runs inside libabsl_status. TSAN
// never sees that decrement, so when the last copy goes on another thread
// than the one that copied it (a worker's dead_status_ returned to an RPC
// thread, freed with the WorkerProcess), the free in libabsl_status looks
// like a race with the copy's memcpy, also in libabsl_status. The clang
// documentation (ThreadSanitizer, "Limitations") names uninstrumented
// libraries as a source of such false reports.
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libabsl_graphcycles_internal.so\n"
         "called_from_lib:libabsl_synchronization.so\n"
         "called_from_lib:libabsl_status.so\n";
}
