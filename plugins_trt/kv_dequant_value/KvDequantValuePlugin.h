// parekit::KvDequantValue as a TensorRT plugin (contract: README.md beside this file): KvDequantKeyPlugin
// with the values' group layout (one scale/min per token and group of channels).
#pragma once

#include "kv_dequant_key/KvDequantKeyPlugin.h"

namespace parekit::trt {

class KvDequantValuePlugin final : public KvDequantKeyPlugin {
 public:
  using KvDequantKeyPlugin::KvDequantKeyPlugin;

 protected:
  bool per_channel() const override { return false; }
  std::unique_ptr<PluginBase> copy() const override;
};

}  // namespace parekit::trt
