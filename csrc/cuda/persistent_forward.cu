// Persistent LSTM / GRU / RNN forward: one launch for a whole layer-direction
// (see SequenceForward in common/cell_steps.h), instead of a GEMM and a
// pointwise kernel per step.
//
// Block b owns U hidden units j0 .. j0+U-1 across the NG gates (4, 3, 1). It
// copies their NG*U rows of W_hh into shared memory once and keeps them for
// every step, so the cell update of its units needs nothing from other blocks
// but h_{t-1}. At each step the block stages as many batch rows of h_{t-1}
// as fit beside W in shared memory (the whole batch when it fits).
// Warp u computes unit j0+u for a chunk of 8 batch rows at a time: each lane
// sums a stride of K for the gates of every row of the chunk, the lanes' sums
// are combined by a butterfly of shuffles (a fixed order: the result does not depend on timing), and lanes
// 0..7 apply the gate math to the chunk's rows together. The blocks then meet at a grid barrier (cooperative
// launch, so that every block is resident) and read the h_t that all of them
// wrote through L2 (__ldcg: never a stale L1 line).
//
// Accumulation and cell state in float32, whatever the storage type. float16
// and bfloat16 on sm_80+ run a second kernel that does the products on the
// tensor cores (below), and so does float32 as TF32 where allowed and asked
// for (SequenceForward::tf32); no double (the GEMM path serves double).
//
// Light on purpose: CUDA headers and the plain-C++ contract only.
#include "common/cell_steps.h"
#include "cuda/persistent_common.cuh"
#include "cuda/scalar_math.cuh"

