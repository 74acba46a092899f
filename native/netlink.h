// What the XFRM request transport (xfrm.cc) and the XFRM event stream (xfrm_events.cc) share.
#pragma once
#include <linux/netlink.h>
#include <napi.h>
#include <unistd.h>

namespace dvipa {

// Owns a file descriptor, so that every way out of a function, throws included, closes it.
class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  ~Socket() { reset(); }
  Socket(const Socket &) = delete;
  Socket &operator=(const Socket &) = delete;
  int fd() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// A netlink message as JavaScript sees it: {type, payload}, the bytes after the header copied.
inline Napi::Object MessageObject(Napi::Env env, const nlmsghdr *h) {
  Napi::Object m = Napi::Object::New(env);
  m.Set("type", h->nlmsg_type);
  m.Set("payload", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t *>(NLMSG_DATA(h)), h->nlmsg_len - NLMSG_HDRLEN));
  return m;
}

}  // namespace dvipa
