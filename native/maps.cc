// Map operations on file descriptors (or MapRefs: the info read once). Buffers are Node's
// own memory, passed to the kernel without copies; their sizes are checked against the map's
// so the kernel never reads or writes past them.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "errors.h"
#include "exports.h"

namespace dvipa {
namespace {

bpf_map_info InfoOf(Napi::Env env, int fd) {
  bpf_map_info info = {};
  __u32 len = sizeof(info);
  int r = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (r) ThrowErrno(env, "bpf_obj_get_info_by_fd", ErrnoOf(r));
  return info;
}

// A map's fd with its info, read once: the sizes every operation checks buffers against,
// without a bpf_obj_get_info_by_fd per operation. Valid while the fd is open (its owner
// closes it, not this).
class MapRef : public Napi::ObjectWrap<MapRef> {
 public:
  static Napi::Function Define(Napi::Env env) { return DefineClass(env, "MapRef", {}); }
  explicit MapRef(const Napi::CallbackInfo &info)
      : Napi::ObjectWrap<MapRef>(info), fd_(FdArg(info, 0)), info_(InfoOf(info.Env(), fd_)) {}
  int fd() const { return fd_; }
  const bpf_map_info &info() const { return info_; }

 private:
  int fd_;
  bpf_map_info info_;
};

// The constructor of this environment's MapRef (workers have their own), to tell a MapRef
// from any other object before unwrapping it.
struct AddonData {
  Napi::FunctionReference mapRef;
};

struct Map {
  int fd;
  bpf_map_info info;
};

// Argument i: a MapRef (its info as read), or an fd (the info read now).
Map MapArg(const Napi::CallbackInfo &info, size_t i) {
  Napi::Env env = info.Env();
  if (info.Length() > i && info[i].IsObject()) {
    auto *data = env.GetInstanceData<AddonData>();
    Napi::Object o = info[i].As<Napi::Object>();
    if (!data || !o.InstanceOf(data->mapRef.Value()))
      throw Napi::TypeError::New(env, "expected a map: a MapRef or a file descriptor");
    MapRef *m = MapRef::Unwrap(o);
    return {m->fd(), m->info()};
  }
  int fd = FdArg(info, i);
  return {fd, InfoOf(env, fd)};
}

bool PerCpu(__u32 type) {
  return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
         type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

// Bytes one value occupies in user space (per-CPU maps hold one 8-aligned copy per CPU).
size_t ValueBytes(const bpf_map_info &info) {
  if (!PerCpu(info.type)) return info.value_size;
  return ((info.value_size + 7) / 8 * 8) * static_cast<size_t>(libbpf_num_possible_cpus());
}

void CheckLen(Napi::Env env, const char *what, size_t have, size_t need) {
  if (have < need)
    throw Napi::TypeError::New(env, std::string(what) + " buffer holds " + std::to_string(have) + " bytes, the map needs " +
                                        std::to_string(need));
}

Napi::Value MapCreate(const Napi::CallbackInfo &info) {
  auto type = static_cast<bpf_map_type>(U32Arg(info, 0, "type"));
  std::string name = StringArg(info, 1, "name");
  uint32_t key = U32Arg(info, 2, "keySize"), value = U32Arg(info, 3, "valueSize"), max = U32Arg(info, 4, "maxEntries");
  LIBBPF_OPTS(bpf_map_create_opts, opts);
  if (info.Length() > 5 && !info[5].IsUndefined()) opts.map_flags = U32Arg(info, 5, "flags");
  int fd = bpf_map_create(type, name.c_str(), key, value, max, &opts);
  if (fd < 0) ThrowErrno(info.Env(), "bpf_map_create", ErrnoOf(fd));
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value MapLookup(const Napi::CallbackInfo &info) {
  auto [fd, mi] = MapArg(info, 0);
  auto key = BufferArg(info, 1, "key");
  auto value = BufferArg(info, 2, "value");
  CheckLen(info.Env(), "key", key.Length(), mi.key_size);
  CheckLen(info.Env(), "value", value.Length(), ValueBytes(mi));
  int r = bpf_map_lookup_elem(fd, key.Data(), value.Data());
  if (r == -ENOENT) return Napi::Boolean::New(info.Env(), false);
  if (r) ThrowErrno(info.Env(), "bpf_map_lookup_elem", ErrnoOf(r));
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value MapUpdate(const Napi::CallbackInfo &info) {
  auto [fd, mi] = MapArg(info, 0);
  auto key = BufferArg(info, 1, "key");
  auto value = BufferArg(info, 2, "value");
  __u64 flags = info.Length() > 3 && !info[3].IsUndefined() ? U32Arg(info, 3, "flags") : static_cast<__u64>(BPF_ANY);
  CheckLen(info.Env(), "key", key.Length(), mi.key_size);
  CheckLen(info.Env(), "value", value.Length(), ValueBytes(mi));
  int r = bpf_map_update_elem(fd, key.Data(), value.Data(), flags);
  if (r) ThrowErrno(info.Env(), "bpf_map_update_elem", ErrnoOf(r));
  return info.Env().Undefined();
}

Napi::Value MapDelete(const Napi::CallbackInfo &info) {
  auto [fd, mi] = MapArg(info, 0);
  auto key = BufferArg(info, 1, "key");
  CheckLen(info.Env(), "key", key.Length(), mi.key_size);
  int r = bpf_map_delete_elem(fd, key.Data());
  if (r == -ENOENT) return Napi::Boolean::New(info.Env(), false);
  if (r) ThrowErrno(info.Env(), "bpf_map_delete_elem", ErrnoOf(r));
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value MapGetNextKey(const Napi::CallbackInfo &info) {
  auto [fd, mi] = MapArg(info, 0);
  const void *cur = nullptr;
  if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) {
    auto key = BufferArg(info, 1, "key");
    CheckLen(info.Env(), "key", key.Length(), mi.key_size);
    cur = key.Data();
  }
  auto next = BufferArg(info, 2, "next");
  CheckLen(info.Env(), "next key", next.Length(), mi.key_size);
  int r = bpf_map_get_next_key(fd, cur, next.Data());
  if (r == -ENOENT) return Napi::Boolean::New(info.Env(), false);
  if (r) ThrowErrno(info.Env(), "bpf_map_get_next_key", ErrnoOf(r));
  return Napi::Boolean::New(info.Env(), true);
}

// Checks keys/values hold `count` entries.
void CheckBatch(const Napi::CallbackInfo &info, const bpf_map_info &mi, const Napi::Buffer<uint8_t> &keys,
                const Napi::Buffer<uint8_t> *values, uint32_t count) {
  CheckLen(info.Env(), "keys", keys.Length(), static_cast<size_t>(mi.key_size) * count);
  if (values) CheckLen(info.Env(), "values", values->Length(), ValueBytes(mi) * count);
}

Napi::Value MapUpdateBatch(const Napi::CallbackInfo &info) {
  auto [fd, mi] = MapArg(info, 0);
  auto keys = BufferArg(info, 1, "keys");
  auto values = BufferArg(info, 2, "values");
  uint32_t count = U32Arg(info, 3, "count");
  CheckBatch(info, mi, keys, &values, count);
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  if (info.Length() > 4 && !info[4].IsUndefined()) opts.elem_flags = U32Arg(info, 4, "flags");
  __u32 n = count;
  int r = bpf_map_update_batch(fd, keys.Data(), values.Data(), &n, &opts);
  if (r) {
    try {
      ThrowErrno(info.Env(), "bpf_map_update_batch", ErrnoOf(r));
    } catch (Napi::Error &e) {
      e.Set("processed", Napi::Number::New(info.Env(), n));
      throw;
    }
  }
  return Napi::Number::New(info.Env(), n);
}

Napi::Value MapLookupBatch(const Napi::CallbackInfo &info) {
  auto [fd, mi] = MapArg(info, 0);
  void *in = nullptr;
  if (!info[1].IsNull() && !info[1].IsUndefined()) in = BufferArg(info, 1, "inBatch").Data();
  auto out = BufferArg(info, 2, "outBatch");
  auto keys = BufferArg(info, 3, "keys");
  auto values = BufferArg(info, 4, "values");
  uint32_t count = U32Arg(info, 5, "count");
  CheckBatch(info, mi, keys, &values, count);
  // The kernel writes a resume token of the key's size (hash maps: a bucket index).
  CheckLen(info.Env(), "outBatch", out.Length(), std::max<size_t>(mi.key_size, sizeof(__u32)));
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  __u32 n = count;
  int r = bpf_map_lookup_batch(fd, in, out.Data(), keys.Data(), values.Data(), &n, &opts);
  bool done = false;
  if (r == -ENOENT) {
    done = true;
  } else if (r) {
    ThrowErrno(info.Env(), "bpf_map_lookup_batch", ErrnoOf(r));
  }
  Napi::Object res = Napi::Object::New(info.Env());
  res.Set("count", Napi::Number::New(info.Env(), n));
  res.Set("done", Napi::Boolean::New(info.Env(), done));
  return res;
}

Napi::Value MapDeleteBatch(const Napi::CallbackInfo &info) {
  auto [fd, mi] = MapArg(info, 0);
  auto keys = BufferArg(info, 1, "keys");
  uint32_t count = U32Arg(info, 2, "count");
  CheckBatch(info, mi, keys, nullptr, count);
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  __u32 n = count;
  int r = bpf_map_delete_batch(fd, keys.Data(), &n, &opts);
  // A key that is already gone ends the batch with ENOENT after `n` deletions.
  if (r && r != -ENOENT) ThrowErrno(info.Env(), "bpf_map_delete_batch", ErrnoOf(r));
  return Napi::Number::New(info.Env(), n);
}

Napi::Value MapInfo(const Napi::CallbackInfo &info) {
  auto mi = MapArg(info, 0).info;
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("type", mi.type);
  o.Set("id", mi.id);
  o.Set("keySize", mi.key_size);
  o.Set("valueSize", mi.value_size);
  o.Set("maxEntries", mi.max_entries);
  o.Set("flags", mi.map_flags);
  o.Set("name", mi.name);
  return o;
}

// An mmapable array's values, shared with the data plane, as an ArrayBuffer that unmaps
// itself when collected. The mapping holds the map: it outlives a closed fd.
Napi::Value MapMmap(const Napi::CallbackInfo &info) {
  auto [fd, mi] = MapArg(info, 0);
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t len = (static_cast<size_t>(mi.value_size) * mi.max_entries + page - 1) / page * page;
  if (mi.type != BPF_MAP_TYPE_ARRAY || !(mi.map_flags & BPF_F_MMAPABLE))
    throw Napi::TypeError::New(info.Env(), std::string("map ") + mi.name + " is not an mmapable array");
  void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) ThrowErrno(info.Env(), "mmap", errno);
  return Napi::ArrayBuffer::New(info.Env(), p, len, [len](Napi::Env, void *data) { munmap(data, len); });
}

// Slots of an mmapped map guarded by a sequence word at their start, the protocol of the
// data plane's CRT cache (bpf/distributor.h): a writer moves the word from even to odd with a
// compare-and-swap, writes, and adds one; a reader keeps its copy only if the word was even
// and unchanged around it. Here, not in JavaScript: V8's Atomics on memory that is not a
// SharedArrayBuffer are not atomic, and its compiler may fold the second read of the word.
uint32_t *SeqWord(const Napi::CallbackInfo &info, size_t len) {
  if (!info[0].IsArrayBuffer()) throw Napi::TypeError::New(info.Env(), "expected the mapping: an ArrayBuffer");
  auto mem = info[0].As<Napi::ArrayBuffer>();
  uint32_t at = U32Arg(info, 1, "offset");
  if (at % 4 || static_cast<size_t>(at) + len > mem.ByteLength())
    throw Napi::RangeError::New(info.Env(), "slot out of the mapping");
  return reinterpret_cast<uint32_t *>(static_cast<uint8_t *>(mem.Data()) + at);
}

// seqRead(mem, offset, out): copies the slot into `out` (its length); false if it was being written.
Napi::Value SeqRead(const Napi::CallbackInfo &info) {
  auto out = BufferArg(info, 2, "out");
  uint32_t *word = SeqWord(info, out.Length());
  uint32_t seq = __atomic_load_n(word, __ATOMIC_ACQUIRE);
  if (seq & 1) return Napi::Boolean::New(info.Env(), false);
  memcpy(out.Data(), word, out.Length());
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return Napi::Boolean::New(info.Env(), __atomic_load_n(word, __ATOMIC_RELAXED) == seq);
}

// seqWrite(mem, offset, data, ownerAt, owner): claims the slot, and if `owner` (may be empty)
// is what the slot holds at `ownerAt`, writes `data` over it after the word; lets it go.
// Returns whether it wrote. A slot claimed for a second (a writer that stopped) throws.
Napi::Value SeqWrite(const Napi::CallbackInfo &info) {
  auto data = BufferArg(info, 2, "data");
  uint32_t ownerAt = U32Arg(info, 3, "ownerAt");
  auto owner = BufferArg(info, 4, "owner");
  uint32_t *word = SeqWord(info, std::max<size_t>(data.Length(), ownerAt + owner.Length()));
  if (data.Length() < 4) throw Napi::RangeError::New(info.Env(), "a slot holds its sequence word first");
  auto *slot = reinterpret_cast<uint8_t *>(word);
  timespec start{}, now{};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (unsigned tries = 1;; tries++) {
    uint32_t seq = __atomic_load_n(word, __ATOMIC_RELAXED);
    if (!(seq & 1) && __atomic_compare_exchange_n(word, &seq, seq + 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) break;
    if (tries % 1024) continue;
    // Only a writer preempted while it holds the slot (a test run, not XDP) keeps it this long.
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec > 1) throw Napi::Error::New(info.Env(), "slot stays claimed by another writer");
  }
  bool mine = owner.Length() == 0 || memcmp(slot + ownerAt, owner.Data(), owner.Length()) == 0;
  if (mine) memcpy(slot + 4, data.Data() + 4, data.Length() - 4);
  __atomic_fetch_add(word, 1, __ATOMIC_RELEASE);
  return Napi::Boolean::New(info.Env(), mine);
}

// seqReset(mem, offset, seq, length): a slot whose word is still `seq` (odd: a writer that
// was killed while it held it) is emptied (zeros after the word) and let go. Returns whether it was.
Napi::Value SeqReset(const Napi::CallbackInfo &info) {
  uint32_t seq = U32Arg(info, 2, "seq");
  uint32_t len = U32Arg(info, 3, "length");
  uint32_t *word = SeqWord(info, len);
  if (!(seq & 1) || len < 4) throw Napi::RangeError::New(info.Env(), "only a claimed slot is reset");
  if (!__atomic_compare_exchange_n(word, &seq, seq, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
    return Napi::Boolean::New(info.Env(), false);
  memset(reinterpret_cast<uint8_t *>(word) + 4, 0, len - 4);
  __atomic_fetch_add(word, 1, __ATOMIC_RELEASE);
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value ObjGet(const Napi::CallbackInfo &info) {
  std::string path = StringArg(info, 0, "path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(info.Env(), "bpf_obj_get", ErrnoOf(fd));
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value ObjPin(const Napi::CallbackInfo &info) {
  int fd = FdArg(info, 0);
  std::string path = StringArg(info, 1, "path");
  int r = bpf_obj_pin(fd, path.c_str());
  if (r) ThrowErrno(info.Env(), "bpf_obj_pin", ErrnoOf(r));
  return info.Env().Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo &info) {
  if (close(FdArg(info, 0))) ThrowErrno(info.Env(), "close", errno);
  return info.Env().Undefined();
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo &info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowErrno(info.Env(), "libbpf_num_possible_cpus", -n);
  return Napi::Number::New(info.Env(), n);
}

}  // namespace

void InitMaps(Napi::Env env, Napi::Object exports) {
  Napi::Function mapRef = MapRef::Define(env);
  auto *data = new AddonData{Napi::Persistent(mapRef)};
  env.SetInstanceData<AddonData>(data);
  exports.Set("MapRef", mapRef);
  exports.Set("mapCreate", Napi::Function::New(env, MapCreate));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete));
  exports.Set("mapGetNextKey", Napi::Function::New(env, MapGetNextKey));
  exports.Set("mapUpdateBatch", Napi::Function::New(env, MapUpdateBatch));
  exports.Set("mapLookupBatch", Napi::Function::New(env, MapLookupBatch));
  exports.Set("mapDeleteBatch", Napi::Function::New(env, MapDeleteBatch));
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo));
  exports.Set("mapMmap", Napi::Function::New(env, MapMmap));
  exports.Set("seqRead", Napi::Function::New(env, SeqRead));
  exports.Set("seqWrite", Napi::Function::New(env, SeqWrite));
  exports.Set("seqReset", Napi::Function::New(env, SeqReset));
  exports.Set("objGet", Napi::Function::New(env, ObjGet));
  exports.Set("objPin", Napi::Function::New(env, ObjPin));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus));
}

}  // namespace dvipa
