// A native object that reads a file descriptor when it becomes readable, on Node's own event
// loop (a uv_poll: no thread, no timer). RingBuffer, XfrmEvents and RouteEvents are all this:
// the handle's lifecycle, the object kept alive until close(), the teardown of a worker's environment
// (the handle must be closed before its loop goes) and a callback that throws (Node's
// uncaught exception, not an abort out of libuv) are handled here once.
#pragma once
#include <napi.h>
#include <uv.h>

#include "errors.h"

namespace dvipa {

template <typename T>
class Polled : public Napi::ObjectWrap<T> {
 public:
  Napi::Value Close(const Napi::CallbackInfo &info) {
    Stop();
    if (referenced_) {
      referenced_ = false;
      this->Unref();
    }
    return info.Env().Undefined();
  }

 protected:
  explicit Polled(const Napi::CallbackInfo &info) : Napi::ObjectWrap<T>(info), env_(info.Env()) {}

  // What the subclass watches and frees: OnReadable(status) drains `fd`; Release() frees what
  // it read from. Release runs once the poll is stopped (close, teardown, destruction).
  virtual void OnReadable(int status) = 0;
  virtual void Release() = 0;

  // Starts watching `fd`; the object stays alive until Close(). Throws (everything released) on failure.
  void Watch(int fd) {
    uv_loop_t *loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    poll_ = new uv_poll_t;
    int r = uv_poll_init(loop, poll_, fd);
    if (r) {
      delete poll_;  // not initialised: not the loop's
      poll_ = nullptr;
      Release();
      ThrowErrno(env_, "uv_poll_init", -r);
    }
    poll_->data = this;
    r = Rewatch();
    if (r) {
      Stop();  // an initialised handle is the loop's until uv_close
      ThrowErrno(env_, "uv_poll_start", -r);
    }
    napi_add_env_cleanup_hook(env_, Teardown, this);
    hooked_ = true;
    this->Ref();
    referenced_ = true;
  }

  // Watches again: libuv stops a poll on POLLERR. Returns a libuv error (0: done).
  int Rewatch() { return poll_ ? uv_poll_start(poll_, UV_READABLE, Readable) : 0; }

  bool Watching() const { return poll_ != nullptr; }

  // Idempotent: stops the poll, closes the handle, releases what the subclass holds.
  void Stop() {
    if (hooked_) {
      napi_remove_env_cleanup_hook(env_, Teardown, this);
      hooked_ = false;
    }
    if (poll_) {
      uv_poll_stop(poll_);
      uv_close(reinterpret_cast<uv_handle_t *>(poll_), [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
      poll_ = nullptr;
    }
    Release();
  }

  // Hands `arg` to the callback. A throw is Node's uncaught exception, as from any event
  // handler; while a worker's environment goes (JavaScript cannot run), nothing is delivered.
  void Deliver(Napi::FunctionReference &callback, napi_value arg) {
    try {
      callback.MakeCallback(env_.Global(), {arg});
    } catch (const Napi::Error &e) {
      napi_fatal_exception(env_, e.Value());
    }
  }

  // False while a worker's environment is being torn down: JavaScript can no longer run, and
  // a node-addon-api call failing then is fatal. Setting a property is refused at once.
  bool CanCallIntoJs() {
    napi_value probe;
    return napi_create_object(env_, &probe) == napi_ok &&
           napi_set_named_property(env_, probe, "probe", probe) == napi_ok;
  }

  Napi::Env env_;

 private:
  static void Readable(uv_poll_t *handle, int status, int) {
    auto *self = static_cast<Polled *>(handle->data);
    if (!self->poll_) return;
    Napi::HandleScope scope(self->env_);
    if (!self->CanCallIntoJs()) {
      self->Stop();
      return;
    }
    self->OnReadable(status);
  }

  static void Teardown(void *arg) {
    auto *self = static_cast<Polled *>(arg);
    self->hooked_ = false;
    self->Stop();
  }

  uv_poll_t *poll_ = nullptr;
  bool hooked_ = false;
  bool referenced_ = false;
};

}  // namespace dvipa
