// dvipa's native addon: libbpf (the system's) for Node, synchronous calls, as every operation
// is a short syscall and the control plane wants results in order; only an XFRM batch (a
// takeover's thousands of SAs) runs on a worker thread (xfrm.cc).
#include <napi.h>

#include "exports.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  dvipa::InitObject(env, exports);
  dvipa::InitMaps(env, exports);
  dvipa::InitProgs(env, exports);
  dvipa::InitBtf(env, exports);
  dvipa::InitNetns(env, exports);
  dvipa::InitRingBuf(env, exports);
  dvipa::InitArp(env, exports);
  dvipa::InitXfrm(env, exports);
  dvipa::InitXfrmEvents(env, exports);
  dvipa::InitSched(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(dvipa, Init)
