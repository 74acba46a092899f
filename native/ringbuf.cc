// RingBuffer: a BPF ring buffer read from Node's own event loop. libbpf gives an epoll fd
// that is readable when records wait; a uv_poll on it consumes them and hands the batch to
// JavaScript, so no thread and no timer polls.
#include <bpf/libbpf.h>
#include <uv.h>

#include <vector>

#include "errors.h"
#include "exports.h"

namespace dvipa {
namespace {

class RingBuffer : public Napi::ObjectWrap<RingBuffer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RingBuffer", {InstanceMethod("close", &RingBuffer::Close)});
  }

  explicit RingBuffer(const Napi::CallbackInfo &info) : Napi::ObjectWrap<RingBuffer>(info), env_(info.Env()) {
    int fd = FdArg(info, 0);
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env_, "expected a callback(records: Buffer[])");
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    rb_ = ring_buffer__new(fd, OnSample, this, nullptr);
    long err = libbpf_get_error(rb_);
    if (err) {
      rb_ = nullptr;
      ThrowErrno(env_, "ring_buffer__new", ErrnoOf(err));
    }
    uv_loop_t *loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    poll_ = new uv_poll_t;
    poll_->data = this;
    int r = uv_poll_init(loop, poll_, ring_buffer__epoll_fd(rb_));
    if (r) {
      ring_buffer__free(rb_);
      rb_ = nullptr;
      delete poll_;
      poll_ = nullptr;
      ThrowErrno(env_, "uv_poll_init", -r);
    }
    r = uv_poll_start(poll_, UV_READABLE, OnReadable);
    if (r) {
      Stop();  // an initialised handle is the loop's until uv_close
      ThrowErrno(env_, "uv_poll_start", -r);
    }
    Ref();  // kept alive by the poll until close()
  }

  ~RingBuffer() override { Stop(); }

 private:
  static int OnSample(void *ctx, void *data, size_t size) {
    auto *self = static_cast<RingBuffer *>(ctx);
    auto *p = static_cast<uint8_t *>(data);
    self->pending_.emplace_back(p, p + size);
    return 0;
  }

  static void OnReadable(uv_poll_t *handle, int status, int) {
    auto *self = static_cast<RingBuffer *>(handle->data);
    if (status < 0 || !self->rb_) return;
    ring_buffer__consume(self->rb_);
    if (self->pending_.empty()) return;
    Napi::HandleScope scope(self->env_);
    Napi::Array records = Napi::Array::New(self->env_, self->pending_.size());
    for (size_t i = 0; i < self->pending_.size(); i++)
      records.Set(i, Napi::Buffer<uint8_t>::Copy(self->env_, self->pending_[i].data(), self->pending_[i].size()));
    self->pending_.clear();
    try {
      self->callback_.MakeCallback(self->env_.Global(), {records});
    } catch (const Napi::Error &e) {
      // Thrown by the callback: Node's uncaught exception, as from any event handler, not an
      // exception out of a libuv callback (which aborts the process).
      napi_fatal_exception(self->env_, e.Value());
    }
  }

  void Stop() {
    if (poll_) {
      uv_poll_stop(poll_);
      uv_close(reinterpret_cast<uv_handle_t *>(poll_), [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
      poll_ = nullptr;
    }
    if (rb_) {
      ring_buffer__free(rb_);
      rb_ = nullptr;
    }
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (poll_) Unref();
    Stop();
    return info.Env().Undefined();
  }

  Napi::Env env_;
  Napi::FunctionReference callback_;
  ring_buffer *rb_ = nullptr;
  uv_poll_t *poll_ = nullptr;
  std::vector<std::vector<uint8_t>> pending_;
};

}  // namespace

void InitRingBuf(Napi::Env env, Napi::Object exports) { exports.Set("RingBuffer", RingBuffer::Define(env)); }

}  // namespace dvipa
