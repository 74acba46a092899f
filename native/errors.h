// Errors thrown to JavaScript carry the failing call (`op`), the errno and its symbolic
// name (`code`), so the TypeScript side can name the map or program and react to codes.
#pragma once
#include <napi.h>
#include <string>

namespace dvipa {

// Throws a JS Error for a failed call; `err` is a positive errno.
[[noreturn]] void ThrowErrno(Napi::Env env, const char *op, int err, const std::string &detail = "");

// The same Error, not thrown: for failures reported to a callback.
Napi::Error ErrnoError(Napi::Env env, const char *op, int err, const std::string &detail = "");

// The symbolic name of an errno (ENOENT), or E<number>.
std::string ErrnoName(int err);

// libbpf 1.x returns -errno; some calls return NULL/-1 and set errno instead.
inline int ErrnoOf(long ret) { return ret < 0 ? static_cast<int>(-ret) : errno; }

// Argument helpers: throw TypeError with a clear message on misuse.
int FdArg(const Napi::CallbackInfo &info, size_t i);
uint32_t U32Arg(const Napi::CallbackInfo &info, size_t i, const char *what);
Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo &info, size_t i, const char *what);
std::string StringArg(const Napi::CallbackInfo &info, size_t i, const char *what);

}  // namespace dvipa
