// Fused pointwise step kernels for the CPU: one pass over (rows, H) per time
// step, no per-gate temporaries. The recurrence driver (csrc/recurrence.cpp)
// does the GEMMs; these functions do everything between them.
//
// Rows are split across threads with at::parallel_for. The inner loop runs
// over hidden units, so every gate is a contiguous stream; float32 uses
// branch-free exp/tanh below that GCC vectorises, and the row functions are
// built twice (AVX2+FMA and baseline x86-64) with the CPU picked at load time.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "common/cell_steps.h"
#include "cpu/fast_math.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RNN_EXT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RNN_EXT_CLONES
#endif
// Lambdas must inline too, or their loops escape the target clone.
#define RNN_EXT_LAMBDA_INLINE __attribute__((always_inline))

namespace rnn_ext {
namespace {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

// bfloat16 and float16 as the row kernels see them: c10::BFloat16's and c10::Half's
// bits, with conversions GCC vectorises. c10's convert a value at a time through code
// that kept the half types' row loops scalar (a bfloat16 LSTMCell step at B=64, H=256:
// ~290 us of pointwise work against torch.nn's whole call of ~190 us).
struct Bf16 {
  uint16_t bits;
  Bf16() = default;
  // round to nearest even, NaN to 0x7FC0: c10::BFloat16's rule, bit for bit
  RNN_EXT_INLINE Bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    bits = f != f ? uint16_t{0x7FC0} : static_cast<uint16_t>((u + ((u >> 16) & 1u) + 0x7FFFu) >> 16);
  }
  RNN_EXT_INLINE operator float() const {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
};
static_assert(sizeof(Bf16) == sizeof(c10::BFloat16));
#if defined(__FLT16_MAX__)  // GCC 12+ on x86: IEEE conversions, F16C instructions in the AVX2 clone
struct F16 {
  _Float16 v;
  F16() = default;
  RNN_EXT_INLINE F16(float f) : v(static_cast<_Float16>(f)) {}
  RNN_EXT_INLINE operator float() const { return static_cast<float>(v); }
};
static_assert(sizeof(F16) == sizeof(c10::Half));
#else
using F16 = c10::Half;
#endif
using fast_math::sigmoid_;
using fast_math::tanh_;

// Enough rows per task that tiny steps (B=1) stay on one thread.
inline int64_t grain_rows(int64_t hidden, int64_t gates) {
  int64_t per_row = hidden * gates;
  return per_row >= 16384 ? 1 : (16384 + per_row - 1) / (per_row > 0 ? per_row : 1);
}

template <typename F>
void dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat: f(float{}); break;
    case DType::kDouble: f(double{}); break;
    case DType::kHalf: f(F16{}); break;
    case DType::kBFloat16: f(Bf16{}); break;
    default: throw std::invalid_argument("rnn_ext: unsupported dtype");
  }
}

// Optional pointers become compile-time flags, so the inner loops have no
// branches and vectorise: f(std::true_type/false_type, ...).
template <typename F>
RNN_EXT_INLINE void with_flags(bool a, bool b, F&& f) {
  if (a && b) f(std::true_type{}, std::true_type{});
  else if (a) f(std::true_type{}, std::false_type{});
  else if (b) f(std::false_type{}, std::true_type{});
  else f(std::false_type{}, std::false_type{});
}

// Absent biases read as zeros (one small buffer per call, only without bias).
template <typename T>
struct Biases {
  std::vector<T> zeros;
  const T* ih;
  const T* hh;
  Biases(const void* b_ih, const void* b_hh, int64_t G)
      : ih(static_cast<const T*>(b_ih)), hh(static_cast<const T*>(b_hh)) {
    if (!ih || !hh) zeros.assign(static_cast<size_t>(G), T(0));
    if (!ih) ih = zeros.data();
    if (!hh) hh = zeros.data();
  }
};

// Runs rows [r0, r1) of `rows_fn` on threads; float32, bfloat16 and float16 go
// through the AVX2/baseline clones (the half types' conversions to float
// vectorise there too: bfloat16 T=100 B=32 I=H=256 LSTM forward op, 2 threads,
// the pointwise steps took most of its time on the baseline build).
#define RNN_EXT_ROWS(name, Struct, gates)                                                   \
  template <typename T>                                                                     \
  RNN_EXT_CLONES void name##_rows_cloned(const Struct& s, const void* bi, const void* bh,  \
                                         int64_t r0, int64_t r1) {                         \
    name##_rows<T>(s, static_cast<const T*>(bi), static_cast<const T*>(bh), r0, r1);        \
  }                                                                                         \
  template <typename T>                                                                     \
  void name(const Struct& s) {                                                              \
    Biases<T> b(bias_ih_of(s), bias_hh_of(s), (gates) * s.hidden);                          \
    at::parallel_for(0, s.rows, grain_rows(s.hidden, gates), [&](int64_t r0, int64_t r1) { \
      if constexpr (std::is_same_v<T, double>) name##_rows<T>(s, b.ih, b.hh, r0, r1);       \
      else name##_rows_cloned<T>(s, b.ih, b.hh, r0, r1);                                    \
    });                                                                                     \
  }

