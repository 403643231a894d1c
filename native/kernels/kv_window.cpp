// parekit::KvWindow: keep the first `sink` and last `window` tokens of a KV cache [B, H, T, D] (axis 2).
#include "keep_window.h"

namespace parekit {
namespace {

std::vector<Shape> kv_window_shapes(const std::vector<Shape>& in, const Attrs& a) {
  expect_rank("KvWindow", "cache", in.at(0), 4);
  const Shape& c = in[0];
  return {{c[0], c[1], kept_length(c[2], a.get_int("sink"), a.get_int("window")), c[3]}};
}

class KvWindowKernel : public Kernel {
 public:
  explicit KvWindowKernel(const Attrs& a) : attrs_(a), sink_(a.get_int("sink")), window_(a.get_int("window")) {}
  void compute(Context& ctx) const override {
    const ConstTensor cache = ctx.input(0);
    Tensor out = ctx.output(0, kv_window_shapes({cache.shape}, attrs_).at(0));
    keep_window_copy(ctx, cache.data, out.data, cache.dim(0) * cache.dim(1), cache.dim(2), cache.dim(3),
                     dtype_size(cache.dtype), sink_, window_);
  }

 private:
  Attrs attrs_;
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
  spec.shapes = kv_window_shapes;
  ops.push_back(std::move(spec));
}

}  // namespace parekit
