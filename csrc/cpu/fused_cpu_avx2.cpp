// The fused CPU kernels built for AVX2 with FMA (float32: 8 lanes, float64: 4; 16 vector registers).
#include "cpu/fused_cpu_kernels.h"

namespace rnn_ext {
namespace fused {
namespace detail {
#if defined(__x86_64__) && defined(__GNUC__)
RNN_EXT_ENTRY_POINTS(RNN_EXT_AVX2, avx2_f32, float, 8, 16)
RNN_EXT_ENTRY_POINTS(RNN_EXT_AVX2, avx2_f64, double, 4, 16)
#endif
}  // namespace detail
}  // namespace fused
}  // namespace rnn_ext
