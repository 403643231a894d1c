// parekit::ExitGate{signal, threshold}(x [..., V], prev? [..., V]) -> score float32 [...], take bool [...]
// (parekit/ops/exit_gate.py): an early exit's confidence per row of the last axis and its decision.
//
//   margin   p_top1 - p_top2 = (1 - exp(top2 - top1)) / S     take = score >= threshold
//   maxprob  p_top1 = 1 / S                                    take = score >= threshold
//   entropy  -sum p log p = log S - sum(e z) / S (0 log 0 = 0)  take = score <= threshold
//   cosine   <x, prev> / (|x| |prev|), 0 for a zero norm, clamped to [-1, 1]; take = score >= threshold
// with z = x - max x, e = exp(z), S = sum e (stable softmax). A NaN score (a row holding NaN or +inf)
// never takes the exit.
//
// Per row: one pass for the top two values (margin) or the maximum, one for exp / sums; cosine is one
// pass. Elements are float32 (float16 rows are widened, exactly, into a per-thread buffer first),
// exponentials the shared Cephes-style expf, sums in double lanes, the final score in double and rounded
// once: closer to the float64 reference than the float32 function body. Parallel over rows.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core.h"
#include "exit_gate_cuda.h"
#include "fast_exp.h"

namespace parekit {
namespace {
const char* const kOp = "ExitGate";
}  // namespace

// Shared with the CUDA launcher and the TensorRT plugin (exit_gate_cuda.h): one list, one message.
ExitSignal exit_signal_from_name(const std::string& s) {
  if (s == "margin") return ExitSignal::kMargin;
  if (s == "entropy") return ExitSignal::kEntropy;
  if (s == "maxprob") return ExitSignal::kMaxprob;
  if (s == "cosine") return ExitSignal::kCosine;
  fail(kOp, "attribute 'signal' must be one of margin, entropy, maxprob, cosine, got '" + s + "'");
}

namespace {

using Signal = ExitSignal;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PAREKIT_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PAREKIT_HOT
#endif

// float16 -> float32, exact for every value (normals, subnormals, inf, NaN), branch-free so that the loop
// vectorizes: the exponent is rebiased by a multiply, subnormals by a magic-number subtraction (the
// method of Maratos Dukhan's FP16 library).
PAREKIT_HOT void widen_half(const uint16_t* h, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t w = static_cast<uint32_t>(h[i]) << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    uint32_t bits = (two_w >> 4) + (0xE0u << 23);
    float normalized;
    std::memcpy(&normalized, &bits, sizeof normalized);
    normalized *= 0x1.0p-112f;
    bits = (two_w >> 17) | (126u << 23);
    float denormalized;
    std::memcpy(&denormalized, &bits, sizeof denormalized);
    denormalized -= 0.5f;
    uint32_t nb, db;
    std::memcpy(&nb, &normalized, sizeof nb);
    std::memcpy(&db, &denormalized, sizeof db);
    const uint32_t result = sign | (two_w < (1u << 27) ? db : nb);
    std::memcpy(&out[i], &result, sizeof result);
  }
}

// 8 floats / 8 doubles; GCC/Clang lower them to the widest vectors the function's target has.
typedef float F8 __attribute__((vector_size(32)));
typedef double D8 __attribute__((vector_size(64)));
constexpr int64_t kLanes = 8;

// (macros, not functions: a function returning a vector would change the ABI between the clones)
#define PAREKIT_LOAD_F8(v, p) std::memcpy(&(v), (p), sizeof(F8))
#define PAREKIT_WIDEN(v) __builtin_convertvector((v), D8)

inline double lane_total(const D8& l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// The two largest values of a row (a tie for the top gives t2 == t1): the top two of each of kLanes
// lanes (vectorizable selects), then of the 2 * kLanes candidates. NaN may or may not be picked; the
// sum makes a NaN row's score NaN either way.
PAREKIT_HOT void top_two(const float* x, int64_t v, float& t1, float& t2) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float a[kLanes], b[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) a[l] = b[l] = neg_inf;
  int64_t i = 0;
  for (; i + kLanes <= v; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const float y = x[i + l];
      const float lo = a[l] < y ? a[l] : y;  // min(a, y): the loser of this lane's top
      b[l] = lo > b[l] ? lo : b[l];
      a[l] = y > a[l] ? y : a[l];
    }
  }
  float first = neg_inf, second = neg_inf;
  auto push = [&](float y) {
    if (y > first) {
      second = first;
      first = y;
    } else if (y > second) {
      second = y;
    }
  };
  for (int64_t l = 0; l < kLanes; ++l) {
    push(a[l]);
    push(b[l]);
  }
  for (; i < v; ++i) push(x[i]);
  t1 = first;
  t2 = second;
}

