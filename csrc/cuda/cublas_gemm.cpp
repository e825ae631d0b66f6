// float32 products of the CUDA recurrence, through cuBLAS with rnn_ext's own
// TF32 choice. at::mm takes TF32 from torch's matmul setting (off by default)
// while nn.LSTM's cuDNN takes it from cuDNN's RNN setting (on by default);
// rnn_ext follows nn.LSTM (csrc/matmul.cpp, float32_as_tf32). So the math mode
// is set on torch's cuBLAS handle for this thread and stream for one call and
// put back after (torch sets it again on each of its own uses in any case).
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/util/Exception.h>
#include <cublas_v2.h>

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

float* floats(const at::Tensor& t) { return static_cast<float*>(t.data_ptr()); }
cublasOperation_t op(const GemmOperand& o) { return o.transpose ? CUBLAS_OP_T : CUBLAS_OP_N; }

}  // namespace

void cuda_mm_float32(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate, bool tf32) {
  const int64_t M = a.size(0), N = b.size(1), K = a.size(1);
  TORCH_INTERNAL_ASSERT(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat &&
                        out.scalar_type() == at::kFloat && a.device() == out.device() && b.device() == out.device());
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
    TORCH_CHECK(plan_for(od, ad, bd, &p), "rnn_ext: a float32 product of ", M, " x ", K, " by ", K, " x ", N,
                " exceeds cuBLAS's 32-bit sizes");
  }
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();  // on the current stream
  cublasMath_t before;
  check(cublasGetMathMode(handle, &before), "cublasGetMathMode");
  check(cublasSetMathMode(handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const cublasStatus_t status =
      cublasSgemm(handle, op(p.A), op(p.B), static_cast<int>(p.m), static_cast<int>(p.n), static_cast<int>(p.k),
                  &alpha, floats(bd), static_cast<int>(p.A.ld), floats(ad), static_cast<int>(p.B.ld), &beta,
                  floats(od), static_cast<int>(p.ldc));
  cublasSetMathMode(handle, before);
  check(status, "cublasSgemm");
  if (!od.is_same(out)) out.copy_(od);
}

}  // namespace rnn_ext
