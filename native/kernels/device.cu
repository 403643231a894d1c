// Shared device helpers (see device.h).
#include "device.h"

namespace parekit {
namespace dev {

void check_launch(const char* op, cudaError_t err) {
  if (err != cudaSuccess) fail(op, std::string("CUDA kernel launch failed: ") + cudaGetErrorString(err));
}

}  // namespace dev
}  // namespace parekit
