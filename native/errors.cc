#include "errors.h"

#include <cerrno>
#include <cstring>

namespace dvipa {

std::string ErrnoName(int err) {
  const char *name = strerrorname_np(err);
  return name ? name : "E" + std::to_string(err);
}

Napi::Error ErrnoError(Napi::Env env, const char *op, int err, const std::string &detail) {
  std::string code = ErrnoName(err);
  Napi::Error e = Napi::Error::New(env, std::string(op) + ": " + code + " (" + strerror(err) + ")");
  e.Set("op", Napi::String::New(env, op));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, code));
  if (!detail.empty()) e.Set("detail", Napi::String::New(env, detail));
  return e;
}

void ThrowErrno(Napi::Env env, const char *op, int err, const std::string &detail) { throw ErrnoError(env, op, err, detail); }

int FdArg(const Napi::CallbackInfo &info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "expected a file descriptor (number)");
  int fd = info[i].As<Napi::Number>().Int32Value();
  if (fd < 0) throw Napi::TypeError::New(info.Env(), "file descriptor must be >= 0");
  return fd;
}

uint32_t U32Arg(const Napi::CallbackInfo &info, size_t i, const char *what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string("expected a number for ") + what);
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v < 0 || v > 4294967295.0 || v != static_cast<double>(static_cast<uint64_t>(v)))
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an integer from 0 to 2^32-1");
  return static_cast<uint32_t>(v);
}

Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo &info, size_t i, const char *what) {
  if (info.Length() <= i || !info[i].IsBuffer()) throw Napi::TypeError::New(info.Env(), std::string("expected a Buffer for ") + what);
  return info[i].As<Napi::Buffer<uint8_t>>();
}

std::string StringArg(const Napi::CallbackInfo &info, size_t i, const char *what) {
  if (info.Length() <= i || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string("expected a string for ") + what);
  return info[i].As<Napi::String>().Utf8Value();
}

}  // namespace dvipa
