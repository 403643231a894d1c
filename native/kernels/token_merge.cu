// CUDA kernel of TokenMerge (ToMe bipartite soft matching; the twin is token_merge.cpp).
//
// Eight thread-per-item passes on one stream (no shared memory, no atomics), each the twin's arithmetic
// in the twin's order, so that the outputs are the twin's bit for bit:
//   1. per (batch, free token): the float64 unit metric row (norm by four partial sums, as the twin);
//   2. per (batch, A, B): the cosine in float64, rounded to the tokens' type (padding partners of a
//      real A token get -PAD_PENALTY). The twin's float32 screen only skips B tokens that cannot hold
//      the maximum, so the plain float64 loop picks the same partner;
//   3. per (batch, A): the partner (first maximum, NaN wins) and the score (BIG for padding A tokens);
//   4. per (batch, token): merged = A token among the r' best (its rank counted with the twin's order:
//      score descending, ties to the lower index, NaN last);
//   5. per (batch, token): output index (survivors packed in order, merged -> its partner's);
//   6. per (batch, output): the group members in increasing index order (CSR: offset = tokens with a
//      lower target), the size sum and the mean's denominator (NumPy's pairwise sum, as the twin);
//   7. per output element: a singleton's bits, or the size-weighted mean accumulated in float64;
//   8. per assign element: 1 where the token goes, else 0.
#include "device.h"
#include "token_device.h"
#include "token_common.h"
#include "token_merge_cuda.h"

