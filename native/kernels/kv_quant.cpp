// parekit::KvQuantKey / KvQuantValue: append a step's new keys (values) to a KIVI-style quantized cache.
//
// full = residual ++ new (L tokens, never materialized: token t is read from whichever input holds it);
// its oldest n = max(0, L - residual) / group * group tokens are quantized (min/max per group, float16
// scale/min, codes packed straight into the output store; kv_quant_format.h) and appended after the
// copied store; the rest is copied to residual_out. Keys: one scale per (group of tokens, channel);
// values: one per (token, group of channels). Work is split over (batch * head) for the copies and over
// (batch * head, quantization group) for the quantization.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kv_quant_format.h"

namespace parekit {
namespace {

using ShapeRule = std::vector<Shape> (*)(const std::vector<Shape>&, const Attrs&);

ConstTensor shape_only(const Shape& s) { return ConstTensor{DType::kFloat32, s, nullptr}; }

// The shape rule (the kernel's checks, run on shapes only): codes', scale', min', residual'.
std::vector<Shape> kv_quant_shapes(const std::vector<Shape>& in, const Attrs& a, const char* op, bool per_channel) {
  const int64_t bits = a.get_int("bits"), group = a.get_int("group"), keep = a.get_int("residual");
  const ConstTensor codes = shape_only(in.at(0)), scale = shape_only(in.at(1)), mn = shape_only(in.at(2));
  const ConstTensor residual = shape_only(in.at(3)), fresh = shape_only(in.at(4));
  expect_rank(op, "residual", residual, 4);
  const int64_t b = residual.dim(0), h = residual.dim(1), r = residual.dim(2), d = residual.dim(3);
  kvq::check_float_rows(op, "new", fresh, b, h, d, "'residual' " + shape_text(residual.shape));
  const int64_t nq = kvq::check_store(op, codes, scale, mn, b, h, d, bits, group, per_channel);
  const int64_t len = r + fresh.dim(2);
  const int64_t n = std::max<int64_t>(0, len - keep) / group * group;
  const int64_t dp = d / kvq::codes_per_byte(bits);
  const Shape small = per_channel ? Shape{b, h, (nq + n) / group, d} : Shape{b, h, nq + n, d / group};
  return {{b, h, nq + n, dp}, small, small, {b, h, len - n, d}};
}

std::vector<Shape> kv_quant_key_shapes(const std::vector<Shape>& in, const Attrs& a) {
  return kv_quant_shapes(in, a, "KvQuantKey", true);
}
std::vector<Shape> kv_quant_value_shapes(const std::vector<Shape>& in, const Attrs& a) {
  return kv_quant_shapes(in, a, "KvQuantValue", false);
}

class KvQuantKernel : public Kernel {
 public:
  KvQuantKernel(const Attrs& a, const char* op, bool per_channel)
      : attrs_(a),
        op_(op),
        per_channel_(per_channel),
        bits_(a.get_int("bits")),
        group_(a.get_int("group")) {}

  void compute(Context& ctx) const override {
    const ConstTensor codes = ctx.input(0), scale = ctx.input(1), mn = ctx.input(2);
    const ConstTensor residual = ctx.input(3), fresh = ctx.input(4);
    const std::vector<Shape> shapes =
        kv_quant_shapes({codes.shape, scale.shape, mn.shape, residual.shape, fresh.shape}, attrs_, op_, per_channel_);
    const int64_t b = residual.dim(0), h = residual.dim(1), r = residual.dim(2), d = residual.dim(3);
    const int64_t nq = codes.dim(2);
    const int64_t s = fresh.dim(2), len = r + s;
    const int64_t n = shapes[0][2] - nq;
    const int64_t dp = d / kvq::codes_per_byte(bits_);
    const int64_t ng = per_channel_ ? 0 : d / group_;  // values: scale columns per token
    Tensor codes_out = ctx.output(0, shapes[0]);
    Tensor scale_out = ctx.output(1, shapes[1]);
    Tensor min_out = ctx.output(2, shapes[2]);
    Tensor res_out = ctx.output(3, shapes[3]);
    const int64_t rows = b * h;
    if (rows == 0 || d == 0) return;

    // Scale/min elements per row: old store, and appended.
    const int64_t s_old = per_channel_ ? (nq / group_) * d : nq * ng;
    const int64_t s_new = per_channel_ ? (n / group_) * d : n * ng;
    const auto* cp = codes.as<int8_t>();
    const auto* sp = scale.as<uint16_t>();
    const auto* mp = mn.as<uint16_t>();
    const auto* rp = residual.as<float>();
    const auto* np_ = fresh.as<float>();
    auto* co = codes_out.as<int8_t>();
    auto* so = scale_out.as<uint16_t>();
    auto* mo = min_out.as<uint16_t>();
    auto* ro = res_out.as<float>();
    // Row `row`, token t of full = residual ++ new.
    auto token = [&](int64_t row, int64_t t) -> const float* {
      return t < r ? rp + (row * r + t) * d : np_ + (row * s + (t - r)) * d;
    };

    // 1. copies: the old store in front of the appended tokens, and full[n:] into residual_out.
    ctx.parallel_for(rows, static_cast<double>(nq * dp + (len - n) * d), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        if (nq > 0) {
          std::memcpy(co + row * (nq + n) * dp, cp + row * nq * dp, static_cast<size_t>(nq * dp));
          std::memcpy(so + row * (s_old + s_new), sp + row * s_old, static_cast<size_t>(s_old) * sizeof(uint16_t));
          std::memcpy(mo + row * (s_old + s_new), mp + row * s_old, static_cast<size_t>(s_old) * sizeof(uint16_t));
        }
        float* dst = ro + row * (len - n) * d;
        for (int64_t t = n; t < len;) {  // at most two runs: the residual part, then the new part
          const int64_t stop = t < r ? r : len;
          std::memcpy(dst + (t - n) * d, token(row, t), static_cast<size_t>((stop - t) * d) * sizeof(float));
          t = stop;
        }
      }
    });
    if (n == 0) return;

