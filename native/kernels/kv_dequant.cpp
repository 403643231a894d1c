// parekit::KvDequantKey / KvDequantValue: rebuild a float32 cache [B, H, Nq + R, D] from a KIVI-style
// quantized store (packed codes, float16 scale/min per group; kv_quant_format.h) and the float residual.
//
// One pass over the packed codes: each output token is unpacked, scaled and shifted straight into the
// output row (no float code tensor); the residual rows are copied after the store. Work is split over
// (batch * head, block of tokens).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kv_quant_format.h"

namespace parekit {
namespace {

constexpr int64_t kTokenBlock = 64;  // tokens per parallel work item

class KvDequantKernel : public Kernel {
 public:
  KvDequantKernel(const Attrs& a, const char* op, bool per_channel)
      : op_(op), per_channel_(per_channel), bits_(a.get_int("bits")), group_(a.get_int("group")) {}

  void compute(Context& ctx) const override {
    const ConstTensor codes = ctx.input(0), scale = ctx.input(1), mn = ctx.input(2), residual = ctx.input(3);
    expect_rank(op_, "residual", residual, 4);
    const int64_t b = residual.dim(0), h = residual.dim(1), r = residual.dim(2), d = residual.dim(3);
    const int64_t nq = kvq::check_store(op_, codes, scale, mn, b, h, d, bits_, group_, per_channel_);
    const int64_t t = nq + r;
    Tensor out = ctx.output(0, {b, h, t, d});
    const int64_t rows = b * h;
    if (rows == 0 || t == 0 || d == 0) return;
    const int64_t dp = d / kvq::codes_per_byte(bits_);
    const int64_t scale_row = per_channel_ ? (nq / group_) * d : nq * (d / group_);
    const int64_t blocks = (t + kTokenBlock - 1) / kTokenBlock;
    const auto* cp = codes.as<int8_t>();
    const auto* sp = scale.as<uint16_t>();
    const auto* mp = mn.as<uint16_t>();
    const auto* rp = residual.as<float>();
    float* op = out.as<float>();
    ctx.parallel_for(rows * blocks, static_cast<double>(kTokenBlock * d), [&](int64_t begin, int64_t end) {
      std::vector<float> buf(static_cast<size_t>(3 * d));  // codes, then (keys) the group's scale and min
      float* codes_f = buf.data();
      float* sk = codes_f + d;
      float* mk = sk + d;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / blocks;
        const int64_t t0 = (item % blocks) * kTokenBlock, t1 = std::min(t, t0 + kTokenBlock);
        const int8_t* crow = cp + row * nq * dp;
        const uint16_t* srow = sp + row * scale_row;
        const uint16_t* mrow = mp + row * scale_row;
        float* orow = op + row * t * d;
        int64_t loaded = -1;  // keys: the token group whose scale/min are in sk/mk
        for (int64_t tok = t0; tok < std::min(t1, nq); ++tok) {
          float* dst = orow + tok * d;
          kvq::unpack_row(crow + tok * dp, d, bits_, codes_f);
          if (per_channel_) {
            const int64_t g = tok / group_;
            if (g != loaded) {
              for (int64_t j = 0; j < d; ++j) {
                sk[j] = half_to_float(srow[g * d + j]);
                mk[j] = half_to_float(mrow[g * d + j]);
              }
              loaded = g;
            }
            for (int64_t j = 0; j < d; ++j) dst[j] = kvq::dequant_value(codes_f[j], sk[j], mk[j]);
          } else {
            const int64_t ng = d / group_;
            for (int64_t c = 0; c < ng; ++c) {
              const float s = half_to_float(srow[tok * ng + c]), m = half_to_float(mrow[tok * ng + c]);
              const float* src = codes_f + c * group_;
              float* o = dst + c * group_;
              for (int64_t j = 0; j < group_; ++j) o[j] = kvq::dequant_value(src[j], s, m);
            }
          }
        }
        const int64_t r0 = std::max(t0, nq);
        if (t1 > r0) {
          std::memcpy(orow + r0 * d, rp + (row * r + (r0 - nq)) * d, static_cast<size_t>((t1 - r0) * d) * sizeof(float));
        }
      }
    });
  }

 private:
  const char* op_;
  bool per_channel_;
  int64_t bits_, group_;
};

OpSpec dequant_spec(const char* name, bool per_channel) {
  OpSpec spec;
  spec.name = name;
  spec.version = "1";
  spec.inputs = {"codes", "scale", "min", "residual"};
  spec.outputs = {"cache"};
  spec.attrs = {int_attr("bits", 8, true, 4, true, 8), int_attr("group", 32, true, 1)};
  spec.variants.push_back({{DType::kInt8, DType::kFloat16, DType::kFloat16, DType::kFloat32}, {DType::kFloat32}});
  spec.create = [name, per_channel](const Attrs& a) { return std::make_unique<KvDequantKernel>(a, name, per_channel); };
  return spec;
}

}  // namespace

void register_kv_dequant(std::vector<OpSpec>& ops) {
  ops.push_back(dequant_spec("KvDequantKey", true));
  ops.push_back(dequant_spec("KvDequantValue", false));
}

}  // namespace parekit
