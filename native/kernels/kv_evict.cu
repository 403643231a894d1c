// CUDA kernel of KvEvictH2O / KvEvictSnap (CPU twin: kv_evict.cpp). Per (batch row, KV head) "item":
//   L0 thread per (batch row, new token): is the new token real (mask > 0 as float32)
//   L1 thread per slot: the state (score ++ 0/-1), H2O's update st * decay + attention (the twin's sums in
//      the twin's order), the rank value plus the forced bonus; SnapKV with P == 0: the window votes
//   L2 (SnapKV, P == 0) thread per slot: max-pool of the votes over 7 slots, plus the forced bonus
//   L3 thread per slot: kept = fewer than K slots of its item come before it in the twin's total order
//      (larger first, NaN last, ties to the lower slot) - ranking by counting, no shared memory
//   L4 thread per kept slot: its output position = kept slots before it (slot order, as the twin keeps)
//   L5/L6 thread per output element: gather K/V rows and the state.
// O(T^2) work per item in L3/L4: simple and exact, not tuned.
#include <algorithm>

#include "device.h"
#include "kv_evict_cuda.h"

namespace parekit {
namespace {

constexpr float kForcedBonus = 1e9f;  // FORCED_BONUS of the reference
constexpr int64_t kPoolHalf = 3;      // POOL_KERNEL // 2
constexpr size_t kAlign = 256;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// st * decay + acc with two roundings, as NumPy (and the twin, built with fp-contract=off) computes it.
PAREKIT_HD inline float mul_add_unfused(float st, float decay, float acc) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(__fmul_rn(st, decay), acc);
#else
  volatile float decayed = st * decay;  // volatile: no contraction by the host compiler either
  return decayed + acc;
#endif
}

PAREKIT_HD inline bool is_nan(float x) { return x != x; }

// The twin's `Before`: does slot a (value x) come before slot b (value y)?
PAREKIT_HD inline bool before(float x, int64_t a, float y, int64_t b) {
  const bool xn = is_nan(x), yn = is_nan(y);
  if (xn || yn) return xn == yn ? a < b : yn;
  if (x != y) return x > y;
  return a < b;
}

// mask[i] > 0 after the reference's astype(float32), for every mask dtype of the twin.
PAREKIT_HD inline bool mask_positive(const void* m, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat32: return static_cast<const float*>(m)[i] > 0.0f;
    case DType::kFloat16: return dev::half_to_float(static_cast<const uint16_t*>(m)[i]) > 0.0f;
    case DType::kBFloat16: return dev::bf16_to_float(static_cast<const uint16_t*>(m)[i]) > 0.0f;
    case DType::kFloat64: return static_cast<float>(static_cast<const double*>(m)[i]) > 0.0f;
    case DType::kInt32: return static_cast<const int32_t*>(m)[i] > 0;
    case DType::kInt64: return static_cast<const int64_t*>(m)[i] > 0;
    case DType::kBool: return static_cast<const uint8_t*>(m)[i] != 0;
    default: return false;  // refused by the launcher
  }
}

// NumPy's pairwise summation in float32 (the twin's pairwise_sum, stride 1): dev::pairwise_sum.
PAREKIT_HD inline float pairwise_sum(const float* a, int64_t n) {
  return dev::pairwise_sum<float>([a](int64_t k) { return a[k]; }, n);
}

struct Scratch {
  uint8_t* valid;   // [B, S]
  float* state;     // [items, T]
  float* votes;     // [items, T] SnapKV window votes (P == 0)
  float* adjusted;  // [items, T] rank value + forced bonus
  uint8_t* kept;    // [items, T]
  int64_t* index;   // [items, K] kept slots in slot order
};

Scratch carve(void* ws, int64_t b, int64_t hkv, int64_t t, int64_t p, int64_t k) {
  const size_t items = static_cast<size_t>(b * hkv), tt = static_cast<size_t>(t);
  auto base = reinterpret_cast<uintptr_t>(ws);
  base = (base + kAlign - 1) / kAlign * kAlign;
  Scratch s{};
  auto take = [&base](size_t bytes) {
    const uintptr_t at = base;
    base += align_up(bytes);
    return at;
  };
  s.valid = reinterpret_cast<uint8_t*>(take(static_cast<size_t>(b * (t - p))));
  s.state = reinterpret_cast<float*>(take(items * tt * sizeof(float)));
  s.votes = reinterpret_cast<float*>(take(items * tt * sizeof(float)));
  s.adjusted = reinterpret_cast<float*>(take(items * tt * sizeof(float)));
  s.kept = reinterpret_cast<uint8_t*>(take(items * tt));
  s.index = reinterpret_cast<int64_t*>(take(items * static_cast<size_t>(k) * sizeof(int64_t)));
  return s;
}

}  // namespace

size_t kv_evict_workspace_bytes(int64_t b, int64_t hkv, int64_t t, int64_t p, int64_t budget) {
  const size_t items = static_cast<size_t>(b * hkv), tt = static_cast<size_t>(t);
  const size_t k = static_cast<size_t>(std::min(t, budget));
  return kAlign + align_up(static_cast<size_t>(b * (t - p))) + 3 * align_up(items * tt * sizeof(float)) +
         align_up(items * tt) + align_up(items * k * sizeof(int64_t));
}

