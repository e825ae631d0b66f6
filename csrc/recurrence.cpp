// The recurrence driver: one layer-direction, all time steps, forward and
// backward, for LSTM / GRU / RNN. See recurrence.h and csrc/rnn_ext.cpp.
//
// Per call:
//   forward:  one GEMM  X W_ih^T  for every step at once, then per step one
//             GEMM  h W_hh^T  and one fused pointwise kernel (gates, state,
//             output, and the backward cache only when need_grad);
//   backward: per step one fused pointwise derivative kernel and one GEMM for
//             dh; after the loop one GEMM each for dX, dW_ih, dW_hh (dW_hr),
//             and a plain column sum (deterministic) for the biases (on the
//             CPU in float32/float64, the fused weight-gradient product gives
//             dW and the bias sums in one pass).
// (Those large products: csrc/matmul.h.)
//
// Packed input uses cuDNN's layout: at time t only the first batch_sizes[t]
// rows are active. A recurrent state buffer of B rows carries h (and c) across
// steps: rows that are inactive keep their value, which gives h_n at each
// sequence's last step (forward direction) and lets a sequence start from its
// own h0 row when it joins (reverse direction).
#include "recurrence.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>
#include <torch/version.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "common/cell_steps.h"
#include "big_buffers.h"
#include "cpu/fused_cpu.h"
#include "cpu/small_products.h"
#include "matmul.h"

namespace rnn_ext {
namespace {

// ------------------------------------------------------------ schedule
struct Schedule {
  int64_t T = 0, B = 0, N = 0;  // steps, max batch, total rows
  bool reverse = false;
  std::vector<int64_t> bs, offset;  // per time index t
  bool packed = false;

  int64_t time(int64_t k) const { return reverse ? T - 1 - k : k; }
  // Rows of step k whose previous state comes from step k-1 (the rest start from h0).
  int64_t inherited(int64_t k) const {
    if (k == 0) return 0;
    return std::min(bs[time(k)], bs[time(k - 1)]);
  }
};

Schedule make_schedule(const Tensor& x, const OptTensor& batch_sizes, int64_t B, bool reverse) {
  Schedule s;
  s.reverse = reverse;
  s.B = B;
  if (batch_sizes.has_value() && batch_sizes->defined()) {
    const Tensor& b = *batch_sizes;
    TORCH_CHECK(b.device().is_cpu(), "rnn_ext: batch_sizes should always be on CPU");
    TORCH_CHECK(b.dim() == 1 && b.scalar_type() == at::kLong, "rnn_ext: batch_sizes must be a 1-D int64 tensor");
    TORCH_CHECK(x.dim() == 2, "rnn_ext: packed input must be 2-D (rows, features), got ", x.dim(), "-D");
    TORCH_CHECK(b.numel() > 0, "rnn_ext: batch_sizes must not be empty");
    Tensor bc = b.contiguous();
    const int64_t* p = bc.const_data_ptr<int64_t>();
    s.packed = true;
    s.T = b.numel();
    int64_t total = 0;
    for (int64_t t = 0; t < s.T; ++t) {
      TORCH_CHECK(p[t] > 0 && p[t] <= (t ? p[t - 1] : B),
                  "rnn_ext: batch_sizes must be positive and non-increasing, with batch_sizes[0] equal to the "
                  "hidden state batch (", B, "); got ", p[t], " at step ", t);
      s.bs.push_back(p[t]);
      s.offset.push_back(total);
      total += p[t];
    }
    TORCH_CHECK(s.bs[0] == B, "rnn_ext: batch_sizes[0] (", s.bs[0], ") must equal the hidden state batch (", B, ")");
    TORCH_CHECK(total == x.size(0), "rnn_ext: batch_sizes sum to ", total, " but the packed input has ", x.size(0),
                " rows");
    s.N = total;
  } else {
    TORCH_CHECK(x.dim() == 3, "rnn_ext: input must be 3-D (seq, batch, features), got ", x.dim(), "-D");
    TORCH_CHECK(x.size(1) == B, "rnn_ext: input batch (", x.size(1), ") must equal the hidden state batch (", B, ")");
    s.T = x.size(0);
    s.N = s.T * B;
    for (int64_t t = 0; t < s.T; ++t) {
      s.bs.push_back(B);
      s.offset.push_back(t * B);
    }
  }
  TORCH_CHECK(s.T > 0, "Expected sequence length to be larger than 0 in RNN");
  return s;
}

// ------------------------------------------------------------ helpers
DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kFloat;
    case at::kDouble: return DType::kDouble;
    case at::kHalf: return DType::kHalf;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, "rnn_ext: unsupported dtype ", t, "; expected float32, float64, float16 or bfloat16");
  }
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Pointer to row `row` of a row-major tensor (any dtype).
inline void* row_ptr(const Tensor& t, int64_t row) {
  return static_cast<char*>(t.data_ptr()) + row * t.stride(0) * t.element_size();
}
inline const void* opt_ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

Tensor opt(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }
Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : t; }

// Environment variable `name` (read per call): `a`, `b`, or "auto" (also when
// unset); any other value is an error.
std::string env_choice(const char* name, const char* a, const char* b) {
  const char* env = std::getenv(name);
  const std::string value = env ? env : "";
  TORCH_CHECK(value.empty() || value == "auto" || value == a || value == b, "rnn_ext: ", name, " must be ", a, ", ",
              b, " or auto, got '", value, "'");
  return value.empty() ? "auto" : value;
}

// The ops' own products and sums run in the dtypes they are given. torch.autocast is
// still on inside a custom op's kernel (its dispatch key falls through to it), so
// without this at::mm would cast float32 operands to bfloat16 there (the CPU
// half-precision layers call the float32 ops inside autocast).
struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

struct Kernels {
  void (*lstm_fwd)(const LstmForwardStep&);
  void (*lstm_bwd)(const LstmBackwardStep&);
  void (*gru_fwd)(const GruForwardStep&);
  void (*gru_bwd)(const GruBackwardStep&);
  void (*rnn_fwd)(const RnnForwardStep&);
  void (*rnn_bwd)(const RnnBackwardStep&);
  void* stream;
};

#ifdef RNN_EXT_WITH_CUDA
// Which CUDA recurrence runs (RNN_EXT_CUDA_PATH, read per call):
//   gemm         a cuBLAS product and a fused pointwise kernel per step;
//   persistent   the single-launch kernels (csrc/cuda/persistent_forward.cu,
//                persistent_backward.cu) wherever they serve;
//   auto, unset  the single-launch kernels at small batch, where they measured
//                faster (H200, 2026-12-04, README): any dtype at B <= 8, half
//                types at B <= 32; the GEMM path above (at B=64, I=H=512 the
//                float32 persistent forward took 5x the GEMM path's time).
//                float32 runs the scalar kernel there (float32 FMAs) even
//                with TF32 allowed (tf32_allowed, nn.LSTM's rule: the
//                default); the input and weight products still follow
//                that setting.
// With TF32 allowed, `persistent` runs float32 on the tensor cores as TF32
// (sm_80+, where that kernel fits). `auto` does not use those kernels until
// they have been tested and timed on a GPU, so it keeps float32 above B=8 on
// the GEMM path.
// The kernels serve unpacked float32/float16/bfloat16 (LSTM projection folded
// into W_hh: lstm_projection_folded_forward), and
// fall back to the GEMM path where they do not fit or under graph capture.
// Each direction and each backward chooses on its own (the workspace layout is
// the same on both paths).
constexpr int64_t kPersistentMaxBatch = 8, kPersistentMaxBatchHalf = 32;

// RNN_EXT_CUDA_PATH: "gemm", "persistent" or "auto" (also when unset).
std::string cuda_path() { return env_choice("RNN_EXT_CUDA_PATH", "gemm", "persistent"); }

// float32 as TF32 (matmul.h's float32_as_tf32, nn.LSTM's rule).
bool tf32_allowed(at::ScalarType dtype) { return dtype == at::kFloat && float32_as_tf32(); }

bool persistent_wanted(const Tensor& x, const Schedule& s) {
  if (!x.is_cuda() || s.packed || s.T == 0 || s.B == 0 || x.scalar_type() == at::kDouble) return false;
  const std::string path = cuda_path();
  if (path != "auto") return path == "persistent";
  const bool half = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  return s.B <= (half ? kPersistentMaxBatchHalf : kPersistentMaxBatch);
}

// The arguments every cell shares, with the dense copies of W_hh and h0 they
// point to: those must live until the launch is queued (a copy freed earlier
// could be handed to the next copy, which would overwrite it first).
struct SequenceArgs {
  SequenceForward a{};
  Tensor w_hh, h0;
};
// The fields both directions share (Args: SequenceArgs or SequenceBackwardArgs),
// with args.w_hh and args.h0 made dense first.
template <typename Args>
void set_sequence_fields(Args& args, SequenceCell cell, at::ScalarType dtype, const Schedule& s, int64_t H,
                         const Tensor& w_hh, const Tensor& h0, void* stream) {
  args.w_hh = w_hh.contiguous();
  args.h0 = h0.contiguous();
  auto& a = args.a;
  a.cell = cell;
  a.dtype = to_dtype(dtype);
  a.T = s.T;
  a.B = s.B;
  a.hidden = H;
  a.reverse = s.reverse;
  // the TF32 kernels only when forced (see cuda_path)
  a.tf32 = tf32_allowed(dtype) && cuda_path() == "persistent";
  a.w_hh = args.w_hh.data_ptr();
  a.h0 = args.h0.data_ptr();
  a.stream = stream;
}

SequenceArgs sequence_args(SequenceCell cell, const Schedule& s, int64_t H, const Tensor& x_gates,
                           const Tensor& b_ih, const Tensor& b_hh, const Tensor& w_hh, const Tensor& h0,
                           const Tensor& y, void* stream) {
  SequenceArgs args;
  set_sequence_fields(args, cell, x_gates.scalar_type(), s, H, w_hh, h0, stream);
  SequenceForward& a = args.a;
  a.x_gates = x_gates.data_ptr();
  a.b_ih = opt_ptr(b_ih);
  a.b_hh = opt_ptr(b_hh);
  a.y = y.data_ptr();
  return args;
}

