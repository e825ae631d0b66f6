// Persistent LSTM / GRU / RNN forward: one launch for a whole layer-direction
// (see SequenceForward in common/cell_steps.h), instead of a GEMM and a
// pointwise kernel per step.
//
// Block b owns U hidden units j0 .. j0+U-1 across the NG gates (4, 3, 1). It
// copies their NG*U rows of W_hh into shared memory once and keeps them for
// every step, so the cell update of its units needs nothing from other blocks
// but h_{t-1}. At each step the block stages as many batch rows of h_{t-1}
// as fit beside W in shared memory (as float; the whole batch when it fits).
// Warp u computes unit j0+u for a chunk of 8 batch rows at a time: each lane
// sums a stride of K for the gates of every row of the chunk, the lanes' sums are combined by a butterfly of shuffles
// (a fixed order: the result does not depend on timing), and lane r applies
// the gate math to row r. The blocks then meet at a grid barrier (cooperative
// launch, so that every block is resident) and read the h_t that all of them
// wrote through L2 (__ldcg: never a stale L1 line).
//
// Accumulation and cell state in float32, whatever the storage type. No
// tensor cores yet, and no double (the GEMM path serves double).
//
// Light on purpose: CUDA headers and the plain-C++ contract only.
#include "common/cell_steps.h"
#include "cuda/scalar_math.cuh"

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace rnn_ext {
namespace {

namespace cg = cooperative_groups;

constexpr int64_t kRowsPerPass = 8;   // batch rows per pass: gates * 8 accumulators per lane
constexpr int64_t kMaxUnits = 32;     // units per block, one warp each: at most 1024 threads
constexpr unsigned kFullMask = 0xffffffffu;

// h_{t-1}, written by other blocks during this launch: read from L2.
__device__ __forceinline__ float load_l2(const float* p) { return __ldcg(p); }
__device__ __forceinline__ float load_l2(const __half* p) {
  return __half2float(__ushort_as_half(__ldcg(reinterpret_cast<const unsigned short*>(p))));
}
__device__ __forceinline__ float load_l2(const __nv_bfloat16* p) {
  return __bfloat162float(__ushort_as_bfloat16(__ldcg(reinterpret_cast<const unsigned short*>(p))));
}

// Dynamic shared memory: W_hh's rows of this block (NG*U x H, storage type),
// then `staged` rows of h_{t-1} (a multiple of kRowsPerPass, x H, float), 16-byte aligned.
__host__ __device__ inline int64_t weight_bytes(int64_t rows, int64_t H, int64_t elem) {
  return (rows * H * elem + 15) / 16 * 16;
}
__host__ __device__ inline int64_t smem_bytes(int64_t rows, int64_t H, int64_t elem, int64_t staged) {
  return weight_bytes(rows, H, elem) + staged * H * static_cast<int64_t>(sizeof(float));
}

// for (e = tid; e < n; e += nthreads) store(e, load(e)), with the loads of
// kInFlight iterations issued before their stores: the loads come from L2 or
// memory, and one at a time each thread would wait a full round trip per
// element (a 64 x 512 h_{t-1} on 128 threads: 256 round trips a step).
template <typename Load, typename Store>
__device__ __forceinline__ void copy_overlapped(int64_t n, int64_t tid, int64_t nthreads, const Load& load,
                                                const Store& store) {
  constexpr int64_t kInFlight = 8;
  for (int64_t e0 = tid; e0 < n; e0 += kInFlight * nthreads) {
    float v[kInFlight];
#pragma unroll
    for (int64_t i = 0; i < kInFlight; ++i) {
      const int64_t e = e0 + i * nthreads;
      v[i] = e < n ? load(e) : 0.0f;
    }
#pragma unroll
    for (int64_t i = 0; i < kInFlight; ++i) {
      const int64_t e = e0 + i * nthreads;
      if (e < n) store(e, v[i]);
    }
  }
}

// 16 bytes of storage-type values as floats: 4 float, or 8 half / bfloat16.
__device__ __forceinline__ void to_floats(const uint4& v, float* out, const float*) {
  *reinterpret_cast<float4*>(out) =
      make_float4(__uint_as_float(v.x), __uint_as_float(v.y), __uint_as_float(v.z), __uint_as_float(v.w));
}
__device__ __forceinline__ void to_floats(const uint4& v, float* out, const __half*) {
  const __half2* h = reinterpret_cast<const __half2*>(&v);
  const float2 a = __half22float2(h[0]), b = __half22float2(h[1]), c = __half22float2(h[2]), d = __half22float2(h[3]);
  reinterpret_cast<float4*>(out)[0] = make_float4(a.x, a.y, b.x, b.y);
  reinterpret_cast<float4*>(out)[1] = make_float4(c.x, c.y, d.x, d.y);
}
__device__ __forceinline__ void to_floats(const uint4& v, float* out, const __nv_bfloat16*) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
  const float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]), c = __bfloat1622float2(h[2]),
               d = __bfloat1622float2(h[3]);
  reinterpret_cast<float4*>(out)[0] = make_float4(a.x, a.y, b.x, b.y);
  reinterpret_cast<float4*>(out)[1] = make_float4(c.x, c.y, d.x, d.y);
}