namespace parekit {
namespace {

constexpr const char* kOp = "TokenMerge";

PAREKIT_HD inline uint64_t double_bits(double v) {
#ifdef __CUDA_ARCH__
  return static_cast<uint64_t>(__double_as_longlong(v));
#else
  uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
#endif
}

constexpr uint64_t kExpMask = 0x7ff0000000000000ull;

PAREKIT_HD inline bool finite(double v) { return (double_bits(v) & kExpMask) != kExpMask; }

using tokdev::double_to_bf16;
using tokdev::double_to_half;

// Element access in float64, as token_common.h's load / store / round_to.
struct T32 {
  using storage = float;
  PAREKIT_HD static double load(const storage* p, int64_t i) { return p[i]; }
  PAREKIT_HD static void store(storage* p, int64_t i, double v) { p[i] = static_cast<float>(v); }
  PAREKIT_HD static double round(double v) { return static_cast<float>(v); }
};
struct T16 {
  using storage = uint16_t;
  PAREKIT_HD static double load(const storage* p, int64_t i) { return dev::half_to_float(p[i]); }
  PAREKIT_HD static void store(storage* p, int64_t i, double v) { p[i] = double_to_half(v); }
  PAREKIT_HD static double round(double v) { return dev::half_to_float(double_to_half(v)); }
};
struct TB16 {
  using storage = uint16_t;
  PAREKIT_HD static double load(const storage* p, int64_t i) { return dev::bf16_to_float(p[i]); }
  PAREKIT_HD static void store(storage* p, int64_t i, double v) { p[i] = double_to_bf16(v); }
  PAREKIT_HD static double round(double v) { return dev::bf16_to_float(double_to_bf16(v)); }
};

template <typename F>
void dispatch(DType t, F&& f) {
  switch (t) {
    case DType::kFloat32: f(T32{}); return;
    case DType::kFloat16: f(T16{}); return;
    case DType::kBFloat16: f(TB16{}); return;
    default: fail(kOp, std::string("the CUDA kernel has no ") + dtype_name(t) + " variant");
  }
}

using tokdev::pairwise_sum;

template <typename T>
struct MemberSize {  // sizes of a group's members
  const typename T::storage* sizes;
  const int64_t* members;
  PAREKIT_HD double operator()(int64_t q) const { return T::load(sizes, members[q]); }
};
struct One {
  PAREKIT_HD double operator()(int64_t) const { return 1.0; }
};

// The twin's selection order: y ranks before x (score descending, ties to the lower index, NaN last).
PAREKIT_HD inline bool ranks_before(double sy, int64_t y, double sx, int64_t x) {
  const bool ny = sy != sy, nx = sx != sx;
  if (ny || nx) return ny == nx ? y < x : nx;
  return sy > sx || (sy == sx && y < x);
}

// Workspace chunks (offsets from the base, 256-byte aligned, none empty).
struct Layout {
  size_t unit, sim, score, partner, merged, target, members, goff, gcnt, gden, gmode, bytes;
};

Layout layout(int64_t b, int64_t n, int64_t d, int64_t r, int64_t protect) {
  const int64_t m = n - token_merge_limit(n, r, protect);
  const int64_t p = std::min(protect, n);
  const int64_t na = (n + 1) / 2 - (p + 1) / 2, nb = n / 2 - p / 2;
  const bool match = token_merge_limit(n, r, protect) > 0;
  Layout l{};
  size_t at = 0;
  auto take = [&](int64_t count, size_t elem) {
    const size_t here = at;
    const size_t bytes = std::max<size_t>(static_cast<size_t>(count) * elem, 1);
    at += (bytes + 255) / 256 * 256;
    return here;
  };
  l.unit = take(match ? b * n * d : 0, sizeof(double));
  l.sim = take(match ? b * na * nb : 0, sizeof(double));
  l.score = take(b * na, sizeof(double));
  l.partner = take(b * na, sizeof(int64_t));
  l.merged = take(b * n, sizeof(int32_t));
  l.target = take(b * n, sizeof(int64_t));
  l.members = take(b * n, sizeof(int64_t));
  l.goff = take(b * m, sizeof(int64_t));
  l.gcnt = take(b * m, sizeof(int64_t));
  l.gden = take(b * m, sizeof(double));
  l.gmode = take(b * m, sizeof(int32_t));
  l.bytes = at;
  return l;
}

template <typename P>
P* at(void* base, size_t offset) {
  return reinterpret_cast<P*>(static_cast<unsigned char*>(base) + offset);
}

enum GroupMode : int32_t { kCopy = 0, kWeighted = 1, kPlainMean = 2, kEmpty = 3 };

template <typename T, typename M>
void run(const TokenMergeParams& p, const Launch& L) {
  using TS = typename T::storage;
  using MS = typename M::storage;
  const TS* tokens = static_cast<const TS*>(p.tokens);
  const MS* metric = static_cast<const MS*>(p.metric);
  const TS* sizes = static_cast<const TS*>(p.sizes);
  TS* out = static_cast<TS*>(p.tokens_out);
  TS* out_sizes = static_cast<TS*>(p.sizes_out);
  TS* assign = static_cast<TS*>(p.assign);
  const int64_t B = p.b, N = p.n, C = p.c, D = p.d;
  const int64_t r = token_merge_limit(N, p.r, p.protect), m = N - r;
  const int64_t prot = std::min(p.protect, N);
  const int64_t na = (N + 1) / 2 - (prot + 1) / 2, nb = N / 2 - prot / 2;
  const int64_t a0 = prot + (prot & 1), b0 = prot + 1 - (prot & 1);  // first free A (even) / B (odd)
  const Layout l = layout(B, N, D, p.r, p.protect);
  double* unit = at<double>(p.workspace, l.unit);
  double* sim = at<double>(p.workspace, l.sim);
  double* score = at<double>(p.workspace, l.score);
  int64_t* partner = at<int64_t>(p.workspace, l.partner);
  int32_t* merged = at<int32_t>(p.workspace, l.merged);
  int64_t* target = at<int64_t>(p.workspace, l.target);
  int64_t* members = at<int64_t>(p.workspace, l.members);
  int64_t* goff = at<int64_t>(p.workspace, l.goff);
  int64_t* gcnt = at<int64_t>(p.workspace, l.gcnt);
  double* gden = at<double>(p.workspace, l.gden);
  int32_t* gmode = at<int32_t>(p.workspace, l.gmode);
  const double pad_sim = tokens::round_to(p.tokens_type, -tokens::kPadPenalty);
  const double big = tokens::kBig, norm_floor = tokens::kNormFloor;

  if (r > 0) {
    dev::for_each(L, kOp, B * N, [=] PAREKIT_HD(int64_t t) {  // 1. unit rows of the free tokens
      if (t % N < prot) return;
      const MS* x = metric + t * D;
      double acc[4] = {0.0, 0.0, 0.0, 0.0};
      int64_t k = 0;
      for (; k + 4 <= D; k += 4) {
        for (int q = 0; q < 4; ++q) {
          const double v = M::load(x, k + q);
          acc[q] += v * v;
        }
      }
      for (; k < D; ++k) {
        const double v = M::load(x, k);
        acc[0] += v * v;
      }
      const double root = sqrt((acc[0] + acc[1]) + (acc[2] + acc[3]));
      const double norm = root < norm_floor ? norm_floor : root;  // std::max(root, floor), NaN kept
      for (k = 0; k < D; ++k) unit[t * D + k] = M::load(x, k) / norm;
    });
    dev::for_each(L, kOp, B * na * nb, [=] PAREKIT_HD(int64_t t) {  // 2. similarities
      const int64_t jj = t % nb, ai = (t / nb) % na, bi = t / (nb * na);
      const int64_t i = bi * N + a0 + 2 * ai, j = bi * N + b0 + 2 * jj;
      double v = pad_sim;
      if (T::load(sizes, j) > 0.0 || !(T::load(sizes, i) > 0.0)) {
        double s = 0.0;
        for (int64_t k = 0; k < D; ++k) s += unit[i * D + k] * unit[j * D + k];
        v = T::round(s);
      }
      sim[t] = v;
    });
    dev::for_each(L, kOp, B * na, [=] PAREKIT_HD(int64_t t) {  // 3. partner and score per A token
      const double* row = sim + t * nb;
      int64_t best_k = 0;
      double best = row[0];
      for (int64_t jj = 1; jj < nb && best == best; ++jj) {
        const double v = row[jj];
        if (v != v || v > best) {
          best = v;
          best_k = jj;
        }
      }
      partner[t] = b0 + 2 * best_k;
      const int64_t bi = t / na, i = a0 + 2 * (t % na);
      score[t] = T::load(sizes, bi * N + i) > 0.0 ? best : big;
    });
  }
  dev::for_each(L, kOp, B * N, [=] PAREKIT_HD(int64_t t) {  // 4. merged flags
    const int64_t i = t % N, bi = t / N;
    int32_t flag = 0;
    if (r > 0 && i >= prot && i % 2 == 0) {
      const int64_t ai = (i - a0) / 2;
      const double* sc = score + bi * na;
      const double sx = sc[ai];
      int64_t rank = 0;
      for (int64_t y = 0; y < na && rank < r; ++y) rank += (y != ai && ranks_before(sc[y], y, sx, ai)) ? 1 : 0;
      flag = rank < r ? 1 : 0;
    }
    merged[t] = flag;
  });
  dev::for_each(L, kOp, B * N, [=] PAREKIT_HD(int64_t t) {  // 5. output index of every token
    const int64_t i = t % N, bi = t / N;
    const int32_t* mg = merged + bi * N;
    const int64_t self = mg[i] != 0 ? partner[bi * na + (i - a0) / 2] : i;  // partners are B tokens < N
    int64_t gone = 0;
    for (int64_t q = 0; q < self; ++q) gone += mg[q];
    target[t] = self - gone;
  });
  dev::for_each(L, kOp, B * m, [=] PAREKIT_HD(int64_t t) {  // 6. groups, sizes_out
    const int64_t k = t % m, bi = t / m;
    const int64_t* tg = target + bi * N;
    int64_t off = 0, cnt = 0;
    for (int64_t i = 0; i < N; ++i) off += tg[i] < k ? 1 : 0;
    int64_t* mem = members + bi * N + off;  // off + cnt <= #{i : tg[i] <= k} <= N
    for (int64_t i = 0; i < N; ++i) {
      if (tg[i] == k) mem[cnt++] = i;
    }
    goff[t] = off;
    gcnt[t] = cnt;
    if (cnt == 0) {  // cannot happen (every output has its survivor); defined anyway
      gmode[t] = kEmpty;
      T::store(out_sizes, t, 0.0);
      return;
    }
    const TS* sz = sizes + bi * N;
    const double w0 = T::load(sz, mem[0]);
    if (cnt == 1 && finite(w0)) {  // the twin copies finite singletons: (w·x)/w would not always be x
      gmode[t] = kCopy;
      T::store(out_sizes, t, w0);
      return;
    }
    const double total = pairwise_sum(MemberSize<T>{sz, mem}, cnt);
    gmode[t] = total == 0.0 ? kPlainMean : kWeighted;
    gden[t] = total == 0.0 ? pairwise_sum(One{}, cnt) : total;
    T::store(out_sizes, t, total);
  });
  dev::for_each(L, kOp, B * m * C, [=] PAREKIT_HD(int64_t t) {  // 7. merged tokens
    const int64_t j = t % C, g = t / C, bi = g / m;
    const int32_t mode = gmode[g];
    const int64_t* mem = members + bi * N + goff[g];
    const TS* x = tokens + bi * N * C;
    if (mode == kCopy) {
      out[t] = x[mem[0] * C + j];
      return;
    }
    if (mode == kEmpty) {
      T::store(out, t, 0.0);
      return;
    }
    const int64_t cnt = gcnt[g];
    double acc = 0.0;
    for (int64_t q = 0; q < cnt; ++q) {
      const double w = mode == kWeighted ? T::load(sizes, bi * N + mem[q]) : 1.0;
      const double v = w * T::load(x, mem[q] * C + j);
      acc = q == 0 ? v : acc + v;
    }
    T::store(out, t, acc / gden[g]);
  });
  dev::for_each(L, kOp, B * N * m, [=] PAREKIT_HD(int64_t t) {  // 8. one-hot assignment
    T::store(assign, t, target[t / m] == t % m ? 1.0 : 0.0);
  });
}

}  // namespace

size_t token_merge_workspace_bytes(int64_t b, int64_t n, int64_t d, int64_t r, int64_t protect) {
  if (b < 0 || n < 0 || d < 0 || r < 0 || protect < 0) fail(kOp, "bad workspace shape");
  return layout(b, n, d, r, protect).bytes;
}

void launch_token_merge(const TokenMergeParams& p, const Launch& launch) {
  if (p.b < 0 || p.n < 0 || p.c < 0 || p.d < 0 || p.r < 0 || p.protect < 0) fail(kOp, "bad launch params");
  if (p.workspace == nullptr) fail(kOp, "no workspace");
  dispatch(p.tokens_type, [&](auto t) {
    dispatch(p.metric_type, [&](auto mt) { run<decltype(t), decltype(mt)>(p, launch); });
  });
}

}  // namespace parekit