// The backward's arguments for every cell (csrc/cuda/persistent_backward.cu),
// with the dense copies of W_hh and h0 they point to (as SequenceArgs). gy, y
// and ws are dense (N, .) matrices; ws undefined for RNN.
struct SequenceBackwardArgs {
  SequenceBackward a{};
  Tensor w_hh, h0;
};
SequenceBackwardArgs sequence_backward_args(SequenceCell cell, const Schedule& s, int64_t H, const Tensor& w_hh,
                                            const Tensor& h0, const Tensor& gy, const Tensor& y, const Tensor& ws,
                                            const Tensor& dh_state, const Tensor& d_gates, void* stream) {
  SequenceBackwardArgs args;
  set_sequence_fields(args, cell, gy.scalar_type(), s, H, w_hh, h0, stream);
  SequenceBackward& a = args.a;
  a.grad_y = gy.data_ptr();
  a.y = y.data_ptr();
  a.workspace = opt_ptr(ws);
  a.grad_h = dh_state.data_ptr();
  a.grad_gates = d_gates.data_ptr();
  return args;
}
#endif

// h_n of an unpacked sequence: the rows of the time index processed last.
Tensor last_rows(const Schedule& s, const Tensor& y) {
  const int64_t last = s.reverse ? 0 : s.T - 1;
  return y.narrow(0, last * s.B, s.B).clone();
}

Kernels kernels_for(const Tensor& x) {
  if (x.is_cpu()) {
    return {lstm_forward_step_cpu, lstm_backward_step_cpu, gru_forward_step_cpu,
            gru_backward_step_cpu, rnn_forward_step_cpu,   rnn_backward_step_cpu, nullptr};
  }
#ifdef RNN_EXT_WITH_CUDA
  if (x.is_cuda()) {
    return {lstm_forward_step_cuda, lstm_backward_step_cuda, gru_forward_step_cuda,
            gru_backward_step_cuda, rnn_forward_step_cuda,   rnn_backward_step_cuda, current_cuda_stream()};
  }
#endif
  TORCH_CHECK(false, "rnn_ext: no kernels for device ", x.device());
}

// Common argument checks: same device and dtype everywhere, sane shapes.
void check_args(const char* op, const Tensor& x, std::initializer_list<std::pair<const char*, Tensor>> others) {
  to_dtype(x.scalar_type());
  for (const auto& [name, t] : others) {
    if (!t.defined()) continue;
    TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but input is on ", x.device());
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
                " but input has dtype ", x.scalar_type());
  }
}

void check_shape(const char* op, const char* name, const Tensor& t, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", expected, ", got ", t.sizes());
}

std::vector<int64_t> out_shape(const Tensor& x, int64_t cols) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = cols;
  return shape;
}

// The op's output (input's shape, `cols` last) from the kernels' (rows, cols)
// buffer: not a view (_unsafe_view), so that callers may modify it in place,
// as torch.nn's output, without autograd's "output of a function that returns
// multiple views" error.
Tensor as_output(const Tensor& y, const Tensor& input, int64_t cols) {
  return at::_unsafe_view(y, out_shape(input, cols));
}

// The forward's workspace a backward op reads: (N, cols) in the accumulation type.
void check_workspace(const char* op, const Tensor& ws, int64_t N, int64_t cols, at::ScalarType acc) {
  TORCH_CHECK(ws.dim() == 2 && ws.size(0) == N && ws.size(1) == cols && ws.scalar_type() == acc,
              op, ": the workspace was not saved (forward ran with need_grad=False, as in a torch.jit.trace ",
              "made while nothing required grad: trace again with parameters that require grad) or does not match");
}

// Shapes a backward op relies on (the forward op checked its own inputs).
void check_backward(const char* op, const Tensor& input, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                    int64_t G, int64_t Hout, const Tensor& output, const Tensor& grad_output) {
  TORCH_CHECK(w_ih.dim() == 2 && w_hh.dim() == 2 && h0.dim() == 2, op, ": bad weight or h0 rank");
  check_shape(op, "w_ih", w_ih, {G, input.size(-1)});
  check_shape(op, "w_hh", w_hh, {G, Hout});
  check_shape(op, "h0", h0, {h0.size(0), Hout});
  const auto expected = out_shape(input, Hout);
  check_shape(op, "output", output, expected);
  check_shape(op, "grad_output", grad_output, expected);
}

// Rows [off, off + rows) of t: t itself when that is all of it (a view costs a
// dispatcher call, a sizeable share of a small cell's call).
Tensor rows_of(const Tensor& t, int64_t off, int64_t rows) {
  return off == 0 && rows == t.size(0) ? t : t.narrow(0, off, rows);
}

// Per-step product out = a @ b, b given as (K, N). For a handful of rows on the
// CPU, BLAS spends more time on call overhead and re-packing b than on the math,
// so small_mm_cpu (csrc/cpu/small_products.cpp) runs over a dense copy of b
// (made once per op).
constexpr int64_t kSmallRows = 4;

struct StepMatrix {
  Tensor b;        // (K, N), any strides: for BLAS
  Tensor b_dense;  // contiguous copy for the small path, or undefined
  Tensor w;        // b = w^T with w (N, K) dense, for a one-step product (direct_step), or undefined
  StepMatrix(const Tensor& b_, bool small_ok) : b(b_) {
    if (small_ok) b_dense = b_.contiguous();
  }
  // b = w^T for a weight w (N, K): the forward's products, straight from w's rows at one step.
  static StepMatrix transposed(const Tensor& w, bool small_ok, bool direct) {
    if (!w.defined()) return StepMatrix(Tensor(), false);
    StepMatrix m(direct ? Tensor() : w.t(), small_ok && !direct);
    if (direct) m.w = w;
    return m;
  }
};

// Not for one step: the copy of b would cost as much as the one product it serves.
bool small_path_ok(const Tensor& x, int64_t B, int64_t T) {
  return x.is_cpu() && B <= kSmallRows && T > 1 && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
}

void step_mm(Tensor& out, const Tensor& a, const StepMatrix& m, bool accumulate = false) {
  const int64_t rows = a.size(0);
  if (m.w.defined()) {  // direct_step: at most small_nt_max_rows() dense rows
    small_nt_cpu(to_dtype(a.scalar_type()), a.data_ptr(), m.w.data_ptr(), out.data_ptr(), rows, m.w.size(1),
                 m.w.size(0), accumulate);
    return;
  }
  // (b_dense exists for at most kSmallRows rows, or at one step for small_nt_max_rows())
  if (m.b_dense.defined() && rows <= small_nt_max_rows() && a.is_contiguous() && out.is_contiguous()) {
    small_mm_cpu(to_dtype(a.scalar_type()), a.data_ptr(), m.b_dense.data_ptr(), out.data_ptr(), rows, a.size(1),
                 m.b_dense.size(1), accumulate);
  } else {
    mm_into(out, a, m.b, accumulate);
  }
}

// One step of at most small_nt_max_rows() rows on the CPU in float32/float64 (a
// cell call, or a layer over a sequence of one, on the stepwise path): the gate
// products come straight from the weights' rows (small_nt_cpu), not from BLAS
// through transposed views; per call that spares BLAS's setup and a dozen
// dispatcher calls, most of a small cell's time.
bool direct_step(const Tensor& x, const Schedule& s, int64_t B, std::initializer_list<Tensor> weights) {
  if (!x.is_cpu() || s.T != 1 || B < 1 || B > small_nt_max_rows()) return false;
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble) return false;
  for (const Tensor& w : weights)
    if (w.defined() && !w.is_contiguous()) return false;
  return true;
}

// X W_ih^T for every step at once, (N, G).
Tensor input_gates(const Tensor& x2d, const Tensor& w_ih, bool direct) {
  if (!direct) return matmul_nt(x2d, w_ih);
  Tensor out = at::empty({x2d.size(0), w_ih.size(0)}, x2d.options());
  small_nt_cpu(to_dtype(x2d.scalar_type()), x2d.data_ptr(), w_ih.data_ptr(), out.data_ptr(), x2d.size(0),
               w_ih.size(1), w_ih.size(0), false);
  return out;
}

// The backward's products at one such step: dg (rows, G) @ w (G, K), the input's
// gradient, and dg^T a with the column sums of dg for a weight's and its bias's
// gradients. (dh's product is step_mm's small path over W_hh as stored.)
Tensor grad_into_input(const Tensor& dg, const Tensor& w, bool direct) {
  if (!direct) return matmul_nn(dg, w);
  Tensor out = at::empty({dg.size(0), w.size(1)}, dg.options());
  small_mm_cpu(to_dtype(dg.scalar_type()), dg.data_ptr(), w.data_ptr(), out.data_ptr(), dg.size(0), w.size(0),
               w.size(1), false);
  return out;
}
Tensor direct_weight_grad(const Tensor& dg, const Tensor& a, Tensor* db) {
  Tensor dw = at::empty({dg.size(1), a.size(1)}, dg.options());
  if (db) *db = at::empty({dg.size(1)}, dg.options());
  small_tn_cpu(to_dtype(dg.scalar_type()), dg.data_ptr(), a.data_ptr(), dw.data_ptr(), db ? db->data_ptr() : nullptr,
               dg.size(0), dg.size(1), a.size(1));
  return dw;
}

// Rows h_{t-1} for every step, packed like the input, written into hp (N, Hout).
void previous_hidden_into(const Schedule& s, const Tensor& y2d, const Tensor& h0, Tensor hp) {
  if (s.N == 0) return;
  if (!s.packed) {  // one shifted copy
    const int64_t B = s.B, N = s.N;
    if (!s.reverse) {
      hp.narrow(0, 0, B).copy_(h0);
      if (N > B) hp.narrow(0, B, N - B).copy_(y2d.narrow(0, 0, N - B));
    } else {
      hp.narrow(0, N - B, B).copy_(h0);
      if (N > B) hp.narrow(0, 0, N - B).copy_(y2d.narrow(0, B, N - B));
    }
    return;
  }
  for (int64_t k = 0; k < s.T; ++k) {
    const int64_t t = s.time(k), rows = s.bs[t], off = s.offset[t], n = s.inherited(k);
    if (n > 0) hp.narrow(0, off, n).copy_(y2d.narrow(0, s.offset[s.time(k - 1)], n));
    if (n < rows) hp.narrow(0, off + n, rows - n).copy_(h0.narrow(0, n, rows - n));
  }
}

