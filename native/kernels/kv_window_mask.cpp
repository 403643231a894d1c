// parekit::KvWindowMask: the KvWindow keep rule along axis 1 of a [B, T] attention mask.
#include "keep_window.h"

namespace parekit {
namespace {

std::vector<Shape> kv_window_mask_shapes(const std::vector<Shape>& in, const Attrs& a) {
  expect_rank("KvWindowMask", "attention_mask", in.at(0), 2);
  return {{in[0][0], kept_length(in[0][1], a.get_int("sink"), a.get_int("window"))}};
}

class KvWindowMaskKernel : public Kernel {
 public:
  explicit KvWindowMaskKernel(const Attrs& a) : attrs_(a), sink_(a.get_int("sink")), window_(a.get_int("window")) {}
  void compute(Context& ctx) const override {
    const ConstTensor mask = ctx.input(0);
    Tensor out = ctx.output(0, kv_window_mask_shapes({mask.shape}, attrs_).at(0));
    keep_window_copy(ctx, mask.data, out.data, mask.dim(0), mask.dim(1), 1, dtype_size(mask.dtype), sink_, window_);
  }

 private:
  Attrs attrs_;
  int64_t sink_, window_;
};

}  // namespace

void register_kv_window_mask(std::vector<OpSpec>& ops) {
  OpSpec spec;
  spec.name = "KvWindowMask";
  spec.version = "1";
  spec.inputs = {"attention_mask"};
  spec.outputs = {"mask_out"};
  spec.attrs = keep_window_attrs();
  for (DType t : mask_dtypes()) spec.variants.push_back({{t}, {t}});
  spec.create = [](const Attrs& a) { return std::make_unique<KvWindowMaskKernel>(a); };
  spec.shapes = kv_window_mask_shapes;
  ops.push_back(std::move(spec));
}

}  // namespace parekit