#include <cooperative_groups.h>
#include <mma.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace rnn_ext {
namespace {

// Dynamic shared memory: W_hh's rows of this block (NG*U x H, storage type),
// then `staged` rows of h_{t-1} (a multiple of kRowsPerPass, x H, storage type), 16-byte aligned.
__host__ __device__ inline int64_t weight_bytes(int64_t rows, int64_t H, int64_t elem) {
  return round_up(rows * H * elem, 16);
}

// W_hh's rows of this block's units into shared memory, gate-major: row
// g*U + u of w_sm (rows ld elements apart) is row g*H + j0 + u of W_hh; zeros
// for units past the block's last, in rows from NG*U to `rows` and in columns
// from H to ld. Through float: exact for the three storage types.
template <typename T>
__device__ __forceinline__ void load_gate_rows(T* w_sm, const T* w_hh, int64_t NG, int64_t U, int64_t units,
                                               int64_t j0, int64_t H, int64_t rows, int64_t ld, int64_t tid,
                                               int64_t nthreads) {
  copy_overlapped(
      rows * ld, tid, nthreads,
      [&](int64_t e) {
        const int64_t r = e / ld, k = e % ld, gate = r / U, u = r % U;
        return r < NG * U && u < units && k < H ? to_acc(w_hh[(gate * H + j0 + u) * H + k]) : 0.0f;
      },
      [&](int64_t e, float v) { w_sm[e] = from_acc<T>(v); });
}

// h_{t-1} of step `step` (time t): h0 at the first step, else the outputs
// of the time processed before, (B, H).
template <typename T>
__device__ __forceinline__ const T* previous_hidden(const SequenceForward& s, int64_t step, int64_t t) {
  if (step == 0) return static_cast<const T*>(s.h0);
  return static_cast<const T*>(s.y) + (s.reverse ? t + 1 : t - 1) * s.B * s.hidden;
}

// What the gate math of one (row, unit) reads besides the product: the row's
// input projection and (LSTM) cell state, and the unit's biases, loaded ahead so
// that their latency overlaps the staging of h_{t-1} and the product: the scalar
// kernel loads the biases once and each row's inputs before it stages h_{t-1};
// the tensor-core kernel loads both for each thread's first (unit, row) of a pass
// (see there).
template <SequenceCell C>
struct RowInputs {
  float xg[gates_of(C)];
  float c;
};
template <SequenceCell C>
struct UnitBias {
  float ih[gates_of(C)], hh[gates_of(C)];
};

template <typename T, SequenceCell C>
__device__ __forceinline__ RowInputs<C> load_row_inputs(const SequenceForward& s, int64_t row, int64_t b, int64_t j) {
  constexpr int64_t NG = gates_of(C);
  const int64_t H = s.hidden;
  const T* xg = static_cast<const T*>(s.x_gates) + row * NG * H;
  RowInputs<C> in;
#pragma unroll
  for (int64_t g = 0; g < NG; ++g) in.xg[g] = to_acc(xg[g * H + j]);
  in.c = C == SequenceCell::kLstm ? static_cast<const float*>(s.c_state)[b * H + j] : 0.0f;
  return in;
}

template <typename T, SequenceCell C>
__device__ __forceinline__ UnitBias<C> load_unit_bias(const SequenceForward& s, int64_t j) {
  UnitBias<C> bias;
#pragma unroll
  for (int64_t g = 0; g < gates_of(C); ++g) {
    bias.ih[g] = load_opt<T>(s.b_ih, g * s.hidden + j);
    bias.hh[g] = load_opt<T>(s.b_hh, g * s.hidden + j);
  }
  return bias;
}

// The gate math of one (row, unit), as the per-step kernels of cells_cuda.cu
// do it (the same sums in the same order): hg[g] = (W_hh h_{t-1})[g*H + j],
// hp = h_{t-1}[j].
template <typename T, SequenceCell C>
__device__ __forceinline__ void cell_update(const SequenceForward& s, const RowInputs<C>& in, const UnitBias<C>& bias,
                                            const float* hg, float hp, int64_t row, int64_t b, int64_t j) {
  const int64_t H = s.hidden;
  T* y = static_cast<T*>(s.y) + row * H;
  float* ws = static_cast<float*>(s.workspace);
  if constexpr (C == SequenceCell::kLstm) {
    float act[4];
#pragma unroll
    for (int64_t g = 0; g < 4; ++g) {
      const float pre = in.xg[g] + hg[g] + bias.ih[g] + bias.hh[g];
      act[g] = g == 2 ? tanh_(pre) : sigmoid(pre);
    }
    const float c = act[1] * in.c + act[0] * act[2];
    static_cast<float*>(s.c_state)[b * H + j] = c;
    y[j] = from_acc<T>(act[3] * tanh_(c));
    if (ws) {
#pragma unroll
      for (int64_t g = 0; g < 4; ++g) ws[row * 5 * H + g * H + j] = act[g];
      ws[row * 5 * H + 4 * H + j] = c;
    }
  } else if constexpr (C == SequenceCell::kGru) {
    const float rg = sigmoid(in.xg[0] + bias.ih[0] + hg[0] + bias.hh[0]);
    const float zg = sigmoid(in.xg[1] + bias.ih[1] + hg[1] + bias.hh[1]);
    const float hn = hg[2] + bias.hh[2];
    const float n = tanh_(in.xg[2] + bias.ih[2] + rg * hn);
    y[j] = from_acc<T>(n + zg * (hp - n));
    if (ws) {
      float* w = ws + row * 4 * H;
      w[j] = rg;
      w[H + j] = zg;
      w[2 * H + j] = n;
      w[3 * H + j] = hn;
    }
  } else {
    const float pre = in.xg[0] + hg[0] + bias.ih[0] + bias.hh[0];
    // relu keeps NaN, like torch.relu
    y[j] = from_acc<T>(C == SequenceCell::kRnnRelu ? (pre > 0.0f ? pre : (pre != pre ? pre : 0.0f)) : tanh_(pre));
  }
}

// U: units per block; staged: rows of h_{t-1} staged in shared memory at a
// time (a multiple of kRowsPerPass), so that a step waits on L2 once per
// `staged` rows rather than once per pass.
// Barrier: GridBarrier or ClusterBarrier (persistent_common.cuh), as launched.
template <typename T, SequenceCell C, typename Barrier>
__device__ __forceinline__ void forward_steps(const SequenceForward s, int64_t U, int64_t staged) {
  constexpr int64_t NG = gates_of(C);
  extern __shared__ float4 smem_f4[];
  char* smem = reinterpret_cast<char*>(smem_f4);
  const int64_t H = s.hidden, B = s.B;
  T* w_sm = reinterpret_cast<T*>(smem);
  T* h_sm = reinterpret_cast<T*>(smem + weight_bytes(NG * U, H, sizeof(T)));
  const BlockUnits me(U, H);
  const int64_t j0 = me.j0, units = me.units, tid = me.tid, nthreads = me.nthreads, warp = me.warp, lane = me.lane;

  load_gate_rows(w_sm, static_cast<const T*>(s.w_hh), NG, U, units, j0, H, NG * U, H, tid, nthreads);
  const UnitBias<C> bias = load_unit_bias<T, C>(s, warp < units ? j0 + warp : j0);

  Barrier barrier;
  for (int64_t step = 0; step < s.T; ++step) {
    const int64_t t = s.reverse ? s.T - 1 - step : step;
    const T* h_prev = previous_hidden<T>(s, step, t);
    for (int64_t b0 = 0; b0 < B; b0 += kRowsPerPass) {
      const int64_t nb = B - b0 < kRowsPerPass ? B - b0 : kRowsPerPass;
      const int64_t s0 = b0 % staged;  // row b0's place among the staged rows
      // Lane r's row of this pass: its inputs requested now, used after the product.
      // (Its cell state was written by this same thread at the previous step.)
      RowInputs<C> in{};
      if (warp < units && lane < nb) in = load_row_inputs<T, C>(s, t * B + b0 + lane, b0 + lane, j0 + warp);
      if (s0 == 0) {
        // Rows b0 .. b0+staged-1 (those that exist; zeros after them, up to a whole pass).
        const int64_t ns = B - b0 < staged ? B - b0 : staged;
        __syncthreads();  // the previous passes are done with h_sm (and W is in place)
        stage_padded_rows(h_sm, h_prev + b0 * H, ns, round_up(ns, kRowsPerPass), H, H, tid, nthreads);
        __syncthreads();
      }
      const T* h_pass = h_sm + s0 * H;
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
            const float hv = to_acc(h_pass[r * H + k]);
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
        // The butterfly leaves every sum in every lane, bitwise equal (each level adds the
        // same two values). Lane r picks row r's sums by selects, and the lanes of the
        // pass update their rows at once: a branch per row would run the rows' global loads
        // one after another (about 1 us each on an H200: B=8 took 3x B=1's time a step).
        float mine[NG];
#pragma unroll
        for (int64_t g = 0; g < NG; ++g) mine[g] = acc[0][g];
#pragma unroll
        for (int64_t r = 1; r < kRowsPerPass; ++r)
#pragma unroll
          for (int64_t g = 0; g < NG; ++g) mine[g] = lane == r ? acc[r][g] : mine[g];
        if (lane < nb)
          cell_update<T, C>(s, in, bias, mine, to_acc(h_pass[lane * H + j]), t * B + b0 + lane, b0 + lane, j);
      }
    }
    barrier.sync();  // h_t of every unit written before any block reads it
  }
}