Tensor previous_hidden(const Schedule& s, const Tensor& y2d, const Tensor& h0) {
  Tensor hp = at::empty_like(y2d);
  previous_hidden_into(s, y2d, h0, hp);
  return hp;
}

// Column sum in the accumulation type, returned in the op dtype. Deterministic.
Tensor bias_grad(const Tensor& d_gates, at::ScalarType dtype) {
  return at::sum(d_gates, {0}, false, acc_type(dtype)).to(dtype);
}

// (rows, cols) view of a (..., cols) tensor; explicit rows so cols == 0 works.
Tensor mat(const Tensor& t, int64_t rows, int64_t cols) { return t.reshape({rows, cols}).contiguous(); }


// ------------------------------------------------------------ fused CPU path
// float32/float64 on the CPU run the whole sequence in one fused kernel
// (csrc/cpu/fused_cpu.h); LSTM projection too where folded (below), else it
// takes the per-step path (GEMM + pointwise kernel per step), as half types do.
// RNN_EXT_CPU_PATH (read per call): "stepwise" forces the per-step path;
// "fused" folds every unpacked LSTM projection; "auto" or unset, the default.
std::string cpu_path() { return env_choice("RNN_EXT_CPU_PATH", "fused", "stepwise"); }

// One step (a cell call, or a layer over a sequence of one) takes the stepwise
// path unless forced, but for a forward of more than small_nt_max_rows() rows:
// packing W into the kernels' panels, per call, costs more than a step of a few
// rows, and the fused backward's packing, transposes and weight-gradient kernel
// (sized for long sequences) more than one step's products. Up to that many
// rows the step's products come straight from the weights (direct_step).
// Measured forward, fused / stepwise (Intel Xeon VM, 2 threads, I=H, us):
// LSTMCell H=256 B=2 185 / 104, B=8 251-311 / 193-198, B=16 261 / 322 (with
// the direct products allowed 16 rows); GRUCell H=256 B=8 216-226 / 143-144,
// B=16 236 / 234; RNNCell H=64 B=8 42-44 / 36-38. Before the direct products
// (AMD EPYC VM, BLAS per step): LSTMCell B=8 100 / 145, B=64 223 / 325;
// training (both passes on one path) B=8 732 / 462, B=64 1865 / 1105.
bool use_fused(const Tensor& x, int64_t H, int64_t B, int64_t T, bool backward) {
  if (!x.is_cpu() || H == 0 || B == 0) return false;
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble) return false;
  const std::string path = cpu_path();
  return path == "fused" || (path == "auto" && (T > 1 || (!backward && B > small_nt_max_rows())));
}

// Step order, rows and offsets as the fused kernels take them.
struct FusedSteps {
  std::vector<int64_t> rows, offset;
  fused::Steps view() const { return {static_cast<int64_t>(rows.size()), rows.data(), offset.data()}; }
};

FusedSteps fused_steps(const Schedule& s) {
  FusedSteps f;
  for (int64_t k = 0; k < s.T; ++k) {
    f.rows.push_back(s.bs[s.time(k)]);
    f.offset.push_back(s.offset[s.time(k)]);
  }
  return f;
}

int fused_threads() { return at::in_parallel_region() ? 1 : at::get_num_threads(); }

// The weight gradients on the CPU (float32, float64) come from the fused
// kernels' product (fused::weight_grad), which reads d_gates where they are
// (copying one L1-sized slice at a time): oneDNN would need d_gates and
// [X | H_prev] transposed first, and MKL runs at half speed on AMD. Whole LSTM
// backward, EPYC Zen 5, 2 threads, float32 (against oneDNN with the copies):
// 37 -> 21 ms at T=100, B=32, I=H=256; 106-116 -> 86-93 ms at T=50, B=64,
// I=H=512. It also gives the same bits on any thread count.
// For the stepwise path's gate gradients t (N, G) over T steps: fused::weight_grad
// wants its operands transposed, which for a few rows (a cell's one step) cost more
// than BLAS's product of the rows as they are; where MKL runs at full speed
// (mkl_full_speed: Intel, AMD before Zen 5), so do they for one step of any batch
// (Xeon VM, 2 threads, H=256, cell training, us, fused kernel / products: LSTMCell
// B=64 3011 / 2201, B=32 3060 / 2506, GRUCell B=64 1684 / 1345, RNNCell B=64 826 /
// 725; EPYC Zen 4 VM, 2 threads, RNNCell H=256 weight gradients alone, us: B=32
// 113 / 61, B=64 158 / 107). MKL's sums, unlike the fused kernel's, may change with
// the thread count, and the two give other bits.
bool fused_weight_grad_ok(const Tensor& t, int64_t T) {
  constexpr int64_t kFewRows = 16;
  if (!t.is_cpu() || (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble)) return false;
  return t.size(0) > kFewRows && !(T == 1 && mkl_full_speed());
}

// dst (c, r) = src (r, c)^T, both with contiguous rows (dst may be a narrowed view).
void transpose_into(const Tensor& src, const Tensor& dst) {
  TORCH_INTERNAL_ASSERT(src.stride(1) == 1 && dst.stride(1) == 1 && src.size(0) == dst.size(1) &&
                        src.size(1) == dst.size(0));
  fused::transpose(src.scalar_type() == at::kDouble, src.data_ptr(), src.size(0), src.size(1), src.stride(0),
                   dst.data_ptr(), dst.stride(0), fused_threads());
}

// h_{t-1} of every row, transposed: dst (Hout, N).
void previous_hidden_t_into(const Schedule& s, const Tensor& y2d, const Tensor& h0, const Tensor& dst) {
  if (s.N == 0) return;
  if (s.packed) {
    transpose_into(previous_hidden(s, y2d, h0), dst);
    return;
  }
  const int64_t B = s.B, N = s.N;  // one shifted copy
  transpose_into(h0, dst.narrow(1, s.reverse ? N - B : 0, B));
  if (N > B) transpose_into(y2d.narrow(0, s.reverse ? B : 0, N - B), dst.narrow(1, s.reverse ? 0 : B, N - B));
}

// Weight and bias gradients of one layer (from fused_weight_grad: ih and hh
// are the columns before and after k_split; GRU passes k_split = K, so ih).
struct WeightGrads {
  Tensor ih, hh, bias;
};

// The backward ops' output_mask: which gradients are wanted (the others are
// returned empty, their products skipped).
struct Wanted {
  bool input, states, weights;
  explicit Wanted(std::array<bool, 3> m) : input(m[0]), states(m[1]), weights(m[2]) {}
};

// An output not wanted: empty, as w_hr's gradient without projection. A new one for
// each output: an op's outputs may not alias each other (its schema, and opcheck).
Tensor unwanted(const Tensor& like) { return at::empty({0}, like.options()); }

// d_gates^T a from at = a^T (K, N), its columns split at k_split, and the
// column sums of d_gates in the same pass (the bias gradient: no separate
// reduction over d_gates; 2.6% of an LSTM training step's samples at T=64,
// B=32, I=64, H=128, one thread): the outputs and the arguments for
// fused::weight_grad, which may run later (d_gates need not be filled yet).
struct WeightGradJob {
  Tensor dw, rest, db, dg, at;
  fused::WeightGrad args{};
  WeightGrads result() const { return {dw, rest, db}; }
};

WeightGradJob weight_grad_job(const Tensor& d_gates, const Tensor& at, int64_t k_split) {
  const int64_t G = d_gates.size(1), K = at.size(0);
  WeightGradJob j;
  j.dw = at::empty({G, k_split}, d_gates.options());
  j.rest = at::empty({G, K - k_split}, d_gates.options());
  j.db = at::empty({G}, d_gates.options());
  TORCH_INTERNAL_ASSERT(d_gates.is_contiguous());  // read in place, maybe before it is filled
  j.dg = d_gates;
  j.at = at;
  fused::WeightGrad& w = j.args;
  w.is_double = j.dg.scalar_type() == at::kDouble;
  w.N = j.dg.size(0);
  w.G = G;
  w.K = K;
  w.k_split = k_split;
  w.d_gates = j.dg.data_ptr();
  w.at = at.data_ptr();
  w.dw = j.dw.data_ptr();
  w.dw_rest = j.rest.data_ptr();
  w.d_bias = j.db.data_ptr();
  w.threads = fused_threads();
  return j;
}

WeightGrads fused_weight_grad(const Tensor& d_gates, const Tensor& at, int64_t k_split) {
  const WeightGradJob j = weight_grad_job(d_gates, at, k_split);
  fused::weight_grad(j.args);
  return j.result();
}

// [X | H_prev]^T (I + Hout, N), for the LSTM and RNN weight gradients.
Tensor xh_transposed(const Schedule& s, const Tensor& x2d, const Tensor& y2d, const Tensor& h0) {
  const int64_t I = x2d.size(1), Hout = y2d.size(1);
  Tensor xh_t = empty_big({I + Hout, s.N}, x2d.options());
  transpose_into(x2d, xh_t.narrow(0, 0, I));
  previous_hidden_t_into(s, y2d, h0.contiguous(), xh_t.narrow(0, I, Hout));
  return xh_t;
}

