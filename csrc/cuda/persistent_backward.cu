// Persistent LSTM / GRU / RNN backward recurrence: one launch for a whole
// layer-direction (see SequenceBackward in common/cell_steps.h), instead of a
// pointwise kernel and a GEMM per step. The mirror of persistent_forward.cu.
//
// Block b owns U hidden units j0 .. j0+U-1. It keeps column j of W_hh for its
// units (W_hh^T's rows, NG*H long) in shared memory for every step, and its
// units' dL/dh (and LSTM's dL/dc, GRU's direct part dh*z) for every batch
// row, also in shared memory. Each step, going backward in time:
//   A. the pointwise derivatives of its units for every batch row, as the
//      per-step kernels of cells_cuda.cu compute them, written to grad_gates
//      (and grad_gates_hh);
//   grid barrier: every unit's gate gradients of this step are written;
//   B. dL/dh_{t-1} of its units = (gate gradients of all units) . W_hh[:, j]
//      (+ dh*z for GRU): the gate-gradient rows staged from L2 (storage type), warp
//      u sums unit j0+u for 8 batch rows at a time, each lane a stride of the
//      NG*H terms, combined by a fixed butterfly of shuffles (float16 /
//      bfloat16 on sm_80+, float32 as TF32 where allowed: 16 rows at a time
//      on the tensor cores, below).
// B only needs this block's own A results from the step before, so one grid
// barrier per step. Sums and states in float32; the gate gradients are
// stored in the storage type, as the GEMM path stores them (its weight and
// input gradient products read them). float16 / bfloat16 on sm_80+ (and
// float32 as TF32, where allowed and asked for) run phase B on the
// tensor cores (persistent_backward_mma_kernel); no double.
//
// Light on purpose: CUDA headers and the plain-C++ contract only.
#include "common/cell_steps.h"
#include "cuda/persistent_common.cuh"
#include "cuda/scalar_math.cuh"

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace rnn_ext {
namespace {

// Dynamic shared memory, each part 16-byte aligned: W_hh^T's rows of this
// block's units (U x NG*H, storage type); dL/dh of its units (B x U, float);
// LSTM dL/dc or GRU dh*z (B x U, float); then `staged` rows of gate gradients
// (a multiple of kRowsPerPass, x NG*H, storage type).
struct BackwardSmem {
  int64_t w, state;
  __host__ __device__ BackwardSmem(int64_t U, int64_t G, int64_t B, int64_t elem)
      : w(round_up(U * G * elem, 16)), state(round_up(B * U * static_cast<int64_t>(sizeof(float)), 16)) {}
  __host__ __device__ int64_t fixed() const { return w + 2 * state; }
};

// Phase A for one (batch row b, unit j) at time t: dh = dL/dh_t from the
// output and from step t+1; aux = LSTM dL/dc_t (in), dL/dc_{t-1} (out); GRU
// dh*z (out). prev: the row of h_{t-1} / c_{t-1} in y / the workspace, or -1
// at the first step (h0 / c0).
template <typename T, SequenceCell C>
__device__ __forceinline__ void cell_backward(const SequenceBackward& s, float dh, float& aux, int64_t row,
                                              int64_t prev, int64_t b, int64_t j) {
  const int64_t H = s.hidden;
  const float* ws = static_cast<const float*>(s.workspace);
  if constexpr (C == SequenceCell::kLstm) {
    const float* w = ws + row * 5 * H;
    const float i = w[j], f = w[H + j], g = w[2 * H + j], o = w[3 * H + j], c = w[4 * H + j];
    const float cp = prev >= 0 ? ws[prev * 5 * H + 4 * H + j] : static_cast<const float*>(s.c0)[b * H + j];
    const float tc = tanh_(c);
    const float dc = aux + dh * o * (1.0f - tc * tc);
    const float d_o = dh * tc, d_i = dc * g, d_g = dc * i, d_f = dc * cp;
    const int64_t base = row * 4 * H + j;
    store<T>(s.grad_gates, base, d_i * i * (1.0f - i));
    store<T>(s.grad_gates, base + H, d_f * f * (1.0f - f));
    store<T>(s.grad_gates, base + 2 * H, d_g * (1.0f - g * g));
    store<T>(s.grad_gates, base + 3 * H, d_o * o * (1.0f - o));
    aux = dc * f;
  } else if constexpr (C == SequenceCell::kGru) {
    const float hp = prev >= 0 ? load<T>(s.y, prev * H + j) : load<T>(s.h0, b * H + j);
    const float* w = ws + row * 4 * H;
    const float rg = w[j], zg = w[H + j], n = w[2 * H + j], hn = w[3 * H + j];
    const float dn = dh * (1.0f - zg);
    const float dz = dh * (hp - n);
    const float dn_pre = dn * (1.0f - n * n);
    const float dr_pre = dn_pre * hn * rg * (1.0f - rg);
    const float dz_pre = dz * zg * (1.0f - zg);
    const int64_t base = row * 3 * H + j;
    store<T>(s.grad_gates, base, dr_pre);
    store<T>(s.grad_gates, base + H, dz_pre);
    store<T>(s.grad_gates, base + 2 * H, dn_pre);
    store<T>(s.grad_gates_hh, base, dr_pre);
    store<T>(s.grad_gates_hh, base + H, dz_pre);
    store<T>(s.grad_gates_hh, base + 2 * H, dn_pre * rg);
    aux = dh * zg;
  } else {
    const float yv = load<T>(s.y, row * H + j);
    // relu' as torch's threshold_backward: zero only where y <= 0 (NaN passes)
    const float d = C == SequenceCell::kRnnRelu ? (yv <= 0.0f ? 0.0f : dh) : dh * (1.0f - yv * yv);
    store<T>(s.grad_gates, row * H + j, d);
  }
}

// Rows u < rows of wt_sm (ld elements apart) = column j0+u of W_hh over its
// NG*H = G rows; zeros for units past the block's last, padding rows and
// columns from G to ld. u runs fastest, so that neighbouring threads read
// neighbouring elements. Through float: exact for the three storage types.
template <typename T>
__device__ __forceinline__ void load_columns(T* wt_sm, const T* w_hh, int64_t units, int64_t j0, int64_t H,
                                             int64_t G, int64_t rows, int64_t ld, int64_t tid, int64_t nthreads) {
  copy_overlapped(
      ld * rows, tid, nthreads,
      [&](int64_t e) {
        const int64_t m = e / rows, u = e % rows;
        return u < units && m < G ? to_acc(w_hh[m * H + j0 + u]) : 0.0f;
      },
      [&](int64_t e, float v) { wt_sm[(e % rows) * ld + e / rows] = from_acc<T>(v); });
}

// dL/dh_n and (LSTM) dL/dc_n of this block's units into dh_sm / aux_sm
// ([b * U + u]; zeros for units past the last). Consecutive threads take
// consecutive units of one row: U contiguous elements per row in memory.
template <typename T, SequenceCell C>
__device__ __forceinline__ void load_state(const SequenceBackward& s, float* dh_sm, float* aux_sm, int64_t U,
                                           int64_t units, int64_t j0, int64_t tid, int64_t nthreads) {
  const int64_t H = s.hidden;
  for (int64_t e = tid; e < s.B * U; e += nthreads) {
    const int64_t b = e / U, u = e % U;
    const bool mine = u < units;
    dh_sm[e] = mine ? load<T>(s.grad_h, b * H + j0 + u) : 0.0f;
    aux_sm[e] = mine && C == SequenceCell::kLstm ? static_cast<const float*>(s.grad_c)[b * H + j0 + u] : 0.0f;
  }
}

// Phase A of step `step` (time t): the pointwise derivatives of this block's units.
template <typename T, SequenceCell C>
__device__ __forceinline__ void pointwise_step(const SequenceBackward& s, const float* dh_sm, float* aux_sm,
                                               int64_t U, int64_t units, int64_t j0, int64_t step, int64_t t,
                                               int64_t tid, int64_t nthreads) {
  const int64_t H = s.hidden, B = s.B;
  const int64_t t_prev = s.reverse ? t + 1 : t - 1;  // the time of the step before, when step > 0
  for (int64_t e = tid; e < B * U; e += nthreads) {
    const int64_t b = e / U, u = e % U;
    if (u >= units) continue;
    const int64_t j = j0 + u, row = t * B + b;
    const float dh = load<T>(s.grad_y, row * H + j) + dh_sm[e];
    cell_backward<T, C>(s, dh, aux_sm[e], row, step > 0 ? t_prev * B + b : -1, b, j);
  }
}

// dL/dh0 and (LSTM) dL/dc0 of this block's units, from dh_sm / aux_sm.
template <typename T, SequenceCell C>
__device__ __forceinline__ void store_state(const SequenceBackward& s, const float* dh_sm, const float* aux_sm,
                                            int64_t U, int64_t units, int64_t j0, int64_t tid, int64_t nthreads) {
  const int64_t H = s.hidden;
  for (int64_t e = tid; e < s.B * U; e += nthreads) {
    const int64_t b = e / U, u = e % U;
    if (u >= units) continue;
    store<T>(s.grad_h, b * H + j0 + u, dh_sm[e]);
    if (C == SequenceCell::kLstm) static_cast<float*>(s.grad_c)[b * H + j0 + u] = aux_sm[e];
  }
}

// U: units per block; staged: gate-gradient rows staged in shared memory at a
// time (a multiple of kRowsPerPass).
// Barrier: GridBarrier or ClusterBarrier (persistent_common.cuh), as launched.
template <typename T, SequenceCell C, typename Barrier>
__device__ __forceinline__ void backward_steps(const SequenceBackward s, int64_t U, int64_t staged) {
  constexpr int64_t NG = gates_of(C);
  extern __shared__ float4 smem_f4[];
  char* smem = reinterpret_cast<char*>(smem_f4);
  const int64_t H = s.hidden, B = s.B, G = NG * H;
  const BackwardSmem layout(U, G, B, sizeof(T));
  T* wt_sm = reinterpret_cast<T*>(smem);
  float* dh_sm = reinterpret_cast<float*>(smem + layout.w);                 // [b * U + u]
  float* aux_sm = reinterpret_cast<float*>(smem + layout.w + layout.state);  // [b * U + u]
  T* g_sm = reinterpret_cast<T*>(smem + layout.fixed());
  const BlockUnits me(U, H);
  const int64_t j0 = me.j0, units = me.units, tid = me.tid, nthreads = me.nthreads, warp = me.warp, lane = me.lane;

  load_columns(wt_sm, static_cast<const T*>(s.w_hh), units, j0, H, G, U, G, tid, nthreads);
  load_state<T, C>(s, dh_sm, aux_sm, U, units, j0, tid, nthreads);
  __syncthreads();

  const T* gate_grads = static_cast<const T*>(C == SequenceCell::kGru ? s.grad_gates_hh : s.grad_gates);
  Barrier barrier;
  for (int64_t step = s.T - 1; step >= 0; --step) {
    const int64_t t = s.reverse ? s.T - 1 - step : step;
    pointwise_step<T, C>(s, dh_sm, aux_sm, U, units, j0, step, t, tid, nthreads);
    barrier.sync();  // every unit's gate gradients of time t written before any block reads them
    // B: dL/dh_{t-1} of this block's units.
    const T* gt = gate_grads + t * B * G;
    for (int64_t b0 = 0; b0 < B; b0 += kRowsPerPass) {
      const int64_t nb = B - b0 < kRowsPerPass ? B - b0 : kRowsPerPass;
      const int64_t s0 = b0 % staged;  // row b0's place among the staged rows
      if (s0 == 0) {
        const int64_t ns = B - b0 < staged ? B - b0 : staged;
        __syncthreads();  // the previous passes are done with g_sm
        stage_padded_rows(g_sm, gt + b0 * G, ns, round_up(ns, kRowsPerPass), G, G, tid, nthreads);
        __syncthreads();
      }
      const T* g_pass = g_sm + s0 * G;
      if (warp < units) {
        float acc[kRowsPerPass];
#pragma unroll
        for (int64_t r = 0; r < kRowsPerPass; ++r) acc[r] = 0.0f;
        const T* w0 = wt_sm + warp * G;
        for (int64_t m = lane; m < G; m += 32) {
          const float wv = to_acc(w0[m]);
#pragma unroll
          for (int64_t r = 0; r < kRowsPerPass; ++r) acc[r] = fmaf(wv, to_acc(g_pass[r * G + m]), acc[r]);
        }
#pragma unroll
        for (int64_t r = 0; r < kRowsPerPass; ++r)
#pragma unroll
          for (int64_t m = 16; m > 0; m /= 2) acc[r] += __shfl_xor_sync(kFullMask, acc[r], m);
#pragma unroll
        for (int64_t r = 0; r < kRowsPerPass; ++r) {
          if (lane == r && r < nb) {
            const int64_t e = (b0 + r) * U + warp;
            dh_sm[e] = C == SequenceCell::kGru ? acc[r] + aux_sm[e] : acc[r];
          }
        }
      }
    }
    __syncthreads();  // dh_sm written before the next step's A reads it
  }

  store_state<T, C>(s, dh_sm, aux_sm, U, units, j0, tid, nthreads);
}

template <typename T, SequenceCell C>
__global__ void persistent_backward_kernel(SequenceBackward s, int64_t U, int64_t staged) {
  backward_steps<T, C, GridBarrier>(s, U, staged);
}
template <typename T, SequenceCell C>
__global__ void persistent_backward_cluster_kernel(SequenceBackward s, int64_t U, int64_t staged) {
  backward_steps<T, C, ClusterBarrier>(s, U, staged);
}

// float16 / bfloat16 (float32 as TF32) on sm_80+: the same, with phase B on the tensor cores
// (persistent_common.cuh): D (the block's U units, padded to 16, x 16 batch
// rows) = W_hh^T's rows (U x G) x the pass's 16 gate-gradient rows, G split
// over the 8 warps. Shared memory: MmaSmem (W_hh^T's rows, partial tiles),
// dL/dh and aux (B x U float each, 128-byte aligned), staged gate-gradient rows.
template <typename T, SequenceCell C, typename Barrier>
__device__ __forceinline__ void backward_mma_steps(const SequenceBackward s, int64_t U, int64_t staged) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched there: the launcher asks for sm_80 code
#else
  constexpr int64_t NG = gates_of(C);
  extern __shared__ __align__(128) char smem_mma[];
  const int64_t H = s.hidden, B = s.B, G = NG * H;
  const MmaSmem L(U, G, sizeof(T));
  const int64_t state = round_up(B * U * static_cast<int64_t>(sizeof(float)), 128);
  T* wt_sm = reinterpret_cast<T*>(smem_mma);
  float* part = reinterpret_cast<float*>(smem_mma + L.w);
  float* dh_sm = reinterpret_cast<float*>(smem_mma + L.fixed());          // [b * U + u]
  float* aux_sm = reinterpret_cast<float*>(smem_mma + L.fixed() + state);  // [b * U + u]
  T* g_sm = reinterpret_cast<T*>(smem_mma + L.fixed() + 2 * state);
  const BlockUnits me(U, H);
  const int64_t j0 = me.j0, units = me.units, tid = me.tid, nthreads = me.nthreads, warp = me.warp;
  const int64_t warps = nthreads / 32;

  load_columns(wt_sm, static_cast<const T*>(s.w_hh), units, j0, H, G, L.rows_p, L.ld, tid, nthreads);
  load_state<T, C>(s, dh_sm, aux_sm, U, units, j0, tid, nthreads);
  __syncthreads();

  const T* gate_grads = static_cast<const T*>(C == SequenceCell::kGru ? s.grad_gates_hh : s.grad_gates);
  Barrier barrier;
  for (int64_t step = s.T - 1; step >= 0; --step) {
    const int64_t t = s.reverse ? s.T - 1 - step : step;
    pointwise_step<T, C>(s, dh_sm, aux_sm, U, units, j0, step, t, tid, nthreads);
    barrier.sync();  // every unit's gate gradients of time t written before any block reads them
    const T* gt = gate_grads + t * B * G;
    for (int64_t b0 = 0; b0 < B; b0 += kTile) {
      const int64_t s0 = b0 % staged;  // row b0's place among the staged rows
      __syncthreads();  // the previous pass is done with `part` and g_sm
      if (s0 == 0) {
        const int64_t ns = B - b0 < staged ? B - b0 : staged;
        stage_padded_rows<T, 8>(g_sm, gt + b0 * G, ns, round_up(ns, kTile), G, L.ld, tid, nthreads);
        __syncthreads();
      }
      mma_partials(L, wt_sm, g_sm + s0 * L.ld, part, warp, warps);
      __syncthreads();
      for (int64_t e = tid; e < units * kTile; e += nthreads) {
        const int64_t u = e / kTile, n = e % kTile, b = b0 + n;
        if (b >= B) continue;
        const float sum = sum_partials(L, part, u, n);
        dh_sm[b * U + u] = C == SequenceCell::kGru ? sum + aux_sm[b * U + u] : sum;
      }
    }
    __syncthreads();  // dh_sm written before the next step's A reads it
  }
  store_state<T, C>(s, dh_sm, aux_sm, U, units, j0, tid, nthreads);
#endif
}

// (launch bounds: one block a multiprocessor, as launched; with the thread count
// alone ptxas held some of these kernels to 64 registers and spilled, sm_90)
template <typename T, SequenceCell C>
__global__ void __launch_bounds__(kMmaWarps * 32, 1)
    persistent_backward_mma_kernel(SequenceBackward s, int64_t U, int64_t staged) {
  backward_mma_steps<T, C, GridBarrier>(s, U, staged);
}
template <typename T, SequenceCell C>
__global__ void __launch_bounds__(kMmaWarps * 32, 1)
    persistent_backward_mma_cluster_kernel(SequenceBackward s, int64_t U, int64_t staged) {
  backward_mma_steps<T, C, ClusterBarrier>(s, U, staged);
}

template <typename T, SequenceCell C>
struct BackwardLaunch {
  static bool run(const SequenceBackward& s) {
    const int64_t G = gates_of(C) * s.hidden;
    PersistentDevice dev;
    if (!persistent_device(s.stream, &dev)) return false;
    // On the tensor cores where they fit (and the device code comes from
    // sm_80+ machine code or PTX): float16 / bfloat16, and float32 as TF32
    // where allowed and asked for (s.tf32).
    if (!std::is_same<T, float>::value || s.tf32) {
      auto mma = &persistent_backward_mma_kernel<T, C>;
      const int64_t B = s.B;
      if (dev.major >= 8 && kernel_attributes(mma).ptxVersion >= 80 &&
          launch_persistent_kernel(
              mma, &persistent_backward_mma_cluster_kernel<T, C>, s, dev,
              [&](int64_t U, int64_t) {  // + dL/dh and aux, B x U float each
                return MmaSmem(U, G, sizeof(T)).fixed() + 2 * round_up(B * U * static_cast<int64_t>(sizeof(float)), 128);
              },
              MmaSmem(1, G, sizeof(T)).ld * static_cast<int64_t>(sizeof(T)), BlockShape{kMmaWarps * 32, kTile},
              "sequence_backward_cuda"))
        return true;
    }
    return launch_persistent_kernel(
        &persistent_backward_kernel<T, C>, &persistent_backward_cluster_kernel<T, C>, s, dev,
        [&](int64_t U, int64_t) { return BackwardSmem(U, G, s.B, sizeof(T)).fixed(); },
        G * static_cast<int64_t>(sizeof(T)), BlockShape{}, "sequence_backward_cuda");
  }
};

}  // namespace

bool sequence_backward_cuda(const SequenceBackward& s) { return run_persistent<BackwardLaunch>(s); }

}  // namespace rnn_ext