// dst[0, fill) = src[0, n) as float through L2, then zeros (n <= fill). With a
// 16-byte aligned src of whole 16-byte pieces (H a multiple of 4 float or 8
// half values, the usual case), 16-byte loads, four in flight per thread: a
// 16 x 768 bfloat16 h_{t-1} is then one round trip per thread on 192 threads;
// else one element per load, eight in flight. dst is 16-byte aligned.
template <typename T>
__device__ __forceinline__ void stage_rows(float* dst, const T* src, int64_t n, int64_t fill, int64_t tid,
                                           int64_t nthreads) {
  constexpr int64_t V = 16 / sizeof(T);
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0 || n % V != 0) {
    copy_overlapped(
        fill, tid, nthreads, [&](int64_t e) { return e < n ? load_l2(src + e) : 0.0f; },
        [&](int64_t e, float v) { dst[e] = v; });
    return;
  }
  constexpr int64_t kInFlight = 4;
  const uint4* src16 = reinterpret_cast<const uint4*>(src);
  const int64_t pieces = n / V;
  for (int64_t e0 = tid; e0 < pieces; e0 += kInFlight * nthreads) {
    uint4 v[kInFlight];
#pragma unroll
    for (int64_t i = 0; i < kInFlight; ++i) {
      const int64_t e = e0 + i * nthreads;
      if (e < pieces) v[i] = __ldcg(src16 + e);
    }
#pragma unroll
    for (int64_t i = 0; i < kInFlight; ++i) {
      const int64_t e = e0 + i * nthreads;
      if (e < pieces) to_floats(v[i], dst + e * V, src);
    }
  }
  for (int64_t e = n + tid; e < fill; e += nthreads) dst[e] = 0.0f;
}

constexpr int64_t gates_of(SequenceCell c) {
  return c == SequenceCell::kLstm ? 4 : c == SequenceCell::kGru ? 3 : 1;
}

// The gate math of one (row, unit), as the per-step kernels of cells_cuda.cu
// do it: hg[g] = (W_hh h_{t-1})[g*H + j], hp = h_{t-1}[j].
template <typename T, SequenceCell C>
__device__ __forceinline__ void cell_update(const SequenceForward& s, const float* hg, float hp, int64_t row,
                                            int64_t b, int64_t j) {
  constexpr int64_t NG = gates_of(C);
  const int64_t H = s.hidden, G = NG * H;
  const T* xg = static_cast<const T*>(s.x_gates) + row * G;
  T* y = static_cast<T*>(s.y) + row * H;
  float* ws = static_cast<float*>(s.workspace);
  if constexpr (C == SequenceCell::kLstm) {
    float act[4];
#pragma unroll
    for (int64_t g = 0; g < 4; ++g) {
      const int64_t col = g * H + j;
      const float pre = to_acc(xg[col]) + hg[g] + load_opt<T>(s.b_ih, col) + load_opt<T>(s.b_hh, col);
      act[g] = g == 2 ? tanh_(pre) : sigmoid(pre);
    }
    float* c_state = static_cast<float*>(s.c_state);
    const float c = act[1] * c_state[b * H + j] + act[0] * act[2];
    c_state[b * H + j] = c;
    y[j] = from_acc<T>(act[3] * tanh_(c));
    if (ws) {
#pragma unroll
      for (int64_t g = 0; g < 4; ++g) ws[row * 5 * H + g * H + j] = act[g];
      ws[row * 5 * H + 4 * H + j] = c;
    }
  } else if constexpr (C == SequenceCell::kGru) {
    const float rg = sigmoid(to_acc(xg[j]) + load_opt<T>(s.b_ih, j) + hg[0] + load_opt<T>(s.b_hh, j));
    const float zg = sigmoid(to_acc(xg[H + j]) + load_opt<T>(s.b_ih, H + j) + hg[1] + load_opt<T>(s.b_hh, H + j));
    const float hn = hg[2] + load_opt<T>(s.b_hh, 2 * H + j);
    const float n = tanh_(to_acc(xg[2 * H + j]) + load_opt<T>(s.b_ih, 2 * H + j) + rg * hn);
    y[j] = from_acc<T>(n + zg * (hp - n));
    if (ws) {
      float* w = ws + row * 4 * H;
      w[j] = rg;
      w[H + j] = zg;
      w[2 * H + j] = n;
      w[3 * H + j] = hn;
    }
  } else {
    const float pre = to_acc(xg[j]) + hg[0] + load_opt<T>(s.b_ih, j) + load_opt<T>(s.b_hh, j);
    // relu keeps NaN, like torch.relu
    y[j] = from_acc<T>(C == SequenceCell::kRnnRelu ? (pre > 0.0f ? pre : (pre != pre ? pre : 0.0f)) : tanh_(pre));
  }
}

