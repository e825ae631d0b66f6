// Fused pointwise step kernels for the CPU: one pass over (rows, H) per time
// step, no per-gate temporaries. The recurrence driver (csrc/recurrence.cpp)
// does the GEMMs; these functions do everything between them.
//
// Rows are split across threads with at::parallel_for; the inner loop over
// hidden units is written so the compiler can vectorise the loads/stores.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <stdexcept>

#include "common/cell_steps.h"

namespace rnn_ext {
namespace {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

template <typename A> inline A sigmoid(A x) { return A(1) / (A(1) + std::exp(-x)); }

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
    case DType::kHalf: f(c10::Half{}); break;
    case DType::kBFloat16: f(c10::BFloat16{}); break;
    default: throw std::invalid_argument("rnn_ext: unsupported dtype");
  }
}

template <typename T, typename A>
inline A bias_at(const T* b, int64_t k) { return b ? static_cast<A>(b[k]) : A(0); }

template <typename T>
void lstm_fwd(const LstmForwardStep& s) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden, G = 4 * H;
  const T* xg = static_cast<const T*>(s.x_gates);
  const T* hg = static_cast<const T*>(s.h_gates);
  const T* bi = static_cast<const T*>(s.b_ih);
  const T* bh = static_cast<const T*>(s.b_hh);
  A* cs = static_cast<A*>(s.c_state);
  T* ho = static_cast<T*>(s.h_out);
  T* hs = static_cast<T*>(s.h_state);
  A* ws = static_cast<A*>(s.workspace);
  at::parallel_for(0, s.rows, grain_rows(H, 4), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = xg + r * G;
      const T* h = hg + r * G;
      A* c = cs + r * H;
      T* out = ho + r * s.h_out_stride;
      A* w = ws ? ws + r * 5 * H : nullptr;
      for (int64_t j = 0; j < H; ++j) {
        A pi = A(x[j]) + A(h[j]) + bias_at<T, A>(bi, j) + bias_at<T, A>(bh, j);
        A pf = A(x[H + j]) + A(h[H + j]) + bias_at<T, A>(bi, H + j) + bias_at<T, A>(bh, H + j);
        A pg = A(x[2 * H + j]) + A(h[2 * H + j]) + bias_at<T, A>(bi, 2 * H + j) + bias_at<T, A>(bh, 2 * H + j);
        A po = A(x[3 * H + j]) + A(h[3 * H + j]) + bias_at<T, A>(bi, 3 * H + j) + bias_at<T, A>(bh, 3 * H + j);
        A i = sigmoid(pi), f = sigmoid(pf), g = std::tanh(pg), o = sigmoid(po);
        A cn = f * c[j] + i * g;
        A hn = o * std::tanh(cn);
        c[j] = cn;
        out[j] = static_cast<T>(hn);
        if (hs) hs[r * H + j] = static_cast<T>(hn);
        if (w) {
          w[j] = i; w[H + j] = f; w[2 * H + j] = g; w[3 * H + j] = o; w[4 * H + j] = cn;
        }
      }
    }
  });
}

template <typename T>
void lstm_bwd(const LstmBackwardStep& s) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden;
  const T* ga = static_cast<const T*>(s.grad_h_a);
  const T* gb = static_cast<const T*>(s.grad_h_b);
  const A* ws = static_cast<const A*>(s.workspace);
  const A* cp = static_cast<const A*>(s.c_prev);
  A* dcs = static_cast<A*>(s.grad_c_state);
  T* dg = static_cast<T*>(s.grad_gates);
  at::parallel_for(0, s.rows, grain_rows(H, 4), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const A* w = ws + r * 5 * H;
      T* d = dg + r * 4 * H;
      for (int64_t j = 0; j < H; ++j) {
        A dh = A(ga[r * H + j]) + (gb ? A(gb[r * H + j]) : A(0));
        A i = w[j], f = w[H + j], g = w[2 * H + j], o = w[3 * H + j], c = w[4 * H + j];
        A tc = std::tanh(c);
        A dc = dcs[r * H + j] + dh * o * (A(1) - tc * tc);
        A c_prev = cp[r * s.c_prev_stride + j];
        d[j] = static_cast<T>(dc * g * i * (A(1) - i));
        d[H + j] = static_cast<T>(dc * c_prev * f * (A(1) - f));
        d[2 * H + j] = static_cast<T>(dc * i * (A(1) - g * g));
        d[3 * H + j] = static_cast<T>(dh * tc * o * (A(1) - o));
        dcs[r * H + j] = dc * f;
      }
    }
  });
}

template <typename T>
void gru_fwd(const GruForwardStep& s) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden, G = 3 * H;
  const T* xg = static_cast<const T*>(s.x_gates);
  const T* hg = static_cast<const T*>(s.h_gates);
  const T* bi = static_cast<const T*>(s.b_ih);
  const T* bh = static_cast<const T*>(s.b_hh);
  T* hs = static_cast<T*>(s.h_state);
  T* ho = static_cast<T*>(s.h_out);
  A* ws = static_cast<A*>(s.workspace);
  at::parallel_for(0, s.rows, grain_rows(H, 3), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = xg + r * G;
      const T* h = hg + r * G;
      A* w = ws ? ws + r * 4 * H : nullptr;
      for (int64_t j = 0; j < H; ++j) {
        A rg = sigmoid(A(x[j]) + bias_at<T, A>(bi, j) + A(h[j]) + bias_at<T, A>(bh, j));
        A zg = sigmoid(A(x[H + j]) + bias_at<T, A>(bi, H + j) + A(h[H + j]) + bias_at<T, A>(bh, H + j));
        A hn = A(h[2 * H + j]) + bias_at<T, A>(bh, 2 * H + j);
        A n = std::tanh(A(x[2 * H + j]) + bias_at<T, A>(bi, 2 * H + j) + rg * hn);
        A hp = A(hs[r * H + j]);
        A hnew = n + zg * (hp - n);
        hs[r * H + j] = static_cast<T>(hnew);
        ho[r * H + j] = static_cast<T>(hnew);
        if (w) { w[j] = rg; w[H + j] = zg; w[2 * H + j] = n; w[3 * H + j] = hn; }
      }
    }
  });
}

