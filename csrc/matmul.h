// The products of the recurrence driver: X W_ih^T for all steps, the per-step
// h_{t-1} W_hh^T, dX, and (off the CPU) the weight gradients. Device-agnostic;
// see matmul.cpp. (The CPU weight gradients have their own kernel:
// fused::weight_grad.)
#pragma once
#include <ATen/core/Tensor.h>

namespace rnn_ext {

// Whether float32 may run as TF32 on CUDA, as it does in nn.LSTM: by cuDNN's
// RNN setting (torch.backends.cudnn.allow_tf32 or
// torch.backends.cudnn.rnn.fp32_precision; on by default) where nn.LSTM would
// use cuDNN, by torch's matmul setting (off by default) where it would not
// (torch.backends.cudnn.enabled = False); never under at::NoTF32Guard.
bool float32_as_tf32();

// Whether this process runs on an Intel CPU (MKL, torch's CPU BLAS, is at its
// best there).
bool intel_cpu();

// Whether MKL's sgemm runs at the cores' full vector rate: on Intel CPUs, and on
// AMD CPUs before Zen 5 (family 0x1A), whose vector units are at most 256 bits
// wide, so MKL's AVX2 code there loses little to oneDNN's AVX-512. On Zen 5 oneDNN
// runs about twice as fast (matmul.cpp).
bool mkl_full_speed();

// out = a @ b (+= with accumulate): a (M, K), b (K, N), out (M, N) with dense
// rows, any of them a view. float32 / float16 / bfloat16 on CUDA straight
// through cuBLAS (float32 with float32_as_tf32's choice); large CPU float32
// products without accumulate, where b.t() needs no copy, as matmul_nt's;
// everything else through at::mm_out / addmm_.
void mm_into(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate = false);

// a (M, K) @ b (K, N) -> (M, N), contiguous; on CUDA as mm_into.
at::Tensor product(const at::Tensor& a, const at::Tensor& b);

// a (M, K) @ bt (N, K)^T -> (M, N), contiguous.
at::Tensor matmul_nt(const at::Tensor& a, const at::Tensor& bt);

// a (M, K) @ b (K, N) -> (M, N), contiguous.
inline at::Tensor matmul_nn(const at::Tensor& a, const at::Tensor& b) { return matmul_nt(a, b.t()); }

#ifdef RNN_EXT_WITH_CUDA
// Whether cuda_mm takes this dtype: float32, float16, bfloat16.
bool cuda_blas_dtype(at::ScalarType dtype);
// mm_into for CUDA tensors of those dtypes, straight to cuBLAS; float32 as
// TF32 or not as told (csrc/cuda/cublas_gemm.cpp).
void cuda_mm(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate, bool tf32);
#endif

}  // namespace rnn_ext
