// parekit::KvEvictH2O / parekit::KvEvictSnap: keep `budget` slots of a KV cache [B, Hkv, T, D] per batch
// row and KV head, chosen by attention (parekit/ops/kv_evict.py is the spec; its NumPy reference the
// oracle).
//
// Per (batch row, KV head), one parallel item:
//   state  = score ++ (0 for real new tokens, -1 for padding); valid = state >= 0
//   H2O:   state = valid ? state * decay + attention received : state; rank = state
//   Snap:  rank = valid ? (P == 0 ? maxpool7(window votes) : slot index) : -1
//   adjusted = rank + (sink or recent slot ? 1e9 : 0)   (float32, as the reference rounds it)
//   the K = min(T, budget) best slots by adjusted (ties -> lower slot, NaN last) by partial selection
//   (std::nth_element), kept in slot order, K/V gathered as whole [D] rows (runs of consecutive slots
//   are one memcpy).
// The attention sums are float32 and added in the reference's order (group-major, then query), so the
// state is bit-exact with NumPy's; T == 1 sums follow NumPy's pairwise summation.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core.h"

// The state update st * decay + attention must round twice, as NumPy does: no fused multiply-add even
// where the target has one (GCC contracts across statements by default in C++; Clang only within one).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace parekit {
namespace {

constexpr float kForcedBonus = 1e9f;  // FORCED_BONUS of the reference
constexpr int64_t kPoolHalf = 3;      // POOL_KERNEL // 2 (SnapKV max-pool over 7 slots)

enum class Policy { kH2O, kSnap };

struct Dims {
  int64_t b, hkv, t, d, p, s, hq, group;
};

// The shape rule (OpSpec::shapes, also used by the TensorRT plugins): validates the five input shapes
// and derives the dims every kernel variant works with.
Dims check_shapes(const std::string& op, const Shape& key, const Shape& value, const Shape& score,
                  const Shape& probs, const Shape& mask) {
  expect_rank(op, "key", key, 4);
  expect_rank(op, "value", value, 4);
  expect_rank(op, "score", score, 3);
  expect_rank(op, "probs", probs, 4);
  expect_rank(op, "mask", mask, 2);
  Dims d{key[0], key[1], key[2], key[3], score[2], 0, probs[1], 0};
  if (value != key) {
    fail(op, "input 'value' " + shape_text(value) + " must have the shape of 'key' " + shape_text(key));
  }
  if (score[0] != d.b || score[1] != d.hkv || d.p > d.t) {
    fail(op, "input 'score' " + shape_text(score) + " must be [B, Hkv, P] with P <= T for key " + shape_text(key));
  }
  d.s = d.t - d.p;
  if (probs[0] != d.b || probs[3] != d.t || probs[2] != d.s) {
    fail(op, "input 'probs' " + shape_text(probs) + " must be [B, Hq, S, T] with T = P + S for key " +
                 shape_text(key) + " and score " + shape_text(score) + " (expected S = " + std::to_string(d.s) + ")");
  }
  if (d.hkv < 1 || d.hq % d.hkv != 0) {
    fail(op, "input 'probs' " + shape_text(probs) + ": query heads Hq = " + std::to_string(d.hq) +
                 " must be a multiple of the KV heads Hkv = " + std::to_string(d.hkv) + " of key " + shape_text(key));
  }
  d.group = d.hq / d.hkv;
  if (mask[0] != d.b || mask[1] != d.t) {
    fail(op, "input 'mask' " + shape_text(mask) + " must be [B, T] = " + shape_text({d.b, d.t}) + " for key " +
                 shape_text(key));
  }
  return d;
}

std::vector<Shape> kv_evict_shapes(const std::string& op, const std::vector<Shape>& in, const Attrs& a) {
  if (in.size() != 5) fail(op, "expects 5 inputs (key, value, score, probs, mask), got " + std::to_string(in.size()));
  const Dims d = check_shapes(op, in[0], in[1], in[2], in[3], in[4]);
  const int64_t k = std::min(d.t, a.get_int("budget"));
  return {{d.b, d.hkv, k, d.d}, {d.b, d.hkv, k, d.d}, {d.b, d.hkv, k}};
}

// NumPy's pairwise summation of n float32 values (numpy/_core/src/umath/loops_utils.h.src), used where
// the reference's reduction runs along a contiguous axis (T == 1), so that the sums agree bit for bit.
float pairwise_sum(const float* a, int64_t n, int64_t stride) {
  if (n < 8) {
    float res = 0.0f;
    for (int64_t i = 0; i < n; ++i) res += a[i * stride];
    return res;
  }
  if (n <= 128) {
    float r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j * stride];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[(i + j) * stride];
    }
    float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i * stride];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2, stride) + pairwise_sum(a + n2 * stride, n - n2, stride);
}

