// The products of the CUDA recurrence (float32, float16, bfloat16), through
// cuBLAS on torch's handle and stream, called directly rather than through
// at::mm, for two reasons:
// - float32: at::mm takes TF32 from torch's matmul setting (off by default)
//   while nn.LSTM's cuDNN takes it from cuDNN's RNN setting (on by default);
//   rnn_ext follows nn.LSTM (csrc/matmul.cpp, float32_as_tf32).
// - every dtype: the GEMM path multiplies once a step, and at::mm's dispatch
//   and checks are host time each step when the GPU's share is a few
//   microseconds (B = 64, H = 512: about 20 us a step for rnn_ext and cuDNN
//   alike on an H200, bench/host_overhead.py measures how much is the host's).
// The half types run as at::mm runs them (cublasGemmEx, float32 accumulation,
// torch's reduced-precision-reduction settings). The math mode is set on the
// handle for one call and put back after (torch sets it again on each of its
// own uses in any case).
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/util/Exception.h>
#include <cublas_v2.h>

#include <type_traits>

#include "gemm_plan.h"
#include "matmul.h"

namespace rnn_ext {
namespace {

void check(cublasStatus_t status, const char* call) {
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "rnn_ext: ", call, " failed: ", cublasGetStatusString(status));
}

bool plan_for(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, GemmPlan* p) {
  const int64_t as[2] = {a.stride(0), a.stride(1)}, bs[2] = {b.stride(0), b.stride(1)},
                os[2] = {out.stride(0), out.stride(1)};
  return plan_gemm(a.size(0), b.size(1), a.size(1), as, bs, os, p);
}

cublasOperation_t op(const GemmOperand& o) { return o.transpose ? CUBLAS_OP_T : CUBLAS_OP_N; }

// Whether torch lets cuBLAS reduce in reduced precision (its default): a bool
// in older torch, CuBLASReductionOption (allowed = its first value) in newer.
template <typename Setting>
bool reduced_precision_reduction(Setting setting) {
  if constexpr (std::is_same<Setting, bool>::value) {
    return setting;
  } else {
    return static_cast<int>(setting) == 0;  // AllowReducedPrecisionWithSplitK
  }
}

// The math mode for one call: float32 with or without TF32; the half types as
// torch's own cublasGemmEx calls have it.
cublasMath_t math_mode(at::ScalarType dtype, bool tf32) {
  auto& ctx = at::globalContext();
  switch (dtype) {
    case at::kFloat:
      return tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
    case at::kHalf:
      return reduced_precision_reduction(ctx.allowFP16ReductionCuBLAS())
                 ? CUBLAS_DEFAULT_MATH
                 : static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    default:
      return reduced_precision_reduction(ctx.allowBF16ReductionCuBLAS())
                 ? CUBLAS_DEFAULT_MATH
                 : static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  }
}

}  // namespace

bool cuda_blas_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16;
}

void cuda_mm(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate, bool tf32) {
  const int64_t M = a.size(0), N = b.size(1), K = a.size(1);
  const at::ScalarType dtype = out.scalar_type();
  TORCH_INTERNAL_ASSERT(cuda_blas_dtype(dtype) && a.scalar_type() == dtype && b.scalar_type() == dtype &&
                        a.device() == out.device() && b.device() == out.device());
  TORCH_INTERNAL_ASSERT(a.dim() == 2 && b.dim() == 2 && out.dim() == 2 && b.size(0) == K && out.size(0) == M &&
                        out.size(1) == N);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum
    if (!accumulate) out.zero_();
    return;
  }
  GemmPlan p;
  at::Tensor ad = a, bd = b, od = out;
  if (!plan_for(od, ad, bd, &p)) {  // a layout cuBLAS does not take (not met in the driver): dense copies
    ad = a.contiguous();
    bd = b.contiguous();
    od = out.contiguous();  // a copy holds out's values when accumulating
    TORCH_CHECK(plan_for(od, ad, bd, &p), "rnn_ext: a product of ", M, " x ", K, " by ", K, " x ", N,
                " exceeds cuBLAS's 32-bit sizes");
  }
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();  // on the current stream
  cublasMath_t before;
  check(cublasGetMathMode(handle, &before), "cublasGetMathMode");
  check(cublasSetMathMode(handle, math_mode(dtype, tf32)), "cublasSetMathMode");
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const int m = static_cast<int>(p.m), n = static_cast<int>(p.n), k = static_cast<int>(p.k);
  const int lda = static_cast<int>(p.A.ld), ldb = static_cast<int>(p.B.ld), ldc = static_cast<int>(p.ldc);
  cublasStatus_t status;
  if (dtype == at::kFloat) {
    status = cublasSgemm(handle, op(p.A), op(p.B), m, n, k, &alpha, static_cast<const float*>(bd.data_ptr()), lda,
                         static_cast<const float*>(ad.data_ptr()), ldb, &beta, static_cast<float*>(od.data_ptr()),
                         ldc);
  } else {  // float16 / bfloat16 in and out, float32 accumulation and scalars
    const cudaDataType_t type = dtype == at::kHalf ? CUDA_R_16F : CUDA_R_16BF;
    status = cublasGemmEx(handle, op(p.A), op(p.B), m, n, k, &alpha, bd.data_ptr(), type, lda, ad.data_ptr(), type,
                          ldb, &beta, od.data_ptr(), type, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT_TENSOR_OP);
  }
  cublasSetMathMode(handle, before);
  check(status, dtype == at::kFloat ? "cublasSgemm" : "cublasGemmEx");
  if (!od.is_same(out)) out.copy_(od);
}

}  // namespace rnn_ext
