// Stand-ins for libonnxruntime in the error tests: with FAKE_ORT_OLD it exports an OrtGetApiBase that
// serves no API version (an ONNX Runtime older than the host's headers); without it, no such symbol.
#include <onnxruntime_c_api.h>

#ifdef FAKE_ORT_OLD
namespace {
const OrtApi* ORT_API_CALL get_api(uint32_t) NO_EXCEPTION { return nullptr; }
const char* ORT_API_CALL get_version() NO_EXCEPTION { return "1.0.0"; }
const OrtApiBase kBase = {get_api, get_version};
}  // namespace
extern "C" const OrtApiBase* ORT_API_CALL OrtGetApiBase(void) NO_EXCEPTION { return &kBase; }
#else
extern "C" int parekit_host_not_ort() { return 0; }
#endif
