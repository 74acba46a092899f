// XFRM netlink (NETLINK_XFRM): one request, its replies. The messages' payloads are built
// and parsed in TypeScript (src/ipsec/xfrm.ts), as the structs are plain kernel UAPI; here
// only the transport: send, collect replies until ACK or DONE, and turn an error into the
// errno with the kernel's own explanation (extended ACK), e.g. "Requested type not found".
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

// A NETLINK_XFRM socket whose errors explain themselves (extended ACK, request not echoed).
int OpenXfrm(Napi::Env env, const std::string &op) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_XFRM);
  if (fd < 0) ThrowErrno(env, "socket(NETLINK_XFRM)", errno, op);
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  // The kernel always answers; should it not, fail rather than block Node's thread forever.
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// xfrmRequest(op, type, flags, payload) -> [{type, payload}]
Napi::Value XfrmRequest(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string op = StringArg(info, 0, "operation name");
  uint32_t type = U32Arg(info, 1, "message type");
  uint32_t flags = U32Arg(info, 2, "message flags");
  Napi::Buffer<uint8_t> payload = BufferArg(info, 3, "payload");

  Socket s(OpenXfrm(env, op));

  std::vector<char> req(NLMSG_SPACE(payload.Length()), 0);
  auto *h = reinterpret_cast<nlmsghdr *>(req.data());
  h->nlmsg_len = NLMSG_LENGTH(payload.Length());
  h->nlmsg_type = static_cast<uint16_t>(type);
  h->nlmsg_flags = static_cast<uint16_t>(flags | NLM_F_REQUEST | NLM_F_ACK);
  h->nlmsg_seq = 1;
  if (payload.Length()) std::memcpy(NLMSG_DATA(h), payload.Data(), payload.Length());
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(s.fd(), req.data(), h->nlmsg_len, 0, reinterpret_cast<sockaddr *>(&kernel), sizeof(kernel)) < 0) ThrowErrno(env, "sendto(NETLINK_XFRM)", errno, op);

  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  // NLM_F_DUMP is two bits (ROOT|MATCH) that other requests reuse (REPLACE is ROOT's): both.
  const bool dump = (flags & NLM_F_DUMP) == NLM_F_DUMP;
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t len = recv(s.fd(), buf.data(), buf.size(), 0);
    if (len < 0) {
      if (errno == EINTR) continue;
      ThrowErrno(env, "recv(NETLINK_XFRM)", errno, op);
    }
    for (auto *r = reinterpret_cast<nlmsghdr *>(buf.data()); NLMSG_OK(r, static_cast<unsigned>(len)); r = NLMSG_NEXT(r, len)) {
      if (r->nlmsg_type == NLMSG_DONE) return out;
      if (r->nlmsg_type == NLMSG_ERROR) {
        const auto *e = reinterpret_cast<const nlmsgerr *>(NLMSG_DATA(r));
        if (e->error == 0) {
          if (!dump) return out;
          continue;
        }
        std::string why = ExtAckMessage(r);
        ThrowErrno(env, op.c_str(), -e->error, why);
      }
      out.Set(n++, MessageObject(env, r));
    }
  }
}

// xfrmBatch([{type, flags, payload}]) -> [{errno, reason}] (errno 0: done). Many requests on
// one socket, a window at a time: a takeover installs thousands of SAs and policies.
Napi::Value XfrmBatch(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "expected a list of requests");
  Napi::Array reqs = info[0].As<Napi::Array>();
  const uint32_t n = reqs.Length();
  Socket s(OpenXfrm(env, "XFRM batch"));
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;

  std::vector<int> err(n, -1);
  std::vector<std::string> why(n);
  std::vector<char> buf(1 << 20);
  // Replies (one ACK each) must fit the socket's receive buffer: a window of requests at a time.
  const uint32_t window = 128;
  for (uint32_t first = 0; first < n; first += window) {
    const uint32_t last = std::min(n, first + window);
    for (uint32_t i = first; i < last; i++) {
      Napi::Object r = reqs.Get(i).As<Napi::Object>();
      Napi::Buffer<uint8_t> payload = r.Get("payload").As<Napi::Buffer<uint8_t>>();
      std::vector<char> msg(NLMSG_SPACE(payload.Length()), 0);
      auto *h = reinterpret_cast<nlmsghdr *>(msg.data());
      h->nlmsg_len = NLMSG_LENGTH(payload.Length());
      h->nlmsg_type = static_cast<uint16_t>(r.Get("type").As<Napi::Number>().Uint32Value());
      h->nlmsg_flags = static_cast<uint16_t>(r.Get("flags").As<Napi::Number>().Uint32Value() | NLM_F_REQUEST | NLM_F_ACK);
      h->nlmsg_seq = i + 1;
      if (payload.Length()) std::memcpy(NLMSG_DATA(h), payload.Data(), payload.Length());
      if (sendto(s.fd(), msg.data(), h->nlmsg_len, 0, reinterpret_cast<sockaddr *>(&kernel), sizeof(kernel)) < 0) ThrowErrno(env, "sendto(NETLINK_XFRM)", errno);
    }
    uint32_t pending = last - first;
    while (pending) {
      ssize_t len = recv(s.fd(), buf.data(), buf.size(), 0);
      if (len < 0) {
        if (errno == EINTR) continue;
        ThrowErrno(env, "recv(NETLINK_XFRM)", errno);
      }
      for (auto *r = reinterpret_cast<nlmsghdr *>(buf.data()); NLMSG_OK(r, static_cast<unsigned>(len)); r = NLMSG_NEXT(r, len)) {
        if (r->nlmsg_type != NLMSG_ERROR || r->nlmsg_seq < first + 1 || r->nlmsg_seq > last) continue;
        const uint32_t i = r->nlmsg_seq - 1;
        if (err[i] != -1) continue;
        err[i] = -reinterpret_cast<const nlmsgerr *>(NLMSG_DATA(r))->error;
        if (err[i]) why[i] = ExtAckMessage(r);
        pending--;
      }
    }
  }
  Napi::Array out = Napi::Array::New(env, n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("errno", err[i]);
    if (err[i]) {
      o.Set("code", ErrnoName(err[i]));
      o.Set("text", strerror(err[i]));
      o.Set("reason", why[i]);
    }
    out.Set(i, o);
  }
  return out;
}

}  // namespace

void InitXfrm(Napi::Env env, Napi::Object exports) {
  exports.Set("xfrmRequest", Napi::Function::New(env, XfrmRequest));
  exports.Set("xfrmBatch", Napi::Function::New(env, XfrmBatch));
}

}  // namespace dvipa
