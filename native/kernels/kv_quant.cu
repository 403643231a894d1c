// CUDA kernels of KvQuantKey / KvQuantValue (CPU twin: kv_quant.cpp). Four kinds of launches, one thread
// per item, no shared memory:
//  1. old store codes, 2. old store scale/min: copied element by element in front of the new tokens;
//  3. residual_out: one thread per element of full[n:];
//  4. quantization, one thread per (row, group, packed byte column) for keys (it scans the group's
//     tokens for the min/max of its 1 or 2 channels, then writes their codes) and per (row, token,
//     packed byte column) for values (it scans the channel group(s) of its 1 or 2 codes). Each thread
//     writes whole bytes, so no two threads share a byte; the scale/min of a value group is written by
//     the thread of its first channel only.
// The min/max scans, float16 rounding, division and rounding are the CPU twin's, in its order.
#include <string>

#include "device.h"
#include "kv_quant_cuda.h"
#include "kv_quant_device.h"

namespace parekit {
namespace {

// Channel c of token t of full = residual ++ new in row `row` (a plain functor: captured by the kernels).
struct FullRows {
  const float* residual;
  const float* fresh;
  int64_t r, s, d;
  PAREKIT_HD float operator()(int64_t row, int64_t t, int64_t c) const {
    return t < r ? residual[(row * r + t) * d + c] : fresh[(row * s + (t - r)) * d + c];
  }
};

void quantize(const KvQuantParams& p, const Launch& launch, const char* op, int64_t n) {
  const int64_t d = p.d, r = p.r, s = p.s, group = p.group, nq = p.nq, bits = p.bits;
  const int64_t pb = 8 / bits, dp = d / pb, ng = p.per_channel ? 0 : d / group;
  const int64_t s_old = p.per_channel ? (nq / group) * d : nq * ng;
  const int64_t s_new = p.per_channel ? (n / group) * d : n * ng;
  const float levels = static_cast<float>((1 << bits) - 1);
  int8_t* co = p.codes_out;
  uint16_t* so = p.scale_out;
  uint16_t* mo = p.min_out;
  const FullRows at{p.residual, p.fresh, r, s, d};
  if (p.per_channel) {
    const int64_t groups = n / group;
    dev::for_each(launch, op, p.rows * groups * dp, [=] PAREKIT_HD(int64_t i) {
      const int64_t jb = i % dp, g = (i / dp) % groups, row = i / (dp * groups);
      const int64_t t0 = g * group;
      int8_t* crow = co + row * (nq + n) * dp + nq * dp;
      uint16_t* srow = so + row * (s_old + s_new) + s_old;
      uint16_t* mrow = mo + row * (s_old + s_new) + s_old;
      float kmin[2] = {0.0f, 0.0f}, kdiv[2] = {1.0f, 1.0f};
      for (int64_t k = 0; k < pb; ++k) {
        const int64_t j = jb + k * dp;
        float lo = at(row, t0, j), hi = lo;
        for (int64_t t = t0 + 1; t < t0 + group; ++t) {
          const float x = at(row, t, j);
          lo = x < lo ? x : lo;
          hi = x > hi ? x : hi;
        }
        const kvq_dev::GroupParams gp = kvq_dev::group_params(lo, hi, levels);
        srow[g * d + j] = gp.scale16;
        mrow[g * d + j] = gp.min16;
        kmin[k] = gp.min;
        kdiv[k] = gp.divisor;
      }
      for (int64_t t = t0; t < t0 + group; ++t) {
        int32_t byte = 0;
        for (int64_t k = 0; k < pb; ++k) {
          const int32_t q = kvq_dev::code_of((at(row, t, jb + k * dp) - kmin[k]) / kdiv[k], levels);
          byte |= q << (4 * k);  // pb == 2 only for bits == 4
        }
        crow[t * dp + jb] = kvq_dev::byte_to_stored(byte);
      }
    });
    return;
  }
  dev::for_each(launch, op, p.rows * n * dp, [=] PAREKIT_HD(int64_t i) {
    const int64_t jb = i % dp, t = (i / dp) % n, row = i / (dp * n);
    int8_t* crow = co + row * (nq + n) * dp + nq * dp;
    uint16_t* srow = so + row * (s_old + s_new) + s_old;
    uint16_t* mrow = mo + row * (s_old + s_new) + s_old;
    int32_t byte = 0;
    for (int64_t k = 0; k < pb; ++k) {
      const int64_t j = jb + k * dp, c = j / group, c0 = c * group;
      float lo = at(row, t, c0), hi = lo;
      for (int64_t jj = c0 + 1; jj < c0 + group; ++jj) {
        const float x = at(row, t, jj);
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
      }
      const kvq_dev::GroupParams gp = kvq_dev::group_params(lo, hi, levels);
      if (j == c0) {  // the group's first channel writes its scale/min
        srow[t * ng + c] = gp.scale16;
        mrow[t * ng + c] = gp.min16;
      }
      byte |= kvq_dev::code_of((at(row, t, j) - gp.min) / gp.divisor, levels) << (4 * k);
    }
    crow[t * dp + jb] = kvq_dev::byte_to_stored(byte);
  });
}

}  // namespace

void launch_kv_quant(const KvQuantParams& p, const Launch& launch) {
  const char* op = p.per_channel ? "KvQuantKey" : "KvQuantValue";
  if (p.rows < 0 || p.nq < 0 || p.r < 0 || p.s < 0 || p.d < 0 || p.bits < 4 || p.bits > 8 || p.group < 1 ||
      p.keep < 0) {
    fail(op, "bad launch params");
  }
  const int64_t pb = 8 / p.bits;
  if (p.d % pb != 0 || (!p.per_channel && p.d % p.group != 0) || (p.per_channel && p.nq % p.group != 0)) {
    fail(op, "launch params break the store format (d = " + std::to_string(p.d) + ", group = " +
                 std::to_string(p.group) + ", bits = " + std::to_string(p.bits) + ")");
  }
  const int64_t d = p.d, nq = p.nq, r = p.r, s = p.s, len = r + s;
  const int64_t n = kv_quant_moved(len, p.keep, p.group);
  if (p.rows == 0 || d == 0) return;
  const int64_t dp = d / pb;
  const int64_t ng = p.per_channel ? 0 : d / p.group;
  const int64_t s_old = p.per_channel ? (nq / p.group) * d : nq * ng;
  const int64_t s_new = p.per_channel ? (n / p.group) * d : n * ng;

  // 1-2. the old store in front of the appended tokens.
  const int8_t* cp = p.codes;
  int8_t* co = p.codes_out;
  dev::for_each(launch, op, p.rows * nq * dp, [=] PAREKIT_HD(int64_t i) {
    const int64_t row = i / (nq * dp);
    co[i + row * n * dp] = cp[i];
  });
  const uint16_t* sp = p.scale;
  const uint16_t* mp = p.min;
  uint16_t* so = p.scale_out;
  uint16_t* mo = p.min_out;
  dev::for_each(launch, op, p.rows * s_old, [=] PAREKIT_HD(int64_t i) {
    const int64_t row = i / s_old;
    so[i + row * s_new] = sp[i];
    mo[i + row * s_new] = mp[i];
  });
  // 3. residual_out = full[n:].
  const FullRows full{p.residual, p.fresh, r, s, d};
  float* ro = p.residual_out;
  const int64_t kept = len - n;
  dev::for_each(launch, op, p.rows * kept * d, [=] PAREKIT_HD(int64_t i) {
    const int64_t c = i % d, t = (i / d) % kept + n, row = i / (d * kept);
    ro[i] = full(row, t, c);
  });
  // 4. the appended groups.
  if (n > 0) quantize(p, launch, op, n);
}

}  // namespace parekit
