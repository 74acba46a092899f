// Netlink notifications from a socket bound to multicast groups, one class per protocol:
// XfrmEvents, the kernel's XFRM notifications (SAs and policies added, updated, deleted,
// expired; acquires; replay counters), and RouteEvents, rtnetlink's (routes, neighbours,
// links), by which the agent follows its targets' next hops (src/dataplane/nexthops.ts).
// Read like RingBuffer reads (poll.h): on Node's own event loop, no thread and no timer.
// The payloads are decoded in TypeScript (src/ipsec/events.ts).
#include <linux/netlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <string>
#include <vector>

#include "errors.h"
#include "exports.h"
#include "netlink.h"
#include "poll.h"

namespace dvipa {
namespace {

// A takeover installs thousands of SAs in a burst, and each is an event.
constexpr uint32_t kDefaultRcvBuf = 4 << 20;
// One wakeup reads at most this many datagrams, so a storm cannot hold the loop; the poll
// is level-triggered and fires again for the rest.
constexpr int kMaxDatagrams = 4096;

struct Xfrm {
  static constexpr int kProtocol = NETLINK_XFRM;
  static constexpr const char *kClass = "XfrmEvents";
  static constexpr const char *kName = "NETLINK_XFRM";
};

struct Route {
  static constexpr int kProtocol = NETLINK_ROUTE;
  static constexpr const char *kClass = "RouteEvents";
  static constexpr const char *kName = "NETLINK_ROUTE";
};

template <typename P>
class NetlinkEvents : public Polled<NetlinkEvents<P>> {
  using Base = Polled<NetlinkEvents<P>>;
  using Base::env_;

 public:
  static Napi::Function Define(Napi::Env env) {
    return Base::DefineClass(env, P::kClass, {Base::InstanceMethod("close", &NetlinkEvents::Close)});
  }

  explicit NetlinkEvents(const Napi::CallbackInfo &info) : Base(info), buf_(1 << 16) {
    // The groups by number (XFRMNLGRP_x, RTNLGRP_x): joined one by one, as bind's 32-bit mask
    // cannot name those past 32 (RTNLGRP_NEXTHOP is 32, RTNLGRP_IPV4_MROUTE_R 30...).
    if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env_, "expected an array of multicast group numbers");
    const Napi::Array list = info[0].As<Napi::Array>();
    std::vector<uint32_t> groups;
    for (uint32_t i = 0; i < list.Length(); i++) {
      const Napi::Value g = list.Get(i);
      const double v = g.IsNumber() ? g.As<Napi::Number>().DoubleValue() : 0;
      if (v < 1 || v > 1024 || v != static_cast<double>(static_cast<uint32_t>(v)))
        throw Napi::TypeError::New(env_, "multicast group " + std::to_string(i) + ": expected an integer from 1 to 1024");
      groups.push_back(static_cast<uint32_t>(v));
    }
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env_, "expected a callback(messages: Array<{type, payload}>)");
    const uint32_t wanted = info.Length() > 2 && !info[2].IsUndefined() ? U32Arg(info, 2, "receive buffer size") : kDefaultRcvBuf;
    const int rcvbuf = static_cast<int>(std::min<uint32_t>(wanted, INT_MAX / 2));
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());

    // The socket belongs to the namespace of the thread that creates it, for good.
    sock_.reset(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, P::kProtocol));
    if (sock_.fd() < 0) ThrowErrno(env_, Op("socket").c_str(), errno);
    // FORCE goes past net.core.rmem_max (CAP_NET_ADMIN); without the capability, what is allowed.
    if (setsockopt(sock_.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) &&
        setsockopt(sock_.fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)))
      ThrowErrno(env_, "setsockopt(SO_RCVBUF)", errno);
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    if (bind(sock_.fd(), reinterpret_cast<sockaddr *>(&local), sizeof(local))) ThrowErrno(env_, Op("bind").c_str(), errno);
    for (const uint32_t g : groups)
      if (setsockopt(sock_.fd(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(g)))
        ThrowErrno(env_, "setsockopt(NETLINK_ADD_MEMBERSHIP)", errno, std::string(P::kName) + " group " + std::to_string(g));

    this->Watch(sock_.fd());
  }

  ~NetlinkEvents() override { this->Stop(); }

 private:
  static std::string Op(const char *call) { return std::string(call) + "(" + P::kName + ")"; }

  void OnReadable(int status) override {
    Napi::Array out = Napi::Array::New(env_);
    uint32_t n = 0;
    for (int i = 0; i < kMaxDatagrams; i++) {
      ssize_t len = recv(sock_.fd(), buf_.data(), buf_.size(), MSG_TRUNC);
      if (len < 0) {
        const int e = errno;
        if (e == EINTR) continue;
        if (e == EAGAIN || e == EWOULDBLOCK) break;
        if (e == ENOBUFS) {
          // The kernel dropped events for want of room. The socket goes on; what was lost
          // can only be learnt again from a dump.
          Napi::Object o = Entry();
          o.Set("overflow", true);
          out.Set(n++, o);
          continue;
        }
        Napi::Object o = Entry();
        o.Set("error", ErrnoError(env_, Op("recv").c_str(), e).Value());
        out.Set(n++, o);
        break;
      }
      if (static_cast<size_t>(len) > buf_.size()) {
        Napi::Object o = Entry();
        o.Set("error", ErrnoError(env_, Op("recv").c_str(), EMSGSIZE, std::to_string(len) + " bytes, more than the buffer").Value());
        out.Set(n++, o);
        continue;
      }
      int rest = static_cast<int>(len);
      for (auto *h = reinterpret_cast<const nlmsghdr *>(buf_.data()); NLMSG_OK(h, rest); h = NLMSG_NEXT(h, rest)) out.Set(n++, MessageObject(env_, h));
    }
    // libuv stops a poll on POLLERR, which netlink raises for a pending socket error (the
    // ENOBUFS of an overflow); reading it cleared it, so watch the socket again.
    if (status < 0) {
      const int r = this->Rewatch();
      if (r) {
        Napi::Object o = Entry();
        o.Set("error", ErrnoError(env_, "uv_poll_start", -r).Value());
        out.Set(n++, o);
      }
    }
    if (n) this->Deliver(callback_, out);
  }

  // An entry that is not a message (type 0 is no netlink message type).
  Napi::Object Entry() {
    Napi::Object o = Napi::Object::New(env_);
    o.Set("type", 0);
    o.Set("payload", Napi::Buffer<uint8_t>::New(env_, 0));
    return o;
  }

  void Release() override { sock_.reset(); }

  Napi::FunctionReference callback_;
  Fd sock_;
  std::vector<char> buf_;
};

}  // namespace

void InitXfrmEvents(Napi::Env env, Napi::Object exports) {
  exports.Set(Xfrm::kClass, NetlinkEvents<Xfrm>::Define(env));
  exports.Set(Route::kClass, NetlinkEvents<Route>::Define(env));
}

}  // namespace dvipa
