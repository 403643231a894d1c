// parekit::KvSlotMask and parekit::KvMaskRemap: masks over an evicted cache (parekit/ops/kv_slot_mask.py).
//
// KvSlotMask{group}(attn_mask bool [B, 1|Hq, S, T], score [B, Hkv, P]) -> bool [B, Hkv*group, S, T]:
//   out[b, h, s, t] = attn_mask[b, h or 0, s, t] && (t >= P || score[b, h / group, t] >= 0).
//   One parallel item per (batch row, query head): the KV head's validity row is built once, then every
//   query row is one byte-wise AND over the past slots and a copy of the new ones.
// KvMaskRemap(attention_mask [B, N], past [B, H, P, D], input_ids [B, S]) -> [B, P + S]:
//   P ones (in the mask's dtype) ++ attention_mask[:, N - S:] (a memcpy per row).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core.h"

namespace parekit {
namespace {

std::vector<Shape> kv_slot_mask_shapes(const std::vector<Shape>& in, const Attrs& a) {
  static const std::string op = "KvSlotMask";
  const int64_t group = a.get_int("group");
  const Shape& mask = in.at(0);
  const Shape& score = in.at(1);
  expect_rank(op, "attn_mask", mask, 4);
  expect_rank(op, "score", score, 3);
  const int64_t b = score[0], hkv = score[1], p = score[2];
  const int64_t hq = hkv * group, mh = mask[1], s = mask[2], t = mask[3];
  if (mask[0] != b || (mh != 1 && mh != hq)) {
    fail(op, "input 'attn_mask' " + shape_text(mask) + " must be [B, 1 or Hkv*group = " + std::to_string(hq) +
                 ", S, T] for score " + shape_text(score) + " and group " + std::to_string(group));
  }
  if (p > t) {
    fail(op, "input 'score' " + shape_text(score) + " has P = " + std::to_string(p) +
                 " past slots, more than the T = " + std::to_string(t) + " slots of attn_mask " + shape_text(mask));
  }
  return {{b, hq, s, t}};
}

std::vector<Shape> kv_mask_remap_shapes(const std::vector<Shape>& in, const Attrs&) {
  static const std::string op = "KvMaskRemap";
  const Shape& mask = in.at(0);
  const Shape& past = in.at(1);
  const Shape& ids = in.at(2);
  expect_rank(op, "attention_mask", mask, 2);
  expect_rank(op, "past", past, 4);
  expect_rank(op, "input_ids", ids, 2);
  const int64_t b = mask[0], n = mask[1], p = past[2], s = ids[1];
  if (past[0] != b || ids[0] != b) {
    fail(op, "batch sizes differ: attention_mask " + shape_text(mask) + ", past " + shape_text(past) +
                 ", input_ids " + shape_text(ids));
  }
  if (s > n) {
    fail(op, "input 'input_ids' " + shape_text(ids) + " has S = " + std::to_string(s) +
                 " new tokens, more than the N = " + std::to_string(n) + " columns of attention_mask " +
                 shape_text(mask));
  }
  return {{b, p + s}};
}

class KvSlotMaskKernel : public Kernel {
 public:
  explicit KvSlotMaskKernel(const Attrs& a) : attrs_(a), group_(a.get_int("group")) {}
  void compute(Context& ctx) const override {
    const ConstTensor mask = ctx.input(0), score = ctx.input(1);
    const Shape out_shape = kv_slot_mask_shapes({mask.shape, score.shape}, attrs_).at(0);
    const int64_t b = score.dim(0), hkv = score.dim(1), p = score.dim(2);
    const int64_t hq = out_shape[1], mh = mask.dim(1), s = mask.dim(2), t = mask.dim(3);
    Tensor out = ctx.output(0, out_shape);
    const auto* in = static_cast<const unsigned char*>(mask.data);
    auto* dst = static_cast<unsigned char*>(out.data);
    const float* sc = score.as<float>();
    ctx.parallel_for(b * hq, static_cast<double>(s * t + p), [&](int64_t begin, int64_t end) {
      std::vector<unsigned char> valid(static_cast<size_t>(p));
      int64_t built = -1;  // the (batch, KV head) item `valid` holds
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bi = item / hq, h = item % hq;
        const int64_t kv_item = bi * hkv + h / group_;
        if (kv_item != built) {
          const float* row = sc + kv_item * p;
          for (int64_t i = 0; i < p; ++i) valid[static_cast<size_t>(i)] = row[i] >= 0.0f ? 1 : 0;
          built = kv_item;
        }
        const unsigned char* m = in + (bi * mh + (mh == 1 ? 0 : h)) * s * t;
        unsigned char* o = dst + item * s * t;
        const unsigned char* vp = valid.data();
        for (int64_t q = 0; q < s; ++q) {
          const unsigned char* mr = m + q * t;
          unsigned char* orow = o + q * t;
          // bool tensors hold 0 / 1 bytes: AND the past slots, copy the new ones
          for (int64_t i = 0; i < p; ++i) orow[i] = static_cast<unsigned char>(mr[i] & vp[i]);
          if (t > p) std::memcpy(orow + p, mr + p, static_cast<size_t>(t - p));
        }
      }
    });
  }

