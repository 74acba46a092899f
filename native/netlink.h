// What the XFRM request transport (xfrm.cc) and the XFRM event stream (xfrm_events.cc) share.
#pragma once
#include <linux/netlink.h>
#include <napi.h>
#include "fd.h"

namespace dvipa {

// A netlink message as JavaScript sees it: {type, payload}, the bytes after the header copied.
inline Napi::Object MessageObject(Napi::Env env, const nlmsghdr *h) {
  Napi::Object m = Napi::Object::New(env);
  m.Set("type", h->nlmsg_type);
  m.Set("payload", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t *>(NLMSG_DATA(h)), h->nlmsg_len - NLMSG_HDRLEN));
  return m;
}

}  // namespace dvipa
