// Shape-rule helper of TokenPrune and TokenRestore (their OpSpec::shapes): the Shape twin of
// token_common.h's tokens::expect_same_dim (which takes a ConstTensor), with the same message, so the
// rule and the kernel refuse a shape with the same words. Candidate for token_common.h (shared).
#pragma once

#include <string>

#include "core.h"

namespace parekit {
namespace tokens {

inline void expect_same_dim_shape(const std::string& op, const char* name, const Shape& shape, size_t axis,
                                  int64_t want, const char* ref_name, const Shape& ref_shape) {
  if (shape.at(axis) != want) {
    fail(op, std::string("input '") + name + "' has shape " + shape_text(shape) + ": dim " + std::to_string(axis) +
                 " must be " + std::to_string(want) + " to match '" + ref_name + "' " + shape_text(ref_shape));
  }
}

}  // namespace tokens
}  // namespace parekit
