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

// Keys: one token, per-channel scale/min already in float (sk, mk).
template <int Bits>
PAREKIT_KVQ_INLINE void dequant_keys_t(const int8_t* src, int64_t d, const float* sk, const float* mk, float* dst) {
  if (Bits == 4) {
    const int64_t half = d / 2;
    // Two simple loops (low digits, then high digits) vectorize where one interleaved loop does not.
    for (int64_t j = 0; j < half; ++j) {
      const int32_t byte = static_cast<int32_t>(kvq::stored_to_byte(src[j]));
      dst[j] = kvq::dequant_value(static_cast<float>(byte & 15), sk[j], mk[j]);
    }
    const float* skh = sk + half;
    const float* mkh = mk + half;
    float* dsth = dst + half;
    for (int64_t j = 0; j < half; ++j) {
      const int32_t byte = static_cast<int32_t>(kvq::stored_to_byte(src[j]));
      dsth[j] = kvq::dequant_value(static_cast<float>(byte >> 4), skh[j], mkh[j]);
    }
  } else {
    constexpr int32_t mask = (1 << Bits) - 1;
    for (int64_t j = 0; j < d; ++j) {
      const int32_t code = static_cast<int32_t>(kvq::stored_to_byte(src[j])) & mask;
      dst[j] = kvq::dequant_value(static_cast<float>(code), sk[j], mk[j]);
    }
  }
}

PAREKIT_KVQ_INLINE void dequant_keys(int64_t bits_, const int8_t* src, int64_t d, const float* sk, const float* mk, float* dst) {
  switch (bits_) {
    case 4: dequant_keys_t<4>(src, d, sk, mk, dst); return;
    case 5: dequant_keys_t<5>(src, d, sk, mk, dst); return;
    case 6: dequant_keys_t<6>(src, d, sk, mk, dst); return;
    case 7: dequant_keys_t<7>(src, d, sk, mk, dst); return;
    default: dequant_keys_t<8>(src, d, sk, mk, dst); return;
  }
}

// Values: one token, one float16 scale/min per group of `group_` channels. Straight from the bytes when
// the groups tile the packed blocks (bits > 4, or group | D/2), else through the unpacked codes.
PAREKIT_KVQ_INLINE void dequant_values(int64_t bits_, int64_t group_, const int8_t* src, int64_t d, const uint16_t* s16,
                                   const uint16_t* m16, float* codes_f, float* dst) {
  const int64_t ng = d / group_;
  if (bits_ == 4 && (d / 2) % group_ == 0) {
    const int64_t half = d / 2, per_block = half / group_;
    for (int64_t c = 0; c < per_block; ++c) {
      const float slo = half_to_float(s16[c]), mlo = half_to_float(m16[c]);
      const float shi = half_to_float(s16[c + per_block]), mhi = half_to_float(m16[c + per_block]);
      const int8_t* in = src + c * group_;
      float* lo = dst + c * group_;
      float* hi = lo + half;
      for (int64_t j = 0; j < group_; ++j) {
        const int32_t byte = static_cast<int32_t>(kvq::stored_to_byte(in[j]));
        lo[j] = kvq::dequant_value(static_cast<float>(byte & 15), slo, mlo);
        hi[j] = kvq::dequant_value(static_cast<float>(byte >> 4), shi, mhi);
      }
    }
    return;
  }
  if (bits_ != 4) {
    const int32_t mask = (1 << bits_) - 1;
    for (int64_t c = 0; c < ng; ++c) {
      const float s = half_to_float(s16[c]), m = half_to_float(m16[c]);
      const int8_t* in = src + c * group_;
      float* o = dst + c * group_;
      for (int64_t j = 0; j < group_; ++j) {
        const int32_t code = static_cast<int32_t>(kvq::stored_to_byte(in[j])) & mask;
        o[j] = kvq::dequant_value(static_cast<float>(code), s, m);
      }
    }
    return;
  }
  kvq::unpack_row(src, d, bits_, codes_f);
  for (int64_t c = 0; c < ng; ++c) {
    const float s = half_to_float(s16[c]), m = half_to_float(m16[c]);
    const float* in = codes_f + c * group_;
    float* o = dst + c * group_;
    for (int64_t j = 0; j < group_; ++j) o[j] = kvq::dequant_value(in[j], s, m);
  }
}

// The geometry and data of one call.
struct DequantProblem {
  bool per_channel;
  int64_t bits, group, nq, r, t, d, dp, scale_row, blocks;
  const int8_t* cp;
  const uint16_t *sp, *mp;
  const float* rp;
  float* op;
};

