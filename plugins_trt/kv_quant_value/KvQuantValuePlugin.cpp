// parekit::KvQuantValue plugin: shapes and launch are KvQuantKeyPlugin's with per_channel() == false.
#include "KvQuantValuePlugin.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> KvQuantValuePlugin::copy() const { return std::make_unique<KvQuantValuePlugin>(*this); }

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvQuantValue, KvQuantValuePlugin)
