// Scalar helpers of the CUDA kernels (cells_cuda.cu, persistent_forward.cu):
// storage type <-> accumulation type (double for double, float otherwise),
// loads and stores through void pointers, and the precise gate math.
// CUDA headers only, so that the kernel files stay light.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace rnn_ext {
namespace {

// ------------------------------------------------------------ type helpers
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_of = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(acc_of<T> v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

// Load element i of a scalar buffer as acc_t; null buffer reads as 0.
template <typename T>
__device__ __forceinline__ acc_of<T> load(const void* p, int64_t i) {
  return to_acc(static_cast<const T*>(p)[i]);
}
template <typename T>
__device__ __forceinline__ acc_of<T> load_opt(const void* p, int64_t i) {
  return p ? load<T>(p, i) : acc_of<T>(0);
}
template <typename T>
__device__ __forceinline__ void store(void* p, int64_t i, acc_of<T> v) {
  static_cast<T*>(p)[i] = from_acc<T>(v);
}

// Precise (non-intrinsic) math, overloaded on acc_t.
__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return ::exp(x); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return ::tanh(x); }
template <typename A> __device__ __forceinline__ A sigmoid(A x) {
  return A(1) / (A(1) + exp_(-x));
}

}  // namespace
}  // namespace rnn_ext
