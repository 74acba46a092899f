// Entering a network namespace for the calling thread only: Node's main thread, where
// every BPF call of ours runs. Test runs resolve their ingress interface and FIB in the
// caller's namespace, and interface names are per namespace.
#include <fcntl.h>
#include <sched.h>

#include <cerrno>

#include "errors.h"
#include "exports.h"
#include "fd.h"

namespace dvipa {
namespace {

Napi::Value NetnsEnter(const Napi::CallbackInfo &info) {
  std::string path = StringArg(info, 0, "namespace path");
  Fd prev(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (prev.fd() < 0) ThrowErrno(info.Env(), "open(/proc/thread-self/ns/net)", errno);
  Fd target(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (target.fd() < 0) ThrowErrno(info.Env(), "open", errno, path);
  if (setns(target.fd(), CLONE_NEWNET)) ThrowErrno(info.Env(), "setns", errno, path);
  return Napi::Number::New(info.Env(), prev.release());
}

Napi::Value NetnsRestore(const Napi::CallbackInfo &info) {
  Fd prev(FdArg(info, 0));
  if (setns(prev.fd(), CLONE_NEWNET)) ThrowErrno(info.Env(), "setns", errno);
  return info.Env().Undefined();
}

}  // namespace

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("netnsEnter", Napi::Function::New(env, NetnsEnter));
  exports.Set("netnsRestore", Napi::Function::New(env, NetnsRestore));
}

}  // namespace dvipa
