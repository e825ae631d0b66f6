// Fused whole-sequence CPU kernels for float32 and float64: one parallel
// region per op call, in which each thread owns a fixed slice of hidden units
// for every step, multiplies h_{t-1} by its slice of W_hh (which the thread
// packs into panels at the start of the call; LSTM and RNN with a batch of 4 or more
// also x_t by W_ih, see input_product_inside), applies the gate math to the result
// while it is still in L1, and meets the other threads at one barrier per step.
// No ATen call, allocation or thread launch happens inside the step loop.
//
// Plain C++ on raw pointers, like csrc/common/cell_steps.h; the driver
// (csrc/recurrence.cpp) prepares the tensors. All matrices are row-major and
// dense. "N" is the total number of rows (T*B, or the packed row count).
#pragma once
#include <cstdint>

namespace rnn_ext {
namespace fused {

enum class Cell : int { kLstm = 0, kGru = 1, kRnnTanh = 2, kRnnRelu = 3 };

// The steps in processing order (forward op: k = 0..T-1 is the order the
// recurrence runs in, whatever the direction). At step k, rows[k] batch rows
// are active, stored at rows offset[k]..offset[k]+rows[k] of the (N, .) row
// arrays. Row m's previous state at step k comes from step k-1's output when
// m < min(rows[k], rows[k-1]), else from h0 (it starts there).
struct Steps {
  int64_t T;
  const int64_t* rows;
  const int64_t* offset;
};

struct Forward {
  Cell cell;
  bool is_double;         // float64, else float32
  int64_t B, H;           // batch, hidden size (no projection)
  Steps s;
  int64_t I;              // input size
  const void* x;          // LSTM, RNN: (N, I) the input rows, to compute x_t W_ih^T per step; or null
  const void* w_ih;       // with x: (G, I) W_ih, dense
  void* w_ih_packed;      // with x: scratch of packed_forward_size(K = I)
  const void* x_gates;    // without x (and always for GRU): (N, G) X W_ih^T, precomputed
  const void* bias;       // (G): b_ih + b_hh (GRU: without b_hn), zeros without bias
  const void* b_hn;       // GRU: (H) the n part of b_hh (zeros without bias)
  const void* w_hh;       // (G, H) W_hh, dense
  void* w_packed;         // scratch of packed_forward_size(K = H)
  const void* h0;         // (B, H)
  void* c_state;          // LSTM: (B, H) c0 in, c_n out
  void* y;                // (N, H) outputs h_t
  void* ws;               // null, or LSTM (N, 5H) [i f g o | c], GRU (N, 4H) [r z n | hn]
  int threads;            // upper bound; fewer are used for small steps
};

// Backward: steps in the same processing order as the forward op; the loop
// runs k = T-1 down to 0.
struct Backward {
  Cell cell;
  bool is_double;
  int64_t B, H;
  Steps s;
  const void* w_hh;       // (G, H) W_hh, dense
  void* w_packed;         // scratch of packed_backward_size
  const void* grad_y;     // (N, H)
  const void* y;          // (N, H) forward outputs
  const void* h0;         // (B, H)
  const void* c0;         // LSTM: (B, H)
  const void* ws;         // the forward workspace (LSTM, GRU)
  void* dh_state;         // (B, H): grad_h_n in, grad_h0 out
  void* dc_state;         // LSTM: (B, H): grad_c_n in, grad_c0 out
  void* d_gates;          // (N, G): gradient of the pre-activations (GRU: x side)
  void* d_gates_hh;       // GRU: (N, 3H) gradient of W_hh h + b_hh
  int threads;
};

// Scratch for the packed weights, in elements of the op dtype (the kernels
// pack them into it; the layout depends on the CPU's vector width, chosen once
// per process): forward for a dense (G, K) matrix, W_hh (K = H) or W_ih
// (K = I); backward for W_hh.
int64_t packed_forward_size(Cell cell, bool is_double, int64_t H, int64_t K);
int64_t packed_backward_size(Cell cell, bool is_double, int64_t H);

void forward(const Forward& f);

// Whether LSTM/RNN forward should compute x_t W_ih^T inside the step (pass x)
// rather than read it precomputed (pass x_gates): worth it once a step has
// enough rows to keep the register tile busy; below that the extra panel
// traffic costs more than one big GEMM.
inline bool input_product_inside(int64_t batch) { return batch >= 4; }
void backward(const Backward& b);

// The weight gradients after the backward loop: dW = d_gates^T a, for a (N, K)
// given transposed. Columns [0, k_split) of dW go to dw (G, k_split), the rest
// to dw_rest (G, K - k_split): dW_ih and dW_hh from one product over [X | H_prev].
// With d_bias, also the column sums of d_gates (the bias gradient), as the
// product with one more row of a^T, all ones. Every element is one dot
// product summed in a fixed order, so the result is the same on any thread count.
struct WeightGrad {
  bool is_double;
  int64_t N, G, K, k_split;
  const void* d_gates;  // (N, G)
  const void* at;       // (K, N): a^T
  void* dw;             // (G, k_split)
  void* dw_rest;        // (G, K - k_split)
  void* d_bias;         // (G), or null
  bool rows_descending; // sum the chunks of N from the last row up (the order a
                        // forward-direction backward finishes them): set by
                        // backward_and_weight_grads where it overlaps the two
  int threads;
};
void weight_grad(const WeightGrad& w);

// backward(b), then weight_grad(w[i]) for the n products of its gate gradients
// (all with N rows). When the recurrence runs on one thread (small batch: a
// second one would cost more in sharing than it saves) and the products'
// accumulators fit in half the L2, the second thread sums the weight
// gradients over the rows of the steps already finished while the recurrence
// goes on, instead of idling. The results do not depend on the thread count.
void backward_and_weight_grads(const Backward& b, const WeightGrad* w, int64_t n);

// dst (cols, ldd) = src (rows, lds)^T, float32 or float64, on up to `threads` threads.
void transpose(bool is_double, const void* src, int64_t rows, int64_t cols, int64_t lds, void* dst, int64_t ldd,
               int threads);


}  // namespace fused
}  // namespace rnn_ext
