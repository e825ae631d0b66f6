// Branch-free float32 exp / sigmoid / tanh for the CPU kernels, written with
// selects only so that GCC vectorises the loops that call them; float64 uses
// libm. Shared by the per-step kernels (cells_cpu.cpp) and the fused
// sequence kernels (fused_cpu.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#define RNN_EXT_INLINE inline __attribute__((always_inline))

namespace rnn_ext {
namespace fast_math {

// ---- float32 math: Cephes-style polynomials, ~1-2 ulp, NaN in -> NaN out.
// Each is a template over T = float or a GCC vector of floats (the same
// operations lane by lane, hence the same bits): the scalar loops that GCC
// vectorises call the float versions, and code that interleaves several
// vectors' chains by hand (one sigmoid is a chain of some twenty dependent
// operations) the vector ones. Selects only, no branches.

// 2^n for r = n + 1.5 * 2^23 (below): n sits in r's low mantissa bits.
RNN_EXT_INLINE float exp2_of_shifted(float r) {
  int32_t bits;
  std::memcpy(&bits, &r, 4);
  bits = (bits << 23) + (127 << 23);
  float scale;
  std::memcpy(&scale, &bits, 4);
  return scale;
}
template <typename V>
RNN_EXT_INLINE V exp2_of_shifted(V r) {
  using IV = decltype(r < r);  // int32 lanes
  IV bits = (IV)r;
  bits = (bits << 23) + (127 << 23);
  return (V)bits;
}

template <typename T>
RNN_EXT_INLINE T exp_t(T xin) {
  // Clamp so that the exponent below lands on 128 (scale = +inf) for large x and
  // on -127 (scale = 0) for very negative x: exp saturates like expf, so
  // sigmoid(-inf) is exactly 0 and 0 * inf gives NaN as in torch. Both clamps
  // keep NaN ((c < x) ? c : x is x when x is NaN).
  const T hi = T{} + 88.7f, lo = T{} - 88.2f;
  T x = hi < xin ? hi : xin;
  x = lo > x ? lo : x;
  // n = round(x log2 e), by adding 1.5 * 2^23: the sum's low mantissa bits then
  // hold n, so 2^n is that bit pattern shifted into the exponent field. Fewer
  // vector instructions than floor and two conversions (the exp is most of
  // the gate math).
  const float kShift = 12582912.0f;
  const T r = x * 1.44269504088896341f + kShift;
  const T fx = r - kShift;
  const T scale = exp2_of_shifted(r);
  const T z = x - fx * 0.693359375f + fx * 2.12194440e-4f;
  T y = T{} + 1.9875691500E-4f;
  y = y * z + 1.3981999507E-3f;
  y = y * z + 8.3333452709E-3f;
  y = y * z + 4.1665795894E-2f;
  y = y * z + 1.6666665459E-1f;
  y = y * z + 5.0000001201E-1f;
  y = y * z * z + z + 1.0f;
  return y * scale;
}
template <typename T>
RNN_EXT_INLINE T sigmoid_t(T x) { return 1.0f / (1.0f + exp_t(-x)); }
// tanh: odd polynomial near 0 (keeps relative accuracy), (1-e)/(1+e) with
// e = exp(-2|x|) elsewhere.
template <typename T>
RNN_EXT_INLINE T tanh_t(T x) {
  const T ax = x < 0.0f ? -x : x;
  const T z = ax * ax;
  T p = T{} - 5.70498872745E-3f;
  p = p * z + 2.06390887954E-2f;
  p = p * z - 5.37397155531E-2f;
  p = p * z + 1.33314422036E-1f;
  p = p * z - 3.33332819422E-1f;
  const T small = p * z * x + x;
  const T e = exp_t(-2.0f * ax);          // in (0, 1]: no overflow
  T large = (1.0f - e) / (1.0f + e);
  large = x < 0.0f ? -large : large;
  return ax < 0.625f ? small : large;
}

RNN_EXT_INLINE float exp_f32(float x) { return exp_t(x); }
RNN_EXT_INLINE float sigmoid_(float x) { return sigmoid_t(x); }
RNN_EXT_INLINE float tanh_(float x) { return tanh_t(x); }
RNN_EXT_INLINE double sigmoid_(double x) { return 1.0 / (1.0 + std::exp(-x)); }
RNN_EXT_INLINE double tanh_(double x) { return std::tanh(x); }

}  // namespace fast_math
}  // namespace rnn_ext