// dW_ih and dW_hh from one product, d_gates^T [X | H_prev], when both multiply
// the same gate gradients (LSTM, RNN): one pass with I + Hout columns runs
// closer to the peak than two (measured with MKL, CPU, 2 threads: 1.40 -> 1.10
// ms at N=1600, G=512, I=64, H=128; 11.6 -> 10.9 ms at N=3200, G=1024, I=H=256).
WeightGrads weight_grads(const Schedule& s, const Tensor& d_gates, const Tensor& x2d, const Tensor& y2d,
                         const Tensor& h0, at::ScalarType dtype) {
  const int64_t I = x2d.size(1), Hout = y2d.size(1);
  if (fused_weight_grad_ok(d_gates, s.T)) return fused_weight_grad(d_gates, xh_transposed(s, x2d, y2d, h0), I);
  // One step (a cell call): h_{t-1} is h0, and two products of the rows as they are, as
  // torch.nn's cells run them, spare the concatenation and the split copies (RNNCell,
  // B=8, H=256: two 256 x 256 copies of ~10 us each, a training call's 5%).
  if (s.T == 1 && direct_step(x2d, s, s.N, {})) {  // a few rows: straight from them (direct_step)
    Tensor db;
    Tensor dw_ih = direct_weight_grad(d_gates, x2d, &db);
    return {dw_ih, direct_weight_grad(d_gates, h0.contiguous(), nullptr), db};
  }
  if (s.T == 1) return {product(d_gates.t(), x2d), product(d_gates.t(), h0), bias_grad(d_gates, dtype)};
  Tensor xh = at::empty({s.N, I + Hout}, x2d.options());
  xh.narrow(1, 0, I).copy_(x2d);
  previous_hidden_into(s, y2d, h0, xh.narrow(1, I, Hout));
  const Tensor dw = product(d_gates.t(), xh);
  return {dw.narrow(1, 0, I).contiguous(), dw.narrow(1, I, Hout).contiguous(), bias_grad(d_gates, dtype)};
}

// A weight for the fused kernels: the dense (G, K) matrix and the scratch they
// pack it into (forward: W_hh with K = H, or W_ih with K = I; or W_hh for the
// backward).
struct Packing {
  Tensor w, scratch;
};

Packing packing_for(fused::Cell cell, const Tensor& w_, int64_t H, bool for_backward) {
  const bool dbl = w_.scalar_type() == at::kDouble;
  Packing p{w_.contiguous(), Tensor()};
  const int64_t K = p.w.size(1);
  p.scratch = at::empty({for_backward ? fused::packed_backward_size(cell, dbl, H)
                                      : fused::packed_forward_size(cell, dbl, H, K)}, p.w.options());
  return p;
}

// The biases that add to X W_ih^T outside any gate product, as one dense
// (G) vector (zeros when there are none).
Tensor input_side_bias(const Tensor& a, const Tensor& b, int64_t G, const at::TensorOptions& options) {
  if (a.defined() && b.defined()) return (a + b).contiguous();
  if (a.defined() || b.defined()) return (a.defined() ? a : b).contiguous();
  return at::zeros({G}, options);
}

// h_n from the fused forward's outputs: each row's output at its last step.
Tensor final_hidden(const FusedSteps& f, const Tensor& y2d, int64_t B) {
  Tensor h_n = at::empty({B, y2d.size(1)}, y2d.options());
  const int64_t T = static_cast<int64_t>(f.rows.size());
  for (int64_t k = 0; k < T; ++k) {
    const int64_t rows = f.rows[k], next = k + 1 < T ? std::min(rows, f.rows[k + 1]) : 0;
    if (next < rows) h_n.narrow(0, next, rows - next).copy_(y2d.narrow(0, f.offset[k] + next, rows - next));
  }
  return h_n;
}

// The fields every fused forward / backward call sets; the caller adds the rest.
fused::Forward fused_forward_args(fused::Cell cell, const FusedSteps& steps, int64_t B, int64_t H, int64_t I,
                                  const Tensor& bias, const Packing& w_hh, const Tensor& h0, const Tensor& y) {
  fused::Forward f{};
  f.cell = cell;
  f.is_double = y.scalar_type() == at::kDouble;
  f.B = B;
  f.H = H;
  f.I = I;
  f.s = steps.view();
  f.bias = bias.data_ptr();
  f.w_hh = w_hh.w.data_ptr();
  f.w_packed = w_hh.scratch.data_ptr();
  f.h0 = h0.data_ptr();
  f.y = y.data_ptr();
  f.threads = fused_threads();
  return f;
}

fused::Backward fused_backward_args(fused::Cell cell, const FusedSteps& steps, int64_t B, int64_t H,
                                    const Packing& w_hh, const Tensor& grad_y, const Tensor& y,
                                    const Tensor& dh_state, const Tensor& d_gates) {
  fused::Backward b{};
  b.cell = cell;
  b.is_double = y.scalar_type() == at::kDouble;
  b.B = B;
  b.H = H;
  b.s = steps.view();
  b.w_hh = w_hh.w.data_ptr();
  b.w_packed = w_hh.scratch.data_ptr();
  b.grad_y = grad_y.data_ptr();
  b.y = y.data_ptr();
  b.dh_state = dh_state.data_ptr();
  b.d_gates = d_gates.data_ptr();
  b.threads = fused_threads();
  return b;
}

// The input side of an LSTM/RNN fused forward: x_t W_ih^T inside the step
// (x and packed W_ih) or precomputed by one GEMM (x_gates); see
// fused::input_product_inside. Returns what must outlive fused::forward(f).
struct InputSide {
  Tensor x_gates;
  Packing w_ih;
};

InputSide set_input_side(fused::Forward& f, fused::Cell cell, const Tensor& x2d, const Tensor& w_ih, int64_t H,
                         int64_t B) {
  InputSide in;
  // (an input of 0 features: x_gates, all zeros; the kernel's x side crashed on it)
  if (fused::input_product_inside(B) && x2d.size(1) > 0) {
    in.w_ih = packing_for(cell, w_ih, H, false);
    f.x = x2d.data_ptr();
    f.w_ih = in.w_ih.w.data_ptr();
    f.w_ih_packed = in.w_ih.scratch.data_ptr();
  } else {
    in.x_gates = matmul_nt(x2d, w_ih);
    f.x_gates = in.x_gates.data_ptr();
  }
  return in;
}

fused::Cell rnn_cell(bool relu) { return relu ? fused::Cell::kRnnRelu : fused::Cell::kRnnTanh; }


// ------------------------------------------- LSTM projection, folded into W_hh
// An LSTM with projection, y_t = W_hr p_t where p_t = o_t * tanh(c_t) has H
// values and y_t Hout < H, is an LSTM without one in p: its gates are
// x_t W_ih^T + W_hh y_{t-1} = x_t W_ih^T + (W_hh W_hr) p_{t-1}. So the
// whole-sequence kernels, which take no projection (fused on the CPU,
// persistent on CUDA), run it with W_hh W_hr (G, H) as their W_hh and p as
// their output, from p = 0 before the first step, whose h0 term W_hh h0 is
// added to its input projection instead; the outputs are then P W_hr^T, one
// product after the loop. The backward runs in p likewise: dL/dp_t from the
// output is W_hr^T dL/dy_t (one product before the loop), and one product
// after it, W_hh^T times the gate gradients, gives dL/dh0 and the recurrent
// share of each dL/dy_t (for dW_hr). Unpacked input only: every row starts at
// the first step. The products in this order round differently from the
// per-step path's, by as much (both are tested against float64).
// The folded step multiplies by G x H instead of G x Hout and Hout x H. On the
// CPU (AMD EPYC VM, 2 threads, float32, the median of 9 calls, against the
// per-step path) the folded forward won at H = 2 Hout from B = 8 up (T=100 with
// (I, H, Hout) = (128, 128, 64), (256, 256, 128), (256, 512, 256) and T=50 with
// (512, 512, 256), B = 8, 32, 64: 0.40-0.90x the time, inference and training
// forward, one point 1.05x) and lost at B = 1 from H = 512 (1.3-2.2x); at
// H = 4 Hout it was 0.85-1.12x; the folded backward won at one point of 15
// (T=100 B=8 H=256 Hout=128, 0.79x) and lost up to 2.3x at B = 1. So the CPU
// folds the forward where H <= 2 Hout and B >= 8 and never the backward, unless
// RNN_EXT_CPU_PATH=fused (both, at any size). On CUDA both fold wherever the
// persistent kernels are wanted: they run a step in microseconds where the
// per-step path launches four kernels (not measured yet).
bool projection_folded(const Tensor& x, const Schedule& s, int64_t H, int64_t Hout, int64_t B, bool backward) {
  if (s.packed || s.T == 0 || B == 0) return false;
  if (x.is_cpu())
    return use_fused(x, H, B, s.T, backward) && (cpu_path() == "fused" || (!backward && H <= 2 * Hout && B >= 8));
#ifdef RNN_EXT_WITH_CUDA
  return persistent_wanted(x, s);
#else
  return false;
#endif
}

// W_hh W_hr (G, H): the folded recurrence's own W_hh, multiplied at every step,
// so in full float32 whatever the TF32 setting (at::NoTF32Guard; one product a
// call), as the scalar persistent kernels and the fused CPU ones multiply.
Tensor fold_weights(const Tensor& w_hh, const Tensor& w_hr) {
  at::NoTF32Guard full_float32;
  return product(w_hh, w_hr);
}

// p_t = o_t * tanh(c_t) of every row (N, H), what W_hr multiplies, from the
// forward's workspace [i f g o | c] (for dW_hr, on either path).
Tensor projection_inputs(const Tensor& ws, int64_t H, at::ScalarType dtype) {
  return (ws.narrow(1, 3 * H, H) * at::tanh(ws.narrow(1, 4 * H, H))).to(dtype);
}

// Rows of the step processed first (every row starts there: unpacked).
Tensor first_step_rows(const Schedule& s, const Tensor& t) { return t.narrow(0, s.reverse ? s.N - s.B : 0, s.B); }

using LstmForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using LstmBackwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// The folded forward, or false when the kernel declined the shape (persistent
// CUDA; nothing ran, the per-step path takes the call).
bool lstm_projection_folded_forward(const Tensor& input, const Schedule& s, const Tensor& h0, const Tensor& c0,
                                    const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh,
                                    const Tensor& w_hr, bool need_grad, LstmForwardResult* out) {
  const int64_t G = w_hh.size(0), H = G / 4, I = w_ih.size(1), B = s.B;
  const auto dtype = input.scalar_type(), acc = acc_type(dtype);
  const Tensor w_fold = fold_weights(w_hh, w_hr);               // (G, H)
  Tensor x_gates = matmul_nt(mat(input, s.N, I), w_ih);  // (N, G)
  mm_into(first_step_rows(s, x_gates), h0, w_hh.t(), /*accumulate=*/true);
  const Tensor p0 = at::zeros({B, H}, input.options());
  Tensor p = at::empty({s.N, H}, input.options());
  Tensor c_state = c0.to(acc).contiguous().clone();
  Tensor ws = empty_big({need_grad ? s.N : 0, 5 * H}, input.options().dtype(acc));
  if (input.is_cpu()) {
    const FusedSteps steps = fused_steps(s);
    const Tensor bias = input_side_bias(b_ih, b_hh, G, input.options());
    const Packing wp = packing_for(fused::Cell::kLstm, w_fold, H, false);
    fused::Forward f = fused_forward_args(fused::Cell::kLstm, steps, B, H, I, bias, wp, p0, p);
    f.x_gates = x_gates.data_ptr();
    f.c_state = c_state.data_ptr();
    f.ws = need_grad ? ws.data_ptr() : nullptr;
    fused::forward(f);
  } else {
#ifdef RNN_EXT_WITH_CUDA
    SequenceArgs args =
        sequence_args(SequenceCell::kLstm, s, H, x_gates, b_ih, b_hh, w_fold, p0, p, current_cuda_stream());
    args.a.c_state = c_state.data_ptr();
    args.a.workspace = need_grad ? ws.data_ptr() : nullptr;
    if (!sequence_forward_cuda(args.a)) return false;
#else
    return false;
#endif
  }
  const Tensor y = matmul_nt(p, w_hr);  // (N, Hout)
  *out = {as_output(y, input, w_hr.size(0)), last_rows(s, y), c_state.to(dtype), ws};
  return true;
}

// The folded backward (gy: (N, Hout) dense; y2d: the forward's outputs), or
// false when the kernel declined the shape (as the forward).
bool lstm_projection_folded_backward(const Tensor& input, const Schedule& s, const Tensor& x2d, const Tensor& y2d,
                                     const Tensor& gy, const Tensor& grad_h_n, const Tensor& grad_c_n,
                                     const Tensor& h0, const Tensor& c0_acc, const Tensor& w_ih, const Tensor& w_hh,
                                     const Tensor& w_hr, const Tensor& ws, LstmBackwardResult* out) {
  const int64_t G = w_hh.size(0), H = G / 4, I = w_ih.size(1), B = s.B, N = s.N;
  const auto dtype = input.scalar_type(), acc = acc_type(dtype);
  const Tensor w_fold = fold_weights(w_hh, w_hr);  // (G, H)
  const Tensor gy_p = product(gy, w_hr);      // (N, H): dL/dp_t from the output
  Tensor dp_state = product(grad_h_n, w_hr);  // (B, H): dL/dp at the last step from h_n in; the kernels' dh0 out, unused
  const Tensor p = projection_inputs(ws, H, dtype);  // (LSTM kernels do not read it as their y)
  const Tensor p0 = at::zeros({B, H}, input.options());
  Tensor dc_state = grad_c_n.to(acc).contiguous().clone();
  Tensor d_gates = empty_big({N, G}, input.options());
  WeightGrads weights;
  if (input.is_cpu()) {
    const FusedSteps steps = fused_steps(s);
    const Packing wp = packing_for(fused::Cell::kLstm, w_fold, H, true);
    fused::Backward b = fused_backward_args(fused::Cell::kLstm, steps, B, H, wp, gy_p, p, dp_state, d_gates);
    b.h0 = p0.data_ptr();
    b.c0 = c0_acc.data_ptr();
    b.ws = ws.data_ptr();
    b.dc_state = dc_state.data_ptr();
    WeightGradJob wg = weight_grad_job(d_gates, xh_transposed(s, x2d, y2d, h0), I);
    fused::backward_and_weight_grads(b, &wg.args, 1);
    weights = wg.result();
  } else {
#ifdef RNN_EXT_WITH_CUDA
    SequenceBackwardArgs args = sequence_backward_args(SequenceCell::kLstm, s, H, w_fold, p0, gy_p, p, ws, dp_state,
                                                       d_gates, current_cuda_stream());
    args.a.c0 = c0_acc.data_ptr();
    args.a.grad_c = dc_state.data_ptr();
    if (!sequence_backward_cuda(args.a)) return false;
    weights = weight_grads(s, d_gates, x2d, y2d, h0, dtype);
#else
    return false;
#endif
  }
  // W_hh^T dL/dgates of each step: the gradient of the h_{t-1} it read (h0 at the first step)
  const Tensor into_prev = product(d_gates, w_hh);  // (N, Hout)
  Tensor d_y = gy.clone();                          // dL/dy_t: from the output, the next step and h_n
  if (N > B) {
    if (s.reverse)
      d_y.narrow(0, B, N - B).add_(into_prev.narrow(0, 0, N - B));
    else
      d_y.narrow(0, 0, N - B).add_(into_prev.narrow(0, B, N - B));
  }
  d_y.narrow(0, s.reverse ? 0 : N - B, B).add_(grad_h_n);
  Tensor dx = matmul_nn(d_gates, w_ih).view(input.sizes());
  *out = {dx,
          first_step_rows(s, into_prev).clone(),
          dc_state.to(dtype),
          weights.ih,
          weights.hh,
          weights.bias,
          weights.bias.clone(),
          product(d_y.t(), p)};
  return true;
}

}  // namespace

