// Fused pointwise CUDA kernels for one time step of LSTM / GRU / RNN cells.
//
// Implements the *_cuda functions declared in common/cell_steps.h. The GEMMs
// (x @ W_ih^T, h @ W_hh^T) are done by the caller; each function here launches
// exactly one elementwise kernel on the step's stream: one thread per
// (row, unit) element, grid-stride loop, 64-bit index math throughout.
//
// Scalars are float / double / __half / __nv_bfloat16; all math is done in
// acc_t (double for double, float otherwise). Deliberately torch-free so this
// translation unit compiles quickly.
#include "common/cell_steps.h"
#include "cuda/scalar_math.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace rnn_ext {
namespace {

// Grid-stride loop over n = rows * hidden elements.
#define RNN_EXT_KERNEL_LOOP(idx, n)                                            \
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; \
       idx < (n); idx += static_cast<int64_t>(blockDim.x) * gridDim.x)

// ------------------------------------------------------------ kernels
template <typename T>
__global__ void lstm_forward_kernel(LstmForwardStep s) {
  using A = acc_of<T>;
  const int64_t H = s.hidden, G = 4 * H;
  A* c_state = static_cast<A*>(s.c_state);
  A* ws = static_cast<A*>(s.workspace);
  RNN_EXT_KERNEL_LOOP(idx, s.rows * H) {
    const int64_t r = idx / H, j = idx % H;
    A act[4];
    for (int k = 0; k < 4; ++k) {
      const int64_t col = k * H + j;
      const A pre = load<T>(s.x_gates, r * G + col) + load<T>(s.h_gates, r * G + col) +
                    load_opt<T>(s.b_ih, col) + load_opt<T>(s.b_hh, col);
      act[k] = (k == 2) ? tanh_(pre) : sigmoid(pre);
    }
    const A i = act[0], f = act[1], g = act[2], o = act[3];
    const A c = f * c_state[r * H + j] + i * g;
    const A h = o * tanh_(c);
    c_state[r * H + j] = c;
    store<T>(s.h_out, r * s.h_out_stride + j, h);
    if (s.h_state) store<T>(s.h_state, r * H + j, h);
    if (ws) {
      for (int k = 0; k < 4; ++k) ws[r * 5 * H + k * H + j] = act[k];
      ws[r * 5 * H + 4 * H + j] = c;
    }
  }
}

template <typename T>
__global__ void lstm_backward_kernel(LstmBackwardStep s) {
  using A = acc_of<T>;
  const int64_t H = s.hidden;
  const A* ws = static_cast<const A*>(s.workspace);
  const A* c_prev = static_cast<const A*>(s.c_prev);
  A* grad_c = static_cast<A*>(s.grad_c_state);
  RNN_EXT_KERNEL_LOOP(idx, s.rows * H) {
    const int64_t r = idx / H, j = idx % H;
    const A dh = load<T>(s.grad_h_a, idx) + load_opt<T>(s.grad_h_b, idx);
    const A* w = ws + r * 5 * H;
    const A i = w[j], f = w[H + j], g = w[2 * H + j], o = w[3 * H + j], c = w[4 * H + j];
    const A cp = c_prev[r * s.c_prev_stride + j];
    const A tc = tanh_(c);
    const A dc = grad_c[idx] + dh * o * (A(1) - tc * tc);
    const A d_o = dh * tc, d_i = dc * g, d_g = dc * i, d_f = dc * cp;
    const int64_t base = r * 4 * H + j;
    store<T>(s.grad_gates, base, d_i * i * (A(1) - i));
    store<T>(s.grad_gates, base + H, d_f * f * (A(1) - f));
    store<T>(s.grad_gates, base + 2 * H, d_g * (A(1) - g * g));
    store<T>(s.grad_gates, base + 3 * H, d_o * o * (A(1) - o));
    grad_c[idx] = dc * f;
  }
}

template <typename T>
__global__ void gru_forward_kernel(GruForwardStep s) {
  using A = acc_of<T>;
  const int64_t H = s.hidden, G = 3 * H;
  A* ws = static_cast<A*>(s.workspace);
  RNN_EXT_KERNEL_LOOP(idx, s.rows * H) {
    const int64_t r = idx / H, j = idx % H;
    const int64_t g0 = r * G + j;
    const A xr = load<T>(s.x_gates, g0), xz = load<T>(s.x_gates, g0 + H),
            xn = load<T>(s.x_gates, g0 + 2 * H);
    const A hr = load<T>(s.h_gates, g0), hz = load<T>(s.h_gates, g0 + H),
            hn_raw = load<T>(s.h_gates, g0 + 2 * H);
    const A bi0 = load_opt<T>(s.b_ih, j), bi1 = load_opt<T>(s.b_ih, H + j),
            bi2 = load_opt<T>(s.b_ih, 2 * H + j);
    const A bh0 = load_opt<T>(s.b_hh, j), bh1 = load_opt<T>(s.b_hh, H + j),
            bh2 = load_opt<T>(s.b_hh, 2 * H + j);
    const A rg = sigmoid(xr + bi0 + hr + bh0);
    const A zg = sigmoid(xz + bi1 + hz + bh1);
    const A hn = hn_raw + bh2;
    const A n = tanh_(xn + bi2 + rg * hn);
    const A hp = load<T>(s.h_state, idx);  // read before either write
    const A h = n + zg * (hp - n);
    store<T>(s.h_state, idx, h);
    store<T>(s.h_out, idx, h);
    if (ws) {
      A* w = ws + r * 4 * H;
      w[j] = rg;
      w[H + j] = zg;
      w[2 * H + j] = n;
      w[3 * H + j] = hn;
    }
  }
}