 private:
  Attrs attrs_;
  int64_t group_;
};

// The bytes of 1 in a mask dtype (what CastLike(1.0, mask) gives).
std::vector<unsigned char> one_of(DType t) {
  std::vector<unsigned char> bytes(dtype_size(t));
  store_from_double(bytes.data(), t, 0, 1.0);
  return bytes;
}

class KvMaskRemapKernel : public Kernel {
 public:
  void compute(Context& ctx) const override {
    const ConstTensor mask = ctx.input(0), past = ctx.input(1), ids = ctx.input(2);
    const Shape out_shape = kv_mask_remap_shapes({mask.shape, past.shape, ids.shape}, Attrs{}).at(0);
    const int64_t b = mask.dim(0), n = mask.dim(1), p = past.dim(2), s = ids.dim(1);
    Tensor out = ctx.output(0, out_shape);
    const size_t elem = dtype_size(mask.dtype);
    const std::vector<unsigned char> one = one_of(mask.dtype);
    const auto* in = static_cast<const unsigned char*>(mask.data);
    auto* dst = static_cast<unsigned char*>(out.data);
    ctx.parallel_for(b, static_cast<double>(p + s), [&](int64_t begin, int64_t end) {
      for (int64_t bi = begin; bi < end; ++bi) {
        unsigned char* row = dst + static_cast<size_t>(bi * (p + s)) * elem;
        if (elem == 1) {
          std::memset(row, one[0], static_cast<size_t>(p));
        } else {
          for (int64_t i = 0; i < p; ++i) std::memcpy(row + static_cast<size_t>(i) * elem, one.data(), elem);
        }
        if (s > 0) {
          std::memcpy(row + static_cast<size_t>(p) * elem, in + static_cast<size_t>(bi * n + n - s) * elem,
                      static_cast<size_t>(s) * elem);
        }
      }
    });
  }
};

}  // namespace

void register_kv_slot_mask(std::vector<OpSpec>& ops) {
  {
    OpSpec spec;
    spec.name = "KvMaskRemap";
    spec.version = "1";
    spec.inputs = {"attention_mask", "past", "input_ids"};
    spec.outputs = {"mask_out"};
    for (DType m : mask_dtypes()) {
      for (DType id : {DType::kInt64, DType::kInt32}) spec.variants.push_back({{m, DType::kFloat32, id}, {m}});
    }
    spec.create = [](const Attrs&) { return std::make_unique<KvMaskRemapKernel>(); };
    spec.shapes = kv_mask_remap_shapes;
    ops.push_back(std::move(spec));
  }
  {
    OpSpec spec;
    spec.name = "KvSlotMask";
    spec.version = "1";
    spec.inputs = {"attn_mask", "score"};
    spec.outputs = {"mask_out"};
    spec.attrs = {int_attr("group", 1, true, 1)};
    spec.variants.push_back({{DType::kBool, DType::kFloat32}, {DType::kBool}});
    spec.create = [](const Attrs& a) { return std::make_unique<KvSlotMaskKernel>(a); };
    spec.shapes = kv_slot_mask_shapes;
    ops.push_back(std::move(spec));
  }
}

}  // namespace parekit
