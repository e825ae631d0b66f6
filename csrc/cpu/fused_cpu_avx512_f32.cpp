// The fused CPU kernels built for AVX-512, float32 (16 lanes, 32 vector registers).
#include "cpu/fused_cpu_kernels.h"

namespace rnn_ext {
namespace fused {
namespace detail {
#if defined(__x86_64__) && defined(__GNUC__)
RNN_EXT_ENTRY_POINTS(RNN_EXT_AVX512, avx512_f32, float, 16, 32)
#endif
}  // namespace detail
}  // namespace fused
}  // namespace rnn_ext
