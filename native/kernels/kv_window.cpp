// parekit::KvWindow: keep the first `sink` and last `window` tokens of a KV cache [B, H, T, D] (axis 2).
#include "keep_window.h"

namespace parekit {
namespace {

class KvWindowKernel : public Kernel {
 public:
  explicit KvWindowKernel(const Attrs& a) : sink_(a.get_int("sink")), window_(a.get_int("window")) {}
  void compute(Context& ctx) const override {
    const ConstTensor cache = ctx.input(0);
    expect_rank("KvWindow", "cache", cache, 4);
    const int64_t t = cache.dim(2);
    Tensor out = ctx.output(0, {cache.dim(0), cache.dim(1), kept_length(t, sink_, window_), cache.dim(3)});
    keep_window_copy(ctx, cache.data, out.data, cache.dim(0) * cache.dim(1), t, cache.dim(3),
                     dtype_size(cache.dtype), sink_, window_);
  }

 private:
  int64_t sink_, window_;
};

}  // namespace

void register_kv_window(std::vector<OpSpec>& ops) {
  OpSpec spec;
  spec.name = "KvWindow";
  spec.version = "1";
  spec.inputs = {"cache"};
  spec.outputs = {"cache_out"};
  spec.attrs = keep_window_attrs();
  for (DType t : float_dtypes()) spec.variants.push_back({{t}, {t}});
  spec.create = [](const Attrs& a) { return std::make_unique<KvWindowKernel>(a); };
  ops.push_back(std::move(spec));
}

}  // namespace parekit
