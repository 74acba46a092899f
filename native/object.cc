// BpfObject: one libbpf bpf_object (an ELF of BPF programs and maps). Maps declared with
// LIBBPF_PIN_BY_NAME are reused from, or pinned into, the pin root by libbpf at load.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <string>
#include <vector>

#include "errors.h"
#include "exports.h"
#include "fd.h"

namespace dvipa {
namespace {

// libbpf's log (including the verifier's) during the current load, kept for the error.
std::string g_log;
bool g_capturing = false;
constexpr size_t kLogTail = 16 * 1024;

int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (!g_capturing || level == LIBBPF_DEBUG) return 0;
  char buf[4096];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  if (n > 0) g_log.append(buf, std::min<size_t>(n, sizeof(buf) - 1));
  return n;
}

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {InstanceMethod("maps", &BpfObject::Maps), InstanceMethod("programs", &BpfObject::Programs),
                        InstanceMethod("load", &BpfObject::Load), InstanceMethod("mapFd", &BpfObject::MapFd),
                        InstanceMethod("progFd", &BpfObject::ProgFd), InstanceMethod("attach", &BpfObject::Attach),
                        InstanceMethod("readIter", &BpfObject::ReadIter),
                        InstanceMethod("close", &BpfObject::Close)});
  }

  explicit BpfObject(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfObject>(info) {
    Napi::Env env = info.Env();
    path_ = StringArg(info, 0, "path");
    std::string pin_root;
    Napi::Object opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
    if (opts.Has("pinRoot") && !opts.Get("pinRoot").IsUndefined()) pin_root = opts.Get("pinRoot").As<Napi::String>().Utf8Value();
    LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = pin_root.empty() ? nullptr : pin_root.c_str());
    obj_ = bpf_object__open_file(path_.c_str(), &oo);
    long err = libbpf_get_error(obj_);
    if (err) {
      obj_ = nullptr;
      ThrowErrno(env, "bpf_object__open_file", ErrnoOf(err), path_);
    }
    if (opts.Has("maxEntries") && opts.Get("maxEntries").IsObject()) {
      Napi::Object me = opts.Get("maxEntries").As<Napi::Object>();
      Napi::Array names = me.GetPropertyNames();
      for (uint32_t i = 0; i < names.Length(); i++) {
        std::string name = names.Get(i).As<Napi::String>().Utf8Value();
        bpf_map *m = bpf_object__find_map_by_name(obj_, name.c_str());
        if (!m) ThrowErrno(env, "bpf_object__find_map_by_name", ENOENT, name);
        Napi::Value v = me.Get(name);
        if (!v.IsNumber()) throw Napi::TypeError::New(env, "maxEntries." + name + " must be a number");
        int r = bpf_map__set_max_entries(m, v.As<Napi::Number>().Uint32Value());
        if (r) ThrowErrno(env, "bpf_map__set_max_entries", ErrnoOf(r), name);
      }
    }
  }

  ~BpfObject() override { Release(); }

 private:
  bpf_object *Obj(Napi::Env env) {
    if (!obj_) throw Napi::Error::New(env, "BpfObject " + path_ + " is closed");
    return obj_;
  }

  Napi::Value Maps(const Napi::CallbackInfo &info) {
    Napi::Array out = Napi::Array::New(info.Env());
    bpf_map *m;
    uint32_t i = 0;
    bpf_object__for_each_map(m, Obj(info.Env())) {
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("name", bpf_map__name(m));
      o.Set("type", static_cast<uint32_t>(bpf_map__type(m)));
      o.Set("keySize", bpf_map__key_size(m));
      o.Set("valueSize", bpf_map__value_size(m));
      o.Set("maxEntries", bpf_map__max_entries(m));
      o.Set("flags", bpf_map__map_flags(m));
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value Programs(const Napi::CallbackInfo &info) {
    Napi::Array out = Napi::Array::New(info.Env());
    bpf_program *p;
    uint32_t i = 0;
    bpf_object__for_each_program(p, Obj(info.Env())) out.Set(i++, bpf_program__name(p));
    return out;
  }

  // The kernel adds BPF_F_RDONLY_PROG to every devmap it creates, and libbpf 1.1 then
  // refuses to reuse the pinned map because the flags differ from the object's. Tell libbpf
  // the flags the pinned map really has (creation, which rejects the flag, is skipped).
  static void MatchPinnedDevmapFlags(bpf_object *obj) {
    bpf_map *m;
    bpf_object__for_each_map(m, obj) {
      auto type = bpf_map__type(m);
      const char *pin = bpf_map__pin_path(m);
      if ((type != BPF_MAP_TYPE_DEVMAP && type != BPF_MAP_TYPE_DEVMAP_HASH) || !pin || access(pin, F_OK)) continue;
      bpf_map__set_map_flags(m, bpf_map__map_flags(m) | BPF_F_RDONLY_PROG);
    }
  }

  // The verifier gives up with EAGAIN ("processed 1 insns") as soon as a signal is pending
  // for the loading thread, and libbpf's retries meet the next one: under a profiler's
  // SIGPROF (V8's sampler signals this thread every millisecond) no program ever loaded.
  // Blocked for the load, a signal waits (at most the verifier's time) instead of ending it;
  // one sent to the process goes to a thread that does not block it.
  class SignalsHeld {
   public:
    SignalsHeld() {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, &saved_);
    }
    ~SignalsHeld() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
    SignalsHeld(const SignalsHeld &) = delete;
    SignalsHeld &operator=(const SignalsHeld &) = delete;

   private:
    sigset_t saved_;
  };

  Napi::Value Load(const Napi::CallbackInfo &info) {
    bpf_object *obj = Obj(info.Env());
    MatchPinnedDevmapFlags(obj);
    g_log.clear();
    g_capturing = true;
    int r;
    {
      SignalsHeld held;
      r = bpf_object__load(obj);
    }
    g_capturing = false;
    if (r) {
      std::string log = g_log.size() > kLogTail ? g_log.substr(g_log.size() - kLogTail) : g_log;
      g_log.clear();
      ThrowErrno(info.Env(), "bpf_object__load", ErrnoOf(r), log);
    }
    g_log.clear();
    return info.Env().Undefined();
  }

  Napi::Value MapFd(const Napi::CallbackInfo &info) {
    std::string name = StringArg(info, 0, "map name");
    bpf_map *m = bpf_object__find_map_by_name(Obj(info.Env()), name.c_str());
    if (!m) ThrowErrno(info.Env(), "bpf_object__find_map_by_name", ENOENT, name);
    int fd = bpf_map__fd(m);
    if (fd < 0) ThrowErrno(info.Env(), "bpf_map__fd", ErrnoOf(fd), name + " (object not loaded?)");
    return Napi::Number::New(info.Env(), fd);
  }

  bpf_program *FindProgram(Napi::Env env, const std::string &name) {
    bpf_program *p = bpf_object__find_program_by_name(Obj(env), name.c_str());
    if (!p) ThrowErrno(env, "bpf_object__find_program_by_name", ENOENT, name);
    return p;
  }

  Napi::Value ProgFd(const Napi::CallbackInfo &info) {
    std::string name = StringArg(info, 0, "program name");
    bpf_program *p = FindProgram(info.Env(), name);
    int fd = bpf_program__fd(p);
    if (fd < 0) ThrowErrno(info.Env(), "bpf_program__fd", ErrnoOf(fd), name + " (object not loaded?)");
    return Napi::Number::New(info.Env(), fd);
  }

  // Tracepoints and the like, attached as their section names say (not XDP: see xdpLinkCreate).
  Napi::Value Attach(const Napi::CallbackInfo &info) {
    std::string name = StringArg(info, 0, "program name");
    bpf_program *p = FindProgram(info.Env(), name);
    bpf_link *link = bpf_program__attach(p);
    long err = libbpf_get_error(link);
    if (err) ThrowErrno(info.Env(), "bpf_program__attach", ErrnoOf(err), name);
    links_.push_back(link);
    return info.Env().Undefined();
  }

  // An iterator program's output, whole: attached on first use (detached on close), then
  // one iterator per call, read to its end. For iterators that write little (map counts).
  Napi::Value ReadIter(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string name = StringArg(info, 0, "program name");
    bpf_program *p = FindProgram(env, name);
    bpf_link *link = nullptr;
    for (auto &[prog, l] : iters_)
      if (prog == p) link = l;
    if (!link) {
      link = bpf_program__attach_iter(p, nullptr);
      long err = libbpf_get_error(link);
      if (err) ThrowErrno(env, "bpf_program__attach_iter", ErrnoOf(err), name);
      links_.push_back(link);
      iters_.emplace_back(p, link);
    }
    Fd it(bpf_iter_create(bpf_link__fd(link)));
    if (it.fd() < 0) ThrowErrno(env, "bpf_iter_create", errno, name);
    std::vector<char> out;
    char buf[4096];
    for (;;) {
      ssize_t n = read(it.fd(), buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) ThrowErrno(env, "read", errno, name);
      if (n == 0) break;
      out.insert(out.end(), buf, buf + n);
    }
    return Napi::Buffer<char>::Copy(env, out.data(), out.size());
  }

  void Release() {
    for (bpf_link *l : links_) bpf_link__destroy(l);
    links_.clear();
    iters_.clear();
    bpf_object__close(obj_);
    obj_ = nullptr;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    Release();
    return info.Env().Undefined();
  }

  std::string path_;
  bpf_object *obj_ = nullptr;
  std::vector<bpf_link *> links_;
  std::vector<std::pair<bpf_program *, bpf_link *>> iters_;
};

}  // namespace

void InitObject(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(LibbpfPrint);
  exports.Set("BpfObject", BpfObject::Define(env));
}

}  // namespace dvipa
