// BTF of a compiled object: struct layouts and enums, so tests can check that the
// TypeScript codecs match the C declarations exactly.
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <memory>

#include "errors.h"
#include "exports.h"

namespace dvipa {
namespace {

std::unique_ptr<btf, void (*)(btf *)> Parse(Napi::Env env, const std::string &path) {
  btf *b = btf__parse(path.c_str(), nullptr);  // an object file or raw BTF (/sys/kernel/btf/vmlinux)
  long err = libbpf_get_error(b);
  if (err) ThrowErrno(env, "btf__parse", ErrnoOf(err), path);
  return {b, btf__free};
}

const btf_type *Find(Napi::Env env, const btf *b, const std::string &name, __u32 kind) {
  __s32 id = btf__find_by_name_kind(b, name.c_str(), kind);
  if (id < 0) ThrowErrno(env, "btf__find_by_name_kind", ErrnoOf(id), name);
  return btf__type_by_id(b, id);
}

Napi::Value BtfStruct(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  auto b = Parse(env, StringArg(info, 0, "object path"));
  std::string name = StringArg(info, 1, "struct name");
  const btf_type *t = Find(env, b.get(), name, BTF_KIND_STRUCT);
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", t->size);
  Napi::Array members = Napi::Array::New(env);
  const btf_member *m = btf_members(t);
  for (int i = 0; i < btf_vlen(t); i++, m++) {
    if (btf_member_bitfield_size(t, i)) throw Napi::Error::New(env, name + ": bitfields are not supported");
    Napi::Object mo = Napi::Object::New(env);
    mo.Set("name", btf__name_by_offset(b.get(), m->name_off));
    mo.Set("offset", btf_member_bit_offset(t, i) / 8);
    __s64 size = btf__resolve_size(b.get(), m->type);
    if (size < 0) ThrowErrno(env, "btf__resolve_size", ErrnoOf(size), name);
    mo.Set("size", static_cast<double>(size));
    members.Set(i, mo);
  }
  o.Set("members", members);
  return o;
}

Napi::Value BtfEnum(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  auto b = Parse(env, StringArg(info, 0, "object path"));
  std::string name = StringArg(info, 1, "enum name");
  const btf_type *t = Find(env, b.get(), name, BTF_KIND_ENUM);
  Napi::Object o = Napi::Object::New(env);
  const struct btf_enum *e = btf_enum(t);
  for (int i = 0; i < btf_vlen(t); i++, e++) o.Set(btf__name_by_offset(b.get(), e->name_off), e->val);
  return o;
}

}  // namespace

void InitBtf(Napi::Env env, Napi::Object exports) {
  exports.Set("btfStruct", Napi::Function::New(env, BtfStruct));
  exports.Set("btfEnum", Napi::Function::New(env, BtfEnum));
}

}  // namespace dvipa
