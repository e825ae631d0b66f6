// What the persistent kernels (persistent_forward.cu, persistent_backward.cu)
// share: reads through L2 of data other blocks wrote during the launch,
// copies with several loads in flight, and the cooperative launch with its
// fit checks. CUDA headers only.
#pragma once
#include "common/cell_steps.h"
#include "cuda/scalar_math.cuh"

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace rnn_ext {
namespace {

namespace cg = cooperative_groups;

constexpr int64_t kRowsPerPass = 8;  // batch rows a warp sums at once (accumulators per lane)
constexpr int64_t kMaxUnits = 32;    // units per block, one warp each: at most 1024 threads
constexpr unsigned kFullMask = 0xffffffffu;

constexpr int64_t gates_of(SequenceCell c) { return c == SequenceCell::kLstm ? 4 : c == SequenceCell::kGru ? 3 : 1; }

__host__ __device__ inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Data written by other blocks during this launch: read from L2 (__ldcg:
// never a stale L1 line).
__device__ __forceinline__ float load_l2(const float* p) { return __ldcg(p); }
__device__ __forceinline__ float load_l2(const __half* p) {
  return __half2float(__ushort_as_half(__ldcg(reinterpret_cast<const unsigned short*>(p))));
}
__device__ __forceinline__ float load_l2(const __nv_bfloat16* p) {
  return __bfloat162float(__ushort_as_bfloat16(__ldcg(reinterpret_cast<const unsigned short*>(p))));
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

// The barrier between two steps: each block's global writes before it are
// seen by every block's reads after it (release / acquire).
//   GridBarrier     every block of a cooperative launch (cooperative groups'
//                   grid barrier, through atomics in L2);
//   ClusterBarrier  every block of a launch that is one thread-block cluster
//                   (sm_90+: the hardware's cluster barrier, barrier.cluster
//                   arrive.release / wait.acquire).
struct GridBarrier {
  cg::grid_group grid;
  __device__ GridBarrier() : grid(cg::this_grid()) {}
  __device__ __forceinline__ void sync() { grid.sync(); }
};
struct ClusterBarrier {
  __device__ __forceinline__ void sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cg::this_cluster().sync();
#else
    __trap();  // never launched there: the launcher asks for sm_90 code
#endif
  }
};

// This block's hidden units j0 .. j0+units-1 (the last block may own fewer
// than U) and this thread's place in the block.
struct BlockUnits {
  int64_t j0, units, tid, nthreads, warp, lane;
  __device__ BlockUnits(int64_t U, int64_t H)
      : j0(static_cast<int64_t>(blockIdx.x) * U), units(H - j0 < U ? H - j0 : U), tid(threadIdx.x),
        nthreads(blockDim.x), warp(tid / 32), lane(tid % 32) {}
};

// dst (fill rows, ld apart) = rows [0, ns) of src (rows of H), zero-padded
// to ld columns and `fill` rows, in the storage type; through L2, 16-byte
// loads when the rows of both are whole 16-byte pieces and src is aligned
// (dst is 16-byte aligned), kInFlight of them issued before their stores,
// else element loads. The tensor-core kernels take 8 in flight: 16 rows of
// H=768 bfloat16 on 256 threads are 6 pieces a thread, one round trip to L2
// instead of two; the scalar kernels keep 4 (8 cost them 20-30 registers a
// thread, and their threads are bounded by registers: 32 a unit).
template <typename T, int64_t kInFlight = 4>
__device__ __forceinline__ void stage_padded_rows(T* dst, const T* src, int64_t ns, int64_t fill, int64_t H,
                                                  int64_t ld, int64_t tid, int64_t nthreads) {
  constexpr int64_t V = 16 / sizeof(T);  // elements per 16 bytes
  if (H % V == 0 && ld % V == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
    const int64_t per_row = ld / V, src_row = H / V, n = fill * per_row;
    const uint4* src16 = reinterpret_cast<const uint4*>(src);
    uint4* dst16 = reinterpret_cast<uint4*>(dst);
    for (int64_t e0 = tid; e0 < n; e0 += kInFlight * nthreads) {
      uint4 v[kInFlight];
#pragma unroll
      for (int64_t i = 0; i < kInFlight; ++i) {
        const int64_t e = e0 + i * nthreads, row = e / per_row, piece = e % per_row;
        v[i] = e < n && row < ns && piece < src_row ? __ldcg(src16 + row * src_row + piece) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int64_t i = 0; i < kInFlight; ++i) {
        const int64_t e = e0 + i * nthreads;
        if (e < n) dst16[e] = v[i];
      }
    }
    return;
  }
  copy_overlapped(
      fill * ld, tid, nthreads,
      [&](int64_t e) {
        const int64_t row = e / ld, k = e % ld;
        return row < ns && k < H ? load_l2(src + row * H + k) : 0.0f;
      },
      [&](int64_t e, float v) { dst[e] = from_acc<T>(v); });
}

// ------------------------------------------------------------ tensor cores
// On sm_80 and newer: a block's product A (its rows) x B (16 batch rows a tile, as
// columns) on the tensor cores with float32 accumulation: float16 / bfloat16 in
// WMMA 16 x 16 x 16 tiles, float32 as TF32 in 16 x 16 x 8 tiles (each element
// rounded to TF32 as its fragment is loaded; only where SequenceForward::tf32
// asks for it). The K range is split over the warps
// (`splits` ranges of K steps, each summed by one warp); the partial tiles go
// to shared memory and are added in split order (a fixed order: bitwise
// repeatable).
namespace wmma = nvcuda::wmma;
constexpr int64_t kTile = 16;      // WMMA tile edge (M and N), and batch rows per pass
constexpr int64_t kMmaWarps = 8;   // warps per block

// The WMMA input type and K step of a storage type.
template <typename T>
struct MmaInput {
  using type = T;
  static constexpr int64_t k = 16;
};
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800  // mma.h declares precision::tf32 for sm_80+ only
template <>
struct MmaInput<float> {
  using type = wmma::precision::tf32;
  static constexpr int64_t k = 8;
};
#endif

// The K splits that give kMmaWarps warps work for m_tiles x n_tiles output tiles.
__host__ __device__ inline int64_t k_splits(int64_t m_tiles, int64_t n_tiles, int64_t k_steps) {
  const int64_t jobs = m_tiles * n_tiles;
  return jobs >= kMmaWarps ? 1 : (kMmaWarps / jobs < k_steps ? kMmaWarps / jobs : k_steps);
}

// The shared memory of a tensor-core kernel's product, each part 128-byte
// aligned: A, the block's `rows` rows of K (storage type), zero-padded to
// rows_p rows and kp columns; the partial tiles (splits x m_tiles x 16 x 16
// float); after fixed(), the kernel's own parts and its staged B rows (16 per
// pass, storage type, zero-padded). Rows of A and B are ld = kp + 16 bytes
// apart: with kp itself, rows 128 bytes apart or a multiple put a fragment's
// rows in the same banks; 16 bytes keeps ld a multiple of WMMA's 16-byte rule
// and every 16-row tile 32-byte aligned. k_steps: K steps of kk (16, TF32 8),
// which must be MmaInput<T>::k, the step mma_partials takes (host code sees only
// the element size).
struct MmaSmem {
  int64_t rows_p, kp, ld, kk, m_tiles, k_steps, splits, w, part;
  __host__ __device__ MmaSmem(int64_t rows, int64_t K, int64_t elem)
      : rows_p(round_up(rows, kTile)), kp(round_up(K, kTile)), ld(kp + 16 / elem), kk(elem == 4 ? 8 : 16),
        m_tiles(rows_p / kTile), k_steps(kp / kk), splits(k_splits(m_tiles, 1, k_steps)),
        w(round_up(rows_p * ld * elem, 128)),
        part(round_up(splits * m_tiles * kTile * kTile * static_cast<int64_t>(sizeof(float)), 128)) {}
  __host__ __device__ int64_t fixed() const { return w + part; }
};

// part[split][nt][m] (16 x 16, row-major) = rows 16m.. of a (ld apart) x rows
// 16nt.. of b (ld apart, as columns) over the split's K range, for n_tiles
// tiles of b (16 rows each) and `splits` K ranges; warp `warp` of `warps`
// takes jobs warp, warp + warps, ... Every lane of a warp runs this. With one
// tile of b and L.splits, the pass of 16 batch rows both kernels take.
template <typename T>
__device__ __forceinline__ void mma_partials(const MmaSmem& L, const T* a, const T* b, float* part, int64_t warp,
                                             int64_t warps, int64_t n_tiles = 1, int64_t splits = 0) {
  using In = typename MmaInput<T>::type;
  constexpr int64_t kK = MmaInput<T>::k;
  if (splits == 0) splits = L.splits;
  for (int64_t i = warp; i < L.m_tiles * n_tiles * splits; i += warps) {
    const int64_t m = i % L.m_tiles, nt = i / L.m_tiles % n_tiles, split = i / (L.m_tiles * n_tiles);
    const int64_t k_begin = split * L.k_steps / splits, k_end = (split + 1) * L.k_steps / splits;
    const T* b_tile = b + nt * kTile * L.ld;
    wmma::fragment<wmma::accumulator, kTile, kTile, kK, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int64_t ks = k_begin; ks < k_end; ++ks) {
      wmma::fragment<wmma::matrix_a, kTile, kTile, kK, In, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, kTile, kTile, kK, In, wmma::col_major> fb;
      wmma::load_matrix_sync(fa, a + m * kTile * L.ld + ks * kK, static_cast<unsigned>(L.ld));
      wmma::load_matrix_sync(fb, b_tile + ks * kK, static_cast<unsigned>(L.ld));
      if constexpr (std::is_same<T, float>::value) {  // round to nearest TF32, not truncate
#pragma unroll
        for (int64_t e = 0; e < fa.num_elements; ++e) fa.x[e] = wmma::__float_to_tf32(fa.x[e]);
#pragma unroll
        for (int64_t e = 0; e < fb.num_elements; ++e) fb.x[e] = wmma::__float_to_tf32(fb.x[e]);
      }
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(part + ((split * n_tiles + nt) * L.m_tiles + m) * kTile * kTile, acc, kTile,
                            wmma::mem_row_major);
  }
}

// Row r, column n (< 16 n_tiles) of the product: the partial tiles added in split order.
__device__ __forceinline__ float sum_partials(const MmaSmem& L, const float* part, int64_t r, int64_t n,
                                              int64_t n_tiles = 1, int64_t splits = 0) {
  if (splits == 0) splits = L.splits;
  const int64_t tile = r / kTile, nt = n / kTile, at = (r % kTile) * kTile + n % kTile;
  float sum = 0.0f;
  for (int64_t split = 0; split < splits; ++split)
    sum += part[((split * n_tiles + nt) * L.m_tiles + tile) * kTile * kTile + at];
  return sum;
}

// The tensor-core forward's passes: above kWholeBatchFrom batch rows, where
// the whole batch fits in shared memory beside W and the partial tiles of all
// its 16-row tiles, one pass takes all of it (its tiles' products spread over
// the warps together, the row inputs requested once, three block barriers a
// step instead of three a 16 rows: at B=64 the pass-of-16 kernel took 18 us a
// step on an H200, 4 passes); else passes of 16 rows, with the shared memory
// as before. Up to kWholeBatchFrom rows (the default path choice's range) the
// kernel is as it was. Host and kernel decide alike: the host by the most
// shared memory the kernel may have (forward_mma_fixed), the kernel by what
// its launch has (whole_batch_pass).
constexpr int64_t kWholeBatchFrom = 32;
// The fixed part (W rows, partial tiles) for one pass over the whole batch.
__host__ __device__ inline int64_t whole_batch_fixed(const MmaSmem& L, int64_t B) {
  const int64_t n_tiles = round_up(B, kTile) / kTile;
  const int64_t part = round_up(k_splits(L.m_tiles, n_tiles, L.k_steps) * L.m_tiles * n_tiles * kTile * kTile *
                                    static_cast<int64_t>(sizeof(float)),
                                128);
  return L.w + (part > L.part ? part : L.part);
}
// The shared memory the whole-batch pass needs: its fixed part and the whole batch staged.
__host__ __device__ inline int64_t whole_batch_bytes(const MmaSmem& L, int64_t B, int64_t elem) {
  return whole_batch_fixed(L, B) + round_up(B, kTile) * L.ld * elem;
}
// The fixed shared memory the host gives the tensor-core forward, when it may have smem_max.
inline int64_t forward_mma_fixed(const MmaSmem& L, int64_t B, int64_t elem, int64_t smem_max) {
  return B > kWholeBatchFrom && whole_batch_bytes(L, B, elem) <= smem_max ? whole_batch_fixed(L, B) : L.fixed();
}
// The kernel's choice: whether a launch with dynamic_bytes of shared memory has the whole-batch pass's.
__host__ __device__ inline bool whole_batch_pass_fits(const MmaSmem& L, int64_t B, int64_t elem,
                                                      int64_t dynamic_bytes) {
  return B > kWholeBatchFrom && dynamic_bytes >= whole_batch_bytes(L, B, elem);
}
// In the kernel: that choice for this launch.
__device__ __forceinline__ bool whole_batch_pass(const MmaSmem& L, int64_t B, int64_t elem) {
  unsigned dynamic_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dynamic_bytes));
  return whole_batch_pass_fits(L, B, elem, static_cast<int64_t>(dynamic_bytes));
}

// Returns false: a persistent kernel is not launched (the next kernel, or the
// GEMM path, runs instead). With RNN_EXT_CUDA_PATH_LOG=1 (read per call) it
// also says why on stderr, with the CUDA error if one caused it: a test that
// finds another kernel ran then shows the reason in its captured output.
inline bool declined(const char* why, cudaError_t err = cudaSuccess) {
  const char* env = std::getenv("RNN_EXT_CUDA_PATH_LOG");
  if (env && env[0] == '1')
    std::fprintf(stderr, "rnn_ext: persistent kernel not launched: %s%s%s\n", why, err != cudaSuccess ? ": " : "",
                 err != cudaSuccess ? cudaGetErrorString(err) : "");
  return false;
}

// The device a persistent kernel would run on, or false (with any error
// cleared, so that the GEMM path runs instead): no cooperative launch, or the
// stream is being captured into a CUDA graph (torch.compile's reduce-overhead
// mode: the GEMM path is known to capture; a cooperative launch is not relied
// on there).
struct PersistentDevice {
  int64_t sms = 0, smem_optin = 0, major = 0;  // major: compute capability
};
inline bool persistent_device(void* stream, PersistentDevice* d) {
  int device = 0, sms = 0, smem_optin = 0, cooperative = 0, major = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return declined("device attributes", err);
  }
  if (!cooperative || sms <= 0) return declined("the device has no cooperative launch");
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  err = cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &capture);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return declined("stream capture status", err);
  }
  if (capture != cudaStreamCaptureStatusNone) return declined("the stream is being captured");
  d->sms = sms;
  d->smem_optin = smem_optin;
  d->major = major;
  return true;
}

