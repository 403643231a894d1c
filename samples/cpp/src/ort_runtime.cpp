// Loading ONNX Runtime with dlopen: the host links no libonnxruntime, so the wheel's library (whose
// OrtGetApiBase is symbol-versioned per release) can be upgraded under it without a rebuild.
#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdlib>
#include <mutex>

#include "parekit_host/ort_host.h"

#ifndef PAREKIT_HOST_DEFAULT_ORT_LIBRARY
#define PAREKIT_HOST_DEFAULT_ORT_LIBRARY ""
#endif

namespace parekit_host {

void OrtRuntime::DlClose::operator()(void* handle) const {
  if (handle != nullptr) dlclose(handle);
}

OrtRuntime::OrtRuntime(Key, std::unique_ptr<void, DlClose> handle, std::string path, std::string version)
    : handle_(std::move(handle)), path_(std::move(path)), version_(std::move(version)) {
  env_ = Ort::Env(ORT_LOGGING_LEVEL_ERROR, "parekit-host");
}

OrtRuntime::~OrtRuntime() = default;

static std::string resolve_library(const std::string& library) {
  if (!library.empty()) return library;
  if (const char* env = std::getenv("PAREKIT_HOST_ORT_LIBRARY"); env != nullptr && *env != '\0') return env;
  if (*PAREKIT_HOST_DEFAULT_ORT_LIBRARY != '\0') return PAREKIT_HOST_DEFAULT_ORT_LIBRARY;
  throw Error(
      "no ONNX Runtime library given: pass --ort PATH (the wheel's onnxruntime/capi/libonnxruntime.so.<version>) "
      "or set PAREKIT_HOST_ORT_LIBRARY");
}

std::shared_ptr<OrtRuntime> OrtRuntime::open(const std::string& library) {
  // The C++ API keeps one process-wide OrtApi pointer (Ort::InitApi): one runtime per process.
  static std::mutex mutex;
  static std::weak_ptr<OrtRuntime> current;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string path = resolve_library(library);
  if (auto live = current.lock()) {
    if (live->path() != path) throw Error("ONNX Runtime is already loaded from " + live->path() + ", not " + path);
    return live;
  }
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) throw Error("ONNX Runtime library " + path + ": no such file");
  // RTLD_NODELETE: ORT registers thread-local and exit-time cleanups that must not outlive its code.
  std::unique_ptr<void, DlClose> handle(dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE));
  if (!handle) throw Error("cannot load ONNX Runtime library " + path + ": " + one_line(dlerror()));
  using GetApiBase = const OrtApiBase* (*)();
  auto get_base = reinterpret_cast<GetApiBase>(dlsym(handle.get(), "OrtGetApiBase"));
  if (get_base == nullptr) throw Error(path + " exports no OrtGetApiBase: not an ONNX Runtime library");
  const OrtApiBase* base = get_base();
  const std::string version = base->GetVersionString();
  const OrtApi* api = base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    throw Error("ONNX Runtime " + version + " at " + path + " is older than the headers this host was built with (C API " +
                std::to_string(ORT_API_VERSION) + "): use ONNX Runtime >= 1." + std::to_string(ORT_API_VERSION) +
                " or rebuild against its headers");
  }
  Ort::InitApi(api);
  auto runtime = std::make_shared<OrtRuntime>(Key{}, std::move(handle), path, version);
  current = runtime;
  return runtime;
}

}  // namespace parekit_host