template <typename T>
__global__ void gru_backward_kernel(GruBackwardStep s) {
  using A = acc_of<T>;
  const int64_t H = s.hidden;
  const A* ws = static_cast<const A*>(s.workspace);
  RNN_EXT_KERNEL_LOOP(idx, s.rows * H) {
    const int64_t r = idx / H, j = idx % H;
    // grad_h_prev may alias grad_h_b: this thread reads it before writing.
    const A dh = load<T>(s.grad_h_a, idx) + load_opt<T>(s.grad_h_b, idx);
    const A hp = load<T>(s.h_prev, idx);
    const A* w = ws + r * 4 * H;
    const A rg = w[j], zg = w[H + j], n = w[2 * H + j], hn = w[3 * H + j];
    const A dn = dh * (A(1) - zg);
    const A dz = dh * (hp - n);
    const A dn_pre = dn * (A(1) - n * n);
    const A dr_pre = dn_pre * hn * rg * (A(1) - rg);
    const A dz_pre = dz * zg * (A(1) - zg);
    const int64_t base = r * 3 * H + j;
    store<T>(s.grad_gates_ih, base, dr_pre);
    store<T>(s.grad_gates_ih, base + H, dz_pre);
    store<T>(s.grad_gates_ih, base + 2 * H, dn_pre);
    store<T>(s.grad_gates_hh, base, dr_pre);
    store<T>(s.grad_gates_hh, base + H, dz_pre);
    store<T>(s.grad_gates_hh, base + 2 * H, dn_pre * rg);
    store<T>(s.grad_h_prev, idx, dh * zg);
  }
}

template <typename T>
__global__ void rnn_forward_kernel(RnnForwardStep s) {
  using A = acc_of<T>;
  const int64_t H = s.hidden;
  RNN_EXT_KERNEL_LOOP(idx, s.rows * H) {
    const int64_t j = idx % H;
    const A pre = load<T>(s.x_gates, idx) + load<T>(s.h_gates, idx) + load_opt<T>(s.b_ih, j) +
                  load_opt<T>(s.b_hh, j);
    // relu propagates NaN like torch.relu.
    const A h = s.relu ? (pre > A(0) ? pre : (pre != pre ? pre : A(0))) : tanh_(pre);
    store<T>(s.h_state, idx, h);
    store<T>(s.h_out, idx, h);
  }
}

template <typename T>
__global__ void rnn_backward_kernel(RnnBackwardStep s) {
  using A = acc_of<T>;
  RNN_EXT_KERNEL_LOOP(idx, s.rows * s.hidden) {
    const A dh = load<T>(s.grad_h_a, idx) + load_opt<T>(s.grad_h_b, idx);
    const A y = load<T>(s.h_out, idx);
    // relu' as torch's threshold_backward: zero only where y <= 0 (NaN passes)
    const A d = s.relu ? (y <= A(0) ? A(0) : dh) : dh * (A(1) - y * y);
    store<T>(s.grad_gates, idx, d);
  }
}

#undef RNN_EXT_KERNEL_LOOP

// ------------------------------------------------------------ host side
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 4;

template <typename T> struct Tag { using type = T; };

// Calls f(Tag<T>{}) for the scalar type named by `dtype`.
template <typename F>
void dispatch(DType dtype, const char* name, F&& f) {
  switch (dtype) {
    case DType::kFloat: f(Tag<float>{}); break;
    case DType::kDouble: f(Tag<double>{}); break;
    case DType::kHalf: f(Tag<__half>{}); break;
    case DType::kBFloat16: f(Tag<__nv_bfloat16>{}); break;
    default:
      throw std::runtime_error(std::string(name) + ": unsupported dtype " +
                               std::to_string(static_cast<int>(dtype)));
  }
}

// Launches kernel<T>(s) over rows*hidden elements on s.stream and checks it.
template <typename Step, typename Launch>
void launch(const Step& s, const char* name, Launch&& kernel_for) {
  if (s.rows <= 0 || s.hidden <= 0) return;
  const int64_t n = s.rows * s.hidden;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  const auto stream = static_cast<cudaStream_t>(s.stream);
  dispatch(s.dtype, name, [&](auto tag) {
    kernel_for(tag)<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s);
  });
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(name) + ": CUDA kernel launch failed: " +
                             cudaGetErrorString(err));
  }
}

// Maps a type tag to the kernel instantiation for that scalar type.
#define RNN_EXT_KERNEL_FOR(kernel) \
  [](auto tag) { return &kernel<typename decltype(tag)::type>; }

}  // namespace

void lstm_forward_step_cuda(const LstmForwardStep& s) {
  launch(s, "lstm_forward_step_cuda", RNN_EXT_KERNEL_FOR(lstm_forward_kernel));
}
void lstm_backward_step_cuda(const LstmBackwardStep& s) {
  launch(s, "lstm_backward_step_cuda", RNN_EXT_KERNEL_FOR(lstm_backward_kernel));
}
void gru_forward_step_cuda(const GruForwardStep& s) {
  launch(s, "gru_forward_step_cuda", RNN_EXT_KERNEL_FOR(gru_forward_kernel));
}
void gru_backward_step_cuda(const GruBackwardStep& s) {
  launch(s, "gru_backward_step_cuda", RNN_EXT_KERNEL_FOR(gru_backward_kernel));
}
void rnn_forward_step_cuda(const RnnForwardStep& s) {
  launch(s, "rnn_forward_step_cuda", RNN_EXT_KERNEL_FOR(rnn_forward_kernel));
}
void rnn_backward_step_cuda(const RnnBackwardStep& s) {
  launch(s, "rnn_backward_step_cuda", RNN_EXT_KERNEL_FOR(rnn_backward_kernel));
}

#undef RNN_EXT_KERNEL_FOR

}  // namespace rnn_ext
