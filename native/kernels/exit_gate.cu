// CUDA kernel of ExitGate: one thread per row of x [rows, v]. A row is reduced in exactly the order of
// the CPU twin (exit_gate.cpp): 8 interleaved lanes over the first floor(v / 8) * 8 elements (lane
// l = i % 8), lanes combined pairwise ((0+1)+(2+3))+((4+5)+(6+7)), then the tail in sequence; the same
// float32 exponential (Cephes-style exp_nonpositive), sums in double, the score in double rounded once.
// With --fmad=false the host emulation reproduces the twin bit for bit; on a device only the double
// exp/log/sqrt of the final formula may differ from glibc's by an ulp of a double (far below float32).
// No scratch: the twin's per-block buffers of exponentials are recomputed inline, value for value.
#include "device.h"
#include "fast_exp.h"
#include "exit_gate_cuda.h"

namespace parekit {
namespace {

const char* const kOp = "ExitGate";
constexpr int kLanes = 8;


PAREKIT_HD inline double lane_total(const double* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// The twin's top_two: per-lane top two by selects, then push(a[l]), push(b[l]) lane by lane, then the tail.
template <typename A>
PAREKIT_HD void top_two(const typename A::storage* x, int64_t v, float& t1, float& t2) {
  const float neg_inf = -INFINITY;
  float a[kLanes], b[kLanes];
  for (int l = 0; l < kLanes; ++l) a[l] = b[l] = neg_inf;
  int64_t i = 0;
  for (; i + kLanes <= v; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float y = A::load(x, i + l);
      const float lo = a[l] < y ? a[l] : y;
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
  for (int l = 0; l < kLanes; ++l) {
    push(a[l]);
    push(b[l]);
  }
  for (; i < v; ++i) push(A::load(x, i));
  t1 = first;
  t2 = second;
}

template <typename A>
PAREKIT_HD float row_max(const typename A::storage* x, int64_t v) {
  float lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) lanes[l] = -INFINITY;
  int64_t i = 0;
  for (; i + kLanes <= v; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float y = A::load(x, i + l);
      lanes[l] = y > lanes[l] ? y : lanes[l];
    }
  }
  float top = lanes[0];
  for (int l = 1; l < kLanes; ++l) top = lanes[l] > top ? lanes[l] : top;
  for (; i < v; ++i) {
    const float y = A::load(x, i);
    top = y > top ? y : top;
  }
  return top;
}

// The twin's exp_sums: S = sum e, and (weighted) w = sum e * max(z, -88), z = x - top, e = exp(z).
template <typename A>
PAREKIT_HD double exp_sums(const typename A::storage* x, int64_t v, float top, bool weighted, double& w) {
  double ls[kLanes] = {}, lw[kLanes] = {};
  double s = 0.0, tail_w = 0.0;
  int64_t i = 0;
  for (; i + kLanes <= v; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float z = A::load(x, i + l) - top;
      const double e = static_cast<double>(exp_nonpositive(z));
      ls[l] += e;
      if (weighted) lw[l] += e * static_cast<double>(z > -88.0f ? z : -88.0f);
    }
  }
  for (; i < v; ++i) {
    const float z = A::load(x, i) - top;
    const double e = static_cast<double>(exp_nonpositive(z));
    s += e;
    if (weighted) tail_w += e * static_cast<double>(z > -88.0f ? z : -88.0f);
  }
  w = weighted ? lane_total(lw) + tail_w : 0.0;
  return lane_total(ls) + s;
}

template <typename A>
PAREKIT_HD double cosine_row(const typename A::storage* x, const typename A::storage* p, int64_t v) {
  double ld[kLanes] = {}, lx[kLanes] = {}, lp[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= v; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double a = static_cast<double>(A::load(x, i + l)), b = static_cast<double>(A::load(p, i + l));
      ld[l] += a * b;
      lx[l] += a * a;
      lp[l] += b * b;
    }
  }
  double dot = lane_total(ld), nx = lane_total(lx), np = lane_total(lp);
  for (; i < v; ++i) {
    const double a = static_cast<double>(A::load(x, i)), b = static_cast<double>(A::load(p, i));
    dot += a * b;
    nx += a * a;
    np += b * b;
  }
  const double denom = sqrt(nx) * sqrt(np);
  if (denom == 0.0) return 0.0;
  const double c = dot / denom;  // NaN stays NaN through the clamp
  return c > 1.0 ? 1.0 : (c < -1.0 ? -1.0 : c);
}

template <typename A>
PAREKIT_HD double softmax_score(const typename A::storage* x, int64_t v, ExitSignal signal) {
  double w = 0.0;
  if (signal == ExitSignal::kMargin) {
    float t1, t2;
    top_two<A>(x, v, t1, t2);
    const double s = exp_sums<A>(x, v, t1, false, w);
    const double e2 = exp(static_cast<double>(t2) - static_cast<double>(t1));  // V == 1: exp(-inf) = 0
    return (1.0 - e2) / s;
  }
  const float top = row_max<A>(x, v);
  const double s = exp_sums<A>(x, v, top, signal == ExitSignal::kEntropy, w);
  if (signal == ExitSignal::kMaxprob) return 1.0 / s;
  return log(s) - w / s;
}

template <typename A>
void exit_gate_typed(const ExitGateParams& p, const Launch& launch) {
  using T = typename A::storage;
  const T* x = static_cast<const T*>(p.x);
  const T* prev = static_cast<const T*>(p.prev);
  float* score = p.score;
  bool* take = p.take;
  const int64_t v = p.v;
  const ExitSignal signal = p.signal;
  const float threshold = p.threshold;
  dev::for_each(launch, kOp, p.rows, [=] PAREKIT_HD(int64_t r) {
    const T* xr = x + r * v;
    const double value =
        signal == ExitSignal::kCosine ? cosine_row<A>(xr, prev + r * v, v) : softmax_score<A>(xr, v, signal);
    const float s = static_cast<float>(value);
    score[r] = s;
    take[r] = signal == ExitSignal::kEntropy ? s <= threshold : s >= threshold;  // NaN: false
  });
}

}  // namespace

void launch_exit_gate(const ExitGateParams& p, const Launch& launch) {
  if (p.rows < 0 || p.v < 1 || p.x == nullptr || (p.rows > 0 && (p.score == nullptr || p.take == nullptr))) {
    fail(kOp, "bad launch params");
  }
  if ((p.signal == ExitSignal::kCosine) != (p.prev != nullptr)) {
    fail(kOp, "bad launch params: 'prev' is given exactly for signal=cosine");
  }
  switch (p.dtype) {
    case DType::kFloat32: exit_gate_typed<dev::F32>(p, launch); return;
    case DType::kFloat16: exit_gate_typed<dev::F16>(p, launch); return;
    default: fail(kOp, std::string("the CUDA kernel has no ") + dtype_name(p.dtype) + " variant");
  }
}

}  // namespace parekit
