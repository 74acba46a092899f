// Netlink notifications from a socket bound to multicast groups, one class per protocol:
// XfrmEvents, the kernel's XFRM notifications (SAs and policies added, updated, deleted,
// expired; acquires; replay counters), and RouteEvents, rtnetlink's (routes, neighbours,
// links), by which the agent follows its targets' next hops (src/dataplane/nexthops.ts).
// Read like RingBuffer reads: a uv_poll on Node's own event loop, no thread and no timer.
// The payloads are decoded in TypeScript (src/ipsec/events.ts).
#include <linux/netlink.h>
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <string>
#include <vector>

#include "errors.h"
#include "exports.h"
#include "netlink.h"

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
class NetlinkEvents : public Napi::ObjectWrap<NetlinkEvents<P>> {
  using Base = Napi::ObjectWrap<NetlinkEvents<P>>;

 public:
  static Napi::Function Define(Napi::Env env) {
    return Base::DefineClass(env, P::kClass, {Base::InstanceMethod("close", &NetlinkEvents::Close)});
  }

  explicit NetlinkEvents(const Napi::CallbackInfo &info) : Base(info), env_(info.Env()), buf_(1 << 16) {
    const uint32_t groups = U32Arg(info, 0, "multicast groups");
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
    local.nl_groups = groups;
    if (bind(sock_.fd(), reinterpret_cast<sockaddr *>(&local), sizeof(local))) ThrowErrno(env_, Op("bind").c_str(), errno);

    uv_loop_t *loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    poll_ = new uv_poll_t;
    int r = uv_poll_init(loop, poll_, sock_.fd());
    if (r) {
      delete poll_;
      poll_ = nullptr;
      ThrowErrno(env_, "uv_poll_init", -r);
    }
    poll_->data = this;
    r = uv_poll_start(poll_, UV_READABLE, OnReadable);
    if (r) {
      Stop();  // an initialised handle is the loop's until uv_close
      ThrowErrno(env_, "uv_poll_start", -r);
    }
    // A worker's loop is torn down with its environment: the handle must be closed first.
    napi_add_env_cleanup_hook(env_, Cleanup, this);
    hooked_ = true;
    this->Ref();  // kept alive by the poll until close()
    referenced_ = true;
  }

  ~NetlinkEvents() override { Stop(); }

 private:
  static std::string Op(const char *call) { return std::string(call) + "(" + P::kName + ")"; }

  static void OnReadable(uv_poll_t *handle, int status, int) { static_cast<NetlinkEvents *>(handle->data)->Drain(status); }

  static void Cleanup(void *arg) {
    auto *self = static_cast<NetlinkEvents *>(arg);
    self->hooked_ = false;
    self->Stop();
  }

  // False while a worker's environment is being torn down: JavaScript can no longer run, and
  // a node-addon-api call failing then is fatal. Setting a property is refused at once.
  bool CanCallIntoJs() {
    napi_value probe;
    return napi_create_object(env_, &probe) == napi_ok && napi_set_named_property(env_, probe, "probe", probe) == napi_ok;
  }

  void Drain(int status) {
    if (!poll_) return;
    Napi::HandleScope scope(env_);
    if (!CanCallIntoJs()) {
      Stop();
      return;
    }
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
      const int r = uv_poll_start(poll_, UV_READABLE, OnReadable);
      if (r) {
        Napi::Object o = Entry();
        o.Set("error", ErrnoError(env_, "uv_poll_start", -r).Value());
        out.Set(n++, o);
      }
    }
    if (!n) return;
    try {
      callback_.MakeCallback(env_.Global(), {out});
    } catch (const Napi::Error &e) {
      // Thrown by the callback: Node's uncaught exception, as from any event handler.
      napi_fatal_exception(env_, e.Value());
    }
  }

  // An entry that is not a message (type 0 is no netlink message type).
  Napi::Object Entry() {
    Napi::Object o = Napi::Object::New(env_);
    o.Set("type", 0);
    o.Set("payload", Napi::Buffer<uint8_t>::New(env_, 0));
    return o;
  }

  void Stop() {
    if (hooked_) {
      napi_remove_env_cleanup_hook(env_, Cleanup, this);
      hooked_ = false;
    }
    if (poll_) {
      uv_poll_stop(poll_);
      uv_close(reinterpret_cast<uv_handle_t *>(poll_), [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
      poll_ = nullptr;
    }
    sock_.reset();
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    Stop();
    if (referenced_) {
      referenced_ = false;
      this->Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Env env_;
  Napi::FunctionReference callback_;
  Socket sock_;
  uv_poll_t *poll_ = nullptr;
  std::vector<char> buf_;
  bool hooked_ = false;
  bool referenced_ = false;
};

}  // namespace

void InitXfrmEvents(Napi::Env env, Napi::Object exports) {
  exports.Set(Xfrm::kClass, NetlinkEvents<Xfrm>::Define(env));
  exports.Set(Route::kClass, NetlinkEvents<Route>::Define(env));
}

}  // namespace dvipa
