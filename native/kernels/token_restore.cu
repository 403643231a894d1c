// CUDA kernel of TokenRestore (CPU twin: token_restore.cpp). Two passes, no shared memory:
//   1. one thread per row (b, n): the first column of assign[b, n] whose bits are nonzero (+-0 are zero,
//      NaN is not: np.nonzero), or -1, into the workspace;
//   2. one thread per output element (b, n, c): copies reduced[b, hit, c], or base[b, n, c] for -1.
// The hit is always in [0, M) (pass 1 only writes columns it scanned); pass 2 still checks the range, so
// no workspace content can make it read outside `reduced`.
#include "device.h"
#include "token_restore_cuda.h"

namespace parekit {
namespace {

constexpr const char* kOp = "TokenRestore";

// Bits of element i of a float tensor, without the sign (0 exactly for +-0).
PAREKIT_HD inline uint32_t magnitude_bits(const void* data, DType t, int64_t i) {
  if (t == DType::kFloat32) return static_cast<const uint32_t*>(data)[i] & 0x7fffffffu;
  return static_cast<uint32_t>(static_cast<const uint16_t*>(data)[i] & 0x7fffu);  // float16, bfloat16
}

template <typename T>
void restore_typed(const TokenRestoreParams& p, const int64_t* hits, const Launch& launch) {
  const T* reduced = static_cast<const T*>(p.reduced);
  const T* base = static_cast<const T*>(p.base);
  T* out = static_cast<T*>(p.out);
  const int64_t n = p.n, m = p.m, c = p.c;
  dev::for_each(launch, kOp, p.b * n * c, [=] PAREKIT_HD(int64_t i) {
    const int64_t row = i / c;
    const int64_t hit = hits[row];
    out[i] = hit >= 0 && hit < m ? reduced[((row / n) * m + hit) * c + i % c] : base[i];
  });
}

}  // namespace

size_t token_restore_workspace(int64_t b, int64_t n) {
  const int64_t rows = b > 0 && n > 0 ? b * n : 0;
  return static_cast<size_t>(rows) * sizeof(int64_t);
}

void launch_token_restore(const TokenRestoreParams& p, const Launch& launch) {
  if (p.b < 0 || p.n < 0 || p.m < 0 || p.c < 0) fail(kOp, "bad launch params");
  if (p.assign_type != DType::kFloat32 && p.assign_type != DType::kFloat16 && p.assign_type != DType::kBFloat16)
    fail(kOp, std::string("the CUDA kernel has no ") + dtype_name(p.assign_type) + " variant for 'assign'");
  if (p.elem_size != 2 && p.elem_size != 4) fail(kOp, "element size " + std::to_string(p.elem_size) + " is not supported");
  if (p.b * p.n == 0) return;
  if (p.workspace == nullptr) fail(kOp, "no workspace");
  int64_t* hits = static_cast<int64_t*>(p.workspace);
  const void* assign = p.assign;
  const DType at = p.assign_type;
  const int64_t m = p.m;
  dev::for_each(launch, kOp, p.b * p.n, [=] PAREKIT_HD(int64_t row) {
    int64_t hit = -1;
    for (int64_t k = 0; k < m; ++k) {
      if (magnitude_bits(assign, at, row * m + k) != 0u) {
        hit = k;
        break;
      }
    }
    hits[row] = hit;
  });
  if (p.c == 0) return;
  if (p.elem_size == 4) {
    restore_typed<uint32_t>(p, hits, launch);
  } else {
    restore_typed<uint16_t>(p, hits, launch);
  }
}

}  // namespace parekit
