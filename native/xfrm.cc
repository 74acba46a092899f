// Netlink requests: XFRM (NETLINK_XFRM, SAs and policies) and rtnetlink (NETLINK_ROUTE, a
// DVIPA's address): one request, its replies. The messages' payloads are built and parsed in
// TypeScript (src/ipsec/xfrm.ts, src/kernel/rtnl.ts), as the structs are plain kernel UAPI;
// here only the transport: send, collect replies until ACK or DONE, and turn an error into
// the errno with the kernel's own explanation (extended ACK), e.g. "Requested type not found".
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include "errors.h"
#include "exports.h"
#include "netlink.h"

namespace dvipa {
namespace {

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

// The kernel's text for an error, from the NLMSGERR_ATTR_MSG attribute of an extended ACK.
std::string ExtAckMessage(const nlmsghdr *h) {
  if (!(h->nlmsg_flags & NLM_F_ACK_TLVS)) return "";
  const size_t off = NLMSG_HDRLEN + sizeof(nlmsgerr);  // NETLINK_CAP_ACK: the request is not echoed
  if (h->nlmsg_len <= off) return "";
  const char *p = reinterpret_cast<const char *>(h) + off;
  size_t left = h->nlmsg_len - off;
  while (left >= sizeof(nlattr)) {
    const nlattr *a = reinterpret_cast<const nlattr *>(p);
    if (a->nla_len < sizeof(nlattr) || a->nla_len > left) break;
    if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
      const char *s = p + NLA_HDRLEN;
      return std::string(s, strnlen(s, a->nla_len - NLA_HDRLEN));
    }
    const size_t step = NLA_ALIGN(a->nla_len);
    if (step > left) break;
    p += step;
    left -= step;
  }
  return "";
}

// A netlink socket whose errors explain themselves (extended ACK, request not echoed).
int OpenNetlink(Napi::Env env, int protocol, const char *what, const std::string &op) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
  if (fd < 0) ThrowErrno(env, what, errno, op);
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  // The kernel always answers; should it not, fail rather than block a thread forever.
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

int OpenXfrm(Napi::Env env, const std::string &op) {
  return OpenNetlink(env, NETLINK_XFRM, "socket(NETLINK_XFRM)", op);
}

// (op, type, flags, payload) -> [{type, payload}] on a socket of `protocol`.
Napi::Value Request(const Napi::CallbackInfo &info, int protocol, const char *socket_op, const char *send_op,
                    const char *recv_op) {
  Napi::Env env = info.Env();
  std::string op = StringArg(info, 0, "operation name");
  uint32_t type = U32Arg(info, 1, "message type");
  uint32_t flags = U32Arg(info, 2, "message flags");
  Napi::Buffer<uint8_t> payload = BufferArg(info, 3, "payload");

  Fd s(OpenNetlink(env, protocol, socket_op, op));
  std::vector<char> req(NLMSG_SPACE(payload.Length()), 0);
  auto *h = reinterpret_cast<nlmsghdr *>(req.data());
  h->nlmsg_len = NLMSG_LENGTH(payload.Length());
  h->nlmsg_type = static_cast<uint16_t>(type);
  h->nlmsg_flags = static_cast<uint16_t>(flags | NLM_F_REQUEST | NLM_F_ACK);
  h->nlmsg_seq = 1;
  if (payload.Length()) std::memcpy(NLMSG_DATA(h), payload.Data(), payload.Length());
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  // NLM_F_DUMP is two bits (ROOT|MATCH) that other requests reuse (REPLACE is ROOT's): both.
  const bool dump = (flags & NLM_F_DUMP) == NLM_F_DUMP;
  std::vector<char> buf(1 << 20);
  // A dump the kernel's tables changed under (NLM_F_DUMP_INTR) may miss or repeat entries:
  // asked again, a few times, rather than returned as if whole.
  constexpr int kDumpTries = 3;
  for (int attempt = 1;; attempt++) {
    if (sendto(s.fd(), req.data(), h->nlmsg_len, 0, reinterpret_cast<sockaddr *>(&kernel), sizeof(kernel)) < 0) ThrowErrno(env, send_op, errno, op);
    Napi::Array out = Napi::Array::New(env);
    uint32_t n = 0;
    bool interrupted = false;
    for (bool done = false; !done;) {
      ssize_t len = recv(s.fd(), buf.data(), buf.size(), 0);
      if (len < 0) {
        if (errno == EINTR) continue;
        ThrowErrno(env, recv_op, errno, op);
      }
      // Signed: an unaligned last message takes NLMSG_NEXT below 0, where NLMSG_OK must stop.
      int rest = static_cast<int>(len);
      for (auto *r = reinterpret_cast<nlmsghdr *>(buf.data()); !done && NLMSG_OK(r, rest); r = NLMSG_NEXT(r, rest)) {
        interrupted |= (r->nlmsg_flags & NLM_F_DUMP_INTR) != 0;
        if (r->nlmsg_type == NLMSG_DONE) {
          // A dump that failed part way says so in its DONE: an errno, not the end of a whole list.
          const int err = r->nlmsg_len >= NLMSG_LENGTH(sizeof(int)) ? *reinterpret_cast<const int *>(NLMSG_DATA(r)) : 0;
          if (err < 0) ThrowErrno(env, op.c_str(), -err, ExtAckMessage(r));
          done = true;
        } else if (r->nlmsg_type == NLMSG_ERROR) {
          const auto *e = reinterpret_cast<const nlmsgerr *>(NLMSG_DATA(r));
          if (e->error != 0) ThrowErrno(env, op.c_str(), -e->error, ExtAckMessage(r));
          done = !dump;
        } else {
          out.Set(n++, MessageObject(env, r));
        }
      }
    }
    if (!interrupted) return out;
    if (attempt == kDumpTries)
      ThrowErrno(env, op.c_str(), EINTR, "the kernel's tables changed during each of " + std::to_string(kDumpTries) + " dumps");
  }
}

// xfrmRequest(op, type, flags, payload) -> [{type, payload}]
Napi::Value XfrmRequest(const Napi::CallbackInfo &info) {
  return Request(info, NETLINK_XFRM, "socket(NETLINK_XFRM)", "sendto(NETLINK_XFRM)", "recv(NETLINK_XFRM)");
}

// routeRequest(op, type, flags, payload) -> [{type, payload}]
Napi::Value RouteRequest(const Napi::CallbackInfo &info) {
  return Request(info, NETLINK_ROUTE, "socket(NETLINK_ROUTE)", "sendto(NETLINK_ROUTE)", "recv(NETLINK_ROUTE)");
}

// One request of a batch, copied out of JavaScript's objects (checked: a bad entry is a
// TypeError naming it) so the worker thread never touches them.
struct BatchRequest {
  uint16_t type;
  uint16_t flags;
  std::vector<uint8_t> payload;
};

std::vector<BatchRequest> BatchArg(const Napi::CallbackInfo &info, size_t i) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsArray()) throw Napi::TypeError::New(env, "expected a list of requests");
  Napi::Array reqs = info[i].As<Napi::Array>();
  std::vector<BatchRequest> out(reqs.Length());
  for (uint32_t k = 0; k < out.size(); k++) {
    const std::string at = "request " + std::to_string(k);
    Napi::Value v = reqs.Get(k);
    if (!v.IsObject()) throw Napi::TypeError::New(env, at + ": expected {type, flags, payload}");
    Napi::Object r = v.As<Napi::Object>();
    Napi::Value type = r.Get("type"), flags = r.Get("flags"), payload = r.Get("payload");
    if (!type.IsNumber() || !flags.IsNumber()) throw Napi::TypeError::New(env, at + ": type and flags must be numbers");
    if (!payload.IsBuffer()) throw Napi::TypeError::New(env, at + ": payload must be a Buffer");
    const uint32_t t = type.As<Napi::Number>().Uint32Value(), f = flags.As<Napi::Number>().Uint32Value();
    if (t > 0xffff || f > 0xffff) throw Napi::TypeError::New(env, at + ": type and flags are 16-bit");
    auto b = payload.As<Napi::Buffer<uint8_t>>();
    if (b.Length() > (1u << 16)) throw Napi::TypeError::New(env, at + ": payload larger than 64 KiB");
    out[k] = {static_cast<uint16_t>(t), static_cast<uint16_t>(f),
              std::vector<uint8_t>(b.Data(), b.Data() + b.Length())};
  }
  return out;
}