template <typename T, SequenceCell C>
__global__ void persistent_forward_kernel(SequenceForward s, int64_t U, int64_t staged) {
  forward_steps<T, C, GridBarrier>(s, U, staged);
}
template <typename T, SequenceCell C>
__global__ void persistent_forward_cluster_kernel(SequenceForward s, int64_t U, int64_t staged) {
  forward_steps<T, C, ClusterBarrier>(s, U, staged);
}

// ------------------------------------------------------------ tensor cores
// float16 / bfloat16 (and float32 as TF32, where allowed) on sm_80 and newer:
// the same blocks, units and steps, but the products W_hh[block rows] h_{t-1}^T
// run on the tensor cores (WMMA 16 x 16 x 16 tiles, TF32 16 x 16 x 8, float32
// accumulation). Per pass of 16 batch rows (or, above 32 rows where it fits,
// of the whole batch: whole_batch_pass), the 16-row tiles of the block's NG*U
// gate rows (padded to 16) times the pass's 16-column tiles are split over the
// warps along K (`splits` ranges, each summed by one warp); the partial tiles
// go to shared memory and are added in split order (a fixed order: bitwise
// repeatable), then one thread per (unit, row) applies the gate math.

template <typename T, SequenceCell C, typename Barrier>
__device__ __forceinline__ void forward_mma_steps(const SequenceForward s, int64_t U, int64_t staged) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched there: the launcher asks for compute capability 8.0
#else
  constexpr int64_t NG = gates_of(C);
  extern __shared__ __align__(128) char smem_mma[];
  const int64_t H = s.hidden, B = s.B;
  const MmaSmem L(NG * U, H, sizeof(T));
  T* w_sm = reinterpret_cast<T*>(smem_mma);
  float* part = reinterpret_cast<float*>(smem_mma + L.w);
  // a pass: the whole batch (persistent_common.cuh) or 16 rows; the K range in `splits`
  const bool whole = whole_batch_pass(L, B, sizeof(T));
  T* h_sm = reinterpret_cast<T*>(smem_mma + (whole ? whole_batch_fixed(L, B) : L.fixed()));
  const BlockUnits me(U, H);
  const int64_t j0 = me.j0, units = me.units, tid = me.tid, nthreads = me.nthreads, warp = me.warp;
  const int64_t warps = nthreads / 32;
  const int64_t n_tiles = whole ? round_up(B, kTile) / kTile : 1, rows = n_tiles * kTile;
  const int64_t splits = whole ? k_splits(L.m_tiles, n_tiles, L.k_steps) : L.splits;

  load_gate_rows(w_sm, static_cast<const T*>(s.w_hh), NG, U, units, j0, H, L.rows_p, L.ld, tid, nthreads);
  // This thread's first (unit, row) of every pass, e = tid below: its inputs and biases are
  // requested before the pass's staging and product (the biases each pass, not once as in the
  // scalar kernel: kept across the steps, they made ptxas spill in two of these kernels).
  const bool first_ok = tid < units * rows;
  const int64_t u0 = tid / rows, n0 = tid % rows;

  Barrier barrier;
  for (int64_t step = 0; step < s.T; ++step) {
    const int64_t t = s.reverse ? s.T - 1 - step : step;
    const T* h_prev = previous_hidden<T>(s, step, t);
    for (int64_t b0 = 0; b0 < B; b0 += rows) {
      const int64_t s0 = b0 % staged;  // row b0's place among the staged rows
      // (the cell state of (b0 + n0, j0 + u0) was written by this same thread at the previous step)
      RowInputs<C> in0{};
      UnitBias<C> bias0{};
      if (first_ok && b0 + n0 < B) {
        in0 = load_row_inputs<T, C>(s, t * B + b0 + n0, b0 + n0, j0 + u0);
        bias0 = load_unit_bias<T, C>(s, j0 + u0);
      }
      __syncthreads();  // the previous pass is done with `part` (and h_sm, and W is in place)
      if (s0 == 0) {
        const int64_t ns = B - b0 < staged ? B - b0 : staged;
        stage_padded_rows<T, 8>(h_sm, h_prev + b0 * H, ns, round_up(ns, kTile), H, L.ld, tid, nthreads);
        __syncthreads();
      }
      const T* h_pass = h_sm + s0 * L.ld;
      mma_partials(L, w_sm, h_pass, part, warp, warps, n_tiles, splits);
      __syncthreads();
      for (int64_t e = tid; e < units * rows; e += nthreads) {
        const int64_t u = e / rows, n = e % rows, b = b0 + n;
        if (b >= B) continue;
        float hg[NG];
#pragma unroll
        for (int64_t g = 0; g < NG; ++g) {
          hg[g] = sum_partials(L, part, g * U + u, n, n_tiles, splits);
        }
        const float hp = to_acc(h_pass[n * L.ld + j0 + u]);
        if (e == tid)
          cell_update<T, C>(s, in0, bias0, hg, hp, t * B + b, b, j0 + u);
        else
          cell_update<T, C>(s, load_row_inputs<T, C>(s, t * B + b, b, j0 + u), load_unit_bias<T, C>(s, j0 + u), hg,
                            hp, t * B + b, b, j0 + u);
      }
    }
    barrier.sync();  // h_t of every unit written before any block reads it
  }