template <typename S> const void* bias_ih_of(const S& s) { return s.b_ih; }
template <typename S> const void* bias_hh_of(const S& s) { return s.b_hh; }
// Backward steps have no biases: hand them a non-null dummy.
const void* bias_ih_of(const LstmBackwardStep&) { return nullptr; }
const void* bias_hh_of(const LstmBackwardStep&) { return nullptr; }
const void* bias_ih_of(const GruBackwardStep&) { return nullptr; }
const void* bias_hh_of(const GruBackwardStep&) { return nullptr; }
const void* bias_ih_of(const RnnBackwardStep&) { return nullptr; }
const void* bias_hh_of(const RnnBackwardStep&) { return nullptr; }

// Each *_row function handles one batch row. Its pointers are __restrict
// function parameters and every access is p[j]: that is what lets GCC
// vectorise the loop (restrict on locals is not enough).

// ---------------------------------------------------------------- LSTM
template <typename T, typename A, bool kState, bool kWs>
RNN_EXT_INLINE void lstm_fwd_row(const T* __restrict x, const T* __restrict h, const T* __restrict bi,
                                 const T* __restrict bh, A* __restrict c, T* __restrict out, T* __restrict hs,
                                 A* __restrict w, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    A i = sigmoid_(A(x[j]) + A(h[j]) + A(bi[j]) + A(bh[j]));
    A f = sigmoid_(A(x[H + j]) + A(h[H + j]) + A(bi[H + j]) + A(bh[H + j]));
    A g = tanh_(A(x[2 * H + j]) + A(h[2 * H + j]) + A(bi[2 * H + j]) + A(bh[2 * H + j]));
    A o = sigmoid_(A(x[3 * H + j]) + A(h[3 * H + j]) + A(bi[3 * H + j]) + A(bh[3 * H + j]));
    A cn = f * c[j] + i * g;
    A hn = o * tanh_(cn);
    c[j] = cn;
    out[j] = static_cast<T>(hn);
    if constexpr (kState) hs[j] = static_cast<T>(hn);
    if constexpr (kWs) {
      w[j] = i; w[H + j] = f; w[2 * H + j] = g; w[3 * H + j] = o; w[4 * H + j] = cn;
    }
  }
}

template <typename T>
RNN_EXT_INLINE void lstm_fwd_rows(const LstmForwardStep& s, const T* bi, const T* bh, int64_t r0, int64_t r1) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden, G = 4 * H;
  with_flags(s.h_state != nullptr, s.workspace != nullptr, [&](auto has_state, auto has_ws) RNN_EXT_LAMBDA_INLINE {
    for (int64_t r = r0; r < r1; ++r) {
      lstm_fwd_row<T, A, has_state, has_ws>(
          static_cast<const T*>(s.x_gates) + r * G, static_cast<const T*>(s.h_gates) + r * G, bi, bh,
          static_cast<A*>(s.c_state) + r * H, static_cast<T*>(s.h_out) + r * s.h_out_stride,
          has_state ? static_cast<T*>(s.h_state) + r * H : nullptr,
          has_ws ? static_cast<A*>(s.workspace) + r * 5 * H : nullptr, H);
    }
  });
}
RNN_EXT_ROWS(lstm_fwd, LstmForwardStep, 4)

template <typename T, typename A, bool kB>
RNN_EXT_INLINE void lstm_bwd_row(const T* __restrict ga, const T* __restrict gb, const A* __restrict w,
                                 const A* __restrict cp, A* __restrict dcs, T* __restrict d, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    A dh = A(ga[j]);
    if constexpr (kB) dh += A(gb[j]);
    A i = w[j], f = w[H + j], g = w[2 * H + j], o = w[3 * H + j], c = w[4 * H + j];
    A tc = tanh_(c);
    A dc = dcs[j] + dh * o * (A(1) - tc * tc);
    d[j] = static_cast<T>(dc * g * i * (A(1) - i));
    d[H + j] = static_cast<T>(dc * cp[j] * f * (A(1) - f));
    d[2 * H + j] = static_cast<T>(dc * i * (A(1) - g * g));
    d[3 * H + j] = static_cast<T>(dh * tc * o * (A(1) - o));
    dcs[j] = dc * f;
  }
}

