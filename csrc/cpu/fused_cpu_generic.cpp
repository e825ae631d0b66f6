// The fused CPU kernels built for the compiler's baseline: 16-byte vectors
// (float32: 4 lanes, float64: 2), on any CPU.
#include "cpu/fused_cpu_kernels.h"

namespace rnn_ext {
namespace fused {
namespace detail {
RNN_EXT_ENTRY_POINTS(, generic_f32, float, 4, 16)
RNN_EXT_ENTRY_POINTS(, generic_f64, double, 2, 16)
}  // namespace detail
}  // namespace fused
}  // namespace rnn_ext
