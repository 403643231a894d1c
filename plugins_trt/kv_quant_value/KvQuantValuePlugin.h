// parekit::KvQuantValue as a TensorRT plugin (contract: README.md beside this file): KvQuantKeyPlugin
// with the values' group layout (one scale/min per token and group of channels).
#pragma once

#include "kv_quant_key/KvQuantKeyPlugin.h"

namespace parekit::trt {

class KvQuantValuePlugin final : public KvQuantKeyPlugin {
 public:
  using KvQuantKeyPlugin::KvQuantKeyPlugin;

 protected:
  bool per_channel() const override { return false; }
  std::unique_ptr<PluginBase> copy() const override;
};

}  // namespace parekit::trt