// U: units per block; staged: rows of h_{t-1} staged in shared memory at a
// time (a multiple of kRowsPerPass), so that a step waits on L2 once per
// `staged` rows rather than once per pass.
template <typename T, SequenceCell C>
__global__ void persistent_forward_kernel(SequenceForward s, int64_t U, int64_t staged) {
  constexpr int64_t NG = gates_of(C);
  extern __shared__ float4 smem_f4[];
  char* smem = reinterpret_cast<char*>(smem_f4);
  const int64_t H = s.hidden, B = s.B;
  T* w_sm = reinterpret_cast<T*>(smem);
  float* h_sm = reinterpret_cast<float*>(smem + weight_bytes(NG * U, H, sizeof(T)));
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * U;
  const int64_t units = H - j0 < U ? H - j0 : U;  // the last block may own fewer
  const int64_t tid = threadIdx.x, nthreads = blockDim.x;
  const int64_t warp = tid / 32, lane = tid % 32;

  // Row gate*U + u of w_sm is row gate*H + j0 + u of W_hh.
  const T* w_hh = static_cast<const T*>(s.w_hh);
  // (Through float: exact for the three storage types.)
  copy_overlapped(
      NG * U * H, tid, nthreads,
      [&](int64_t e) {
        const int64_t r = e / H, k = e % H, gate = r / U, u = r % U;
        return u < units ? to_acc(w_hh[(gate * H + j0 + u) * H + k]) : 0.0f;
      },
      [&](int64_t e, float v) { w_sm[e] = from_acc<T>(v); });

  const T* h0 = static_cast<const T*>(s.h0);
  const T* y = static_cast<const T*>(s.y);
  cg::grid_group grid = cg::this_grid();

  for (int64_t step = 0; step < s.T; ++step) {
    const int64_t t = s.reverse ? s.T - 1 - step : step;
    const T* h_prev = step == 0 ? h0 : y + (s.reverse ? t + 1 : t - 1) * B * H;
    for (int64_t b0 = 0; b0 < B; b0 += kRowsPerPass) {
      const int64_t nb = B - b0 < kRowsPerPass ? B - b0 : kRowsPerPass;
      const int64_t s0 = b0 % staged;  // row b0's place among the staged rows
      if (s0 == 0) {
        // Rows b0 .. b0+staged-1 (those that exist; zeros after them, up to a whole pass).
        const int64_t ns = B - b0 < staged ? B - b0 : staged;
        const int64_t fill = (ns + kRowsPerPass - 1) / kRowsPerPass * kRowsPerPass;
        __syncthreads();  // the previous passes are done with h_sm (and W is in place)
        stage_rows(h_sm, h_prev + b0 * H, ns * H, fill * H, tid, nthreads);
        __syncthreads();
      }
      const float* h_pass = h_sm + s0 * H;
      if (warp < units) {
        const int64_t u = warp, j = j0 + u;
        float acc[kRowsPerPass][NG];
#pragma unroll
        for (int64_t r = 0; r < kRowsPerPass; ++r)
#pragma unroll
          for (int64_t g = 0; g < NG; ++g) acc[r][g] = 0.0f;
        const T* w0 = w_sm + u * H;
        for (int64_t k = lane; k < H; k += 32) {
          float w[NG];
#pragma unroll
          for (int64_t g = 0; g < NG; ++g) w[g] = to_acc(w0[g * U * H + k]);
#pragma unroll
          for (int64_t r = 0; r < kRowsPerPass; ++r) {
            const float hv = h_pass[r * H + k];
#pragma unroll
            for (int64_t g = 0; g < NG; ++g) acc[r][g] = fmaf(w[g], hv, acc[r][g]);
          }
        }
#pragma unroll
        for (int64_t r = 0; r < kRowsPerPass; ++r)
#pragma unroll
          for (int64_t g = 0; g < NG; ++g)
#pragma unroll
            for (int64_t m = 16; m > 0; m /= 2) acc[r][g] += __shfl_xor_sync(kFullMask, acc[r][g], m);
#pragma unroll
        for (int64_t r = 0; r < kRowsPerPass; ++r) {
          if (lane == r && r < nb) cell_update<T, C>(s, acc[r], h_pass[r * H + j], t * B + b0 + r, b0 + r, j);
        }
      }
    }
    grid.sync();  // h_t of every unit written before any block reads it
  }
}

