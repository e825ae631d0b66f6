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
RNN_EXT_INLINE float exp_f32(float xin) {
  // Clamp so that the exponent below lands on 128 (scale = +inf) for large x and
  // on -127 (scale = 0) for very negative x: exp saturates like expf, so
  // sigmoid(-inf) is exactly 0 and 0 * inf gives NaN as in torch. Both clamps
  // keep NaN ((c < x) ? c : x is x when x is NaN).
  float x = 88.7f < xin ? 88.7f : xin;
  x = -88.2f > x ? -88.2f : x;
  // n = round(x log2 e), by adding 1.5 * 2^23: the sum's low mantissa bits then
  // hold n, so 2^n is that bit pattern shifted into the exponent field. Fewer
  // vector instructions than floor and two conversions (the exp is most of
  // the gate math).
  const float kShift = 12582912.0f;
  const float r = x * 1.44269504088896341f + kShift;
  const float fx = r - kShift;
  int32_t bits;
  std::memcpy(&bits, &r, 4);
  bits = (bits << 23) + (127 << 23);
  float scale;
  std::memcpy(&scale, &bits, 4);
  const float z = x - fx * 0.693359375f + fx * 2.12194440e-4f;
  float y = 1.9875691500E-4f;
  y = y * z + 1.3981999507E-3f;
  y = y * z + 8.3333452709E-3f;
  y = y * z + 4.1665795894E-2f;
  y = y * z + 1.6666665459E-1f;
  y = y * z + 5.0000001201E-1f;
  y = y * z * z + z + 1.0f;
  return y * scale;
}
RNN_EXT_INLINE float sigmoid_(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
// tanh: odd polynomial near 0 (keeps relative accuracy), (1-e)/(1+e) with
// e = exp(-2|x|) elsewhere. Written with selects only, which GCC vectorises.
RNN_EXT_INLINE float tanh_(float x) {
  float ax = x < 0.0f ? -x : x;
  float z = ax * ax;
  float p = -5.70498872745E-3f;
  p = p * z + 2.06390887954E-2f;
  p = p * z - 5.37397155531E-2f;
  p = p * z + 1.33314422036E-1f;
  p = p * z - 3.33332819422E-1f;
  float small = p * z * x + x;
  float e = exp_f32(-2.0f * ax);          // in (0, 1]: no overflow
  float large = (1.0f - e) / (1.0f + e);
  large = x < 0.0f ? -large : large;
  return ax < 0.625f ? small : large;
}
RNN_EXT_INLINE double sigmoid_(double x) { return 1.0 / (1.0 + std::exp(-x)); }
RNN_EXT_INLINE double tanh_(double x) { return std::tanh(x); }

// ---- The same three on a GCC vector of floats V: lane by lane the same
// operations in the same order as the scalar ones, hence the same bits. For
// code that interleaves several vectors' chains by hand (the scalar loops
// vectorise one vector at a time, and one sigmoid is a chain of some twenty
// dependent operations).
template <typename V>
RNN_EXT_INLINE V exp_v(V xin) {
  using IV = decltype(xin < xin);  // int32 lanes
  const V hi = V{} + 88.7f, lo = V{} - 88.2f;
  V x = hi < xin ? hi : xin;
  x = lo > x ? lo : x;
  const float kShift = 12582912.0f;
  const V r = x * 1.44269504088896341f + kShift;
  const V fx = r - kShift;
  IV bits = (IV)r;
  bits = (bits << 23) + (127 << 23);
  const V scale = (V)bits;
  const V z = x - fx * 0.693359375f + fx * 2.12194440e-4f;
  V y = V{} + 1.9875691500E-4f;
  y = y * z + 1.3981999507E-3f;
  y = y * z + 8.3333452709E-3f;
  y = y * z + 4.1665795894E-2f;
  y = y * z + 1.6666665459E-1f;
  y = y * z + 5.0000001201E-1f;
  y = y * z * z + z + 1.0f;
  return y * scale;
}
template <typename V>
RNN_EXT_INLINE V sigmoid_v(V x) { return 1.0f / (1.0f + exp_v(-x)); }
template <typename V>
RNN_EXT_INLINE V tanh_v(V x) {
  const V ax = x < 0.0f ? -x : x;
  const V z = ax * ax;
  V p = V{} - 5.70498872745E-3f;
  p = p * z + 2.06390887954E-2f;
  p = p * z - 5.37397155531E-2f;
  p = p * z + 1.33314422036E-1f;
  p = p * z - 3.33332819422E-1f;
  const V small = p * z * x + x;
  const V e = exp_v(-2.0f * ax);
  V large = (1.0f - e) / (1.0f + e);
  large = x < 0.0f ? -large : large;
  return ax < 0.625f ? small : large;
}

}  // namespace fast_math
}  // namespace rnn_ext
