// parekit::KvEvictSnap as a TensorRT plugin (contract: README.md beside this file): KvEvictH2O's plugin
// with the SnapKV policy (same inputs, outputs, shapes and kernel chain; no decay field).
#pragma once

#include "kv_evict_h2o/KvEvictH2OPlugin.h"

namespace parekit::trt {

class KvEvictSnapPlugin final : public KvEvictH2OPlugin {
 public:
  using KvEvictH2OPlugin::KvEvictH2OPlugin;

 protected:
  std::unique_ptr<PluginBase> copy() const override;
  bool snap() const override { return true; }
};

}  // namespace parekit::trt