template <typename T, SequenceCell C>
bool launch_persistent(const SequenceForward& s) {
  const int64_t H = s.hidden;
  int device = 0, sms = 0, smem_optin = 0, cooperative = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device) != cudaSuccess) {
    cudaGetLastError();  // clear it: the GEMM path runs instead
    return false;
  }
  if (!cooperative || sms <= 0) return false;
  // Not inside CUDA-graph capture (torch.compile's reduce-overhead mode): the
  // GEMM path is known to capture; a cooperative launch is not relied on there.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(static_cast<cudaStream_t>(s.stream), &capture) != cudaSuccess ||
      capture != cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    return false;
  }
  auto kernel = &persistent_forward_kernel<T, C>;
  // One warp per unit: the kernel's registers bound the warps of a block.
  cudaFuncAttributes attrs{};
  if (cudaFuncGetAttributes(&attrs, kernel) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const int64_t U = (H + sms - 1) / sms;  // units per block: one block per multiprocessor at most
  if (U > kMaxUnits || 32 * U > attrs.maxThreadsPerBlock) return false;
  const int64_t blocks = (H + U - 1) / U, threads = 32 * U;
  // h_{t-1} rows staged at a time: the whole batch where it fits beside W_hh's rows.
  const int64_t rows = gates_of(C) * U, per_row = H * static_cast<int64_t>(sizeof(float));
  const int64_t room = (smem_optin - weight_bytes(rows, H, sizeof(T))) / per_row / kRowsPerPass * kRowsPerPass;
  const int64_t batch = (s.B + kRowsPerPass - 1) / kRowsPerPass * kRowsPerPass;
  const int64_t staged = batch < room ? batch : room;
  if (staged < kRowsPerPass) return false;
  const int64_t smem = smem_bytes(rows, H, sizeof(T), staged);
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) !=
      cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, static_cast<int>(threads),
                                                    static_cast<size_t>(smem)) != cudaSuccess ||
      static_cast<int64_t>(per_sm) * sms < blocks) {
    cudaGetLastError();
    return false;
  }
  SequenceForward args = s;
  int64_t units = U, staged_rows = staged;
  void* params[] = {&args, &units, &staged_rows};
  const cudaError_t err = cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(kernel), dim3(static_cast<unsigned>(blocks)), dim3(static_cast<unsigned>(threads)),
      params, static_cast<size_t>(smem), static_cast<cudaStream_t>(s.stream));
  if (err == cudaSuccess) return true;
  cudaGetLastError();  // not left for an unrelated later check to report
  // Fewer multiprocessors usable than the device has (MPS limits, green contexts):
  // the GEMM path runs instead.
  if (err == cudaErrorCooperativeLaunchTooLarge) return false;
  throw std::runtime_error(std::string("sequence_forward_cuda: cooperative launch failed: ") +
                           cudaGetErrorString(err));
}

template <typename T>
bool launch_for_cell(const SequenceForward& s) {
  switch (s.cell) {
    case SequenceCell::kLstm: return launch_persistent<T, SequenceCell::kLstm>(s);
    case SequenceCell::kGru: return launch_persistent<T, SequenceCell::kGru>(s);
    case SequenceCell::kRnnTanh: return launch_persistent<T, SequenceCell::kRnnTanh>(s);
    case SequenceCell::kRnnRelu: return launch_persistent<T, SequenceCell::kRnnRelu>(s);
  }
  return false;
}

}  // namespace

bool sequence_forward_cuda(const SequenceForward& s) {
  if (s.T <= 0 || s.B <= 0 || s.hidden <= 0) return false;
  switch (s.dtype) {
    case DType::kFloat: return launch_for_cell<float>(s);
    case DType::kHalf: return launch_for_cell<__half>(s);
    case DType::kBFloat16: return launch_for_cell<__nv_bfloat16>(s);
    default: return false;
  }
}

}  // namespace rnn_ext
