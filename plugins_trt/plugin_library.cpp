// libparekit_trt_plugins.so: the two C entry points TensorRT looks up in a plugin library
// (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, Python get_plugin_registry().load_library).
// Nothing else is exported (exports.map); the library does not link libnvinfer.
#include <vector>

#include "common/plugin_base.h"

namespace parekit::trt {

#define PAREKIT_PLUGIN(OP) std::unique_ptr<PluginBase> make_##OP##_plugin(const OpSpec& spec, Attrs attrs);
#include "plugins.def"
#undef PAREKIT_PLUGIN

const std::vector<std::unique_ptr<PluginCreator>>& creators() {
  static const std::vector<std::unique_ptr<PluginCreator>> all = [] {
    std::vector<std::unique_ptr<PluginCreator>> out;
    struct Entry {
      const char* op;
      PluginFactory factory;
    };
    const Entry entries[] = {
#define PAREKIT_PLUGIN(OP) {#OP, &make_##OP##_plugin},
#include "plugins.def"
#undef PAREKIT_PLUGIN
    };
    for (const Entry& e : entries) {
      const OpSpec* spec = find_op(e.op);
      if (spec == nullptr) {
        log(nvinfer1::ILogger::Severity::kERROR, std::string("parekit plugins: no native OpSpec for ") + e.op);
        continue;
      }
      try {
        out.push_back(std::make_unique<PluginCreator>(*spec, e.factory));
      } catch (const std::exception& ex) {
        log(nvinfer1::ILogger::Severity::kERROR, std::string("parekit plugins: ") + ex.what());
      }
    }
    return out;
  }();
  return all;
}

}  // namespace parekit::trt

extern "C" {

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static const std::vector<nvinfer1::IPluginCreatorInterface*> list = [] {
    std::vector<nvinfer1::IPluginCreatorInterface*> out;
    for (const auto& c : parekit::trt::creators()) out.push_back(c.get());
    return out;
  }();
  nbCreators = static_cast<int32_t>(list.size());
  return list.data();
}

__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  parekit::trt::set_logger_finder(finder);
}

}  // extern "C"