// xfrmOpen() -> fd: a NETLINK_XFRM socket of the calling thread's namespace, for xfrmBatch.
Napi::Value XfrmOpen(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), OpenXfrm(info.Env(), "XFRM batch"));
}

// xfrmBatch(fd, [{type, flags, payload}]) -> Promise<[{errno, code, text, reason}]> (errno 0:
// done). Many requests on one socket, a window at a time: a takeover installs thousands of
// SAs and policies, which would hold Node's event loop (and the lease it renews) for a
// hundred milliseconds and more. A worker thread does the sends and receives; the socket is
// the caller's, opened with xfrmOpen in its namespace, and stays open until the promise settles.
class XfrmBatchWorker : public Napi::AsyncWorker {
 public:
  XfrmBatchWorker(Napi::Env env, int fd, std::vector<BatchRequest> reqs)
      : Napi::AsyncWorker(env, "dvipa:xfrmBatch"), deferred_(Napi::Promise::Deferred::New(env)), fd_(fd),
        reqs_(std::move(reqs)),
        err_(reqs_.size(), -1), why_(reqs_.size()) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    const uint32_t n = static_cast<uint32_t>(reqs_.size());
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    std::vector<char> buf(1 << 20);
    // Replies (one ACK each) must fit the socket's receive buffer: a window of requests at a time.
    const uint32_t window = 128;
    for (uint32_t first = 0; first < n; first += window) {
      const uint32_t last = std::min(n, first + window);
      for (uint32_t i = first; i < last; i++) {
        const BatchRequest &r = reqs_[i];
        std::vector<char> msg(NLMSG_SPACE(r.payload.size()), 0);
        auto *h = reinterpret_cast<nlmsghdr *>(msg.data());
        h->nlmsg_len = NLMSG_LENGTH(r.payload.size());
        h->nlmsg_type = r.type;
        h->nlmsg_flags = static_cast<uint16_t>(r.flags | NLM_F_REQUEST | NLM_F_ACK);
        h->nlmsg_seq = i + 1;
        if (!r.payload.empty()) std::memcpy(NLMSG_DATA(h), r.payload.data(), r.payload.size());
        if (sendto(fd_, msg.data(), h->nlmsg_len, 0, reinterpret_cast<sockaddr *>(&kernel), sizeof(kernel)) < 0)
          return Fail("sendto(NETLINK_XFRM)");
      }
      uint32_t pending = last - first;
      while (pending) {
        ssize_t len = recv(fd_, buf.data(), buf.size(), 0);
        if (len < 0) {
          if (errno == EINTR) continue;
          return Fail("recv(NETLINK_XFRM)");
        }
        int rest = static_cast<int>(len);
        for (auto *r = reinterpret_cast<nlmsghdr *>(buf.data()); NLMSG_OK(r, rest); r = NLMSG_NEXT(r, rest)) {
          if (r->nlmsg_type != NLMSG_ERROR || r->nlmsg_seq < first + 1 || r->nlmsg_seq > last) continue;
          const uint32_t i = r->nlmsg_seq - 1;
          if (err_[i] != -1) continue;
          err_[i] = -reinterpret_cast<const nlmsgerr *>(NLMSG_DATA(r))->error;
          if (err_[i]) why_[i] = ExtAckMessage(r);
          pending--;
        }
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (failedOp_) {
      deferred_.Reject(ErrnoError(env, failedOp_, failedErrno_).Value());
      return;
    }
    Napi::Array out = Napi::Array::New(env, err_.size());
    for (uint32_t i = 0; i < err_.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("errno", err_[i]);
      if (err_[i]) {
        o.Set("code", ErrnoName(err_[i]));
        o.Set("text", strerror(err_[i]));
        o.Set("reason", why_[i]);
      }
      out.Set(i, o);
    }
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error &e) override { deferred_.Reject(e.Value()); }

 private:
  // The batch stops at a transport failure; its errno goes to the promise (JavaScript cannot
  // be called from this thread).
  void Fail(const char *op) {
    failedOp_ = op;
    failedErrno_ = errno;
  }

  Napi::Promise::Deferred deferred_;
  int fd_;
  std::vector<BatchRequest> reqs_;
  std::vector<int> err_;
  std::vector<std::string> why_;
  const char *failedOp_ = nullptr;
  int failedErrno_ = 0;
};

Napi::Value XfrmBatch(const Napi::CallbackInfo &info) {
  const int fd = FdArg(info, 0);
  auto *w = new XfrmBatchWorker(info.Env(), fd, BatchArg(info, 1));
  Napi::Promise p = w->Promise();
  w->Queue();  // deletes itself when done
  return p;
}

}  // namespace

void InitXfrm(Napi::Env env, Napi::Object exports) {
  exports.Set("xfrmRequest", Napi::Function::New(env, XfrmRequest));
  exports.Set("routeRequest", Napi::Function::New(env, RouteRequest));
  exports.Set("xfrmOpen", Napi::Function::New(env, XfrmOpen));
  exports.Set("xfrmBatch", Napi::Function::New(env, XfrmBatch));
}

}  // namespace dvipa