// Work items [begin, end) (a (batch * head, block of kTokenBlock tokens) pair each); buf: 3 * d floats.
PAREKIT_KVQ_HOT void dequant_items(const DequantProblem& pb, int64_t begin, int64_t end, float* buf) {
  const bool per_channel_ = pb.per_channel;
  const int64_t bits_ = pb.bits, group_ = pb.group, nq = pb.nq, r = pb.r, t = pb.t, d = pb.d, dp = pb.dp;
  const int64_t scale_row = pb.scale_row, blocks = pb.blocks;
  const int8_t* cp = pb.cp;
  const uint16_t *sp = pb.sp, *mp = pb.mp;
  const float* rp = pb.rp;
  float* op = pb.op;
  float* codes_f = buf;  // codes, then (keys) the group's scale and min
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
      const int8_t* src = crow + tok * dp;
      if (per_channel_) {
        const int64_t g = tok / group_;
        if (g != loaded) {
          for (int64_t j = 0; j < d; ++j) {
            sk[j] = half_to_float(srow[g * d + j]);
            mk[j] = half_to_float(mrow[g * d + j]);
          }
          loaded = g;
        }
        dequant_keys(bits_, src, d, sk, mk, dst);
      } else {
        dequant_values(bits_, group_, src, d, srow + tok * (d / group_), mrow + tok * (d / group_), codes_f, dst);
      }
    }
    const int64_t r0 = std::max(t0, nq);
    if (t1 > r0) {
      std::memcpy(orow + r0 * d, rp + (row * r + (r0 - nq)) * d, static_cast<size_t>((t1 - r0) * d) * sizeof(float));
    }
  }
}

using ShapeRule = std::vector<Shape> (*)(const std::vector<Shape>&, const Attrs&);

// The shape rule (the kernel's checks, run on shapes only): cache [B, H, Nq + R, D].
std::vector<Shape> kv_dequant_shapes(const std::vector<Shape>& in, const Attrs& a, const char* op, bool per_channel) {
  const auto shape_only = [](const Shape& s) { return ConstTensor{DType::kFloat32, s, nullptr}; };
  const ConstTensor codes = shape_only(in.at(0)), scale = shape_only(in.at(1)), mn = shape_only(in.at(2));
  const ConstTensor residual = shape_only(in.at(3));
  expect_rank(op, "residual", residual, 4);
  const int64_t b = residual.dim(0), h = residual.dim(1), r = residual.dim(2), d = residual.dim(3);
  const int64_t nq = kvq::check_store(op, codes, scale, mn, b, h, d, a.get_int("bits"), a.get_int("group"), per_channel);
  return {{b, h, nq + r, d}};
}

std::vector<Shape> kv_dequant_key_shapes(const std::vector<Shape>& in, const Attrs& a) {
  return kv_dequant_shapes(in, a, "KvDequantKey", true);
}
std::vector<Shape> kv_dequant_value_shapes(const std::vector<Shape>& in, const Attrs& a) {
  return kv_dequant_shapes(in, a, "KvDequantValue", false);
}

class KvDequantKernel : public Kernel {
 public:
  KvDequantKernel(const Attrs& a, const char* op, bool per_channel)
      : attrs_(a), op_(op), per_channel_(per_channel), bits_(a.get_int("bits")), group_(a.get_int("group")) {}

  void compute(Context& ctx) const override {
    const ConstTensor codes = ctx.input(0), scale = ctx.input(1), mn = ctx.input(2), residual = ctx.input(3);
    const Shape cache =
        kv_dequant_shapes({codes.shape, scale.shape, mn.shape, residual.shape}, attrs_, op_, per_channel_).at(0);
    const int64_t b = residual.dim(0), h = residual.dim(1), r = residual.dim(2), d = residual.dim(3);
    const int64_t nq = codes.dim(2);
    const int64_t t = nq + r;
    Tensor out = ctx.output(0, cache);
    const int64_t rows = b * h;
    if (rows == 0 || t == 0 || d == 0) return;
    const int64_t dp = d / kvq::codes_per_byte(bits_);
    const int64_t scale_row = per_channel_ ? (nq / group_) * d : nq * (d / group_);
    const int64_t blocks = (t + kTokenBlock - 1) / kTokenBlock;
    const DequantProblem pb{per_channel_, bits_, group_, nq, r, t, d, dp, scale_row, blocks, codes.as<int8_t>(),
                            scale.as<uint16_t>(), mn.as<uint16_t>(), residual.as<float>(), out.as<float>()};
    ctx.parallel_for(rows * blocks, static_cast<double>(kTokenBlock * d), [&](int64_t begin, int64_t end) {
      std::vector<float> buf(static_cast<size_t>(3 * d));
      dequant_items(pb, begin, end, buf.data());
    });
  }

 private:
  Attrs attrs_;
  const char* op_;
  bool per_channel_;
  int64_t bits_, group_;
};

OpSpec dequant_spec(const char* name, bool per_channel, ShapeRule rule) {
  OpSpec spec;
  spec.name = name;
  spec.version = "1";
  spec.inputs = {"codes", "scale", "min", "residual"};
  spec.outputs = {"cache"};
  spec.attrs = {int_attr("bits", 8, true, 4, true, 8), int_attr("group", 32, true, 1)};
  spec.variants.push_back({{DType::kInt8, DType::kFloat16, DType::kFloat16, DType::kFloat32}, {DType::kFloat32}});
  spec.create = [name, per_channel](const Attrs& a) { return std::make_unique<KvDequantKernel>(a, name, per_channel); };
  spec.shapes = rule;
  return spec;
}

}  // namespace

void register_kv_dequant(std::vector<OpSpec>& ops) {
  ops.push_back(dequant_spec("KvDequantKey", true, kv_dequant_key_shapes));
  ops.push_back(dequant_spec("KvDequantValue", false, kv_dequant_value_shapes));
}

}  // namespace parekit