template <typename T>
void gru_bwd(const GruBackwardStep& s) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden;
  const T* ga = static_cast<const T*>(s.grad_h_a);
  const T* gb = static_cast<const T*>(s.grad_h_b);
  const T* hp = static_cast<const T*>(s.h_prev);
  const A* ws = static_cast<const A*>(s.workspace);
  T* di = static_cast<T*>(s.grad_gates_ih);
  T* dhh = static_cast<T*>(s.grad_gates_hh);
  T* dprev = static_cast<T*>(s.grad_h_prev);
  at::parallel_for(0, s.rows, grain_rows(H, 3), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const A* w = ws + r * 4 * H;
      for (int64_t j = 0; j < H; ++j) {
        A dh = A(ga[r * H + j]) + (gb ? A(gb[r * H + j]) : A(0));
        A rg = w[j], zg = w[H + j], n = w[2 * H + j], hn = w[3 * H + j];
        A dn_pre = dh * (A(1) - zg) * (A(1) - n * n);
        A dz_pre = dh * (A(hp[r * H + j]) - n) * zg * (A(1) - zg);
        A dr_pre = dn_pre * hn * rg * (A(1) - rg);
        int64_t o = r * 3 * H;
        di[o + j] = static_cast<T>(dr_pre);
        di[o + H + j] = static_cast<T>(dz_pre);
        di[o + 2 * H + j] = static_cast<T>(dn_pre);
        dhh[o + j] = static_cast<T>(dr_pre);
        dhh[o + H + j] = static_cast<T>(dz_pre);
        dhh[o + 2 * H + j] = static_cast<T>(dn_pre * rg);
        dprev[r * H + j] = static_cast<T>(dh * zg);
      }
    }
  });
}

template <typename T>
void rnn_fwd(const RnnForwardStep& s) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden;
  const T* xg = static_cast<const T*>(s.x_gates);
  const T* hg = static_cast<const T*>(s.h_gates);
  const T* bi = static_cast<const T*>(s.b_ih);
  const T* bh = static_cast<const T*>(s.b_hh);
  T* hs = static_cast<T*>(s.h_state);
  T* ho = static_cast<T*>(s.h_out);
  const bool relu = s.relu;
  at::parallel_for(0, s.rows, grain_rows(H, 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < H; ++j) {
        int64_t k = r * H + j;
        A pre = A(xg[k]) + A(hg[k]) + bias_at<T, A>(bi, j) + bias_at<T, A>(bh, j);
        // relu keeps NaN (pre > 0 is false for NaN, so test for "negative" instead)
        A h = relu ? (pre < A(0) ? A(0) : pre) : std::tanh(pre);
        hs[k] = static_cast<T>(h);
        ho[k] = static_cast<T>(h);
      }
    }
  });
}

template <typename T>
void rnn_bwd(const RnnBackwardStep& s) {
  using A = typename Acc<T>::type;
  const int64_t H = s.hidden;
  const T* ga = static_cast<const T*>(s.grad_h_a);
  const T* gb = static_cast<const T*>(s.grad_h_b);
  const T* y = static_cast<const T*>(s.h_out);
  T* dg = static_cast<T*>(s.grad_gates);
  const bool relu = s.relu;
  at::parallel_for(0, s.rows, grain_rows(H, 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < H; ++j) {
        int64_t k = r * H + j;
        A dh = A(ga[k]) + (gb ? A(gb[k]) : A(0));
        A yv = A(y[k]);
        // relu' as torch's threshold_backward: zero only where y <= 0 (NaN passes)
        dg[k] = static_cast<T>(relu ? (yv <= A(0) ? A(0) : dh) : dh * (A(1) - yv * yv));
      }
    }
  });
}

}  // namespace

void lstm_forward_step_cpu(const LstmForwardStep& s) { dispatch(s.dtype, [&](auto t) { lstm_fwd<decltype(t)>(s); }); }
void lstm_backward_step_cpu(const LstmBackwardStep& s) { dispatch(s.dtype, [&](auto t) { lstm_bwd<decltype(t)>(s); }); }
void gru_forward_step_cpu(const GruForwardStep& s) { dispatch(s.dtype, [&](auto t) { gru_fwd<decltype(t)>(s); }); }
void gru_backward_step_cpu(const GruBackwardStep& s) { dispatch(s.dtype, [&](auto t) { gru_bwd<decltype(t)>(s); }); }
void rnn_forward_step_cpu(const RnnForwardStep& s) { dispatch(s.dtype, [&](auto t) { rnn_fwd<decltype(t)>(s); }); }
void rnn_backward_step_cpu(const RnnBackwardStep& s) { dispatch(s.dtype, [&](auto t) { rnn_bwd<decltype(t)>(s); }); }

}  // namespace rnn_ext
