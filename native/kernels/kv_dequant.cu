// CUDA kernel of KvDequantKey / KvDequantValue (CPU twin: kv_dequant.cpp): one thread per output
// element. Token < Nq: unpack its code from the packed byte, x = float(code) * scale + min in float32
// (product rounded first, as the twin); token >= Nq: copy from the residual. No shared memory.
#include <string>

#include "device.h"
#include "kv_dequant_cuda.h"
#include "kv_quant_device.h"

namespace parekit {

void launch_kv_dequant(const KvDequantParams& p, const Launch& launch) {
  const char* op = p.per_channel ? "KvDequantKey" : "KvDequantValue";
  if (p.rows < 0 || p.nq < 0 || p.r < 0 || p.d < 0 || p.bits < 4 || p.bits > 8 || p.group < 1) {
    fail(op, "bad launch params");
  }
  const int64_t pb = 8 / p.bits;
  if (p.d % pb != 0 || (!p.per_channel && p.d % p.group != 0) || (p.per_channel && p.nq % p.group != 0)) {
    fail(op, "launch params break the store format (d = " + std::to_string(p.d) + ", group = " +
                 std::to_string(p.group) + ", bits = " + std::to_string(p.bits) + ")");
  }
  const int64_t d = p.d, nq = p.nq, r = p.r, t = nq + r, group = p.group, bits = p.bits;
  if (p.rows == 0 || t == 0 || d == 0) return;
  const int64_t dp = d / pb, ng = p.per_channel ? 0 : d / group;
  const int64_t scale_row = p.per_channel ? (nq / group) * d : nq * ng;
  const bool per_channel = p.per_channel;
  const int8_t* cp = p.codes;
  const uint16_t* sp = p.scale;
  const uint16_t* mp = p.min;
  const float* rp = p.residual;
  float* out = p.cache;
  dev::for_each(launch, op, p.rows * t * d, [=] PAREKIT_HD(int64_t i) {
    const int64_t j = i % d, tok = (i / d) % t, row = i / (d * t);
    if (tok >= nq) {
      out[i] = rp[(row * r + (tok - nq)) * d + j];
      return;
    }
    const int32_t code = kvq_dev::code_at(cp + (row * nq + tok) * dp, j, dp, bits);
    const int64_t k = row * scale_row + (per_channel ? (tok / group) * d + j : tok * ng + j / group);
    out[i] = kvq_dev::dequant_value(static_cast<float>(code), dev::half_to_float(sp[k]), dev::half_to_float(mp[k]));
  });
}

}  // namespace parekit
