// Each file registers its own functions on the module's exports.
#pragma once
#include <napi.h>

namespace dvipa {
void InitMaps(Napi::Env env, Napi::Object exports);
void InitObject(Napi::Env env, Napi::Object exports);
void InitProgs(Napi::Env env, Napi::Object exports);
void InitBtf(Napi::Env env, Napi::Object exports);
void InitNetns(Napi::Env env, Napi::Object exports);
void InitRingBuf(Napi::Env env, Napi::Object exports);
void InitArp(Napi::Env env, Napi::Object exports);
void InitXfrm(Napi::Env env, Napi::Object exports);
void InitXfrmEvents(Napi::Env env, Napi::Object exports);
void InitSched(Napi::Env env, Napi::Object exports);
}  // namespace dvipa
