// parekit::KvDequantValue plugin: shape and launch are KvDequantKeyPlugin's with per_channel() == false.
#include "KvDequantValuePlugin.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> KvDequantValuePlugin::copy() const {
  return std::make_unique<KvDequantValuePlugin>(*this);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvDequantValue, KvDequantValuePlugin)
