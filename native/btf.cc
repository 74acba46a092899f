// BTF of a compiled object: struct layouts and enums, so tests can check that the
// TypeScript codecs match the C declarations exactly.
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <memory>

#include "errors.h"
#include "exports.h"

namespace dvipa {
namespace {

// A module's BTF (/sys/kernel/btf/xfrm_user) is split: it extends vmlinux's, which must
// stay loaded while it is used.
struct Btfs {
  btf *base = nullptr;
  btf *b = nullptr;
  ~Btfs() {
    btf__free(b);
    btf__free(base);
  }
  btf *get() const { return b; }
};

std::unique_ptr<Btfs> Parse(Napi::Env env, const std::string &path, const std::string &basePath = "") {
  auto out = std::make_unique<Btfs>();
  if (!basePath.empty()) {
    out->base = btf__parse(basePath.c_str(), nullptr);
    long err = libbpf_get_error(out->base);
    if (err) {
      out->base = nullptr;
      ThrowErrno(env, "btf__parse", ErrnoOf(err), basePath);
    }
  }
  // An object file or raw BTF (/sys/kernel/btf/vmlinux), split over `base` if given.
  out->b = out->base ? btf__parse_split(path.c_str(), out->base) : btf__parse(path.c_str(), nullptr);
  long err = libbpf_get_error(out->b);
  if (err) {
    out->b = nullptr;
    ThrowErrno(env, out->base ? "btf__parse_split" : "btf__parse", ErrnoOf(err), path);
  }
  return out;
}

const btf_type *Find(Napi::Env env, const btf *b, const std::string &name, __u32 kind) {
  __s32 id = btf__find_by_name_kind(b, name.c_str(), kind);
  if (id < 0) ThrowErrno(env, "btf__find_by_name_kind", ErrnoOf(id), name);
  return btf__type_by_id(b, id);
}

// The optional third argument: for a module's split BTF, the vmlinux BTF it extends.
std::string BasePathArg(const Napi::CallbackInfo &info) { return info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : ""; }

Napi::Value BtfStruct(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  auto b = Parse(env, StringArg(info, 0, "object path"), BasePathArg(info));
  std::string name = StringArg(info, 1, "struct name");
  const btf_type *t = Find(env, b->get(), name, BTF_KIND_STRUCT);
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", t->size);
  Napi::Array members = Napi::Array::New(env);
  const btf_member *m = btf_members(t);
  for (int i = 0; i < btf_vlen(t); i++, m++) {
    if (btf_member_bitfield_size(t, i)) throw Napi::Error::New(env, name + ": bitfields are not supported");
    Napi::Object mo = Napi::Object::New(env);
    mo.Set("name", btf__name_by_offset(b->get(), m->name_off));
    mo.Set("offset", btf_member_bit_offset(t, i) / 8);
    __s64 size = btf__resolve_size(b->get(), m->type);
    if (size < 0) ThrowErrno(env, "btf__resolve_size", ErrnoOf(size), name);
    mo.Set("size", static_cast<double>(size));
    members.Set(i, mo);
  }
  o.Set("members", members);
  return o;
}

Napi::Value BtfEnum(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  auto b = Parse(env, StringArg(info, 0, "object path"), BasePathArg(info));
  std::string name = StringArg(info, 1, "enum name");
  const btf_type *t = Find(env, b->get(), name, BTF_KIND_ENUM);
  Napi::Object o = Napi::Object::New(env);
  const struct btf_enum *e = btf_enum(t);
  for (int i = 0; i < btf_vlen(t); i++, e++) o.Set(btf__name_by_offset(b->get(), e->name_off), e->val);
  return o;
}

}  // namespace

void InitBtf(Napi::Env env, Napi::Object exports) {
  exports.Set("btfStruct", Napi::Function::New(env, BtfStruct));
  exports.Set("btfEnum", Napi::Function::New(env, BtfEnum));
}

}  // namespace dvipa