// ================================================================= LSTM
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(
    const Tensor& input, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih_, const OptTensor& b_hh_, const OptTensor& w_hr_, const OptTensor& batch_sizes,
    bool reverse, bool need_grad) {
  const char* op = "rnn_ext::lstm_forward";
  const NoAutocast no_autocast;
  // the kernels read biases through raw pointers: make them dense
  Tensor b_ih = contig(opt(b_ih_)), b_hh = contig(opt(b_hh_)), w_hr = opt(w_hr_);
  check_args(op, input, {{"h0", h0}, {"c0", c0}, {"w_ih", w_ih}, {"w_hh", w_hh}, {"b_ih", b_ih}, {"b_hh", b_hh}, {"w_hr", w_hr}});
  c10::OptionalDeviceGuard guard(input.device());
  TORCH_CHECK(w_ih.dim() == 2 && w_hh.dim() == 2 && w_hh.size(0) % 4 == 0, op, ": bad weight shapes");
  const int64_t H = w_hh.size(0) / 4, G = 4 * H, I = w_ih.size(1);
  const bool proj = w_hr.defined();
  const int64_t Hout = proj ? w_hr.size(0) : H;
  TORCH_CHECK(h0.dim() == 2 && c0.dim() == 2, op, ": h0 and c0 must be 2-D (batch, hidden)");
  const int64_t B = h0.size(0);
  check_shape(op, "w_ih", w_ih, {G, I});
  check_shape(op, "w_hh", w_hh, {G, Hout});
  if (proj) check_shape(op, "w_hr", w_hr, {Hout, H});
  if (b_ih.defined()) check_shape(op, "b_ih", b_ih, {G});
  if (b_hh.defined()) check_shape(op, "b_hh", b_hh, {G});
  check_shape(op, "h0", h0, {B, Hout});
  check_shape(op, "c0", c0, {B, H});
  TORCH_CHECK(input.size(-1) == I, op, ": input has ", input.size(-1), " features, expected ", I);
  const Schedule s = make_schedule(input, batch_sizes, B, reverse);
  const auto dtype = input.scalar_type(), acc = acc_type(dtype);
  if (!proj && use_fused(input, H, B, s.T, /*backward=*/false)) {
    const FusedSteps steps = fused_steps(s);
    const Tensor x2d = mat(input, s.N, I);
    const Tensor bias = input_side_bias(b_ih, b_hh, G, input.options());
    const Packing wp = packing_for(fused::Cell::kLstm, w_hh, H, false);
    const Tensor h0c = h0.contiguous();
    Tensor y = at::empty({s.N, H}, input.options());
    Tensor c_state = c0.contiguous().clone();
    Tensor ws = empty_big({need_grad ? s.N : 0, 5 * H}, input.options());
    fused::Forward f = fused_forward_args(fused::Cell::kLstm, steps, B, H, I, bias, wp, h0c, y);
    const InputSide in = set_input_side(f, fused::Cell::kLstm, x2d, w_ih, H, B);
    f.c_state = c_state.data_ptr();
    f.ws = need_grad ? ws.data_ptr() : nullptr;
    fused::forward(f);
    return {as_output(y, input, H), final_hidden(steps, y, B), c_state, ws};
  }
  LstmForwardResult folded;
  if (proj && projection_folded(input, s, H, Hout, B, /*backward=*/false) &&
      lstm_projection_folded_forward(input, s, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, need_grad, &folded))
    return folded;
  const Kernels k = kernels_for(input);
  const bool direct = direct_step(input, s, B, {w_ih, w_hh, w_hr});

  Tensor x_gates = input_gates(mat(input, s.N, I), w_ih, direct);  // (N, 4H), all steps at once
  Tensor y = at::empty({s.N, Hout}, input.options());
  Tensor c_state = c0.to(acc).contiguous().clone();
  Tensor ws = empty_big({need_grad ? s.N : 0, 5 * H}, input.options().dtype(acc));
#ifdef RNN_EXT_WITH_CUDA
  if (!proj && persistent_wanted(input, s)) {
    SequenceArgs args = sequence_args(SequenceCell::kLstm, s, H, x_gates, b_ih, b_hh, w_hh, h0, y, k.stream);
    args.a.c_state = c_state.data_ptr();
    args.a.workspace = need_grad ? ws.data_ptr() : nullptr;
    if (sequence_forward_cuda(args.a))
      return {as_output(y, input, H), last_rows(s, y), c_state.to(dtype), ws};
  }
#endif
  Tensor h_state = h0.contiguous().clone();
  Tensor h_gates = at::empty({B, G}, input.options());
  Tensor h_pre = proj ? at::empty({B, H}, input.options()) : Tensor();
  const bool small = small_path_ok(input, B, s.T);
  const StepMatrix w_hh_t = StepMatrix::transposed(w_hh, small, direct),
                   w_hr_t = StepMatrix::transposed(proj ? w_hr : Tensor(), small, direct);

  for (int64_t step = 0; step < s.T; ++step) {
    const int64_t t = s.time(step), rows = s.bs[t], off = s.offset[t];
    if (rows == 0) continue;
    Tensor hg = rows_of(h_gates, 0, rows);
    step_mm(hg, rows_of(h_state, 0, rows), w_hh_t);
    LstmForwardStep a{};
    a.dtype = to_dtype(dtype);
    a.rows = rows;
    a.hidden = H;
    a.x_gates = row_ptr(x_gates, off);
    a.h_gates = hg.data_ptr();
    a.b_ih = opt_ptr(b_ih);
    a.b_hh = opt_ptr(b_hh);
    a.c_state = c_state.data_ptr();
    a.h_out = proj ? h_pre.data_ptr() : row_ptr(y, off);
    a.h_out_stride = proj ? H : Hout;
    a.h_state = proj ? nullptr : h_state.data_ptr();
    a.workspace = need_grad ? row_ptr(ws, off) : nullptr;
    a.stream = k.stream;
    k.lstm_fwd(a);
    if (proj) {
      Tensor y_t = rows_of(y, off, rows);
      step_mm(y_t, rows_of(h_pre, 0, rows), w_hr_t);
      rows_of(h_state, 0, rows).copy_(y_t);
    }
  }
  return {as_output(y, input, Hout), h_state, c_state.to(dtype), ws};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& input,
    const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& w_hr_,
    const OptTensor& batch_sizes, bool reverse, const Tensor& output, const Tensor& ws_,
    std::array<bool, 3> output_mask) {
  const char* op = "rnn_ext::lstm_backward";
  const Wanted want(output_mask);
  const NoAutocast no_autocast;
  const Tensor ws = ws_.contiguous();  // read through raw pointers
  Tensor w_hr = opt(w_hr_);
  check_args(op, input, {{"grad_output", grad_output}, {"grad_h_n", grad_h_n}, {"grad_c_n", grad_c_n}, {"h0", h0},
                         {"c0", c0}, {"w_ih", w_ih}, {"w_hh", w_hh}, {"w_hr", w_hr}, {"output", output}});
  c10::OptionalDeviceGuard guard(input.device());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % 4 == 0, op, ": bad w_hh shape ", w_hh.sizes());
  const int64_t H = w_hh.size(0) / 4, G = 4 * H, I = w_ih.size(1);
  const bool proj = w_hr.defined();
  const int64_t Hout = proj ? w_hr.size(0) : H, B = h0.size(0);
  check_backward(op, input, h0, w_ih, w_hh, G, Hout, output, grad_output);
  check_shape(op, "c0", c0, {B, H});
  if (proj) check_shape(op, "w_hr", w_hr, {Hout, H});
  const Schedule s = make_schedule(input, batch_sizes, B, reverse);
  const auto dtype = input.scalar_type(), acc = acc_type(dtype);
  check_workspace(op, ws, s.N, 5 * H, acc);
  check_shape(op, "grad_h_n", grad_h_n, {B, Hout});
  check_shape(op, "grad_c_n", grad_c_n, {B, H});
  const Kernels k = kernels_for(input);

  const Tensor x2d = mat(input, s.N, I), y2d = mat(output, s.N, Hout), gy = mat(grad_output, s.N, Hout);
  const Tensor c0_acc = c0.to(acc).contiguous();
  LstmBackwardResult folded;
  if (proj && projection_folded(input, s, H, Hout, B, /*backward=*/true) &&
      lstm_projection_folded_backward(input, s, x2d, y2d, gy, grad_h_n, grad_c_n, h0, c0_acc, w_ih, w_hh, w_hr, ws,
                                      &folded)) {
    auto& [dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, dw_hr] = folded;  // (the folded path computes them all)
    if (!want.input) dx = unwanted(input);
    if (!want.states)
      for (Tensor* t : {&dh, &dc}) *t = unwanted(input);
    if (!want.weights)
      for (Tensor* t : {&dw_ih, &dw_hh, &db_ih, &db_hh, &dw_hr}) *t = unwanted(input);
    return folded;
  }
  Tensor dh_state = grad_h_n.contiguous().clone();
  Tensor dc_state = grad_c_n.to(acc).contiguous().clone();
  Tensor d_gates = empty_big({s.N, G}, input.options());
  Tensor c_mix = s.packed ? at::empty({B, H}, c0_acc.options()) : Tensor();
  Tensor d_y = proj ? at::empty({s.N, Hout}, input.options()) : Tensor();
  Tensor dh_pre = proj ? at::empty({B, H}, input.options()) : Tensor();
  const Tensor ws_c = ws.narrow(1, 4 * H, H);
  const bool small = small_path_ok(input, B, s.T);
  const bool fuse = !proj && use_fused(input, H, B, s.T, /*backward=*/true);
  WeightGradJob wg;  // the fused path sums the weight gradients along with the recurrence
  if (fuse) {
    const FusedSteps steps = fused_steps(s);
    const Packing wp = packing_for(fused::Cell::kLstm, w_hh, H, true);
    const Tensor h0c = h0.contiguous();
    fused::Backward b = fused_backward_args(fused::Cell::kLstm, steps, B, H, wp, gy, y2d, dh_state, d_gates);
    b.h0 = h0c.data_ptr();
    b.c0 = c0_acc.data_ptr();
    b.ws = ws.data_ptr();
    b.dc_state = dc_state.data_ptr();
    if (want.weights) wg = weight_grad_job(d_gates, xh_transposed(s, x2d, y2d, h0), I);
    fused::backward_and_weight_grads(b, &wg.args, want.weights ? 1 : 0);
  }
  bool done = fuse;  // every step's gate gradients, dh_state and dc_state are final
  const bool direct = !fuse && !proj && direct_step(input, s, B, {w_ih, w_hh});
  const StepMatrix w_hh_m(w_hh, small || direct), w_hr_m(proj ? w_hr : Tensor(), small && proj);
#ifdef RNN_EXT_WITH_CUDA
  if (!done && !proj && persistent_wanted(input, s)) {
    SequenceBackwardArgs args =
        sequence_backward_args(SequenceCell::kLstm, s, H, w_hh, h0, gy, y2d, ws, dh_state, d_gates, k.stream);
    args.a.c0 = c0_acc.data_ptr();
    args.a.grad_c = dc_state.data_ptr();
    done = sequence_backward_cuda(args.a);
  }
#endif

  // stepwise path (skipped when the fused or persistent kernel already ran every step)
  for (int64_t step = done ? -1 : s.T - 1; step >= 0; --step) {
    const int64_t t = s.time(step), rows = s.bs[t], off = s.offset[t];
    if (rows == 0) continue;
    const int64_t n = s.inherited(step);
    const int64_t prev_off = step > 0 ? s.offset[s.time(step - 1)] : 0;
    LstmBackwardStep a{};
    if (n == rows) {  // c_{t-1} straight from the cache
      a.c_prev = row_ptr(ws_c, prev_off);
      a.c_prev_stride = 5 * H;
    } else if (n == 0) {
      a.c_prev = c0_acc.data_ptr();
      a.c_prev_stride = H;
    } else {  // some rows continue, some start from c0
      c_mix.narrow(0, 0, n).copy_(ws_c.narrow(0, prev_off, n));
      c_mix.narrow(0, n, rows - n).copy_(c0_acc.narrow(0, n, rows - n));
      a.c_prev = c_mix.data_ptr();
      a.c_prev_stride = H;
    }
    if (proj) {
      Tensor dy_t = d_y.narrow(0, off, rows);
      at::add_out(dy_t, gy.narrow(0, off, rows), dh_state.narrow(0, 0, rows));
      Tensor dhp = dh_pre.narrow(0, 0, rows);
      step_mm(dhp, dy_t, w_hr_m);
      a.grad_h_a = dh_pre.data_ptr();
      a.grad_h_b = nullptr;
    } else {
      a.grad_h_a = row_ptr(gy, off);
      a.grad_h_b = dh_state.data_ptr();
    }
    a.dtype = to_dtype(dtype);
    a.rows = rows;
    a.hidden = H;
    a.workspace = row_ptr(ws, off);
    a.grad_c_state = dc_state.data_ptr();
    a.grad_gates = row_ptr(d_gates, off);
    a.stream = k.stream;
    k.lstm_bwd(a);
    if (step == 0 && !want.states) break;  // the product below would only be h0's gradient
    Tensor dh = rows_of(dh_state, 0, rows);
    step_mm(dh, rows_of(d_gates, off, rows), w_hh_m);
  }

  Tensor dx = want.input ? grad_into_input(d_gates, w_ih, direct).view(input.sizes()) : unwanted(input);
  const Tensor dh0 = want.states ? dh_state : unwanted(input);
  const Tensor dc0 = want.states ? dc_state.to(dtype) : unwanted(input);
  if (!want.weights)
    return {dx, dh0, dc0, unwanted(input), unwanted(input), unwanted(input), unwanted(input), unwanted(input)};
  auto [dw_ih, dw_hh, db] = fuse ? wg.result() : weight_grads(s, d_gates, x2d, y2d, h0, dtype);
  Tensor dw_hr = unwanted(input);
  if (proj) dw_hr = product(d_y.t(), projection_inputs(ws, H, dtype));
  return {dx, dh0, dc0, dw_ih, dw_hh, db, db.clone(), dw_hr};
}

