// CUDA kernel of TokenPrune (CPU twin: token_prune.cpp). Top-k without sorting, shared memory or atomics:
//   1. rank, one thread per token (b, i): how many tokens of the row come before it in the twin's order
//      (selection score descending, NaN last, ties to the lower index; protected tokens BIG, padding the
//      scores' -BIG) - a total order, so the ranks of a row are a permutation and rank < K selects the
//      twin's K tokens;
//   2. slot, one thread per token: kept tokens are packed in index order (slot = kept tokens before it),
//      pruned ones after them (slot = K + pruned tokens before it); order[b, slot] = i inverts it;
//   3. sizes_out, one thread per output token: a kept token's size, or (fuse) the fused token's total size
//      and weight sum, NumPy-pairwise in double over the pruned tokens in index order (as the twin);
//   4. tokens_out, one thread per output element: a kept row's bits, or the fused weighted mean (double
//      accumulation row by row, like the twin), rounded once from double;
//   5. assign, one thread per element: 1 at (i, slot) for kept tokens, (i, K) for pruned ones when fuse.
// Scratch (token_prune_workspace): rank, slot, order [B, N] int64, per batch {weight sum, unweighted}.
#include "device.h"
#include "token_common.h"
#include "token_device.h"
#include "token_prune_cuda.h"

