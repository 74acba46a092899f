// RingBuffer: a BPF ring buffer read from Node's own event loop. libbpf gives an epoll fd
// that is readable when records wait; the poll (poll.h) consumes them and hands the batch to
// JavaScript.
#include <bpf/libbpf.h>

#include <vector>

#include "errors.h"
#include "exports.h"
#include "poll.h"

namespace dvipa {
namespace {

class RingBuffer : public Polled<RingBuffer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RingBuffer", {InstanceMethod("close", &RingBuffer::Close)});
  }

  explicit RingBuffer(const Napi::CallbackInfo &info) : Polled<RingBuffer>(info) {
    int fd = FdArg(info, 0);
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env_, "expected a callback(records: Buffer[])");
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    rb_ = ring_buffer__new(fd, OnSample, this, nullptr);
    long err = libbpf_get_error(rb_);
    if (err) {
      rb_ = nullptr;
      ThrowErrno(env_, "ring_buffer__new", ErrnoOf(err));
    }
    Watch(ring_buffer__epoll_fd(rb_));
  }

  ~RingBuffer() override { Stop(); }

 private:
  static int OnSample(void *ctx, void *data, size_t size) {
    auto *self = static_cast<RingBuffer *>(ctx);
    auto *p = static_cast<uint8_t *>(data);
    self->pending_.emplace_back(p, p + size);
    return 0;
  }

  void OnReadable(int status) override {
    if (status < 0 || !rb_) return;
    ring_buffer__consume(rb_);
    if (pending_.empty()) return;
    Napi::Array records = Napi::Array::New(env_, pending_.size());
    for (size_t i = 0; i < pending_.size(); i++)
      records.Set(i, Napi::Buffer<uint8_t>::Copy(env_, pending_[i].data(), pending_[i].size()));
    pending_.clear();
    Deliver(callback_, records);
  }

  void Release() override {
    if (rb_) {
      ring_buffer__free(rb_);
      rb_ = nullptr;
    }
  }

  Napi::FunctionReference callback_;
  ring_buffer *rb_ = nullptr;
  std::vector<std::vector<uint8_t>> pending_;
};

}  // namespace

void InitRingBuf(Napi::Env env, Napi::Object exports) { exports.Set("RingBuffer", RingBuffer::Define(env)); }

}  // namespace dvipa