// ================================================================= GRU
std::tuple<Tensor, Tensor, Tensor> gru_forward(
    const Tensor& input, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih_,
    const OptTensor& b_hh_, const OptTensor& batch_sizes, bool reverse, bool need_grad) {
  const char* op = "rnn_ext::gru_forward";
  const NoAutocast no_autocast;
  Tensor b_ih = contig(opt(b_ih_)), b_hh = contig(opt(b_hh_));  // read through raw pointers
  check_args(op, input, {{"h0", h0}, {"w_ih", w_ih}, {"w_hh", w_hh}, {"b_ih", b_ih}, {"b_hh", b_hh}});
  c10::OptionalDeviceGuard guard(input.device());
  TORCH_CHECK(w_ih.dim() == 2 && w_hh.dim() == 2 && w_hh.size(0) % 3 == 0, op, ": bad weight shapes");
  const int64_t H = w_hh.size(0) / 3, G = 3 * H, I = w_ih.size(1);
  TORCH_CHECK(h0.dim() == 2, op, ": h0 must be 2-D (batch, hidden)");
  const int64_t B = h0.size(0);
  check_shape(op, "w_ih", w_ih, {G, I});
  check_shape(op, "w_hh", w_hh, {G, H});
  if (b_ih.defined()) check_shape(op, "b_ih", b_ih, {G});
  if (b_hh.defined()) check_shape(op, "b_hh", b_hh, {G});
  check_shape(op, "h0", h0, {B, H});
  TORCH_CHECK(input.size(-1) == I, op, ": input has ", input.size(-1), " features, expected ", I);
  const Schedule s = make_schedule(input, batch_sizes, B, reverse);
  const auto dtype = input.scalar_type(), acc = acc_type(dtype);
  if (use_fused(input, H, B, s.T, /*backward=*/false)) {
    // b_hr and b_hz join the input side; b_hn stays inside r * (W_hn h + b_hn)
    Tensor b_hn = b_hh.defined() ? b_hh.narrow(0, 2 * H, H).contiguous() : at::zeros({H}, input.options());
    Tensor b_side = b_hh.defined() ? at::cat({b_hh.narrow(0, 0, 2 * H), at::zeros({H}, input.options())}) : Tensor();
    const FusedSteps steps = fused_steps(s);
    const Tensor x_gates = matmul_nt(mat(input, s.N, I), w_ih);
    const Tensor bias = input_side_bias(b_ih, b_side, G, input.options());
    const Packing wp = packing_for(fused::Cell::kGru, w_hh, H, false);
    const Tensor h0c = h0.contiguous();
    Tensor y = at::empty({s.N, H}, input.options());
    Tensor ws = empty_big({need_grad ? s.N : 0, 4 * H}, input.options());
    fused::Forward f = fused_forward_args(fused::Cell::kGru, steps, B, H, I, bias, wp, h0c, y);
    f.x_gates = x_gates.data_ptr();
    f.b_hn = b_hn.data_ptr();
    f.ws = need_grad ? ws.data_ptr() : nullptr;
    fused::forward(f);
    return {as_output(y, input, H), final_hidden(steps, y, B), ws};
  }
  const Kernels k = kernels_for(input);
  const bool direct = direct_step(input, s, B, {w_ih, w_hh});

  Tensor x_gates = input_gates(mat(input, s.N, I), w_ih, direct);
  Tensor y = at::empty({s.N, H}, input.options());
  Tensor ws = empty_big({need_grad ? s.N : 0, 4 * H}, input.options().dtype(acc));
#ifdef RNN_EXT_WITH_CUDA
  if (persistent_wanted(input, s)) {
    SequenceArgs args = sequence_args(SequenceCell::kGru, s, H, x_gates, b_ih, b_hh, w_hh, h0, y, k.stream);
    args.a.workspace = need_grad ? ws.data_ptr() : nullptr;
    if (sequence_forward_cuda(args.a)) return {as_output(y, input, H), last_rows(s, y), ws};
  }
#endif
  Tensor h_state = h0.contiguous().clone();
  Tensor h_gates = at::empty({B, G}, input.options());
  const StepMatrix w_hh_t = StepMatrix::transposed(w_hh, small_path_ok(input, B, s.T), direct);

  for (int64_t step = 0; step < s.T; ++step) {
    const int64_t t = s.time(step), rows = s.bs[t], off = s.offset[t];
    if (rows == 0) continue;
    Tensor hg = rows_of(h_gates, 0, rows);
    step_mm(hg, rows_of(h_state, 0, rows), w_hh_t);
    GruForwardStep a{};
    a.dtype = to_dtype(dtype);
    a.rows = rows;
    a.hidden = H;
    a.x_gates = row_ptr(x_gates, off);
    a.h_gates = hg.data_ptr();
    a.b_ih = opt_ptr(b_ih);
    a.b_hh = opt_ptr(b_hh);
    a.h_state = h_state.data_ptr();
    a.h_out = row_ptr(y, off);
    a.workspace = need_grad ? row_ptr(ws, off) : nullptr;
    a.stream = k.stream;
    k.gru_fwd(a);
  }
  return {as_output(y, input, H), h_state, ws};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& batch_sizes, bool reverse,
    const Tensor& output, const Tensor& ws_, std::array<bool, 3> output_mask) {
  const char* op = "rnn_ext::gru_backward";
  const Wanted want(output_mask);
  const NoAutocast no_autocast;
  const Tensor ws = ws_.contiguous();  // read through raw pointers
  check_args(op, input, {{"grad_output", grad_output}, {"grad_h_n", grad_h_n}, {"h0", h0}, {"w_ih", w_ih},
                         {"w_hh", w_hh}, {"output", output}});
  c10::OptionalDeviceGuard guard(input.device());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % 3 == 0, op, ": bad w_hh shape ", w_hh.sizes());
  const int64_t H = w_hh.size(0) / 3, G = 3 * H, I = w_ih.size(1), B = h0.size(0);
  check_backward(op, input, h0, w_ih, w_hh, G, H, output, grad_output);
  const Schedule s = make_schedule(input, batch_sizes, B, reverse);
  const auto dtype = input.scalar_type(), acc = acc_type(dtype);
  check_workspace(op, ws, s.N, 4 * H, acc);
  check_shape(op, "grad_h_n", grad_h_n, {B, H});
  const Kernels k = kernels_for(input);

  const Tensor x2d = mat(input, s.N, I), gy = mat(grad_output, s.N, H);
  Tensor dh_state = grad_h_n.contiguous().clone();
  Tensor dg_ih = empty_big({s.N, G}, input.options());
  Tensor dg_hh = empty_big({s.N, G}, input.options());
  const bool fuse = use_fused(input, H, B, s.T, /*backward=*/true);
  WeightGradJob wg[2];  // the fused path sums the weight gradients along with the recurrence
  if (fuse) {
    const FusedSteps steps = fused_steps(s);
    const Packing wp = packing_for(fused::Cell::kGru, w_hh, H, true);
    const Tensor y2d = mat(output, s.N, H), h0c = h0.contiguous();
    fused::Backward b = fused_backward_args(fused::Cell::kGru, steps, B, H, wp, gy, y2d, dh_state, dg_ih);
    b.h0 = h0c.data_ptr();
    b.ws = ws.data_ptr();
    b.d_gates_hh = dg_hh.data_ptr();
    if (want.weights) {
      Tensor x_t = empty_big({I, s.N}, input.options()), h_t = empty_big({H, s.N}, input.options());
      transpose_into(x2d, x_t);
      previous_hidden_t_into(s, y2d, h0c, h_t);
      wg[0] = weight_grad_job(dg_ih, x_t, I);
      wg[1] = weight_grad_job(dg_hh, h_t, H);
    }
    const fused::WeightGrad args[2] = {wg[0].args, wg[1].args};
    fused::backward_and_weight_grads(b, args, want.weights ? 2 : 0);
  }

  bool done = fuse;  // every step's gate gradients and dh_state are final
  const Tensor y2d = fuse ? Tensor() : mat(output, s.N, H);
#ifdef RNN_EXT_WITH_CUDA
  if (!done && persistent_wanted(input, s)) {
    SequenceBackwardArgs args =
        sequence_backward_args(SequenceCell::kGru, s, H, w_hh, h0, gy, y2d, ws, dh_state, dg_ih, k.stream);
    args.a.grad_gates_hh = dg_hh.data_ptr();
    done = sequence_backward_cuda(args.a);
  }
#endif
  const Tensor h_prev = fuse ? Tensor() : previous_hidden(s, y2d, h0.contiguous());
  const bool direct = !fuse && direct_step(input, s, B, {w_ih, w_hh});
  const StepMatrix w_hh_m(w_hh, small_path_ok(input, B, s.T) || direct);  // (direct: W_hh as stored, no copy)
  // stepwise path (skipped when the fused or persistent kernel already ran every step)
  for (int64_t step = done ? -1 : s.T - 1; step >= 0; --step) {
    const int64_t t = s.time(step), rows = s.bs[t], off = s.offset[t];
    if (rows == 0) continue;
    GruBackwardStep a{};
    a.dtype = to_dtype(dtype);
    a.rows = rows;
    a.hidden = H;
    a.grad_h_a = row_ptr(gy, off);
    a.grad_h_b = dh_state.data_ptr();
    a.h_prev = row_ptr(h_prev, off);
    a.workspace = row_ptr(ws, off);
    a.grad_gates_ih = row_ptr(dg_ih, off);
    a.grad_gates_hh = row_ptr(dg_hh, off);
    a.grad_h_prev = dh_state.data_ptr();  // dh*z, then += dG_hh W_hh below
    a.stream = k.stream;
    k.gru_bwd(a);
    if (step == 0 && !want.states) break;  // the product below would only be h0's gradient
    Tensor dh = rows_of(dh_state, 0, rows);
    step_mm(dh, rows_of(dg_hh, off, rows), w_hh_m, /*accumulate=*/true);
  }
  Tensor dx = want.input ? grad_into_input(dg_ih, w_ih, direct).view(input.sizes()) : unwanted(input);
  const Tensor dh0 = want.states ? dh_state : unwanted(input);
  if (!want.weights) return {dx, dh0, unwanted(input), unwanted(input), unwanted(input), unwanted(input)};
  Tensor dw_ih, dw_hh, db_ih, db_hh;
  if (fuse || fused_weight_grad_ok(dg_ih, s.T)) {  // the fused path summed them already
    WeightGrads g_ih, g_hh;
    if (fuse) {
      g_ih = wg[0].result();
      g_hh = wg[1].result();
    } else {
      Tensor x_t = empty_big({I, s.N}, input.options()), h_t = empty_big({H, s.N}, input.options());
      transpose_into(x2d, x_t);
      transpose_into(h_prev, h_t);  // the stepwise path built it already
      g_ih = fused_weight_grad(dg_ih, x_t, I);
      g_hh = fused_weight_grad(dg_hh, h_t, H);
    }
    dw_ih = g_ih.ih;
    db_ih = g_ih.bias;
    dw_hh = g_hh.ih;
    db_hh = g_hh.bias;
  } else if (direct) {
    dw_ih = direct_weight_grad(dg_ih, x2d, &db_ih);
    dw_hh = direct_weight_grad(dg_hh, h_prev, &db_hh);
  } else {
    dw_ih = product(dg_ih.t(), x2d);
    dw_hh = product(dg_hh.t(), h_prev);
    db_ih = bias_grad(dg_ih, dtype);
    db_hh = bias_grad(dg_hh, dtype);
  }
  return {dx, dh0, dw_ih, dw_hh, db_ih, db_hh};
}

