// Plain-C++ contract between the device-agnostic recurrence driver
// (csrc/recurrence.cpp) and the fused pointwise kernels of each device
// (csrc/cpu/cells_cpu.cpp, csrc/cuda/cells_cuda.cu).
//
// No torch headers here on purpose: the CUDA translation unit includes only
// this file and the CUDA headers, so it compiles in seconds.
//
// Conventions for every struct below:
// - one struct describes ONE time step over its `rows` active batch rows;
// - all matrices are row-major and dense unless a *_stride is given
//   (strides are in elements, not bytes);
// - "scalar" pointers hold the op's dtype (`dtype`), "acc" pointers hold the
//   accumulation type: double for kDouble, float for everything else;
// - a null optional pointer means "absent" (no bias, no workspace, ...);
// - `stream` is a cudaStream_t on CUDA and ignored on CPU.
#pragma once
#include <cstdint>

namespace rnn_ext {

enum class DType : int { kFloat = 0, kDouble = 1, kHalf = 2, kBFloat16 = 3 };

// ---------------------------------------------------------------- LSTM
// gates = x_gates + h_gates + b_ih + b_hh, split [i | f | g | o], each H wide.
// c' = f*c + i*g ; h' = o*tanh(c')
struct LstmForwardStep {
  DType dtype;
  int64_t rows, hidden;
  const void* x_gates;  // scalar (rows, 4H): x_t @ W_ih^T for this step
  const void* h_gates;  // scalar (rows, 4H): h_{t-1} @ W_hh^T
  const void* b_ih;     // scalar (4H) or null
  const void* b_hh;     // scalar (4H) or null
  void* c_state;        // acc (rows, H): read c_{t-1}, overwritten with c_t
  void* h_out;          // scalar (rows, h_out_stride): h_t (output row or pre-projection buffer)
  int64_t h_out_stride;
  void* h_state;        // scalar (rows, H) or null: second copy of h_t (recurrent state)
  void* workspace;      // acc (rows, 5H) or null: [i f g o | c_t], activated
  void* stream;
};

struct LstmBackwardStep {
  DType dtype;
  int64_t rows, hidden;
  const void* grad_h_a;  // scalar (rows, H): dL/dh_t, first term
  const void* grad_h_b;  // scalar (rows, H) or null: second term, added to the first
  const void* workspace; // acc (rows, 5H): [i f g o | c_t] saved by the forward
  const void* c_prev;    // acc (rows, c_prev_stride): c_{t-1}
  int64_t c_prev_stride;
  void* grad_c_state;    // acc (rows, H): in dL/dc_t from later steps, out dL/dc_{t-1}
  void* grad_gates;      // scalar (rows, 4H): dL/d(pre-activation gates)
  void* stream;
};

// ---------------------------------------------------------------- GRU
// r = s(xr + hr + b) ; z = s(xz + hz + b) ; hn = W_hn h + b_hn
// n = tanh(xn + b_in + r*hn) ; h' = n + z*(h - n)
struct GruForwardStep {
  DType dtype;
  int64_t rows, hidden;
  const void* x_gates;  // scalar (rows, 3H)
  const void* h_gates;  // scalar (rows, 3H)
  const void* b_ih;     // scalar (3H) or null
  const void* b_hh;     // scalar (3H) or null
  void* h_state;        // scalar (rows, H): read h_{t-1}, overwritten with h_t
  void* h_out;          // scalar (rows, H): h_t, the output row
  void* workspace;      // acc (rows, 4H) or null: [r z n | hn]
  void* stream;
};

struct GruBackwardStep {
  DType dtype;
  int64_t rows, hidden;
  const void* grad_h_a;   // scalar (rows, H): dL/dh_t, first term
  const void* grad_h_b;   // scalar (rows, H) or null: second term
  const void* h_prev;     // scalar (rows, H): h_{t-1}
  const void* workspace;  // acc (rows, 4H): [r z n | hn]
  void* grad_gates_ih;    // scalar (rows, 3H): d(x-side pre-activations)
  void* grad_gates_hh;    // scalar (rows, 3H): d(h-side products W_hh h + b_hh)
  void* grad_h_prev;      // scalar (rows, H): direct part dL/dh_{t-1} = dh*z (may alias grad_h_b)
  void* stream;
};

// ---------------------------------------------------------------- RNN
// h' = act(x_gates + h_gates + b_ih + b_hh), act = tanh or relu
struct RnnForwardStep {
  DType dtype;
  int64_t rows, hidden;
  bool relu;
  const void* x_gates;  // scalar (rows, H)
  const void* h_gates;  // scalar (rows, H)
  const void* b_ih;     // scalar (H) or null
  const void* b_hh;     // scalar (H) or null
  void* h_state;        // scalar (rows, H): overwritten with h_t
  void* h_out;          // scalar (rows, H): h_t, the output row
  void* stream;
};

struct RnnBackwardStep {
  DType dtype;
  int64_t rows, hidden;
  bool relu;
  const void* grad_h_a;  // scalar (rows, H)
  const void* grad_h_b;  // scalar (rows, H) or null
  const void* h_out;     // scalar (rows, H): h_t from the forward
  void* grad_gates;      // scalar (rows, H): dL/d(pre-activation)
  void* stream;
};

// One implementation per device. CUDA versions exist only when the
// extension was built with RNN_EXT_WITH_CUDA.
void lstm_forward_step_cpu(const LstmForwardStep& s);
void lstm_backward_step_cpu(const LstmBackwardStep& s);
void gru_forward_step_cpu(const GruForwardStep& s);
void gru_backward_step_cpu(const GruBackwardStep& s);
void rnn_forward_step_cpu(const RnnForwardStep& s);
void rnn_backward_step_cpu(const RnnBackwardStep& s);

void lstm_forward_step_cuda(const LstmForwardStep& s);
void lstm_backward_step_cuda(const LstmBackwardStep& s);
void gru_forward_step_cuda(const GruForwardStep& s);
void gru_backward_step_cuda(const GruBackwardStep& s);
void rnn_forward_step_cuda(const RnnForwardStep& s);
void rnn_backward_step_cuda(const RnnBackwardStep& s);

// ---------------------------------------------------------------- whole sequence
// A whole layer-direction forward in one launch (csrc/cuda/persistent_forward.cu):
// every step with all B rows (not packed), no projection, float/half/bfloat16.
// Step k runs time t = reverse ? T-1-k : k, whose rows are t*B .. t*B+B-1. The
// gate math and the workspace are those of the step structs above.
enum class SequenceCell : int { kLstm = 0, kGru = 1, kRnnTanh = 2, kRnnRelu = 3 };
struct SequenceForward {
  SequenceCell cell;
  DType dtype;
  int64_t T, B, hidden;
  bool reverse;
  bool tf32;            // float32: run the product as TF32 on the tensor cores (allowed, and the path forced)
  const void* x_gates;  // scalar (T*B, G): X @ W_ih^T (G = 4H, 3H, H)
  const void* b_ih;     // scalar (G) or null
  const void* b_hh;     // scalar (G) or null
  const void* w_hh;     // scalar (G, H), dense
  const void* h0;       // scalar (B, H)
  void* c_state;        // LSTM: acc (B, H), c0 in, c_T out
  void* y;              // scalar (T*B, H): h_t
  void* workspace;      // null, or acc LSTM (T*B, 5H) [i f g o | c_t], GRU (T*B, 4H) [r z n | hn]
  void* stream;
};
// Runs it and returns true, or returns false without launching anything when
// the shape does not fit (W_hh's share per block over the shared memory, more
// hidden units per multiprocessor than the kernel can run warps in a block,
// inside CUDA-graph capture).
bool sequence_forward_cuda(const SequenceForward& s);

// The backward recurrence of a whole layer-direction in one launch
// (csrc/cuda/persistent_backward.cu), for the same calls as SequenceForward
// (and a workspace of the layout above, from either CUDA path). The loop runs
// the forward's steps in reverse. Writes the gate gradients of every row
// (for the weight and input gradients after it), dL/dh0 and (LSTM) dL/dc0.
struct SequenceBackward {
  SequenceCell cell;
  DType dtype;
  int64_t T, B, hidden;
  bool reverse;
  bool tf32;              // as SequenceForward::tf32
  const void* w_hh;       // scalar (G, H), dense
  const void* grad_y;     // scalar (T*B, H): dL/dh_t from the layer's output
  const void* y;          // scalar (T*B, H): h_t from the forward
  const void* h0;         // scalar (B, H)
  const void* c0;         // LSTM: acc (B, H)
  const void* workspace;  // acc: LSTM (T*B, 5H) [i f g o | c_t], GRU (T*B, 4H) [r z n | hn]
  void* grad_h;           // scalar (B, H): dL/dh_n in, dL/dh0 out
  void* grad_c;           // LSTM: acc (B, H): dL/dc_n in, dL/dc0 out
  void* grad_gates;       // scalar (T*B, G): dL/d(pre-activations) (GRU: of the x side)
  void* grad_gates_hh;    // GRU: scalar (T*B, 3H): dL/d(W_hh h + b_hh)
  void* stream;
};
// Runs it and returns true, or returns false without launching anything when
// the shape does not fit (as sequence_forward_cuda).
bool sequence_backward_cuda(const SequenceBackward& s);

}  // namespace rnn_ext
