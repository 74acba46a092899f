// Programs: BPF_PROG_TEST_RUN, XDP bpf_links (create, atomic update, info), interfaces.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <sched.h>

#include <cerrno>
#include <vector>

#include "errors.h"
#include "exports.h"

namespace dvipa {
namespace {

Napi::Value ProgTestRun(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "expected options { data, ... }");
  Napi::Object o = info[1].As<Napi::Object>();
  if (!o.Get("data").IsBuffer()) throw Napi::TypeError::New(env, "options.data must be a Buffer");
  auto data = o.Get("data").As<Napi::Buffer<uint8_t>>();
  auto num = [&](const char *k, uint32_t def) -> uint32_t {
    Napi::Value v = o.Get(k);
    if (v.IsUndefined()) return def;
    if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() < 0) throw Napi::TypeError::New(env, std::string("options.") + k + " must be a number >= 0");
    return v.As<Napi::Number>().Uint32Value();
  };
  std::vector<uint8_t> out(num("dataOutSize", data.Length() + 256));
  std::vector<uint8_t> ctx_out;
  LIBBPF_OPTS(bpf_test_run_opts, opts);
  opts.data_in = data.Data();
  opts.data_size_in = data.Length();
  opts.data_out = out.data();
  opts.data_size_out = out.size();
  opts.repeat = static_cast<int>(num("repeat", 1));
  opts.flags = num("flags", 0);
  opts.batch_size = num("batchSize", 0);
  if (o.Get("ctxIn").IsBuffer()) {
    auto ctx = o.Get("ctxIn").As<Napi::Buffer<uint8_t>>();
    ctx_out.resize(ctx.Length());
    opts.ctx_in = ctx.Data();
    opts.ctx_size_in = ctx.Length();
    opts.ctx_out = ctx_out.data();
    opts.ctx_size_out = ctx_out.size();
  }
  // Live frames mode transmits instead of returning output.
  if (opts.flags & BPF_F_TEST_XDP_LIVE_FRAMES) {
    opts.data_out = nullptr;
    opts.data_size_out = 0;
    opts.ctx_out = nullptr;
    opts.ctx_size_out = 0;
  }
  int r = bpf_prog_test_run_opts(fd, &opts);
  if (r) ThrowErrno(env, "bpf_prog_test_run_opts", ErrnoOf(r));
  Napi::Object res = Napi::Object::New(env);
  res.Set("retval", opts.retval);
  res.Set("duration", opts.duration);
  res.Set("dataOut", Napi::Buffer<uint8_t>::Copy(env, out.data(), opts.data_out ? opts.data_size_out : 0));
  if (opts.ctx_out) res.Set("ctxOut", Napi::Buffer<uint8_t>::Copy(env, ctx_out.data(), opts.ctx_size_out));
  return res;
}

// A test run runs on the calling thread's CPU: the benchmark pins one worker thread per CPU.
Napi::Value PinThreadToCpu(const Napi::CallbackInfo &info) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(U32Arg(info, 0, "cpu"), &set);
  if (sched_setaffinity(0, sizeof(set), &set)) ThrowErrno(info.Env(), "sched_setaffinity", errno);
  return info.Env().Undefined();
}

Napi::Value XdpLinkCreate(const Napi::CallbackInfo &info) {
  int prog = FdArg(info, 0);
  int ifindex = static_cast<int>(U32Arg(info, 1, "ifindex"));
  LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = U32Arg(info, 2, "flags"));
  int fd = bpf_link_create(prog, ifindex, BPF_XDP, &opts);
  if (fd < 0) ThrowErrno(info.Env(), "bpf_link_create", ErrnoOf(fd));
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value LinkUpdate(const Napi::CallbackInfo &info) {
  int r = bpf_link_update(FdArg(info, 0), FdArg(info, 1), nullptr);
  if (r) ThrowErrno(info.Env(), "bpf_link_update", ErrnoOf(r));
  return info.Env().Undefined();
}

Napi::Value LinkInfo(const Napi::CallbackInfo &info) {
  bpf_link_info li = {};
  __u32 len = sizeof(li);
  int r = bpf_obj_get_info_by_fd(FdArg(info, 0), &li, &len);
  if (r) ThrowErrno(info.Env(), "bpf_obj_get_info_by_fd", ErrnoOf(r));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("id", li.id);
  o.Set("type", li.type);
  o.Set("progId", li.prog_id);
  if (li.type == BPF_LINK_TYPE_XDP) o.Set("ifindex", li.xdp.ifindex);
  return o;
}

Napi::Value ProgInfo(const Napi::CallbackInfo &info) {
  bpf_prog_info pi = {};
  __u32 len = sizeof(pi);
  int r = bpf_obj_get_info_by_fd(FdArg(info, 0), &pi, &len);
  if (r) ThrowErrno(info.Env(), "bpf_obj_get_info_by_fd", ErrnoOf(r));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("id", pi.id);
  o.Set("name", pi.name);
  o.Set("type", pi.type);
  return o;
}

Napi::Value IfNameToIndex(const Napi::CallbackInfo &info) {
  std::string name = StringArg(info, 0, "interface name");
  unsigned idx = if_nametoindex(name.c_str());
  if (!idx) ThrowErrno(info.Env(), "if_nametoindex", errno ? errno : ENODEV);
  return Napi::Number::New(info.Env(), idx);
}

}  // namespace

void InitProgs(Napi::Env env, Napi::Object exports) {
  exports.Set("progTestRun", Napi::Function::New(env, ProgTestRun));
  exports.Set("pinThreadToCpu", Napi::Function::New(env, PinThreadToCpu));
  exports.Set("xdpLinkCreate", Napi::Function::New(env, XdpLinkCreate));
  exports.Set("linkUpdate", Napi::Function::New(env, LinkUpdate));
  exports.Set("linkInfo", Napi::Function::New(env, LinkInfo));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo));
  exports.Set("ifNameToIndex", Napi::Function::New(env, IfNameToIndex));
}

}  // namespace dvipa