void launch_kv_evict(const KvEvictParams& prm, const Launch& launch) {
  const char* op = prm.snap ? "KvEvictSnap" : "KvEvictH2O";
  if (prm.b < 0 || prm.hkv < 1 || prm.t < 0 || prm.d < 0 || prm.p < 0 || prm.p > prm.t || prm.hq % prm.hkv != 0 ||
      prm.budget < 1 || prm.sink < 0 || prm.recent < 0) {
    fail(op, "bad launch params");
  }
  switch (prm.mask_dtype) {
    case DType::kFloat32: case DType::kFloat16: case DType::kBFloat16: case DType::kFloat64:
    case DType::kInt32: case DType::kInt64: case DType::kBool: break;
    default: fail(op, std::string("the CUDA kernel has no ") + dtype_name(prm.mask_dtype) + " mask variant");
  }
  const int64_t b = prm.b, hkv = prm.hkv, t = prm.t, dd = prm.d, p = prm.p, s = t - p;
  const int64_t group = prm.hq / hkv, items = b * hkv;
  const int64_t k = std::min(t, prm.budget);
  const bool snap = prm.snap, evicts = k < t;
  const int64_t sink = prm.sink, first_recent = t - prm.recent;
  const int64_t start = std::max<int64_t>(s - prm.recent, 0);  // SnapKV observation window [start, S)
  const float decay = prm.decay;
  const Scratch w = carve(prm.workspace, b, hkv, t, p, k);
  const float* score = prm.score;
  const float* probs = prm.probs;
  const void* mask = prm.mask;
  const DType mask_dtype = prm.mask_dtype;

  dev::for_each(launch, op, b * s, [=] PAREKIT_HD(int64_t i) {
    w.valid[i] = mask_positive(mask, mask_dtype, (i / s) * t + p + i % s) ? 1 : 0;
  });

  const bool pooled = snap && p == 0 && evicts;  // SnapKV ranks by window votes: L2 finishes the rank
  dev::for_each(launch, op, items * t, [=] PAREKIT_HD(int64_t i) {
    const int64_t item = i / t, slot = i % t, bi = item / hkv;
    float st = slot < p ? score[item * p + slot] : (w.valid[bi * s + slot - p] ? 0.0f : -1.0f);
    const float* heads = probs + item * group * s * t;  // the group's query heads: group * S rows of T
    float rank = st;
    if (!snap) {
      float acc;
      if (t == 1) {
        acc = 0.0f + pairwise_sum(heads, group * s);  // the reference sums a contiguous axis pairwise
      } else {
        acc = 0.0f;
        for (int64_t r = 0; r < group * s; ++r) acc += heads[r * t + slot];
      }
      if (st >= 0.0f) st = mul_add_unfused(st, decay, acc);
      rank = st;
    } else if (pooled) {
      float votes = 0.0f;
      for (int64_t g = 0; g < group; ++g) {
        for (int64_t q = start; q < s; ++q) votes += heads[(g * s + q) * t + slot];
      }
      w.votes[i] = votes;
    } else {
      rank = st >= 0.0f ? static_cast<float>(slot) : -1.0f;
    }
    w.state[i] = st;
    if (evicts && !pooled) {
      if (slot < sink || slot >= first_recent) rank += kForcedBonus;
      w.adjusted[i] = rank;
    }
  });

  if (pooled) {
    dev::for_each(launch, op, items * t, [=] PAREKIT_HD(int64_t i) {
      const int64_t item = i / t, slot = i % t;
      const float* v = w.votes + item * t;
      const int64_t lo = slot - kPoolHalf > 0 ? slot - kPoolHalf : 0;
      const int64_t hi = slot + kPoolHalf < t - 1 ? slot + kPoolHalf : t - 1;
      float m = v[lo];
      for (int64_t j = lo + 1; j <= hi; ++j) {
        if (v[j] > m || is_nan(v[j])) m = is_nan(m) ? m : v[j];  // np.max propagates NaN
      }
      float rank = w.state[i] >= 0.0f ? m : -1.0f;
      if (slot < sink || slot >= first_recent) rank += kForcedBonus;
      w.adjusted[i] = rank;
    });
  }

  if (evicts) {
    dev::for_each(launch, op, items * t, [=] PAREKIT_HD(int64_t i) {
      const int64_t item = i / t, slot = i % t;
      const float* a = w.adjusted + item * t;
      const float x = a[slot];
      int64_t ahead = 0;  // slots that come before this one; stop once it is out of the K best
      for (int64_t j = 0; j < t && ahead < k; ++j) {
        if (before(a[j], j, x, slot)) ++ahead;
      }
      w.kept[i] = ahead < k ? 1 : 0;
    });
    dev::for_each(launch, op, items * t, [=] PAREKIT_HD(int64_t i) {
      if (!w.kept[i]) return;
      const int64_t item = i / t, slot = i % t;
      int64_t pos = 0;
      for (int64_t j = 0; j < slot; ++j) pos += w.kept[item * t + j];
      if (pos < k) w.index[item * k + pos] = slot;  // always true: the order is total, exactly K are kept
    });
  }

  // The source slot of output row r; an index outside [0, T) (impossible by construction) reads slot 0.
  const float* key = prm.key;
  const float* value = prm.value;
  float* key_out = prm.key_out;
  float* value_out = prm.value_out;
  float* score_out = prm.score_out;
  dev::for_each(launch, op, items * k * dd, [=] PAREKIT_HD(int64_t i) {
    const int64_t c = i % dd, r = (i / dd) % k, item = i / (dd * k);
    int64_t from = evicts ? w.index[item * k + r] : r;
    if (from < 0 || from >= t) from = 0;
    key_out[i] = key[(item * t + from) * dd + c];
    value_out[i] = value[(item * t + from) * dd + c];
  });
  dev::for_each(launch, op, items * k, [=] PAREKIT_HD(int64_t i) {
    const int64_t r = i % k, item = i / k;
    int64_t from = evicts ? w.index[item * k + r] : r;
    if (from < 0 || from >= t) from = 0;
    score_out[i] = w.state[item * t + from];
  });
}

}  // namespace parekit
