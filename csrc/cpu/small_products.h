// Products of a few rows on the CPU (csrc/cpu/small_products.cpp), for the
// recurrence driver's one-step and small-batch stepwise paths. float32 and
// float64, dense row-major operands; every output's sum order is fixed, so
// results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "common/cell_steps.h"

namespace rnn_ext {
// out (rows, N) = a (rows, K) @ b (K, N) (+ out when accumulate): the stepwise
// path's per-step recurrent products (b is W^T, made dense once per op), and a
// one-step backward's input gradients (b is W as stored).
void small_mm_cpu(DType dtype, const void* a, const void* b, void* out, int64_t rows, int64_t K, int64_t N,
                  bool accumulate);
// out (rows, N) = a (rows, K) @ w^T (+ out when accumulate), w (N, K) as weights
// are stored: one step's gate products for at most small_nt_max_rows() rows.
int64_t small_nt_max_rows();
void small_nt_cpu(DType dtype, const void* a, const void* w, void* out, int64_t rows, int64_t K, int64_t N,
                  bool accumulate);
// out (G, K) = a^T b for a (rows, G), b (rows, K), rows >= 1, and colsum (G) =
// a's column sums unless null: one step's weight and bias gradients.
void small_tn_cpu(DType dtype, const void* a, const void* b, void* out, void* colsum, int64_t rows, int64_t G,
                  int64_t K);
}  // namespace rnn_ext