// `kernel`'s attributes (maxThreadsPerBlock: the most threads its registers
// allow a block; ptxVersion: the PTX it was compiled from, e.g. 80 for
// sm_80), all zero when they cannot be read.
template <typename Kernel>
inline cudaFuncAttributes kernel_attributes(Kernel kernel) {
  cudaFuncAttributes attrs{};
  if (cudaFuncGetAttributes(&attrs, kernel) != cudaSuccess) {
    cudaGetLastError();
    return cudaFuncAttributes{};
  }
  return attrs;
}

// Launches `kernel` cooperatively (every block resident at once, as its grid
// barriers need) and returns true; returns false without launching when that
// many blocks cannot be resident at once. Other launch errors throw.
// The kernel's dynamic shared-memory limit is set to smem_max (the most it
// can have), the same value on every call: a per-call value could be lowered
// by another host thread between this call's setting and its launch.
template <typename Kernel>
inline bool launch_cooperative(Kernel kernel, int64_t blocks, int64_t threads, int64_t smem, int64_t smem_max,
                               const PersistentDevice& dev, void** params, void* stream, const char* what) {
  cudaError_t set =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_max));
  if (set != cudaSuccess) {
    cudaGetLastError();
    return declined("setting the dynamic shared memory limit", set);
  }
  int per_sm = 0;
  set = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, static_cast<int>(threads),
                                                      static_cast<size_t>(smem));
  if (set != cudaSuccess) {
    cudaGetLastError();
    return declined("occupancy query", set);
  }
  if (static_cast<int64_t>(per_sm) * dev.sms < blocks) return declined("not every block can be resident");
  const cudaError_t err = cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(kernel), dim3(static_cast<unsigned>(blocks)), dim3(static_cast<unsigned>(threads)),
      params, static_cast<size_t>(smem), static_cast<cudaStream_t>(stream));
  if (err == cudaSuccess) return true;
  cudaGetLastError();  // not left for an unrelated later check to report
  // Fewer multiprocessors usable than the device has (MPS limits, green
  // contexts): the GEMM path runs instead.
  if (err == cudaErrorCooperativeLaunchTooLarge) return declined("cooperative launch", err);
  throw std::runtime_error(std::string(what) + ": cooperative launch failed: " + cudaGetErrorString(err));
}