template <typename T>
RNN_EXT_INLINE void lstm_bwd_rows(const LstmBackwardStep& s, const T*, const T*, int64_t r0, int64_t r1) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden;
  with_flags(s.grad_h_b != nullptr, true, [&](auto has_b, auto) RNN_EXT_LAMBDA_INLINE {
    for (int64_t r = r0; r < r1; ++r) {
      lstm_bwd_row<T, A, has_b>(
          static_cast<const T*>(s.grad_h_a) + r * H, has_b ? static_cast<const T*>(s.grad_h_b) + r * H : nullptr,
          static_cast<const A*>(s.workspace) + r * 5 * H, static_cast<const A*>(s.c_prev) + r * s.c_prev_stride,
          static_cast<A*>(s.grad_c_state) + r * H, static_cast<T*>(s.grad_gates) + r * 4 * H, H);
    }
  });
}
RNN_EXT_ROWS(lstm_bwd, LstmBackwardStep, 4)

// ---------------------------------------------------------------- GRU
template <typename T, typename A, bool kWs>
RNN_EXT_INLINE void gru_fwd_row(const T* __restrict x, const T* __restrict h, const T* __restrict bi,
                                const T* __restrict bh, T* __restrict hs, T* __restrict out, A* __restrict w,
                                int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    A rg = sigmoid_(A(x[j]) + A(bi[j]) + A(h[j]) + A(bh[j]));
    A zg = sigmoid_(A(x[H + j]) + A(bi[H + j]) + A(h[H + j]) + A(bh[H + j]));
    A hn = A(h[2 * H + j]) + A(bh[2 * H + j]);
    A n = tanh_(A(x[2 * H + j]) + A(bi[2 * H + j]) + rg * hn);
    A hnew = n + zg * (A(hs[j]) - n);  // hs: read h_{t-1}, then write h_t
    hs[j] = static_cast<T>(hnew);
    out[j] = static_cast<T>(hnew);
    if constexpr (kWs) { w[j] = rg; w[H + j] = zg; w[2 * H + j] = n; w[3 * H + j] = hn; }
  }
}

template <typename T>
RNN_EXT_INLINE void gru_fwd_rows(const GruForwardStep& s, const T* bi, const T* bh, int64_t r0, int64_t r1) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden, G = 3 * H;
  with_flags(s.workspace != nullptr, true, [&](auto has_ws, auto) RNN_EXT_LAMBDA_INLINE {
    for (int64_t r = r0; r < r1; ++r) {
      gru_fwd_row<T, A, has_ws>(
          static_cast<const T*>(s.x_gates) + r * G, static_cast<const T*>(s.h_gates) + r * G, bi, bh,
          static_cast<T*>(s.h_state) + r * H, static_cast<T*>(s.h_out) + r * H,
          has_ws ? static_cast<A*>(s.workspace) + r * 4 * H : nullptr, H);
    }
  });
}
RNN_EXT_ROWS(gru_fwd, GruForwardStep, 3)

// grad_h_b may alias grad_h_prev (the driver passes its dh state as both), so
// those two are not __restrict; each element is read before it is written.
template <typename T, typename A, bool kB>
RNN_EXT_INLINE void gru_bwd_row(const T* __restrict ga, const T* gb, const T* __restrict hp,
                                const A* __restrict w, T* __restrict di, T* __restrict dhh, T* dprev,
                                int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    A dh = A(ga[j]);
    if constexpr (kB) dh += A(gb[j]);
    A rg = w[j], zg = w[H + j], n = w[2 * H + j], hn = w[3 * H + j];
    A dn_pre = dh * (A(1) - zg) * (A(1) - n * n);
    A dz_pre = dh * (A(hp[j]) - n) * zg * (A(1) - zg);
    A dr_pre = dn_pre * hn * rg * (A(1) - rg);
    di[j] = static_cast<T>(dr_pre);
    di[H + j] = static_cast<T>(dz_pre);
    di[2 * H + j] = static_cast<T>(dn_pre);
    dhh[j] = static_cast<T>(dr_pre);
    dhh[H + j] = static_cast<T>(dz_pre);
    dhh[2 * H + j] = static_cast<T>(dn_pre * rg);
    dprev[j] = static_cast<T>(dh * zg);
  }
}

