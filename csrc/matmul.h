// The large products of the recurrence driver (X W_ih^T for all steps, dX):
// a @ b^T with bt given as (N, K). Device-agnostic; see matmul.cpp. (The CPU
// weight gradients have their own kernel: fused::weight_grad.)
#pragma once
#include <ATen/core/Tensor.h>

namespace rnn_ext {

// a (M, K) @ bt (N, K)^T -> (M, N), contiguous.
at::Tensor matmul_nt(const at::Tensor& a, const at::Tensor& bt);

// a (M, K) @ b (K, N) -> (M, N), contiguous.
inline at::Tensor matmul_nn(const at::Tensor& a, const at::Tensor& b) { return matmul_nt(a, b.t()); }

}  // namespace rnn_ext