// How a persistent kernel's blocks are shaped: `threads` per block (0: one
// warp per unit, at most kMaxUnits), and batch rows taken `rows_per_pass` at a time.
struct BlockShape {
  int64_t threads = 0, rows_per_pass = kRowsPerPass;
};

// Hidden units per block: ceil(H / multiprocessors), so that every multiprocessor
// runs one block, but at least kDefaultMinUnits (or H): at small H, fewer and
// fuller blocks meet at each step's grid barrier, which costs more than the
// step's work there (H200, T=1000 B=1 I=H=256 fp32: 64 blocks of 4 units took
// 0.75-0.89x the time of 128 blocks of 2 in all three cells; bf16 within 1%;
// bench/results/gpu-check-h200-clean/units-sweep.md).
// RNN_EXT_PERSISTENT_UNITS=N (read per launch, for tuning) sets that floor to
// N (1 to kMaxUnits; 1 gives plain ceil(H / multiprocessors)). Any other value throws.
constexpr int64_t kDefaultMinUnits = 4;
inline int64_t units_per_block(int64_t H, int64_t sms) {
  int64_t floor_units = kDefaultMinUnits;
  if (const char* env = std::getenv("RNN_EXT_PERSISTENT_UNITS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end == env || *end != '\0' || n < 1 || n > kMaxUnits)
      throw std::runtime_error("rnn_ext: RNN_EXT_PERSISTENT_UNITS must be an integer from 1 to " +
                               std::to_string(kMaxUnits) + ", got '" + env + "'");
    floor_units = n;
  }
  const int64_t U = (H + sms - 1) / sms;
  const int64_t least = floor_units < H ? floor_units : H;
  return U > least ? U : least;
}

// Rows of the batch a block stages at a time beside `fixed` bytes of shared
// memory: as many as fit in smem_max, up to the whole batch, a multiple of the
// rows per pass (0: not one pass fits).
inline int64_t staged_rows(int64_t smem_max, int64_t fixed, int64_t per_row, int64_t B, int64_t pass) {
  const int64_t room = smem_max > fixed ? (smem_max - fixed) / per_row / pass * pass : 0;
  const int64_t batch = round_up(B, pass);
  return batch < room ? batch : room;
}

// RNN_EXT_PERSISTENT_CLUSTER (read per launch): "1" launches a persistent
// kernel as one thread-block cluster where one fits (sm_90+: up to 16 blocks,
// so H <= 16 * kMaxUnits, each block holding its units' W_hh rows), with the
// cluster's hardware barrier between steps instead of the grid barrier (see
// launch_cluster); "0" or unset: the cooperative grid launch. Off by default
// until it has been tested and timed on a GPU (bench/units_sweep.py's
// "cluster" variant). Any other value throws.
inline bool cluster_wanted() {
  const char* env = std::getenv("RNN_EXT_PERSISTENT_CLUSTER");
  if (env == nullptr || std::string(env) == "0") return false;
  if (std::string(env) == "1") return true;
  throw std::runtime_error(std::string("rnn_ext: RNN_EXT_PERSISTENT_CLUSTER must be 0 or 1, got '") + env + "'");
}

// The most blocks a cluster may have (sm_90's non-portable limit; 8 is the
// portable one, tried when 16 cannot be scheduled).
constexpr int64_t kMaxClusterBlocks = 16;

// Launches `kernel` (built with ClusterBarrier) as one cluster of
// ceil(H / U) blocks owning U = ceil(H / 16) units each (at most 16 blocks;
// with ceil(H / 8) units, at most 8, where 16 cannot be scheduled), and
// returns true; false without launching where no such cluster fits or the
// launch fails (the caller then launches the grid kernel). Shared memory and
// threads as launch_persistent_kernel.
template <typename Kernel, typename Args, typename Fixed>
inline bool launch_cluster(Kernel kernel, const Args& s, const PersistentDevice& dev, const Fixed& fixed,
                           int64_t per_row, BlockShape shape) {
  const cudaFuncAttributes attrs = kernel_attributes(kernel);
  if (dev.major < 9 || attrs.ptxVersion < 90) return declined("cluster: no sm_90 code for this device");
  const int64_t H = s.hidden, pass = shape.rows_per_pass;
  const int64_t smem_max = dev.smem_optin - static_cast<int64_t>(attrs.sharedSizeBytes);
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_max));
  if (err != cudaSuccess) {
    cudaGetLastError();
    return declined("cluster: setting the dynamic shared memory limit", err);
  }
  // Clusters over 8 blocks need the non-portable size allowed; without it only 8 is tried.
  const bool non_portable = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) ==
                            cudaSuccess;
  if (!non_portable) cudaGetLastError();
  for (const int64_t size : {kMaxClusterBlocks, int64_t{8}}) {
    if (size > 8 && !non_portable) continue;
    const int64_t U = (H + size - 1) / size, blocks = (H + U - 1) / U;
    const int64_t threads = shape.threads ? shape.threads : 32 * U;
    if (U > kMaxUnits || threads > attrs.maxThreadsPerBlock) return declined("cluster: too many units per block");
    const int64_t staged = staged_rows(smem_max, fixed(U, smem_max), per_row, s.B, pass);
    if (staged < pass) continue;  // (fewer blocks only need more shared memory each)
    cudaLaunchAttribute cluster_dim[1];
    cluster_dim[0].id = cudaLaunchAttributeClusterDimension;
    cluster_dim[0].val.clusterDim.x = static_cast<unsigned>(blocks);
    cluster_dim[0].val.clusterDim.y = 1;
    cluster_dim[0].val.clusterDim.z = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(static_cast<unsigned>(blocks));
    config.blockDim = dim3(static_cast<unsigned>(threads));
    config.dynamicSmemBytes = static_cast<size_t>(fixed(U, smem_max) + staged * per_row);
    config.stream = static_cast<cudaStream_t>(s.stream);
    config.attrs = cluster_dim;
    config.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    if (clusters < 1) continue;  // (e.g. 16 blocks where only portable clusters are scheduled)
    Args args = s;
    int64_t units = U, staged_rows_arg = staged;
    void* params[] = {&args, &units, &staged_rows_arg};
    err = cudaLaunchKernelExC(&config, reinterpret_cast<const void*>(kernel), params);
    if (err == cudaSuccess) return true;
    // The occupancy query's answer is no promise (other work, MPS or green-context limits):
    // the grid launch runs instead, and reports an error that is not the cluster's.
    cudaGetLastError();
    return declined("cluster launch", err);
  }
  return declined("cluster: no cluster of 16 or 8 blocks fits");
}