PAREKIT_HOT float row_max(const float* x, int64_t v) {
  float lanes[kLanes];
  for (float& l : lanes) l = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  for (; i + kLanes <= v; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] = x[i + l] > lanes[l] ? x[i + l] : lanes[l];
  }
  float top = lanes[0];
  for (int64_t l = 1; l < kLanes; ++l) top = lanes[l] > top ? lanes[l] : top;
  for (; i < v; ++i) top = x[i] > top ? x[i] : top;
  return top;
}

constexpr int64_t kBlock = 512;  // exponentials per block: the scratch stays in L1

// S = sum exp(x - top) and (when `weighted`) w = sum e z, z = x - top, both in double, block by block: the
// exponentials of a block (a vectorized loop into `e`; `zc` gets z clamped at -88, where e is already 0, so
// that e z is 0 rather than 0 * -inf for masked logits), then their sums in double lanes. `e` and `zc` are
// kBlock floats each. A NaN element makes S NaN.
PAREKIT_HOT double exp_sums(const float* x, int64_t v, float top, bool weighted, float* e, float* zc, double& w) {
  D8 ls = {}, lw = {};
  double s = 0.0, tail_w = 0.0;
  for (int64_t b0 = 0; b0 < v; b0 += kBlock) {
    const float* xb = x + b0;
    const int64_t n = std::min(kBlock, v - b0);
    if (weighted) {
      for (int64_t i = 0; i < n; ++i) {
        const float z = xb[i] - top;
        e[i] = exp_nonpositive(z);
        zc[i] = z > -88.0f ? z : -88.0f;
      }
    } else {
      for (int64_t i = 0; i < n; ++i) e[i] = exp_nonpositive(xb[i] - top);
    }
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      F8 ef;
      PAREKIT_LOAD_F8(ef, e + i);
      const D8 ed = PAREKIT_WIDEN(ef);
      ls += ed;
      if (weighted) {
        F8 zf;
        PAREKIT_LOAD_F8(zf, zc + i);
        lw += ed * PAREKIT_WIDEN(zf);
      }
    }
    for (; i < n; ++i) {  // only in the last block
      s += static_cast<double>(e[i]);
      if (weighted) tail_w += static_cast<double>(e[i]) * static_cast<double>(zc[i]);
    }
  }
  w = weighted ? lane_total(lw) + tail_w : 0.0;
  return lane_total(ls) + s;
}

PAREKIT_HOT double cosine_row(const float* x, const float* p, int64_t v) {
  D8 ld = {}, lx = {}, lp = {};
  int64_t i = 0;
  for (; i + kLanes <= v; i += kLanes) {
    F8 xf, pf;
    PAREKIT_LOAD_F8(xf, x + i);
    PAREKIT_LOAD_F8(pf, p + i);
    const D8 a = PAREKIT_WIDEN(xf), b = PAREKIT_WIDEN(pf);
    ld += a * b;
    lx += a * a;
    lp += b * b;
  }
  double dot = lane_total(ld), nx = lane_total(lx), np = lane_total(lp);
  for (; i < v; ++i) {
    const double a = static_cast<double>(x[i]), b = static_cast<double>(p[i]);
    dot += a * b;
    nx += a * a;
    np += b * b;
  }
  const double denom = std::sqrt(nx) * std::sqrt(np);
  if (denom == 0.0) return 0.0;
  const double c = dot / denom;  // NaN stays NaN through the clamp
  return c > 1.0 ? 1.0 : (c < -1.0 ? -1.0 : c);
}

// `e`: scratch of 2 * kBlock floats.
double softmax_score(const float* x, int64_t v, Signal signal, float* e) {
  double w = 0.0;
  if (signal == Signal::kMargin) {
    float t1, t2;
    top_two(x, v, t1, t2);
    const double s = exp_sums(x, v, t1, false, e, e + kBlock, w);
    const double e2 = std::exp(static_cast<double>(t2) - static_cast<double>(t1));  // V == 1: exp(-inf) = 0
    return (1.0 - e2) / s;
  }
  const float top = row_max(x, v);
  const double s = exp_sums(x, v, top, signal == Signal::kEntropy, e, e + kBlock, w);
  if (signal == Signal::kMaxprob) return 1.0 / s;
  return std::log(s) - w / s;
}

