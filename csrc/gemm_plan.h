// How a column-major BLAS (cuBLAS) computes a row-major product given by
// sizes and strides: out (M, N) = a (M, K) @ b (K, N), as out^T = b^T a^T.
// Plain C++ with no torch or CUDA header, so that tests/gemm_plan_check.cpp
// can run every case on the CPU against a reference (the CUDA caller is
// csrc/cuda/cublas_gemm.cpp).
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>

namespace rnn_ext {

// A BLAS operand: its stored matrix, transposed or not, and its leading dimension.
struct GemmOperand {
  bool transpose = false;
  int64_t ld = 1;
};

// The call: C (m x n, ldc) = op(A) (m x k) op(B) (k x n), all column-major;
// A is b's storage, B is a's storage, C is out's.
struct GemmPlan {
  GemmOperand A, B;
  int64_t m = 0, n = 0, k = 0, ldc = 1;
};

// A row-major (rows, cols) matrix with strides (s0, s1) read column-major:
// with dense rows (s1 == 1) it is the (cols x rows) matrix t^T, ld = s0, used
// untransposed; with dense columns (s0 == 1) it is t itself (rows x cols),
// ld = s1, so a transpose gives t^T. The stride of a dimension of size 1 is
// never used, so it may be anything. False for any other layout, or where the
// leading dimension would be below the extent BLAS requires.
inline bool gemm_operand(int64_t rows, int64_t cols, int64_t s0, int64_t s1, GemmOperand* o) {
  if ((s1 == 1 || cols == 1) && (rows == 1 || s0 >= std::max<int64_t>(1, cols))) {
    o->transpose = false;
    o->ld = rows == 1 ? std::max<int64_t>(1, cols) : s0;
    return true;
  }
  if ((s0 == 1 || rows == 1) && (cols == 1 || s1 >= std::max<int64_t>(1, rows))) {
    o->transpose = true;
    o->ld = cols == 1 ? std::max<int64_t>(1, rows) : s1;
    return true;
  }
  return false;
}

// The plan for out (M, N) = a (M, K) @ b (K, N), each given as sizes and two
// strides; false when a layout does not suit (then the caller makes a dense
// copy) or a size exceeds BLAS's int. out must have dense rows: it is C
// untransposed. M, N >= 1 (the caller skips empty products; K may be 0).
inline bool plan_gemm(int64_t M, int64_t N, int64_t K, const int64_t a_strides[2], const int64_t b_strides[2],
                      const int64_t out_strides[2], GemmPlan* p) {
  GemmOperand c;
  if (!gemm_operand(M, N, out_strides[0], out_strides[1], &c) || c.transpose) return false;
  if (!gemm_operand(K, N, b_strides[0], b_strides[1], &p->A)) return false;
  if (!gemm_operand(M, K, a_strides[0], a_strides[1], &p->B)) return false;
  p->m = N;
  p->n = M;
  p->k = K;
  p->ldc = c.ld;
  const int64_t limit = INT_MAX;
  return p->m <= limit && p->n <= limit && p->k <= limit && p->ldc <= limit && p->A.ld <= limit &&
         p->B.ld <= limit;
}

}  // namespace rnn_ext
