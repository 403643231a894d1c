// parekit::KvEvictSnap plugin, SnapKV (observation-window votes): KvEvictH2OPlugin with snap() = true.
#include "KvEvictSnapPlugin.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> KvEvictSnapPlugin::copy() const { return std::make_unique<KvEvictSnapPlugin>(*this); }

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvEvictSnap, KvEvictSnapPlugin)