// The launch of a persistent kernel `kernel(args, units, staged)` for s on
// dev, or false when it does not fit: as one cluster (`cluster_kernel`, the
// same kernel built with ClusterBarrier) where RNN_EXT_PERSISTENT_CLUSTER asks
// for it and one fits, else cooperatively (`kernel`, GridBarrier). Each block of
// the cooperative launch owns U = units_per_block(H) hidden units; the kernel's registers bound its threads; its
// shared memory is fixed(U, smem_max) bytes (smem_max: the most the kernel may
// have) plus `staged` rows of per_row bytes: as many
// rows as fit, up to the whole batch, a multiple of the rows per pass.
template <typename Kernel, typename Args, typename Fixed>
inline bool launch_persistent_kernel(Kernel kernel, Kernel cluster_kernel, const Args& s, const PersistentDevice& dev,
                                     const Fixed& fixed, int64_t per_row, BlockShape shape, const char* what) {
  if (cluster_wanted() && launch_cluster(cluster_kernel, s, dev, fixed, per_row, shape)) return true;
  const int64_t H = s.hidden, U = units_per_block(H, dev.sms), pass = shape.rows_per_pass;
  const int64_t threads = shape.threads ? shape.threads : 32 * U;
  const cudaFuncAttributes attrs = kernel_attributes(kernel);
  if (U > kMaxUnits) return declined("more hidden units per block than a block takes");
  if (threads > attrs.maxThreadsPerBlock) return declined("more threads than the kernel's registers allow");
  // Dynamic shared memory may take the opt-in maximum less the kernel's
  // static shared memory (the sm_90 build of every persistent kernel has 1 KB
  // of it, cuobjdump's .nv.shared.reserved.0): if the runtime counts that,
  // asking for the whole opt-in maximum fails and every call would silently
  // take the GEMM path.
  const int64_t smem_max = dev.smem_optin - static_cast<int64_t>(attrs.sharedSizeBytes);
  const int64_t staged = staged_rows(smem_max, fixed(U, smem_max), per_row, s.B, pass);
  if (staged < pass) return declined("W_hh and the state do not fit in shared memory");
  Args args = s;
  int64_t units = U, staged_rows_arg = staged;
  void* params[] = {&args, &units, &staged_rows_arg};
  return launch_cooperative(kernel, (H + U - 1) / U, threads, fixed(U, smem_max) + staged * per_row, smem_max, dev, params,
                            s.stream, what);
}

// Launch<T, C>::run(s) for s's storage type (float, half, bfloat16) and cell;
// false for double or an empty problem.
template <template <typename, SequenceCell> class Launch, typename T, typename Args>
inline bool run_for_cell(const Args& s) {
  switch (s.cell) {
    case SequenceCell::kLstm: return Launch<T, SequenceCell::kLstm>::run(s);
    case SequenceCell::kGru: return Launch<T, SequenceCell::kGru>::run(s);
    case SequenceCell::kRnnTanh: return Launch<T, SequenceCell::kRnnTanh>::run(s);
    case SequenceCell::kRnnRelu: return Launch<T, SequenceCell::kRnnRelu>::run(s);
  }
  return false;
}
template <template <typename, SequenceCell> class Launch, typename Args>
inline bool run_persistent(const Args& s) {
  if (s.T <= 0 || s.B <= 0 || s.hidden <= 0) return false;
  switch (s.dtype) {
    case DType::kFloat: return run_for_cell<Launch, float>(s);
    case DType::kHalf: return run_for_cell<Launch, __half>(s);
    case DType::kBFloat16: return run_for_cell<Launch, __nv_bfloat16>(s);
    default: return false;
  }
}

}  // namespace
}  // namespace rnn_ext