namespace parekit {
namespace {

constexpr const char* kOp = "TokenPrune";

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

bool supported(DType t) { return t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16; }

}  // namespace

size_t token_prune_workspace(int64_t b, int64_t n) {
  const size_t rows = b > 0 && n > 0 ? static_cast<size_t>(b * n) : 0;
  const size_t batches = b > 0 ? static_cast<size_t>(b) : 0;
  return 3 * align256(rows * sizeof(int64_t)) + align256(2 * batches * sizeof(double));
}

void launch_token_prune(const TokenPruneParams& p, const Launch& launch) {
  if (p.b < 0 || p.n < 0 || p.c < 0 || p.protect < 0 || p.fuse < 0 || p.fuse > 1) fail(kOp, "bad launch params");
  for (DType t : {p.tokens_type, p.scores_type, p.sizes_type}) {
    if (!supported(t)) fail(kOp, std::string("the CUDA kernel has no ") + dtype_name(t) + " variant");
  }
  const int64_t b = p.b, n = p.n, c = p.c, fuse = p.fuse;
  const int64_t count = token_prune_count(n, p.keep, p.protect);
  const int64_t m = count + fuse;
  const int64_t prot = p.protect < n ? p.protect : n;
  if (b == 0) return;
  if (p.workspace == nullptr) fail(kOp, "no workspace");
  const size_t rows_bytes = align256(static_cast<size_t>(b * n) * sizeof(int64_t));
  unsigned char* ws = static_cast<unsigned char*>(p.workspace);
  int64_t* rank = reinterpret_cast<int64_t*>(ws);
  int64_t* slot = reinterpret_cast<int64_t*>(ws + rows_bytes);
  int64_t* order = reinterpret_cast<int64_t*>(ws + 2 * rows_bytes);
  double* group = reinterpret_cast<double*>(ws + 3 * rows_bytes);  // [B, 2]: weight sum, unweighted flag

  const void* tokens = p.tokens;
  const void* scores = p.scores;
  const void* sizes = p.sizes;
  void* tokens_out = p.tokens_out;
  void* sizes_out = p.sizes_out;
  void* assign = p.assign;
  const DType tt = p.tokens_type, st = p.scores_type, zt = p.sizes_type;
  // np.where(sizes > 0, scores, -BIG) keeps the scores' dtype: -BIG rounds in it (float16: -inf).
  const double pad = tokens::round_to(st, -tokens::kBig);
  const int64_t pruned = n - count;

  // 1. rank
  dev::for_each(launch, kOp, b * n, [=] PAREKIT_HD(int64_t t) {
    const int64_t row = t - t % n, i = t % n;
    auto sel = [&](int64_t j) {
      return j < prot ? tokdev::kBig : tokdev::load(sizes, zt, row + j) > 0.0 ? tokdev::load(scores, st, row + j) : pad;
    };
    const double si = sel(i);
    const bool ni = si != si;
    int64_t r = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (j == i) continue;
      const double sj = sel(j);
      const bool nj = sj != sj;
      // j before i in the twin's comparator (NaN last, equal scores by index)
      const bool before = (ni || nj) ? (ni == nj ? j < i : ni) : (sj > si || (sj == si && j < i));
      r += before ? 1 : 0;
    }
    rank[t] = r;
  });
  // 2. slot and its inverse
  dev::for_each(launch, kOp, b * n, [=] PAREKIT_HD(int64_t t) {
    const int64_t row = t - t % n, i = t % n;
    int64_t kept_before = 0;
    for (int64_t j = 0; j < i; ++j) kept_before += rank[row + j] < count ? 1 : 0;
    const int64_t s = rank[t] < count ? kept_before : count + (i - kept_before);
    slot[t] = s;
    if (s >= 0 && s < n) order[row + s] = i;
  });
  // 3. sizes_out (and the fused group's weight sum)
  dev::for_each(launch, kOp, b * m, [=] PAREKIT_HD(int64_t t) {
    const int64_t bi = t / m, k = t % m, row = bi * n;
    if (k < count) {
      tokdev::store(sizes_out, zt, t, tokdev::load(sizes, zt, row + order[row + k]));
      return;
    }
    const int64_t* members = order + row + count;
    auto weight = [&](int64_t q) {
      const double sc = tokdev::load(scores, st, row + members[q]);
      return sc < 0.0 ? 0.0 : sc;  // np.maximum(scores, 0): NaN stays NaN
    };
    double den = tokdev::pairwise_sum(weight, pruned);
    double unweighted = 0.0;
    if (den == 0.0) {  // weights all 0: the plain mean
      den = tokdev::pairwise_sum([](int64_t) { return 1.0; }, pruned);
      unweighted = 1.0;
    }
    group[2 * bi] = den;
    group[2 * bi + 1] = unweighted;
    const double total =
        pruned == 0 ? 0.0 : tokdev::pairwise_sum([&](int64_t q) { return tokdev::load(sizes, zt, row + members[q]); }, pruned);
    tokdev::store(sizes_out, zt, t, total);
  });
  // 4. tokens_out
  const size_t elem = dtype_size(tt);
  dev::for_each(launch, kOp, b * m * c, [=] PAREKIT_HD(int64_t t) {
    const int64_t j = t % c, k = (t / c) % m, bi = t / (c * m), row = bi * n;
    if (k < count) {
      const int64_t from = (row + order[row + k]) * c + j;
      if (elem == 4) {
        static_cast<uint32_t*>(tokens_out)[t] = static_cast<const uint32_t*>(tokens)[from];
      } else {
        static_cast<uint16_t*>(tokens_out)[t] = static_cast<const uint16_t*>(tokens)[from];
      }
      return;
    }
    if (pruned == 0) {  // empty group: 0
      tokdev::store(tokens_out, tt, t, 0.0);
      return;
    }
    const int64_t* members = order + row + count;
    const bool unweighted = group[2 * bi + 1] != 0.0;
    double acc = 0.0;
    for (int64_t q = 0; q < pruned; ++q) {
      const int64_t i = members[q];
      double w = 1.0;
      if (!unweighted) {
        const double sc = tokdev::load(scores, st, row + i);
        w = sc < 0.0 ? 0.0 : sc;
      }
      const double x = tokdev::load(tokens, tt, (row + i) * c + j);
      if (q == 0) {
        acc = w * x;
      } else {
        acc += w * x;
      }
    }
    tokdev::store(tokens_out, tt, t, acc / group[2 * bi]);
  });
  // 5. assign
  dev::for_each(launch, kOp, b * n * m, [=] PAREKIT_HD(int64_t t) {
    const int64_t k = t % m, tok = t / m;
    const int64_t s = slot[tok];
    const bool one = s < count ? k == s : (fuse != 0 && k == count);
    tokdev::store(assign, tt, t, one ? 1.0 : 0.0);
  });
}

}  // namespace parekit
