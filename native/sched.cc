// The calling thread's scheduling policy: the renewal thread (a Node worker) enters real time
// while its node owns a DVIPA and leaves it when it no longer does. A syscall on the thread
// itself, at the moment it claims: a chrt process started then came after the first renewals.
#include <pthread.h>
#include <sched.h>

#include <cerrno>

#include "errors.h"
#include "exports.h"

namespace dvipa {
namespace {

// threadRealTime(priority): SCHED_RR at that priority; 0: back to SCHED_OTHER (its nice value kept).
Napi::Value ThreadRealTime(const Napi::CallbackInfo &info) {
  uint32_t priority = U32Arg(info, 0, "priority");
  if (priority > static_cast<uint32_t>(sched_get_priority_max(SCHED_RR)))
    throw Napi::RangeError::New(info.Env(), "priority: 0 (SCHED_OTHER) or 1-99 (SCHED_RR)");
  sched_param p{};
  p.sched_priority = static_cast<int>(priority);
  // This thread only (sched_setscheduler(0) is the thread too with glibc, not with musl).
  if (int err = pthread_setschedparam(pthread_self(), priority ? SCHED_RR : SCHED_OTHER, &p))
    ThrowErrno(info.Env(), "pthread_setschedparam", err, priority ? "SCHED_RR" : "SCHED_OTHER");
  return info.Env().Undefined();
}

}  // namespace

void InitSched(Napi::Env env, Napi::Object exports) {
  exports.Set("threadRealTime", Napi::Function::New(env, ThreadRealTime));
}

}  // namespace dvipa