// Total order of the reference's stable descending argsort: larger first, NaN last, ties to the lower slot.
struct Before {
  const float* v;
  bool operator()(int64_t a, int64_t b) const {
    const float x = v[a], y = v[b];
    const bool xn = std::isnan(x), yn = std::isnan(y);
    if (xn || yn) return xn == yn ? a < b : yn;
    if (x != y) return x > y;
    return a < b;
  }
};

class KvEvictKernel : public Kernel {
 public:
  KvEvictKernel(const Attrs& a, Policy policy, std::string op)
      : policy_(policy),
        op_(std::move(op)),
        budget_(a.get_int("budget")),
        sink_(a.get_int("sink")),
        recent_(a.get_int("recent")),
        decay_(policy == Policy::kH2O ? a.get_float("decay") : 1.0f) {}

  void compute(Context& ctx) const override {
    const ConstTensor key = ctx.input(0), value = ctx.input(1), score = ctx.input(2), probs = ctx.input(3),
                      mask = ctx.input(4);
    const Dims d = check_shapes(op_, key.shape, value.shape, score.shape, probs.shape, mask.shape);
    const int64_t k = std::min(d.t, budget_);
    Tensor key_out = ctx.output(0, {d.b, d.hkv, k, d.d});
    Tensor value_out = ctx.output(1, {d.b, d.hkv, k, d.d});
    Tensor score_out = ctx.output(2, {d.b, d.hkv, k});

    // Which new tokens are real: the reference's mask[:, P:].astype(float32) > 0.
    std::vector<unsigned char> new_valid(static_cast<size_t>(d.b * d.s));
    for (int64_t bi = 0; bi < d.b; ++bi) {
      for (int64_t j = 0; j < d.s; ++j) {
        const float m = static_cast<float>(load_as_double(mask.data, mask.dtype, bi * d.t + d.p + j));
        new_valid[static_cast<size_t>(bi * d.s + j)] = m > 0.0f ? 1 : 0;
      }
    }

    const size_t row_bytes = static_cast<size_t>(d.d) * sizeof(float);
    const float* key_in = key.as<float>();
    const float* value_in = value.as<float>();
    const float* score_in = score.as<float>();
    const float* probs_in = probs.as<float>();
    float* key_dst = key_out.as<float>();
    float* value_dst = value_out.as<float>();
    float* score_dst = score_out.as<float>();
    const int64_t start = std::max<int64_t>(d.s - recent_, 0);  // SnapKV observation window [start, S)
    const double cost = static_cast<double>((policy_ == Policy::kSnap ? d.group * std::min(d.s, recent_) * d.t : 0) +
                                            2 * k * d.d + 4 * d.t);

    // H2O's state update is the bulk of the work at prefill (group * S rows of T per KV head): it runs
    // first, in parallel over (batch row, KV head, block of slots), into one [B, Hkv, T] buffer.
    std::vector<float> h2o_state;
    if (policy_ == Policy::kH2O) {
      h2o_state.resize(static_cast<size_t>(d.b * d.hkv * d.t));
      const int64_t cols = d.t == 1 ? 1 : 1024;
      const int64_t blocks = (d.t + cols - 1) / cols;
      ctx.parallel_for(d.b * d.hkv * blocks, static_cast<double>((d.group * d.s + 2) * cols), [&](int64_t begin, int64_t end) {
        std::vector<float> acc(static_cast<size_t>(cols));
        for (int64_t job = begin; job < end; ++job) {
          const int64_t item = job / blocks, c0 = job % blocks * cols, c1 = std::min(d.t, c0 + cols);
          const int64_t bi = item / d.hkv, w = c1 - c0;
          float* st = h2o_state.data() + item * d.t;
          for (int64_t i = c0; i < c1; ++i) {
            st[i] = i < d.p ? score_in[item * d.p + i]
                            : (new_valid[static_cast<size_t>(bi * d.s + i - d.p)] ? 0.0f : -1.0f);
          }
          // the group's query heads are `group` consecutive heads of S rows each: group * S rows
          const float* heads = probs_in + item * d.group * d.s * d.t;
          if (d.t == 1) {
            acc[0] = 0.0f + pairwise_sum(heads, d.group * d.s, 1);
          } else {
            // rows added in order (the reference's rounding), four per pass over acc
            float* a = acc.data();
            std::fill(a, a + w, 0.0f);
            const int64_t rows = d.group * d.s;
            int64_t r = 0;
            for (; r + 4 <= rows; r += 4) {
              const float* r0 = heads + r * d.t + c0;
              const float* r1 = r0 + d.t;
              const float* r2 = r1 + d.t;
              const float* r3 = r2 + d.t;
              for (int64_t i = 0; i < w; ++i) a[i] = (((a[i] + r0[i]) + r1[i]) + r2[i]) + r3[i];
            }
            for (; r < rows; ++r) {
              const float* row = heads + r * d.t + c0;
              for (int64_t i = 0; i < w; ++i) a[i] += row[i];
            }
          }
          for (int64_t i = c0; i < c1; ++i) {
            if (st[i] >= 0.0f) {
              const float decayed = st[i] * decay_;
              st[i] = decayed + acc[static_cast<size_t>(i - c0)];
            }
          }
        }
      });
    }

    ctx.parallel_for(d.b * d.hkv, cost, [&](int64_t begin, int64_t end) {
      std::vector<float> state(static_cast<size_t>(d.t)), acc(static_cast<size_t>(d.t)),
          adjusted(static_cast<size_t>(d.t));
      std::vector<int64_t> order;
      std::vector<unsigned char> kept;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bi = item / d.hkv;
        const float* heads = probs_in + item * d.group * d.s * d.t;
        if (policy_ == Policy::kH2O) {
          const float* st = h2o_state.data() + item * d.t;
          std::copy(st, st + d.t, state.begin());
          std::copy(st, st + d.t, adjusted.begin());
        } else {  // state = score ++ (0 | -1 per new token)
          std::copy(score_in + item * d.p, score_in + (item + 1) * d.p, state.begin());
          for (int64_t j = 0; j < d.s; ++j) {
            state[static_cast<size_t>(d.p + j)] = new_valid[static_cast<size_t>(bi * d.s + j)] ? 0.0f : -1.0f;
          }
        }
        if (policy_ == Policy::kSnap && k < d.t) {  // SnapKV's rank only matters when something is evicted
          if (d.p == 0) {
            // votes of the observation window (T > budget >= 1 here, so rows are not contiguous sums)
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int64_t g = 0; g < d.group; ++g) {
              for (int64_t q = start; q < d.s; ++q) {
                const float* row = heads + (g * d.s + q) * d.t;
                for (int64_t i = 0; i < d.t; ++i) acc[static_cast<size_t>(i)] += row[i];
              }
            }
            for (int64_t i = 0; i < d.t; ++i) {
              float m = acc[static_cast<size_t>(std::max<int64_t>(i - kPoolHalf, 0))];
              const int64_t hi = std::min(i + kPoolHalf, d.t - 1);
              for (int64_t j = std::max<int64_t>(i - kPoolHalf, 0) + 1; j <= hi; ++j) {
                const float v = acc[static_cast<size_t>(j)];
                if (v > m || std::isnan(v)) m = std::isnan(m) ? m : v;  // np.max propagates NaN
              }
              adjusted[static_cast<size_t>(i)] = state[static_cast<size_t>(i)] >= 0.0f ? m : -1.0f;
            }
          } else {
            for (int64_t i = 0; i < d.t; ++i) {
              adjusted[static_cast<size_t>(i)] = state[static_cast<size_t>(i)] >= 0.0f ? static_cast<float>(i) : -1.0f;
            }
          }
        }

        const float* src_k = key_in + item * d.t * d.d;
        const float* src_v = value_in + item * d.t * d.d;
        float* out_k = key_dst + item * k * d.d;
        float* out_v = value_dst + item * k * d.d;
        float* out_s = score_dst + item * k;
        if (k == d.t) {  // identity: every slot, in order
          if (d.t > 0) {
            std::memcpy(out_k, src_k, static_cast<size_t>(d.t) * row_bytes);
            std::memcpy(out_v, src_v, static_cast<size_t>(d.t) * row_bytes);
            std::copy(state.begin(), state.end(), out_s);
          }
          continue;
        }
        const int64_t first_recent = d.t - recent_;
        for (int64_t i = 0; i < d.t; ++i) {
          if (i < sink_ || i >= first_recent) adjusted[static_cast<size_t>(i)] += kForcedBonus;
        }
        // partial selection of the k best slots, then slot order by marking them (a counting sort)
        order.resize(static_cast<size_t>(d.t));
        for (int64_t i = 0; i < d.t; ++i) order[static_cast<size_t>(i)] = i;
        if (k > 0) {
          std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), Before{adjusted.data()});
        }
        kept.assign(static_cast<size_t>(d.t), 0);
        for (int64_t i = 0; i < k; ++i) kept[static_cast<size_t>(order[static_cast<size_t>(i)])] = 1;
        // gather runs of consecutive kept slots
        int64_t out = 0;
        for (int64_t i = 0; i < d.t;) {
          if (!kept[static_cast<size_t>(i)]) {
            ++i;
            continue;
          }
          int64_t run_end = i + 1;
          while (run_end < d.t && kept[static_cast<size_t>(run_end)]) ++run_end;
          const size_t n = static_cast<size_t>(run_end - i);
          std::memcpy(out_k + out * d.d, src_k + i * d.d, n * row_bytes);
          std::memcpy(out_v + out * d.d, src_v + i * d.d, n * row_bytes);
          std::copy(state.begin() + i, state.begin() + run_end, out_s + out);
          out += run_end - i;
          i = run_end;
        }
      }
    });
  }

 private:
  Policy policy_;
  std::string op_;
  int64_t budget_, sink_, recent_;
  float decay_;
};