    // 2. quantization, one item per (row, group of `group` tokens).
    const float levels = static_cast<float>((1 << bits_) - 1);
    const int64_t groups = n / group_;
    ctx.parallel_for(rows * groups, static_cast<double>(group_ * d * 2), [&](int64_t begin, int64_t end) {
      std::vector<float> fbuf(static_cast<size_t>(2 * d));  // keys: per-channel min and divisor
      std::vector<int32_t> qbuf(static_cast<size_t>(d));   // one token's codes
      float* kmin = fbuf.data();
      float* kdiv = kmin + d;
      int32_t* q = qbuf.data();
      std::vector<float> ext(static_cast<size_t>(2 * d));  // keys: per-channel min and max of the group
      float* cmin = ext.data();
      float* cmax = cmin + d;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / groups, g = item % groups;
        const int64_t t0 = g * group_;
        int8_t* crow = co + row * (nq + n) * dp + nq * dp;
        uint16_t* srow = so + row * (s_old + s_new) + s_old;
        uint16_t* mrow = mo + row * (s_old + s_new) + s_old;
        if (per_channel_) {
          const float* x0 = token(row, t0);
          std::copy(x0, x0 + d, cmin);
          std::copy(x0, x0 + d, cmax);
          for (int64_t t = t0 + 1; t < t0 + group_; ++t) {
            const float* x = token(row, t);
            for (int64_t j = 0; j < d; ++j) {
              cmin[j] = x[j] < cmin[j] ? x[j] : cmin[j];
              cmax[j] = x[j] > cmax[j] ? x[j] : cmax[j];
            }
          }
          for (int64_t j = 0; j < d; ++j) {
            const kvq::GroupParams p = kvq::group_params(cmin[j], cmax[j], levels);
            srow[g * d + j] = p.scale16;
            mrow[g * d + j] = p.min16;
            kmin[j] = p.min;
            kdiv[j] = p.divisor;
          }
          for (int64_t t = t0; t < t0 + group_; ++t) {
            const float* x = token(row, t);
            for (int64_t j = 0; j < d; ++j) q[j] = kvq::code_of((x[j] - kmin[j]) / kdiv[j], levels);
            kvq::pack_row(q, d, bits_, crow + t * dp);
          }
        } else {
          for (int64_t t = t0; t < t0 + group_; ++t) {
            const float* x = token(row, t);
            for (int64_t c = 0; c < ng; ++c) {
              const float* xg = x + c * group_;
              float lo = xg[0], hi = xg[0];
              for (int64_t j = 1; j < group_; ++j) {
                lo = xg[j] < lo ? xg[j] : lo;
                hi = xg[j] > hi ? xg[j] : hi;
              }
              const kvq::GroupParams p = kvq::group_params(lo, hi, levels);
              srow[t * ng + c] = p.scale16;
              mrow[t * ng + c] = p.min16;
              int32_t* qg = q + c * group_;
              for (int64_t j = 0; j < group_; ++j) qg[j] = kvq::code_of((xg[j] - p.min) / p.divisor, levels);
            }
            kvq::pack_row(q, d, bits_, crow + t * dp);
          }
        }
      }
    });
  }

 private:
  Attrs attrs_;
  const char* op_;
  bool per_channel_;
  int64_t bits_, group_;
};

OpSpec quant_spec(const char* name, bool per_channel, ShapeRule rule) {
  OpSpec spec;
  spec.name = name;
  spec.version = "1";
  spec.inputs = {"codes", "scale", "min", "residual", "new"};
  spec.outputs = {"codes_out", "scale_out", "min_out", "residual_out"};
  spec.attrs = {int_attr("bits", 8, true, 4, true, 8), int_attr("group", 32, true, 1),
                int_attr("residual", 32, true, 0)};
  spec.variants.push_back({{DType::kInt8, DType::kFloat16, DType::kFloat16, DType::kFloat32, DType::kFloat32},
                           {DType::kInt8, DType::kFloat16, DType::kFloat16, DType::kFloat32}});
  spec.create = [name, per_channel](const Attrs& a) { return std::make_unique<KvQuantKernel>(a, name, per_channel); };
  spec.shapes = rule;
  return spec;
}

}  // namespace

void register_kv_quant(std::vector<OpSpec>& ops) {
  ops.push_back(quant_spec("KvQuantKey", true, kv_quant_key_shapes));
  ops.push_back(quant_spec("KvQuantValue", false, kv_quant_value_shapes));
}

}  // namespace parekit