// The shape rule (OpSpec::shapes): x [..., V] (rank >= 2, V >= 1), prev (cosine only) of x's shape;
// score and take are x's shape without the last axis. The signal is parsed here too, so that an unknown
// one is refused wherever the rule runs (the TensorRT plugin's build and run time included).
std::vector<Shape> exit_gate_shapes(const std::vector<Shape>& in, const Attrs& a) {
  const Signal signal = exit_signal_from_name(a.get_string("signal"));
  const bool has_prev = in.size() > 1;
  if (signal == Signal::kCosine && !has_prev) {
    fail(kOp, "signal=cosine needs input 'prev' (the previous exit's output)");
  }
  if (signal != Signal::kCosine && has_prev) fail(kOp, "input 'prev' is only read by signal=cosine");
  const Shape& x = in.at(0);
  if (x.size() < 2) fail(kOp, "input 'x' must have rank >= 2 [..., V], got shape " + shape_text(x));
  if (x.back() < 1) fail(kOp, "input 'x' must have a non-empty last axis, got shape " + shape_text(x));
  if (has_prev && in[1] != x) {
    fail(kOp, "input 'prev' " + shape_text(in[1]) + " must have the shape of 'x' " + shape_text(x));
  }
  const Shape rows(x.begin(), x.end() - 1);
  return {rows, rows};
}

class ExitGateKernel : public Kernel {
 public:
  explicit ExitGateKernel(const Attrs& a)
      : attrs_(a), signal_(exit_signal_from_name(a.get_string("signal"))), threshold_(a.get_float("threshold")) {}

  void compute(Context& ctx) const override {
    const ConstTensor x = ctx.input(0);
    const bool has_prev = ctx.num_inputs() > 1;
    std::vector<Shape> in_shapes{x.shape};
    ConstTensor prev;
    if (has_prev) {
      prev = ctx.input(1);
      in_shapes.push_back(prev.shape);
    }
    const Shape rows_shape = exit_gate_shapes(in_shapes, attrs_).at(0);
    const int64_t v = x.shape.back();
    if (has_prev && prev.dtype != x.dtype) fail(kOp, "input 'prev' must have the dtype of 'x'");
    if (x.dtype != DType::kFloat32 && x.dtype != DType::kFloat16) {
      fail(kOp, std::string("input 'x' must be float32 or float16, got ") + dtype_name(x.dtype));
    }
    Tensor score = ctx.output(0, rows_shape);
    Tensor take = ctx.output(1, rows_shape);
    const int64_t rows = numel(rows_shape);
    if (rows == 0) return;
    float* sd = score.as<float>();
    bool* td = take.as<bool>();
    const bool half = x.dtype == DType::kFloat16;
    const Signal signal = signal_;
    const float threshold = threshold_;
    const double cost = static_cast<double>(v) * (signal == Signal::kCosine ? 4.0 : 6.0);
    ctx.parallel_for(rows, cost, [&](int64_t begin, int64_t end) {
      std::vector<float> wide(half ? static_cast<size_t>(v) * (has_prev ? 2 : 1) : 0);
      std::vector<float> scratch(signal == Signal::kCosine ? 0 : static_cast<size_t>(2 * kBlock));
      for (int64_t r = begin; r < end; ++r) {
        const float* xr;
        const float* pr = nullptr;
        if (half) {
          widen_half(x.as<uint16_t>() + r * v, wide.data(), v);
          xr = wide.data();
          if (has_prev) {
            widen_half(prev.as<uint16_t>() + r * v, wide.data() + v, v);
            pr = wide.data() + v;
          }
        } else {
          xr = x.as<float>() + r * v;
          if (has_prev) pr = prev.as<float>() + r * v;
        }
        const double value =
            signal == Signal::kCosine ? cosine_row(xr, pr, v) : softmax_score(xr, v, signal, scratch.data());
        const float s = static_cast<float>(value);
        sd[r] = s;
        td[r] = signal == Signal::kEntropy ? s <= threshold : s >= threshold;  // NaN: false
      }
    });
  }

 private:
  Attrs attrs_;
  Signal signal_;
  float threshold_;
};

}  // namespace

void register_exit_gate(std::vector<OpSpec>& ops) {
  OpSpec spec;
  spec.name = "ExitGate";
  spec.version = "1";
  spec.inputs = {"x", "prev"};
  spec.outputs = {"score", "take"};
  spec.attrs = {string_attr("signal", "margin"), float_attr("threshold", 0.9f)};
  spec.optional_inputs = 1;  // prev: signal=cosine only
  for (DType t : {DType::kFloat32, DType::kFloat16}) {
    spec.variants.push_back({{t, t}, {DType::kFloat32, DType::kBool}});
  }
  spec.create = [](const Attrs& a) { return std::make_unique<ExitGateKernel>(a); };
  spec.shapes = exit_gate_shapes;
  ops.push_back(std::move(spec));
}

}  // namespace parekit
