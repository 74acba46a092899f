// Entering a network namespace for the calling thread only: Node's main thread, where
// every BPF call of ours runs. Test runs resolve their ingress interface and FIB in the
// caller's namespace, and interface names are per namespace.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>

#include "errors.h"
#include "exports.h"

namespace dvipa {
namespace {

Napi::Value NetnsEnter(const Napi::CallbackInfo &info) {
  std::string path = StringArg(info, 0, "namespace path");
  int prev = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (prev < 0) ThrowErrno(info.Env(), "open(/proc/thread-self/ns/net)", errno);
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(prev);
    ThrowErrno(info.Env(), "open", e, path);
  }
  int r = setns(target, CLONE_NEWNET);
  int e = errno;
  close(target);
  if (r) {
    close(prev);
    ThrowErrno(info.Env(), "setns", e, path);
  }
  return Napi::Number::New(info.Env(), prev);
}

Napi::Value NetnsRestore(const Napi::CallbackInfo &info) {
  int prev = FdArg(info, 0);
  int r = setns(prev, CLONE_NEWNET);
  int e = errno;
  close(prev);
  if (r) ThrowErrno(info.Env(), "setns", e);
  return info.Env().Undefined();
}

}  // namespace

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("netnsEnter", Napi::Function::New(env, NetnsEnter));
  exports.Set("netnsRestore", Napi::Function::New(env, NetnsRestore));
}

}  // namespace dvipa