template <typename T>
RNN_EXT_INLINE void gru_bwd_rows(const GruBackwardStep& s, const T*, const T*, int64_t r0, int64_t r1) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden;
  with_flags(s.grad_h_b != nullptr, true, [&](auto has_b, auto) RNN_EXT_LAMBDA_INLINE {
    for (int64_t r = r0; r < r1; ++r) {
      gru_bwd_row<T, A, has_b>(
          static_cast<const T*>(s.grad_h_a) + r * H, has_b ? static_cast<const T*>(s.grad_h_b) + r * H : nullptr,
          static_cast<const T*>(s.h_prev) + r * H, static_cast<const A*>(s.workspace) + r * 4 * H,
          static_cast<T*>(s.grad_gates_ih) + r * 3 * H, static_cast<T*>(s.grad_gates_hh) + r * 3 * H,
          static_cast<T*>(s.grad_h_prev) + r * H, H);
    }
  });
}
RNN_EXT_ROWS(gru_bwd, GruBackwardStep, 3)

// ---------------------------------------------------------------- RNN
template <typename T, typename A, bool kRelu>
RNN_EXT_INLINE void rnn_fwd_row(const T* __restrict x, const T* __restrict h, const T* __restrict bi,
                                const T* __restrict bh, T* __restrict hs, T* __restrict out, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    A pre = A(x[j]) + A(h[j]) + A(bi[j]) + A(bh[j]);
    A v;
    if constexpr (kRelu) v = pre < A(0) ? A(0) : pre;  // keeps NaN, as torch.relu
    else v = tanh_(pre);
    hs[j] = static_cast<T>(v);
    out[j] = static_cast<T>(v);
  }
}

template <typename T>
RNN_EXT_INLINE void rnn_fwd_rows(const RnnForwardStep& s, const T* bi, const T* bh, int64_t r0, int64_t r1) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden;
  with_flags(s.relu, true, [&](auto relu, auto) RNN_EXT_LAMBDA_INLINE {
    for (int64_t r = r0; r < r1; ++r) {
      rnn_fwd_row<T, A, relu>(static_cast<const T*>(s.x_gates) + r * H, static_cast<const T*>(s.h_gates) + r * H,
                              bi, bh, static_cast<T*>(s.h_state) + r * H, static_cast<T*>(s.h_out) + r * H, H);
    }
  });
}
RNN_EXT_ROWS(rnn_fwd, RnnForwardStep, 1)

template <typename T, typename A, bool kRelu, bool kB>
RNN_EXT_INLINE void rnn_bwd_row(const T* __restrict ga, const T* __restrict gb, const T* __restrict y,
                                T* __restrict dg, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    A dh = A(ga[j]);
    if constexpr (kB) dh += A(gb[j]);
    A yv = A(y[j]);
    // relu' as torch's threshold_backward: zero only where y <= 0 (NaN passes)
    if constexpr (kRelu) dg[j] = static_cast<T>(yv <= A(0) ? A(0) : dh);
    else dg[j] = static_cast<T>(dh * (A(1) - yv * yv));
  }
}

template <typename T>
RNN_EXT_INLINE void rnn_bwd_rows(const RnnBackwardStep& s, const T*, const T*, int64_t r0, int64_t r1) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden;
  with_flags(s.relu, s.grad_h_b != nullptr, [&](auto relu, auto has_b) RNN_EXT_LAMBDA_INLINE {
    for (int64_t r = r0; r < r1; ++r) {
      rnn_bwd_row<T, A, relu, has_b>(
          static_cast<const T*>(s.grad_h_a) + r * H, has_b ? static_cast<const T*>(s.grad_h_b) + r * H : nullptr,
          static_cast<const T*>(s.h_out) + r * H, static_cast<T*>(s.grad_gates) + r * H, H);
    }
  });
}
RNN_EXT_ROWS(rnn_bwd, RnnBackwardStep, 1)

}  // namespace

void lstm_forward_step_cpu(const LstmForwardStep& s) { dispatch(s.dtype, [&](auto t) { lstm_fwd<decltype(t)>(s); }); }
void lstm_backward_step_cpu(const LstmBackwardStep& s) { dispatch(s.dtype, [&](auto t) { lstm_bwd<decltype(t)>(s); }); }
void gru_forward_step_cpu(const GruForwardStep& s) { dispatch(s.dtype, [&](auto t) { gru_fwd<decltype(t)>(s); }); }
void gru_backward_step_cpu(const GruBackwardStep& s) { dispatch(s.dtype, [&](auto t) { gru_bwd<decltype(t)>(s); }); }
void rnn_forward_step_cpu(const RnnForwardStep& s) { dispatch(s.dtype, [&](auto t) { rnn_fwd<decltype(t)>(s); }); }
void rnn_backward_step_cpu(const RnnBackwardStep& s) { dispatch(s.dtype, [&](auto t) { rnn_bwd<decltype(t)>(s); }); }

}  // namespace rnn_ext