// ================================================================= RNN
std::tuple<Tensor, Tensor> rnn_forward(
    const Tensor& input, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih_,
    const OptTensor& b_hh_, const OptTensor& batch_sizes, bool relu, bool reverse) {
  const char* op = "rnn_ext::rnn_forward";
  const NoAutocast no_autocast;
  Tensor b_ih = contig(opt(b_ih_)), b_hh = contig(opt(b_hh_));  // read through raw pointers
  check_args(op, input, {{"h0", h0}, {"w_ih", w_ih}, {"w_hh", w_hh}, {"b_ih", b_ih}, {"b_hh", b_hh}});
  c10::OptionalDeviceGuard guard(input.device());
  TORCH_CHECK(w_ih.dim() == 2 && w_hh.dim() == 2, op, ": bad weight shapes");
  const int64_t H = w_hh.size(0), I = w_ih.size(1);
  TORCH_CHECK(h0.dim() == 2, op, ": h0 must be 2-D (batch, hidden)");
  const int64_t B = h0.size(0);
  check_shape(op, "w_ih", w_ih, {H, I});
  check_shape(op, "w_hh", w_hh, {H, H});
  if (b_ih.defined()) check_shape(op, "b_ih", b_ih, {H});
  if (b_hh.defined()) check_shape(op, "b_hh", b_hh, {H});
  check_shape(op, "h0", h0, {B, H});
  TORCH_CHECK(input.size(-1) == I, op, ": input has ", input.size(-1), " features, expected ", I);
  const Schedule s = make_schedule(input, batch_sizes, B, reverse);
  const auto dtype = input.scalar_type();
  if (use_fused(input, H, B, s.T, /*backward=*/false)) {
    const FusedSteps steps = fused_steps(s);
    const Tensor x2d = mat(input, s.N, I);
    const Tensor bias = input_side_bias(b_ih, b_hh, H, input.options());
    const Packing wp = packing_for(rnn_cell(relu), w_hh, H, false);
    const Tensor h0c = h0.contiguous();
    Tensor y = at::empty({s.N, H}, input.options());
    fused::Forward f = fused_forward_args(rnn_cell(relu), steps, B, H, I, bias, wp, h0c, y);
    const InputSide in = set_input_side(f, rnn_cell(relu), x2d, w_ih, H, B);
    fused::forward(f);
    return {as_output(y, input, H), final_hidden(steps, y, B)};
  }
  const Kernels k = kernels_for(input);
  const bool direct = direct_step(input, s, B, {w_ih, w_hh});

  Tensor x_gates = input_gates(mat(input, s.N, I), w_ih, direct);
  Tensor y = at::empty({s.N, H}, input.options());
#ifdef RNN_EXT_WITH_CUDA
  if (persistent_wanted(input, s)) {
    const SequenceCell cell = relu ? SequenceCell::kRnnRelu : SequenceCell::kRnnTanh;
    const SequenceArgs args = sequence_args(cell, s, H, x_gates, b_ih, b_hh, w_hh, h0, y, k.stream);
    if (sequence_forward_cuda(args.a)) return {as_output(y, input, H), last_rows(s, y)};
  }
#endif
  Tensor h_state = h0.contiguous().clone();
  Tensor h_gates = at::empty({B, H}, input.options());
  const StepMatrix w_hh_t = StepMatrix::transposed(w_hh, small_path_ok(input, B, s.T), direct);
  for (int64_t step = 0; step < s.T; ++step) {
    const int64_t t = s.time(step), rows = s.bs[t], off = s.offset[t];
    if (rows == 0) continue;
    Tensor hg = rows_of(h_gates, 0, rows);
    step_mm(hg, rows_of(h_state, 0, rows), w_hh_t);
    RnnForwardStep a{};
    a.dtype = to_dtype(dtype);
    a.rows = rows;
    a.hidden = H;
    a.relu = relu;
    a.x_gates = row_ptr(x_gates, off);
    a.h_gates = hg.data_ptr();
    a.b_ih = opt_ptr(b_ih);
    a.b_hh = opt_ptr(b_hh);
    a.h_state = h_state.data_ptr();
    a.h_out = row_ptr(y, off);
    a.stream = k.stream;
    k.rnn_fwd(a);
  }
  return {as_output(y, input, H), h_state};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& batch_sizes, bool relu, bool reverse,
    const Tensor& output, std::array<bool, 3> output_mask) {
  const char* op = "rnn_ext::rnn_backward";
  const Wanted want(output_mask);
  const NoAutocast no_autocast;
  check_args(op, input, {{"grad_output", grad_output}, {"grad_h_n", grad_h_n}, {"h0", h0}, {"w_ih", w_ih},
                         {"w_hh", w_hh}, {"output", output}});
  c10::OptionalDeviceGuard guard(input.device());
  TORCH_CHECK(w_hh.dim() == 2, op, ": bad w_hh shape ", w_hh.sizes());
  const int64_t H = w_hh.size(0), I = w_ih.size(1), B = h0.size(0);
  check_backward(op, input, h0, w_ih, w_hh, H, H, output, grad_output);
  const Schedule s = make_schedule(input, batch_sizes, B, reverse);
  const auto dtype = input.scalar_type();
  check_shape(op, "grad_h_n", grad_h_n, {B, H});
  const Kernels k = kernels_for(input);

  const Tensor x2d = mat(input, s.N, I), y2d = mat(output, s.N, H), gy = mat(grad_output, s.N, H);
  Tensor dh_state = grad_h_n.contiguous().clone();
  Tensor d_gates = empty_big({s.N, H}, input.options());
  const bool fuse = use_fused(input, H, B, s.T, /*backward=*/true);
  WeightGradJob wg;  // the fused path sums the weight gradients along with the recurrence
  if (fuse) {
    const FusedSteps steps = fused_steps(s);
    const Packing wp = packing_for(rnn_cell(relu), w_hh, H, true);
    fused::Backward b = fused_backward_args(rnn_cell(relu), steps, B, H, wp, gy, y2d, dh_state, d_gates);
    if (want.weights) wg = weight_grad_job(d_gates, xh_transposed(s, x2d, y2d, h0), I);
    fused::backward_and_weight_grads(b, &wg.args, want.weights ? 1 : 0);
  }
  bool done = fuse;  // every step's gate gradients and dh_state are final
#ifdef RNN_EXT_WITH_CUDA
  if (!done && persistent_wanted(input, s)) {
    const SequenceBackwardArgs args =
        sequence_backward_args(relu ? SequenceCell::kRnnRelu : SequenceCell::kRnnTanh, s, H, w_hh, h0, gy, y2d,
                               Tensor(), dh_state, d_gates, k.stream);
    done = sequence_backward_cuda(args.a);
  }
#endif
  const bool direct = !fuse && direct_step(input, s, B, {w_ih, w_hh});
  const StepMatrix w_hh_m(w_hh, small_path_ok(input, B, s.T) || direct);  // (direct: W_hh as stored, no copy)
  // stepwise path (skipped when the fused or persistent kernel already ran every step)
  for (int64_t step = done ? -1 : s.T - 1; step >= 0; --step) {
    const int64_t t = s.time(step), rows = s.bs[t], off = s.offset[t];
    if (rows == 0) continue;
    RnnBackwardStep a{};
    a.dtype = to_dtype(dtype);
    a.rows = rows;
    a.hidden = H;
    a.relu = relu;
    a.grad_h_a = row_ptr(gy, off);
    a.grad_h_b = dh_state.data_ptr();
    a.h_out = row_ptr(y2d, off);
    a.grad_gates = row_ptr(d_gates, off);
    a.stream = k.stream;
    k.rnn_bwd(a);
    if (step == 0 && !want.states) break;  // the product below would only be h0's gradient
    Tensor dh = rows_of(dh_state, 0, rows);
    step_mm(dh, rows_of(d_gates, off, rows), w_hh_m);
  }
  Tensor dx = want.input ? grad_into_input(d_gates, w_ih, direct).view(input.sizes()) : unwanted(input);
  const Tensor dh0 = want.states ? dh_state : unwanted(input);
  if (!want.weights) return {dx, dh0, unwanted(input), unwanted(input), unwanted(input), unwanted(input)};
  auto [dw_ih, dw_hh, db] = fuse ? wg.result() : weight_grads(s, d_gates, x2d, y2d, h0.contiguous(), dtype);
  return {dx, dh0, dw_ih, dw_hh, db, db.clone()};
}

TORCH_LIBRARY_IMPL(rnn_ext, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
  m.impl("gru_forward", &gru_forward);
  m.impl("gru_backward", &gru_backward);
  m.impl("rnn_forward", &rnn_forward);
  m.impl("rnn_backward", &rnn_backward);
}

}  // namespace rnn_ext
