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
#include <string>
#include <vector>

#include "errors.h"
#include "exports.h"

namespace dvipa {
namespace {

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

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

// xfrmRequest(op, type, flags, payload) -> [{type, payload}]
Napi::Value XfrmRequest(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string op = StringArg(info, 0, "operation name");
  uint32_t type = U32Arg(info, 1, "message type");
  uint32_t flags = U32Arg(info, 2, "message flags");
  Napi::Buffer<uint8_t> payload = BufferArg(info, 3, "payload");

  Socket s(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_XFRM));
  if (s.fd() < 0) ThrowErrno(env, "socket(NETLINK_XFRM)", errno, op);
  int one = 1;
  setsockopt(s.fd(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  setsockopt(s.fd(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  // The kernel always answers; should it not, fail rather than block Node's thread forever.
  timeval timeout{10, 0};
  setsockopt(s.fd(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));

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
      Napi::Object m = Napi::Object::New(env);
      m.Set("type", r->nlmsg_type);
      m.Set("payload", Napi::Buffer<uint8_t>::Copy(env, static_cast<uint8_t *>(NLMSG_DATA(r)), r->nlmsg_len - NLMSG_HDRLEN));
      out.Set(n++, m);
    }
  }
}

}  // namespace

void InitXfrm(Napi::Env env, Napi::Object exports) {
  exports.Set("xfrmRequest", Napi::Function::New(env, XfrmRequest));
}

}  // namespace dvipa