#endif
}

// (launch bounds: one block a multiprocessor, as launched; with the thread count
// alone ptxas held some of these kernels to 64 registers and spilled, sm_90)
template <typename T, SequenceCell C>
__global__ void __launch_bounds__(kMmaWarps * 32, 1)
    persistent_forward_mma_kernel(SequenceForward s, int64_t U, int64_t staged) {
  forward_mma_steps<T, C, GridBarrier>(s, U, staged);
}
template <typename T, SequenceCell C>
__global__ void __launch_bounds__(kMmaWarps * 32, 1)
    persistent_forward_mma_cluster_kernel(SequenceForward s, int64_t U, int64_t staged) {
  forward_mma_steps<T, C, ClusterBarrier>(s, U, staged);
}

template <typename T, SequenceCell C>
struct ForwardLaunch {
  static bool run(const SequenceForward& s) {
    const int64_t H = s.hidden;
    PersistentDevice dev;
    if (!persistent_device(s.stream, &dev)) return false;
    // On the tensor cores where they fit: float16 / bfloat16, and float32 as
    // TF32 where allowed and asked for (s.tf32).
    if (!std::is_same<T, float>::value || s.tf32) {
      // (The code the device would run must come from sm_80+ machine code or
      // PTX: a build for an older target alone holds only the trap.)
      auto mma = &persistent_forward_mma_kernel<T, C>;
      if (dev.major >= 8 && kernel_attributes(mma).ptxVersion >= 80 &&
          launch_persistent_kernel(
              mma, &persistent_forward_mma_cluster_kernel<T, C>, s, dev,
              [&](int64_t U, int64_t smem_max) {
                return forward_mma_fixed(MmaSmem(gates_of(C) * U, H, sizeof(T)), s.B, sizeof(T), smem_max);
              },
              MmaSmem(1, H, sizeof(T)).ld * static_cast<int64_t>(sizeof(T)), BlockShape{kMmaWarps * 32, kTile},
              "sequence_forward_cuda"))
        return true;
    }
    // W_hh's rows of the block's units; then h_{t-1} rows.
    return launch_persistent_kernel(
        &persistent_forward_kernel<T, C>, &persistent_forward_cluster_kernel<T, C>, s, dev,
        [&](int64_t U, int64_t) { return weight_bytes(gates_of(C) * U, H, sizeof(T)); },
        H * static_cast<int64_t>(sizeof(T)), BlockShape{}, "sequence_forward_cuda");
  }
};

}  // namespace

bool sequence_forward_cuda(const SequenceForward& s) { return run_persistent<ForwardLaunch>(s); }

}  // namespace rnn_ext