std::vector<AttrDecl> evict_attrs() {
  return {int_attr("budget", 512, true, 1, true, 3839), int_attr("sink", 4, true, 0),
          int_attr("recent", 32, true, 0)};
}

OpSpec evict_spec(const std::string& name, Policy policy, std::vector<AttrDecl> attrs) {
  OpSpec spec;
  spec.name = name;
  spec.version = "1";
  spec.inputs = {"key", "value", "score", "probs", "mask"};
  spec.outputs = {"key_out", "value_out", "score_out"};
  spec.attrs = std::move(attrs);
  const DType f = DType::kFloat32;
  for (DType m : mask_dtypes()) spec.variants.push_back({{f, f, f, f, m}, {f, f, f}});
  spec.create = [policy, name](const Attrs& a) { return std::make_unique<KvEvictKernel>(a, policy, name); };
  spec.shapes = [name](const std::vector<Shape>& in, const Attrs& a) { return kv_evict_shapes(name, in, a); };
  return spec;
}

}  // namespace

void register_kv_evict(std::vector<OpSpec>& ops) {
  std::vector<AttrDecl> h2o = evict_attrs();
  h2o.push_back(float_attr("decay", 1.0f, true, 0.0, true, 1.0));
  ops.push_back(evict_spec("KvEvictH2O", Policy::kH2O, std::move(h2o)));
  ops.push_back(evict_spec("KvEvictSnap", Policy::kSnap, evict_attrs()));
}

}  // namespace parekit
