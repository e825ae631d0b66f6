// Fused whole-sequence CPU kernels (see fused_cpu.h for the contract).
//
// Work split: the hidden units are cut into blocks of one vector (LSTM, GRU:
// the block's panel holds that vector's columns of every gate) or four
// vectors (RNN, and every backward). Each thread owns a contiguous range of
// blocks for the whole sequence, so the cell state of its units, the slice of
// W_hh it multiplies by and the gate math all stay on its core; the threads
// share only h_{t-1} (forward) or the gate gradients (backward), hence one
// barrier per step.
//
// The micro-kernel keeps an MR x NV tile of vector accumulators in registers
// and walks K once: per k it loads NV vectors of the panel and broadcasts MR
// values of the left operand. Every output element is one dot product summed
// in k order, whatever the thread count, so results are bitwise reproducible.
//
// Built from one generic source with GCC vector extensions, instantiated for
// AVX-512, AVX2+FMA and a 16-byte baseline; the CPU is checked once at run time
// (RNN_EXT_CPU_ISA=avx512|avx2|generic forces a narrower one, for testing).
//
// One file, though it takes 4 minutes to compile: GCC's register allocation of
// the huge forward functions changes with anything else in the unit, and split
// into one file per instruction set (same kernels, bitwise same results) it
// spilled a hot tile's accumulators: LSTM inference at T=100, B=32, I=H=256,
// 2 threads, 15% slower. Check the forward's speed after any edit here.
// RNN_EXT_QUICK_CPU_BUILD (setup.py, for a GPU check's short lease): these kernels
// unoptimised, compiled in seconds; never for CPU use.
#ifdef RNN_EXT_QUICK_CPU_BUILD
#pragma GCC optimize("O0")
#endif
#include "cpu/fused_cpu.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#pragma GCC diagnostic ignored "-Wpsabi"
#include "cpu/fast_math.h"

#define RNN_EXT_LAMBDA_INLINE __attribute__((always_inline))

namespace rnn_ext {
namespace fused {
namespace {

using fast_math::sigmoid_;
using fast_math::tanh_;

// ------------------------------------------------------------ CPU features
enum class Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

Isa detect_isa() {
  Isa best = Isa::kGeneric;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    best = Isa::kAvx512;
#endif
  if (const char* env = std::getenv("RNN_EXT_CPU_ISA")) {  // may only narrow
    Isa want = best;
    if (!std::strcmp(env, "generic")) want = Isa::kGeneric;
    else if (!std::strcmp(env, "avx2")) want = Isa::kAvx2;
    else if (!std::strcmp(env, "avx512")) want = Isa::kAvx512;
    if (want < best) best = want;
  }
  return best;
}

Isa isa() {
  static const Isa value = detect_isa();
  return value;
}

int64_t vector_bytes() { return isa() == Isa::kAvx512 ? 64 : isa() == Isa::kAvx2 ? 32 : 16; }
int64_t lanes(bool is_double) { return vector_bytes() / (is_double ? 8 : 4); }

// ------------------------------------------------------------ layouts
constexpr int64_t gates_of(Cell c) { return c == Cell::kLstm ? 4 : c == Cell::kGru ? 3 : 1; }
constexpr bool gated(Cell c) { return c == Cell::kLstm || c == Cell::kGru; }
// Vectors per panel row, and hidden units per block.
constexpr int64_t forward_nv(Cell c) { return gated(c) ? gates_of(c) : 4; }
constexpr int64_t forward_units(Cell c, int64_t W) { return gated(c) ? W : 4 * W; }
constexpr int64_t kBackwardNv = 4;
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ------------------------------------------------------------ vectors
template <typename T, int64_t W>
struct VecOf {
  typedef T type __attribute__((vector_size(sizeof(T) * W)));
};
template <typename V>
RNN_EXT_INLINE V load_vec(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V>
RNN_EXT_INLINE void store_vec(float* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }

// One stage of a W x W transpose in registers: rows i and i + S (i with bit S
// clear) swap their off-diagonal S x S sub-blocks. After the stages S = W/2,
// ..., 1 row j holds column j. Each output is one two-source shuffle
// (vpermt2ps on AVX-512), so a 16 x 16 float tile costs 64 shuffles instead
// of 256 scalar loads and stores.
template <typename V, int64_t W, int64_t S, size_t... L>
RNN_EXT_INLINE V keep_low(const V& a, const V& b, std::index_sequence<L...>) {
  return __builtin_shufflevector(a, b, ((L & S) ? W + L - S : L)...);
}
template <typename V, int64_t W, int64_t S, size_t... L>
RNN_EXT_INLINE V keep_high(const V& a, const V& b, std::index_sequence<L...>) {
  return __builtin_shufflevector(a, b, ((L & S) ? W + L : L + S)...);
}
template <typename V, int64_t W, int64_t S>
RNN_EXT_INLINE void transpose_stages(V* r) {
  if constexpr (S >= 1) {
    constexpr auto lanes_ = std::make_index_sequence<W>{};
    for (int64_t i = 0; i < W; ++i)
      if (!(i & S)) {
        const V a = r[i], b = r[i + S];
        r[i] = keep_low<V, W, S>(a, b, lanes_);
        r[i + S] = keep_high<V, W, S>(a, b, lanes_);
      }
    transpose_stages<V, W, S / 2>(r);
  }
}

// Packing runs inside the parallel region: each thread packs the panels of its
// own blocks (the only ones it reads), so the copy is split among the threads
// and lands in the cache of the core that uses it.
template <typename T, int64_t W>
RNN_EXT_INLINE void pack_forward_blocks(Cell cell, const T* __restrict w, int64_t H, int64_t K, T* __restrict out,
                                        int64_t b0, int64_t b1) {
  // w is (G, K). Panel b, row k, vector v, lane l <- w[gate v's unit b*W + l, k]
  // (LSTM, GRU) or w[b*4W + v*W + l, k] (RNN); zero past H. A transpose, done
  // in W x W tiles in registers (the scalar loop it replaced, two conditions
  // per element, held most of the forward kernel's 36% of the samples of an
  // LSTM call at T=1, B=1, H=128 on an EPYC Zen 4); ragged edges
  // element by element.
  using V = typename VecOf<T, W>::type;
  const int64_t nv = forward_nv(cell), units = forward_units(cell, W);
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t v = 0; v < nv; ++v) {
      const int64_t unit0 = gated(cell) ? b * W : b * units + v * W, n = std::max<int64_t>(0, std::min(W, H - unit0));
      const T* src = w + ((gated(cell) ? v * H : 0) + unit0) * K;
      T* dst = out + (b * K * nv + v) * W;  // row k at dst + k * nv * W
      int64_t k0 = 0;
      if (n == W)
        for (; k0 + W <= K; k0 += W) {
          V r[W];
          for (int64_t l = 0; l < W; ++l) std::memcpy(&r[l], src + l * K + k0, sizeof(V));
          transpose_stages<V, W, W / 2>(r);
          for (int64_t j = 0; j < W; ++j) std::memcpy(dst + (k0 + j) * nv * W, &r[j], sizeof(V));
        }
      for (int64_t k = k0; k < K; ++k)
        for (int64_t l = 0; l < W; ++l) dst[k * nv * W + l] = l < n ? src[l * K + k] : T(0);
    }
}

template <typename T, int64_t W>
RNN_EXT_INLINE void pack_backward_blocks(Cell cell, const T* __restrict w, int64_t H, T* __restrict out, int64_t b0,
                                         int64_t b1) {
  // panel b, row k (k < G), column c  <-  W_hh[k, b*4W + c], zero past H
  constexpr int64_t kCols = kBackwardNv * W;
  const int64_t G = gates_of(cell) * H;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n = std::min(kCols, H - b * kCols);
    for (int64_t k = 0; k < G; ++k) {
      const T* src = w + k * H + b * kCols;
      T* dst = out + (b * G + k) * kCols;
      std::memcpy(dst, src, n * sizeof(T));
      if (n < kCols) std::memset(dst + n, 0, (kCols - n) * sizeof(T));
    }
  }
}

// ------------------------------------------------------------ micro-kernel
// out (MR, NV*W) (+)= sum over k in [k0, k0+kn) of a[m][k] * panel[k - k0, :]
// (accumulate: add to what out holds, else overwrite it). The panel starts
// at row k0, its rows NV*W elements apart (a compile-time stride keeps the
// loads' offsets immediate: 3-5% faster LSTM forward).
template <typename T, int64_t W, int64_t NV, int64_t MR, bool kPrefetch>
RNN_EXT_INLINE void micro_kernel(const T* const* a, int64_t k0, int64_t kn, const T* __restrict panel,
                                 T* __restrict out, bool accumulate, const char* pf, int64_t pf_lines) {
  constexpr int64_t ldp = NV * W;
  using V = typename VecOf<T, W>::type;
  // Loops over the tile fully unrolled, or GCC may keep acc in memory: the AVX2
  // build did, every multiply-add a load and a store on the stack (LSTM
  // inference at T=100, B=32, I=H=256, one thread, forced to AVX2 on an AVX-512
  // Xeon: 121 ms, 9x the AVX-512 build's time and slower than the 16-byte one).
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int64_t m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int64_t v = 0; v < NV; ++v) {
      if (accumulate) std::memcpy(&acc[m][v], out + (m * NV + v) * W, sizeof(V));
      else acc[m][v] = V{};
    }
  const T* rows[MR];
#pragma GCC unroll 16
  for (int64_t m = 0; m < MR; ++m) rows[m] = a[m] + k0;
  const T* p = panel;
  for (int64_t k = 0; k < kn; ++k) {
    if (kPrefetch && k < pf_lines) __builtin_prefetch(pf + k * 64, 0, 2);
    V w[NV];
#pragma GCC unroll 16
    for (int64_t v = 0; v < NV; ++v) std::memcpy(&w[v], p + k * ldp + v * W, sizeof(V));
#pragma GCC unroll 16
    for (int64_t m = 0; m < MR; ++m) {
      const T am = rows[m][k];
#pragma GCC unroll 16
      for (int64_t v = 0; v < NV; ++v) acc[m][v] += am * w[v];
    }
  }
#pragma GCC unroll 16
  for (int64_t m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int64_t v = 0; v < NV; ++v) std::memcpy(out + (m * NV + v) * W, &acc[m][v], sizeof(V));
}

// Same for any mr <= MR rows (the tail of the batch).
template <typename T, int64_t W, int64_t NV, int64_t MR, bool kPrefetch = false>
RNN_EXT_INLINE void tile(const T* const* a, int64_t mr, int64_t k0, int64_t kn, const T* panel, T* out,
                         bool accumulate, const char* pf = nullptr, int64_t pf_lines = 0) {
  if constexpr (MR > 1) {
    if (mr < MR) {
      tile<T, W, NV, MR - 1, kPrefetch>(a, mr, k0, kn, panel, out, accumulate, pf, pf_lines);
      return;
    }
  }
  micro_kernel<T, W, NV, MR, kPrefetch>(a, k0, kn, panel, out, accumulate, pf, pf_lines);
}

// Software prefetch of n elements from p into L2, one request per cache line.
template <typename T>
RNN_EXT_INLINE void prefetch(const T* p, int64_t n, bool for_write) {
  const char* c = reinterpret_cast<const char*>(p);
  const char* end = reinterpret_cast<const char*>(p + n);
  for (; c < end; c += 64) {
    if (for_write) __builtin_prefetch(c, 1, 2);
    else __builtin_prefetch(c, 0, 2);
  }
}

// Rows of K per chunk of the products: a panel slice of 16 KB, which stays in L1.
template <typename T, int64_t W, int64_t NV>
constexpr int64_t k_chunk() {
  constexpr int64_t k = 16384 / static_cast<int64_t>(NV * W * sizeof(T));
  return k < 16 ? 16 : k;
}

// acc (rows, NV*W) (+)= a (rows, K) @ panel (K, NV*W), in chunks of K (kChunks
// slices of 16 KB) that every row tile passes over while the chunk is still in
// L1 (16 KB) or L2 (the forward's 64 KB); without the chunks each row tile
// would stream the whole panel from L2 or L3 again.
//
// With a next_panel (see streams_panels), the row tiles of each chunk prefetch
// the next slice into L2 (the panel's next chunk, else next_panel's first), a
// share per tile, one line per k from inside the micro-kernel's loop.
//
// after_tile(j, n) runs after the j-th of the product's n row-tile calls (all
// chunks), so that work there (prefetches) is spread thinly among the
// products: a burst of prefetches fills the line-fill buffers and stalls.
//
// kChunks: chunks of that many 16 KB slices (see forward_thread, backward_thread).
template <typename T, int64_t W, int64_t NV, int64_t MR, int64_t kChunks = 1, typename F>
RNN_EXT_INLINE void block_product(const T* const* a, int64_t rows, int64_t K, const T* panel, T* acc,
                                  bool accumulate, const F& after_tile, const T* next_panel = nullptr) {
  constexpr int64_t kChunk = kChunks * k_chunk<T, W, NV>(), kRow = NV * W;
  // Rows split evenly among the tiles (32 = 6+6+5+5+5+5, not 6*5+2): a tile
  // of one or two rows runs at a fraction of the FMA rate.
  const int64_t tiles = (rows + MR - 1) / MR, base = tiles ? rows / tiles : 0, extra = tiles ? rows % tiles : 0;
  const int64_t calls = ceil_div(K, kChunk) * tiles;
  for (int64_t k0 = 0, j = 0; k0 < K; k0 += kChunk) {
    const int64_t kn = std::min(kChunk, K - k0);
    // The slice after this one (or the next panel's first), a share per tile.
    const T* ahead = !next_panel ? nullptr : k0 + kn < K ? panel + (k0 + kn) * kRow : next_panel;
    const int64_t ahead_n = (k0 + kn < K ? std::min(kChunk, K - k0 - kn) : kChunk) * kRow;
    for (int64_t m0 = 0, i = 0; m0 < rows; ++i, ++j) {
      const int64_t mr = std::min(rows - m0, base + (i < extra));
      if (ahead) {
        const int64_t p0 = ahead_n * i / tiles, p1 = ahead_n * (i + 1) / tiles;
        const int64_t lines = ((p1 - p0) * static_cast<int64_t>(sizeof(T)) + 63) / 64;
        tile<T, W, NV, MR, true>(a + m0, mr, k0, kn, panel + k0 * kRow, acc + m0 * NV * W, accumulate || k0 > 0,
                                 reinterpret_cast<const char*>(ahead + p0), lines);
      } else {
        tile<T, W, NV, MR>(a + m0, mr, k0, kn, panel + k0 * kRow, acc + m0 * NV * W, accumulate || k0 > 0);
      }
      after_tile(j, calls);
      m0 += mr;
    }
  }
}

// Rows of the register tile: as many as the vector registers allow
// (NV accumulators per row, NV panel vectors and a broadcast live at once).
constexpr int64_t tile_rows(int64_t regs, int64_t nv) {
  int64_t r = (regs - nv - 2) / nv;
  return r < 1 ? 1 : r > 8 ? 8 : r;
}

// Whether a thread's panels (bytes) outgrow its L2, so that they come from L3
// at every step: then the products prefetch them a chunk ahead (the hardware
// prefetcher alone leaves the first tile of each chunk waiting: -6% time at
// LSTM B=64, I=H=512). Below that the prefetches only cost (+30% at B=1).
inline int64_t l2_bytes() {
  static const int64_t l2 = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);  // glibc; 0 when unknown
    if (v > 0) return static_cast<int64_t>(v);
#endif
    return int64_t{1} << 20;
  }();
  return l2;
}
inline bool streams_panels(int64_t bytes) { return bytes > l2_bytes() / 2; }

inline const void* xin_of(const Forward& f) { return f.cell == Cell::kGru ? nullptr : f.x; }

inline void team_barrier(int nt) {
  if (nt > 1) {
#pragma omp barrier
  }
}

// This thread's blocks.
struct Slice {
  int64_t b0, b1;
  Slice(int64_t blocks, int64_t tid, int64_t nt) : b0(blocks * tid / nt), b1(blocks * (tid + 1) / nt) {}
};

// ------------------------------------------------------------ step queues
// The blocks of one step, handed out to the threads: each takes the blocks of
// its own range in order, then helps with the ranges of the others. On a VM
// one core can run behind the other for a while (a busy neighbour); a fixed
// split then left the faster one waiting at the barrier: 15% of an LSTM
// forward's samples at T=100, B=32, I=H=256 were in libgomp's wait. Which
// thread computes a block does not change its bits. Two sets of counters, one
// per step parity, so that a thread can set the next step's while the others
// still take from this one's.
//
// RNN_EXT_CPU_OTHERS_FIRST=1 (read per op call; for tests) makes each thread
// start on the next thread's range and come to its own last, so that blocks
// change hands at every step whatever the timing, and the forward take blocks
// of the next step early (forward_thread): the paths a slow core takes only
// now and then, run on purpose.
class StepQueues {
 public:
  explicit StepQueues(int nt)
      : nt_(nt),
        first_(others_first_env() ? 1 : 0),
        next_(static_cast<size_t>(2 * nt)),
        done_(static_cast<size_t>(2 * nt)) {}
  // Thread tid's range starts at b0 at step k.
  void reset(int64_t k, int tid, int64_t b0) {
    at(k, tid).store(b0, std::memory_order_relaxed);
    done(k, tid).store(0, std::memory_order_relaxed);
  }
  // body(b) for every block of step k, on the threads that call this.
  template <typename F>
  RNN_EXT_INLINE void run(int64_t k, int tid, int nt, int64_t blocks, const F& body) {
    for (int64_t i = 0; i < nt; ++i) {
      const int64_t owner = (tid + first_ + i) % nt;
      const Slice r(blocks, owner, nt);
      for (int64_t b; (b = at(k, owner).fetch_add(1, std::memory_order_relaxed)) < r.b1;) {
        body(b);
        finished(k, tid);
      }
    }
  }
  // The next block of thread tid's own range at step k, taken for it ahead of
  // run (which then skips it), or -1 when none is left.
  int64_t claim(int64_t k, int tid, int64_t blocks) {
    const int64_t b = at(k, tid).fetch_add(1, std::memory_order_relaxed);
    return b < Slice(blocks, tid, nt_).b1 ? b : -1;
  }
  // Thread tid finished a block of step k (counted per thread: each writes
  // only its own line).
  void finished(int64_t k, int tid) {
    std::atomic<int64_t>& d = done(k, tid);
    d.store(d.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  bool others_first() const { return first_ != 0; }
  // Whether every block of step k is finished (a hint only: it orders no data).
  bool all_finished(int64_t k, int64_t blocks) {
    int64_t n = 0;
    for (int64_t t = 0; t < nt_; ++t) n += done(k, t).load(std::memory_order_relaxed);
    return n >= blocks;
  }

 private:
  struct alignas(64) Counter {
    std::atomic<int64_t> v{0};
  };
  std::atomic<int64_t>& at(int64_t k, int64_t tid) { return next_[static_cast<size_t>((k & 1) * nt_ + tid)].v; }
  std::atomic<int64_t>& done(int64_t k, int64_t tid) { return done_[static_cast<size_t>((k & 1) * nt_ + tid)].v; }
  static bool others_first_env() {
    const char* env = std::getenv("RNN_EXT_CPU_OTHERS_FIRST");
    return env && env[0] == '1';
  }
  int64_t nt_, first_;
  std::vector<Counter> next_, done_;
};

// ------------------------------------------------------------ forward
// Gate math for one row and one block of units, on the tile `o` (gate v of
// lane l at o[v*W + l]) and the biases `bx` (gate v at bx[v*H]). For LSTM and
// RNN the tile holds x W_ih^T + h W_hh^T; GRU keeps the input side apart
// (r multiplies only W_hn h + b_hn) and reads it from `x` (gate v at x[v*H]).
template <typename T, int64_t W, bool kWs>
RNN_EXT_INLINE void lstm_epilogue(const T* __restrict o, const T* __restrict bx, T* __restrict c, T* __restrict y,
                                  T* __restrict w, int64_t H, int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const T i = sigmoid_(o[l] + bx[l]);
    const T f = sigmoid_(o[W + l] + bx[H + l]);
    const T g = tanh_(o[2 * W + l] + bx[2 * H + l]);
    const T og = sigmoid_(o[3 * W + l] + bx[3 * H + l]);
    const T cn = f * c[l] + i * g;
    c[l] = cn;
    y[l] = og * tanh_(cn);
    if constexpr (kWs) { w[l] = i; w[H + l] = f; w[2 * H + l] = g; w[3 * H + l] = og; w[4 * H + l] = cn; }
  }
}

// hp: h_{t-1} of this row; bn: the n part of b_hh (zeros without bias).
template <typename T, int64_t W, bool kWs>
RNN_EXT_INLINE void gru_epilogue(const T* __restrict o, const T* __restrict x, const T* __restrict bx,
                                 const T* __restrict bn, const T* __restrict hp, T* __restrict y, T* __restrict w,
                                 int64_t H, int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const T rg = sigmoid_(x[l] + bx[l] + o[l]);
    const T zg = sigmoid_(x[H + l] + bx[H + l] + o[W + l]);
    const T hn = o[2 * W + l] + bn[l];
    const T nn = tanh_(x[2 * H + l] + bx[2 * H + l] + rg * hn);
    y[l] = nn + zg * (hp[l] - nn);
    if constexpr (kWs) { w[l] = rg; w[H + l] = zg; w[2 * H + l] = nn; w[3 * H + l] = hn; }
  }
}

// float32, a full block (W lanes) of R rows at once: the same operations as
// lstm_epilogue / gru_epilogue (the same bits), but each row's chain of
// dependent operations (sigmoid, tanh, then tanh of the new c: one vector,
// some 150 cycles of latency) interleaved with the other rows'. One row at a
// time, the chains left most of the vector units idle: a standalone loop of
// 16 row-epilogues (4 rows x 4 blocks) took 590 ns, interleaved 4 rows 340 ns;
// LSTM inference, one thread, alternated processes: (1000, 4, 32, 64) 2.44-2.51
// -> 1.69-1.81 ms, (100, 32, 256, 256) 0.88x the time. R = 1 serves the rows
// left over (and B = 1: 0.37 -> 0.32 ms at (100, 1, 128, 128), where adding
// only the R = 4 path had made the scalar loop's code 5% slower).
// Row r: o + r * ldo, c, y, w + r * their ld.
template <int64_t W, int64_t R, bool kWs>
RNN_EXT_INLINE void lstm_epilogue_rows(const float* o, int64_t ldo, const float* bx, float* c, int64_t ldc,
                                       float* y, int64_t ldy, float* w, int64_t ldw, int64_t H) {
  using V = typename VecOf<float, W>::type;
  V i[R], f[R], g[R], og[R];
  for (int64_t r = 0; r < R; ++r) {
    const float* orow = o + r * ldo;
    i[r] = fast_math::sigmoid_t(load_vec<V>(orow) + load_vec<V>(bx));
    f[r] = fast_math::sigmoid_t(load_vec<V>(orow + W) + load_vec<V>(bx + H));
    g[r] = fast_math::tanh_t(load_vec<V>(orow + 2 * W) + load_vec<V>(bx + 2 * H));
    og[r] = fast_math::sigmoid_t(load_vec<V>(orow + 3 * W) + load_vec<V>(bx + 3 * H));
  }
  for (int64_t r = 0; r < R; ++r) {
    const V cn = f[r] * load_vec<V>(c + r * ldc) + i[r] * g[r];
    store_vec<V>(c + r * ldc, cn);
    store_vec<V>(y + r * ldy, og[r] * fast_math::tanh_t(cn));
    if constexpr (kWs) {
      float* wr = w + r * ldw;
      store_vec<V>(wr, i[r]);
      store_vec<V>(wr + H, f[r]);
      store_vec<V>(wr + 2 * H, g[r]);
      store_vec<V>(wr + 3 * H, og[r]);
      store_vec<V>(wr + 4 * H, cn);
    }
  }
}

// Row r: o + r * ldo, x, y, w + r * their ld, hp[r].
template <int64_t W, int64_t R, bool kWs>
RNN_EXT_INLINE void gru_epilogue_rows(const float* o, int64_t ldo, const float* x, int64_t ldx, const float* bx,
                                      const float* bn, const float* const* hp, float* y, int64_t ldy, float* w,
                                      int64_t ldw, int64_t H) {
  using V = typename VecOf<float, W>::type;
  V rg[R], zg[R], hn[R], nn[R];
  for (int64_t r = 0; r < R; ++r) {
    const float* orow = o + r * ldo;
    const float* xr = x + r * ldx;
    rg[r] = fast_math::sigmoid_t(load_vec<V>(xr) + load_vec<V>(bx) + load_vec<V>(orow));
    zg[r] = fast_math::sigmoid_t(load_vec<V>(xr + H) + load_vec<V>(bx + H) + load_vec<V>(orow + W));
    hn[r] = load_vec<V>(orow + 2 * W) + load_vec<V>(bn);
  }
  for (int64_t r = 0; r < R; ++r) {
    const float* xr = x + r * ldx;
    nn[r] = fast_math::tanh_t(load_vec<V>(xr + 2 * H) + load_vec<V>(bx + 2 * H) + rg[r] * hn[r]);
  }
  for (int64_t r = 0; r < R; ++r) {
    store_vec<V>(y + r * ldy, nn[r] + zg[r] * (load_vec<V>(hp[r]) - nn[r]));
    if constexpr (kWs) {
      float* wr = w + r * ldw;
      store_vec<V>(wr, rg[r]);
      store_vec<V>(wr + H, zg[r]);
      store_vec<V>(wr + 2 * H, nn[r]);
      store_vec<V>(wr + 3 * H, hn[r]);
    }
  }
}

template <typename T, bool kRelu>
RNN_EXT_INLINE void rnn_epilogue(const T* __restrict o, const T* __restrict bx, T* __restrict y, int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const T pre = o[l] + bx[l];
    if constexpr (kRelu) y[l] = pre < T(0) ? T(0) : pre;  // keeps NaN, as torch.relu
    else y[l] = tanh_(pre);
  }
}

template <typename T, int64_t W, int64_t Regs, Cell C>
RNN_EXT_INLINE void forward_thread(const Forward& f, int tid, int nt, StepQueues* queues) {
  constexpr int64_t NV = forward_nv(C);
  constexpr int64_t MR = tile_rows(Regs, NV);
  constexpr int64_t UW = forward_units(C, W);  // units per block
  constexpr int64_t NG = gates_of(C);
  // Products in chunks of four 16 KB panel slices (64 KB, past L1: the row
  // tiles after the first read it from L2). Each chunk reloads and stores
  // every tile's accumulators; with 16 KB slices (64 rows of K for LSTM) that
  // overhead was ~5% of a tile's time in a standalone loop, which ran at 229
  // GFLOP/s a core at K = 64 and 241-247 at K = 256-512 from L2 (AMD Zen 5 VM,
  // FMA peak 258). LSTM inference, alternated processes, against 16 KB chunks:
  // 0.95-0.98x the time at (100, 32, 256, 256) and (50, 64, 512, 512), one
  // thread or two; 0.95x at (200, 8, 64, 128). (See -falign-loops in setup.py.)
  constexpr int64_t kFc = 4;
  constexpr int64_t kWsParts = C == Cell::kLstm ? 5 : 4;  // workspace row: [i f g o | c] or [r z n | hn]
  const int64_t H = f.H, G = NG * H, K = H;
  const Slice mine(ceil_div(H, UW), tid, nt);
  const bool x_inside = xin_of(f) != nullptr;  // x_t W_ih^T computed here, per step (LSTM, RNN)
  const int64_t I = f.I;
  const T* xg = static_cast<const T*>(f.x_gates);
  const T* xin = static_cast<const T*>(f.x);
  T* wip = static_cast<T*>(f.w_ih_packed);
  T* wp = static_cast<T*>(f.w_packed);
  const T* h0 = static_cast<const T*>(f.h0);
  const T* b_hn = static_cast<const T*>(f.b_hn);
  const T* bias = static_cast<const T*>(f.bias);
  T* y = static_cast<T*>(f.y);
  T* cs = static_cast<T*>(f.c_state);
  T* ws = static_cast<T*>(f.ws);
  if (x_inside && I > 0) pack_forward_blocks<T, W>(C, static_cast<const T*>(f.w_ih), H, I, wip, mine.b0, mine.b1);
  pack_forward_blocks<T, W>(C, static_cast<const T*>(f.w_hh), H, K, wp, mine.b0, mine.b1);
  const bool stream = streams_panels((mine.b1 - mine.b0) * (K + (x_inside ? I : 0)) * NV * W *
                                     static_cast<int64_t>(sizeof(T)));
  std::vector<T> acc_buf(static_cast<size_t>(f.B * NV * W));  // one block's products, every row
  std::vector<const T*> a(static_cast<size_t>(f.B));          // h_{t-1} row of every batch row
  std::vector<const T*> ax(static_cast<size_t>(f.B));         // x_t row of every batch row
  std::vector<const T*> ax_from(static_cast<size_t>(f.B));    // the same, from column early_k on
  T* acc = acc_buf.data();
  const int64_t blocks = ceil_div(H, UW);
  // A block of the next step that this thread took while it waited for the
  // others to finish a step (see the end of the step loop), and how many
  // columns of its x_t W_ih^T product acc already holds.
  int64_t early_b = -1, early_k = 0;
  if (queues) {  // every panel packed and every queue set before anyone takes a block
    queues->reset(0, tid, mine.b0);
    team_barrier(nt);
  }

  for (int64_t k = 0; k < f.s.T; ++k) {
    const int64_t rows = f.s.rows[k], off = f.s.offset[k];
    const int64_t inh = k ? std::min(rows, f.s.rows[k - 1]) : 0, prev = k ? f.s.offset[k - 1] : 0;
    for (int64_t r = 0; r < rows; ++r) a[r] = r < inh ? y + (prev + r) * H : h0 + r * H;
    // (h_{t-1} was just written, partly by the other threads' cores. Asking
    // for it all at the start of the step, into L1 or L2, made every shape
    // slower, forward and backward: up to 23% at B=1..8 and 20% in backward
    // at B=32, H=256. The products' demand misses overlap better.)
    if (x_inside) {
      for (int64_t r = 0; r < rows; ++r) ax[r] = xin + (off + r) * I;
    }
    const auto block = [&](int64_t b) RNN_EXT_LAMBDA_INLINE {
      const int64_t j0 = b * UW, nval = std::min(UW, H - j0);
      const T* panel = wp + b * K * NV * W;
      const int64_t bn = b + 1 < mine.b1 ? b + 1 : mine.b0;  // the block after this one (wraps to the next step)
      // Where the next block writes: rows [0, pr) from row po, units jn..jn+nn.
      const bool last = b + 1 == mine.b1, more = !last || k + 1 < f.s.T;
      const int64_t jn = bn * UW, nn = std::min(UW, H - jn);
      const int64_t pr = last && more ? f.s.rows[k + 1] : rows, po = last && more ? f.s.offset[k + 1] : off;
      // Its workspace lines, for write, spread over this block's tile calls
      // (item q: row q / parts, part q % parts): the workspace is written
      // once, in lines H elements apart, which the hardware prefetchers do
      // not follow, so each store waited on its line's read from memory
      // (LSTM forward, T=64 B=32 I=64 H=128, one thread, 25 alternated runs:
      // 6.88 -> 6.66 ms).
      const auto ws_ahead = [&](int64_t j, int64_t calls) RNN_EXT_LAMBDA_INLINE {
        if (!ws || !more) return;
        const int64_t items = pr * kWsParts;
        for (int64_t q = items * j / calls, e = items * (j + 1) / calls; q < e; ++q)
          prefetch(ws + (po + q / kWsParts) * kWsParts * H + q % kWsParts * H + jn, nn, true);
      };
      if (x_inside) {
        // The next step's x rows come from memory: ask for them a step ahead,
        // a share of the rows with each block of this thread's range (not
        // with the blocks it takes from another's), a line at a time spread
        // over its tile calls.
        const auto x_ahead = [&](int64_t j, int64_t calls) RNN_EXT_LAMBDA_INLINE {
          if (k + 1 >= f.s.T || b < mine.b0 || b >= mine.b1) return;
          constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
          const int64_t rn = f.s.rows[k + 1], nb = mine.b1 - mine.b0, i = b - mine.b0, lines = ceil_div(I, kLine);
          const int64_t r0 = rn * i / nb, items = (rn * (i + 1) / nb - r0) * lines;
          for (int64_t q = items * j / calls, e = items * (j + 1) / calls; q < e; ++q) {
            const int64_t l = q % lines * kLine;
            prefetch(xin + (f.s.offset[k + 1] + r0 + q / lines) * I + l, std::min(kLine, I - l), false);
          }
        };
        const bool with_x = I > 0;
        const T* next_x = stream ? wip + bn * I * NV * W : nullptr;
        const T* next_h = stream ? wp + bn * K * NV * W : nullptr;
        // (the block taken early: acc holds columns [0, early_k) of its x product)
        const int64_t kx = b == early_b ? early_k : 0;
        if (with_x && kx < I) {
          const T* const* ax_k = ax.data();
          if (kx > 0) {
            for (int64_t r = 0; r < rows; ++r) ax_from[r] = ax[r] + kx;
            ax_k = ax_from.data();
          }
          block_product<T, W, NV, MR, kFc>(ax_k, rows, I - kx, wip + (b * I + kx) * NV * W, acc, kx > 0, ws_ahead,
                                      stream ? panel : nullptr);
        }
        if (with_x && kx == I)
          block_product<T, W, NV, MR, kFc>(a.data(), rows, K, panel, acc, true,
                                      [&](int64_t j, int64_t calls) RNN_EXT_LAMBDA_INLINE {
                                        ws_ahead(j, calls);
                                        x_ahead(j, calls);
                                      }, next_x);
        else if (with_x) block_product<T, W, NV, MR, kFc>(a.data(), rows, K, panel, acc, true, x_ahead, next_x);
        else block_product<T, W, NV, MR, kFc>(a.data(), rows, K, panel, acc, false, ws_ahead, next_h);
      } else {
        // x_gates precomputed. LSTM and RNN start the tile from it (GRU's
        // epilogue reads it). Its rows are a page apart, which no hardware
        // prefetcher follows: ask for them a block ahead (the next block of
        // this step, or the first block of the next step), spread over the
        // tile calls (item q: row q / NG, gate q % NG).
        constexpr bool kStartFromX = C != Cell::kGru;
        if constexpr (kStartFromX) {
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t v = 0; v < NV; ++v) {
              const int64_t u0 = NG > 1 ? j0 : j0 + v * W, n = std::max<int64_t>(0, std::min(W, H - u0));
              const T* src = xg + (off + r) * G + (NG > 1 ? v * H : 0) + u0;
              T* dst = acc + (r * NV + v) * W;
              if (n == W) {  // one vector copy (the masked loop compiled to scalar moves)
                std::memcpy(dst, src, W * sizeof(T));
                continue;
              }
              for (int64_t l = 0; l < W; ++l) dst[l] = l < n ? src[l] : T(0);
            }
        }
        const T* next = stream ? wp + bn * K * NV * W : nullptr;
        block_product<T, W, NV, MR, kFc>(a.data(), rows, K, panel, acc, kStartFromX,
                                    [&](int64_t j, int64_t calls) RNN_EXT_LAMBDA_INLINE {
                                      if (!more) return;
                                      const int64_t items = pr * NG;
                                      for (int64_t q = items * j / calls, e = items * (j + 1) / calls; q < e; ++q)
                                        prefetch(xg + (po + q / NG) * G + q % NG * H + jn, nn, false);
                                      ws_ahead(j, calls);
                                    }, next);
      }
      int64_t r0 = 0;  // rows done by the vector epilogues (float32, full blocks): four at a time, then one
      if constexpr (std::is_same_v<T, float> && (C == Cell::kLstm || C == Cell::kGru)) {
        const auto rows_from = [&](auto rr) RNN_EXT_LAMBDA_INLINE {
          constexpr int64_t R = decltype(rr)::value;
          const int64_t row = off + r0;
          const T* o = acc + r0 * NV * W;
          T* wr = ws ? ws + row * kWsParts * H + j0 : nullptr;
          if constexpr (C == Cell::kLstm) {
            T* c = cs + r0 * H + j0;
            if (ws) lstm_epilogue_rows<W, R, true>(o, NV * W, bias + j0, c, H, y + row * H + j0, H, wr, 5 * H, H);
            else lstm_epilogue_rows<W, R, false>(o, NV * W, bias + j0, c, H, y + row * H + j0, H, wr, 5 * H, H);
          } else {
            const T* hp[R];
            for (int64_t q = 0; q < R; ++q) hp[q] = a[r0 + q] + j0;
            if (ws)
              gru_epilogue_rows<W, R, true>(o, NV * W, xg + row * G + j0, G, bias + j0, b_hn + j0, hp,
                                            y + row * H + j0, H, wr, 4 * H, H);
            else
              gru_epilogue_rows<W, R, false>(o, NV * W, xg + row * G + j0, G, bias + j0, b_hn + j0, hp,
                                             y + row * H + j0, H, wr, 4 * H, H);
          }
        };
        if (nval == W) {
          for (; r0 + 4 <= rows; r0 += 4) rows_from(std::integral_constant<int64_t, 4>{});
          for (; r0 < rows; ++r0) rows_from(std::integral_constant<int64_t, 1>{});
        }
      }
      for (int64_t r = r0; r < rows; ++r) {
        const int64_t row = off + r;
        const T* o = acc + r * NV * W;
        const T* bx = bias + j0;
        T* yo = y + row * H + j0;
        if constexpr (C == Cell::kLstm) {
          T* c = cs + r * H + j0;
          if (ws) lstm_epilogue<T, W, true>(o, bx, c, yo, ws + row * 5 * H + j0, H, nval);
          else lstm_epilogue<T, W, false>(o, bx, c, yo, nullptr, H, nval);
        } else if constexpr (C == Cell::kGru) {
          const T* x = xg + row * G + j0;
          const T* hp = a[r] + j0;
          if (ws) gru_epilogue<T, W, true>(o, x, bx, b_hn + j0, hp, yo, ws + row * 4 * H + j0, H, nval);
          else gru_epilogue<T, W, false>(o, x, bx, b_hn + j0, hp, yo, nullptr, H, nval);
        } else {
          rnn_epilogue<T, C == Cell::kRnnRelu>(o, bx, yo, nval);
        }
      }
    };
    if (queues) {
      queues->reset(k + 1, tid, mine.b0);  // (every thread is past step k - 1, the last user of those)
      if (early_b >= 0) {  // taken during the last step's wait: its x product is (partly) done
        block(early_b);
        queues->finished(k, tid);
        early_b = -1;
        early_k = 0;
      }
      queues->run(k, tid, nt, blocks, block);
      // Out of blocks while another thread still computes its last: rather
      // than wait at the barrier, take the first block of this thread's range
      // of the next step and compute its x_{k+1} W_ih^T (which needs no
      // h_k), one panel slice at a time until the step is finished. The
      // threads' last blocks of a step end up to a block apart (~7 us at
      // T=100, B=32, I=H=256), which one of them spent in the barrier.
      // The sums run in the same order as when the block runs whole: same bits.
      if (x_inside && I > 0 && k + 1 < f.s.T) {
        constexpr int64_t kChunk = k_chunk<T, W, NV>();
        const int64_t rn = f.s.rows[k + 1], offn = f.s.offset[k + 1];
        // (RNN_EXT_CPU_OTHERS_FIRST=1, for tests: k % (slices + 1) slices, whatever the timing)
        const bool forced = queues->others_first();
        const int64_t goal = forced ? std::min(I, k % (ceil_div(I, kChunk) + 1) * kChunk) : I;
        while (early_k < goal && (forced || !queues->all_finished(k, blocks))) {
          if (early_b < 0) {
            if ((early_b = queues->claim(k + 1, tid, blocks)) < 0) break;
          }
          for (int64_t r = 0; r < rn; ++r) ax_from[r] = xin + (offn + r) * I + early_k;
          const int64_t kn = std::min(kChunk, I - early_k);
          // (streaming panels: the next slice, or the block's W_hh panel after the last)
          const T* next = !stream ? nullptr : early_k + kn < I ? wip + (early_b * I + early_k + kn) * NV * W
                                                               : wp + early_b * K * NV * W;
          block_product<T, W, NV, MR, kFc>(ax_from.data(), rn, kn, wip + (early_b * I + early_k) * NV * W, acc,
                                      early_k > 0, [](int64_t, int64_t) {}, next);
          early_k += kn;
        }
      }
    } else {
      for (int64_t b = mine.b0; b < mine.b1; ++b) block(b);
    }
    team_barrier(nt);
  }
}

// ------------------------------------------------------------ backward
// How many steps the backward recurrence has finished (in its loop order),
// for a thread that reads their gate gradients meanwhile; null when none does.
using StepsDone = std::atomic<int64_t>;

// Pointwise derivatives for one row and one block of units. Every loop works
// on __restrict parameters only: that is what lets GCC vectorise it.
// dh: dL/dh_t from later steps (g_in: from the output); returns dgates.
template <typename T>
RNN_EXT_INLINE void lstm_backward_row(const T* __restrict g_in, const T* __restrict dh, const T* __restrict w,
                                      const T* __restrict cp, T* __restrict dc, T* __restrict d, int64_t H,
                                      int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const T dhv = g_in[l] + dh[l];
    const T i = w[l], fg = w[H + l], g = w[2 * H + l], o = w[3 * H + l], c = w[4 * H + l];
    const T tc = tanh_(c);
    const T dcv = dc[l] + dhv * o * (T(1) - tc * tc);
    d[l] = dcv * g * i * (T(1) - i);
    d[H + l] = dcv * cp[l] * fg * (T(1) - fg);
    d[2 * H + l] = dcv * i * (T(1) - g * g);
    d[3 * H + l] = dhv * tc * o * (T(1) - o);
    dc[l] = dcv * fg;
  }
}

// dh is read, then overwritten with the direct part dh*z (step (1) adds dgh @ W_hh).
template <typename T>
RNN_EXT_INLINE void gru_backward_row(const T* __restrict g_in, T* __restrict dh, const T* __restrict w,
                                     const T* __restrict hp, T* __restrict di, T* __restrict dhh, int64_t H,
                                     int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const T dhv = g_in[l] + dh[l];
    const T rg = w[l], zg = w[H + l], nn = w[2 * H + l], hn = w[3 * H + l];
    const T dn = dhv * (T(1) - zg) * (T(1) - nn * nn);
    const T dz = dhv * (hp[l] - nn) * zg * (T(1) - zg);
    const T dr = dn * hn * rg * (T(1) - rg);
    di[l] = dr;
    di[H + l] = dz;
    di[2 * H + l] = dn;
    dhh[l] = dr;
    dhh[H + l] = dz;
    dhh[2 * H + l] = dn * rg;
    dh[l] = dhv * zg;
  }
}

template <typename T, bool kRelu>
RNN_EXT_INLINE void rnn_backward_row(const T* __restrict g_in, const T* __restrict dh, const T* __restrict y,
                                     T* __restrict d, int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const T dhv = g_in[l] + dh[l];
    // relu' as torch's threshold_backward: zero only where y <= 0 (NaN passes)
    if constexpr (kRelu) d[l] = y[l] <= T(0) ? T(0) : dhv;
    else d[l] = dhv * (T(1) - y[l] * y[l]);
  }
}

// d (+)= o over n elements.
template <typename T, bool kAdd>
RNN_EXT_INLINE void store_row(T* __restrict d, const T* __restrict o, int64_t n) {
  for (int64_t l = 0; l < n; ++l) d[l] = kAdd ? d[l] + o[l] : o[l];
}

template <typename T, int64_t W, int64_t Regs, Cell C>
RNN_EXT_INLINE void backward_thread(const Backward& bw, int tid, int nt, StepsDone* steps_done,
                                    StepQueues* queues) {
  constexpr int64_t NV = kBackwardNv;
  constexpr int64_t MR = tile_rows(Regs, NV);
  constexpr int64_t UW = NV * W;
  constexpr int64_t NG = gates_of(C);
  const int64_t H = bw.H, G = NG * H, T_ = bw.s.T;
  const Slice mine(ceil_div(H, UW), tid, nt);
  T* wp = static_cast<T*>(bw.w_packed);
  const T* gy = static_cast<const T*>(bw.grad_y);
  const T* y = static_cast<const T*>(bw.y);
  const T* h0 = static_cast<const T*>(bw.h0);
  const T* c0 = static_cast<const T*>(bw.c0);
  const T* ws = static_cast<const T*>(bw.ws);
  T* dhs = static_cast<T*>(bw.dh_state);
  T* dcs = static_cast<T*>(bw.dc_state);
  T* dg = static_cast<T*>(bw.d_gates);
  T* dgh = C == Cell::kGru ? static_cast<T*>(bw.d_gates_hh) : dg;  // what multiplies W_hh
  pack_backward_blocks<T, W>(C, static_cast<const T*>(bw.w_hh), H, wp, mine.b0, mine.b1);
  const bool stream = streams_panels((mine.b1 - mine.b0) * G * NV * W * static_cast<int64_t>(sizeof(T)));
  std::vector<T> acc_buf(static_cast<size_t>(bw.B * NV * W));
  std::vector<const T*> a(static_cast<size_t>(bw.B));
  T* acc = acc_buf.data();

  if (queues) {  // every panel packed and every queue set before anyone takes a block
    queues->reset(0, tid, mine.b0);
    team_barrier(nt);
  }

  for (int64_t k = T_ - 1; k >= -1; --k) {
    // Per block of units: (1) dL/dh_k from step k+1, dh_state[:rows[k+1]] (+)=
    // dgh_{k+1} @ W_hh; then (2) the pointwise derivative of step k.
    const int64_t rn = k + 1 < T_ ? bw.s.rows[k + 1] : 0, offn = k + 1 < T_ ? bw.s.offset[k + 1] : 0;
    for (int64_t r = 0; r < rn; ++r) a[r] = dgh + (offn + r) * G;
    const int64_t rows = k >= 0 ? bw.s.rows[k] : 0, off = k >= 0 ? bw.s.offset[k] : 0;
    const int64_t inh = k > 0 ? std::min(rows, bw.s.rows[k - 1]) : 0, prev = k > 0 ? bw.s.offset[k - 1] : 0;
    const auto block = [&](int64_t b) RNN_EXT_LAMBDA_INLINE {
      const int64_t j0 = b * UW, nval = std::min(UW, H - j0);
      if (k + 1 < T_) {
        const T* next = stream ? wp + (b + 1 < mine.b1 ? b + 1 : mine.b0) * G * NV * W : nullptr;
        // Chunks of 32 KB (still in L1): each row tile reloads its
        // accumulators half as often over the long K = G (LSTM backward, 2
        // threads, Xeon VM, T=50 B=64 I=H=512: 107.1 -> 104.3 ms; 16 KB
        // stays better for the forward products).
        // Meanwhile, the rows this block's pointwise part reads and writes
        // below (item q: row q / P, stream q % P): they lie 5H (LSTM
        // workspace), H or G elements apart, which the hardware prefetchers
        // do not follow, so without this each row waited on its misses.
        const auto rows_ahead = [&](int64_t j, int64_t calls) RNN_EXT_LAMBDA_INLINE {
          constexpr int64_t P = C == Cell::kLstm ? 11 : C == Cell::kGru ? 12 : 3;
          const int64_t items = rows * P;
          for (int64_t q = items * j / calls, e = items * (j + 1) / calls; q < e; ++q) {
            const int64_t r = q / P, p = q % P, row = off + r;
            const T* in = nullptr;  // read
            T* out = nullptr;       // written
            if (p == 0) in = gy + row * H + j0;
            if constexpr (C == Cell::kLstm) {
              if (p >= 1 && p <= 5) in = ws + row * 5 * H + (p - 1) * H + j0;
              if (p == 6) in = r < inh ? ws + (prev + r) * 5 * H + 4 * H + j0 : c0 + r * H + j0;
              if (p >= 7) out = dg + row * G + (p - 7) * H + j0;
            } else if constexpr (C == Cell::kGru) {
              if (p >= 1 && p <= 4) in = ws + row * 4 * H + (p - 1) * H + j0;
              if (p == 5) in = r < inh ? y + (prev + r) * H + j0 : h0 + r * H + j0;
              if (p >= 6 && p <= 8) out = dg + row * G + (p - 6) * H + j0;
              if (p >= 9) out = dgh + row * G + (p - 9) * H + j0;
            } else {
              if (p == 1) in = y + row * H + j0;
              if (p == 2) out = dg + row * G + j0;
            }
            if (in) prefetch(in, nval, false);
            else prefetch(out, nval, true);
          }
        };
        block_product<T, W, NV, MR, 2>(a.data(), rn, G, wp + b * G * NV * W, acc, false, rows_ahead, next);
        for (int64_t r = 0; r < rn; ++r) store_row<T, C == Cell::kGru>(dhs + r * H + j0, acc + r * NV * W, nval);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = off + r;
        const T* g_in = gy + row * H + j0;
        T* dh = dhs + r * H + j0;
        if constexpr (C == Cell::kLstm) {
          const T* cp = r < inh ? ws + (prev + r) * 5 * H + 4 * H + j0 : c0 + r * H + j0;
          lstm_backward_row(g_in, dh, ws + row * 5 * H + j0, cp, dcs + r * H + j0, dg + row * G + j0, H, nval);
        } else if constexpr (C == Cell::kGru) {
          const T* hp = r < inh ? y + (prev + r) * H + j0 : h0 + r * H + j0;
          gru_backward_row(g_in, dh, ws + row * 4 * H + j0, hp, dg + row * G + j0, dgh + row * G + j0, H, nval);
        } else {
          rnn_backward_row<T, C == Cell::kRnnRelu>(g_in, dh, y + row * H + j0, dg + row * G + j0, nval);
        }
      }
    };
    const int64_t it = T_ - 1 - k;  // iterations so far
    if (queues) {
      queues->reset(it + 1, tid, mine.b0);  // (every thread is past iteration it - 1, the last user of those)
      queues->run(it, tid, nt, ceil_div(H, UW), block);
    } else {
      for (int64_t b = mine.b0; b < mine.b1; ++b) block(b);
    }
    if (k < 0) break;
    team_barrier(nt);
    if (steps_done) steps_done->store(T_ - k, std::memory_order_release);  // step k's gate gradients are final
  }
}

// ------------------------------------------------------------ weight gradients
// dW = dg^T a from at = a^T (K, N), as acc (K, UW) = at @ dg[:, block] per
// column block of dg (UW gates; the blocks split among the threads), then
// stored transposed into the output rows of those gates. The bias gradient,
// when asked for, is one more row of at: all ones.
//
// The loops run GEMM-style: a group of blocks whose accumulators fit in half
// the L2 shares each chunk of N, so that chunk of at (K x kChunk) is read from
// L2 by every block of the group rather than from memory once per block; each
// block's slice of dg (kChunk x UW) is copied to a contiguous 32 KB buffer,
// because its rows in place are G elements apart, often a multiple of 4 KB,
// and would share a few L1 sets (measured on a Xeon, 2 threads, I=H=256,
// N=3200: 75-80 GFLOP/s in place, 110 copied, 142 with the groups too; MKL's
// GEMM 155). The slice is twice the products' 16 KB: each row tile reloads
// its accumulators (from L2: a group's are up to half of it) once per chunk,
// so longer chunks halve that traffic, and 32 KB still stays in L1 (LSTM
// backward, 2 threads, Xeon VM: 110.7 -> 107.3 ms at T=50, B=64, I=H=512).
template <typename T, int64_t W, int64_t Regs>
class WeightGradKernel {
 public:
  static constexpr int64_t NV = kBackwardNv, UW = NV * W;
  static constexpr int64_t MR = tile_rows(Regs, NV), kChunk = 2 * k_chunk<T, W, NV>();

  explicit WeightGradKernel(const WeightGrad& wg)
      : wg_(wg), M_(wg.K + (wg.d_bias ? 1 : 0)), chunks_(ceil_div(wg.N, kChunk)),
        ones_(wg.d_bias ? static_cast<size_t>(wg.N) : 0, T(1)), a_(static_cast<size_t>(M_)) {
    const T* at = static_cast<const T*>(wg.at);
    for (int64_t m = 0; m < wg.K; ++m) a_[m] = at + m * wg.N;
    if (wg.d_bias) a_[wg.K] = ones_.data();
    tiles_ = ceil_div(M_, MR);
    base_ = tiles_ ? M_ / tiles_ : 0;
    extra_ = tiles_ ? M_ % tiles_ : 0;
  }
  int64_t blocks() const { return ceil_div(wg_.G, UW); }
  int64_t chunks() const { return chunks_; }
  int64_t acc_size() const { return M_ * UW; }  // elements of one block's accumulator
  // Rows [r0, r1) of d_gates that the i-th chunk in summation order covers:
  // the chunks of N in the order a backward produces them.
  std::pair<int64_t, int64_t> chunk_rows(int64_t i) const {
    const int64_t c = wg_.rows_descending ? chunks_ - 1 - i : i;
    return {c * kChunk, std::min(wg_.N, (c + 1) * kChunk)};
  }
  // acc (M, UW) of block b: = (i == 0) or += the product over chunk i.
  RNN_EXT_INLINE void add_chunk(int64_t b, int64_t i, T* __restrict acc) {
    const auto [r0, r1] = chunk_rows(i);
    const int64_t kn = r1 - r0, G = wg_.G, g0 = b * UW, n = std::min(UW, G - g0);
    const T* dg = static_cast<const T*>(wg_.d_gates);
    for (int64_t k = 0; k < kn; ++k) {
      std::memcpy(slice_ + k * UW, dg + (r0 + k) * G + g0, n * sizeof(T));
      if (n < UW) std::memset(slice_ + k * UW + n, 0, (UW - n) * sizeof(T));
    }
    for (int64_t m0 = 0, t = 0; m0 < M_; ++t) {
      const int64_t mr = std::min(M_ - m0, base_ + (t < extra_));
      tile<T, W, NV, MR>(a_.data() + m0, mr, r0, kn, slice_, acc + m0 * UW, i > 0);
      m0 += mr;
    }
  }
  // The finished block b into dw, dw_rest and d_bias.
  RNN_EXT_INLINE void store(int64_t b, const T* acc) const {
    const int64_t K = wg_.K, K1 = wg_.k_split, g0 = b * UW, n = std::min(UW, wg_.G - g0);
    T* dw = static_cast<T*>(wg_.dw);
    T* rest = static_cast<T*>(wg_.dw_rest);
    T* db = static_cast<T*>(wg_.d_bias);
    for (int64_t c = 0; c < n; ++c) {
      T* o = dw + (g0 + c) * K1;
      T* r = rest + (g0 + c) * (K - K1);
      for (int64_t m = 0; m < K1; ++m) o[m] = acc[m * UW + c];
      for (int64_t m = K1; m < K; ++m) r[m - K1] = acc[m * UW + c];
      if (db) db[g0 + c] = acc[K * UW + c];
    }
  }

 private:
  const WeightGrad& wg_;
  int64_t M_, chunks_, tiles_ = 0, base_ = 0, extra_ = 0;
  std::vector<T> ones_;
  std::vector<const T*> a_;
  alignas(64) T slice_[kChunk * UW];
};

template <typename T, int64_t W, int64_t Regs>
RNN_EXT_INLINE void weight_grad_thread(const WeightGrad& wg, int tid, int nt) {
  if (wg.K + (wg.d_bias ? 1 : 0) == 0) return;  // dW has no columns
  WeightGradKernel<T, W, Regs> kern(wg);
  const Slice mine(kern.blocks(), tid, nt);
  const int64_t acc_n = kern.acc_size();
  const int64_t group = std::max<int64_t>(1, l2_bytes() / 2 / (acc_n * static_cast<int64_t>(sizeof(T))));
  std::vector<T> acc(static_cast<size_t>(std::min(group, mine.b1 - mine.b0) * acc_n));
  for (int64_t gb = mine.b0; gb < mine.b1; gb += group) {
    const int64_t ge = std::min(mine.b1, gb + group);
    for (int64_t i = 0; i < kern.chunks(); ++i)
      for (int64_t b = gb; b < ge; ++b) kern.add_chunk(b, i, acc.data() + (b - gb) * acc_n);
    for (int64_t b = gb; b < ge; ++b) kern.store(b, acc.data() + (b - gb) * acc_n);
  }
}

// ------------------------------------------------------------ overlapped backward
// The backward recurrence on thread 0 while thread 1 sums the weight
// gradients over the rows of the steps already finished (see
// backward_and_weight_grads). Thread 0 publishes how many steps are done;
// thread 1 takes the chunks in the order they finish (WeightGrad::rows_descending).
// When the recurrence ends, thread 0 takes over the late half of the
// (product, block) pairs from the next chunk on: thread 1 hands it the index of
// the first chunk it has not summed for them. The per-element summation order
// is the same as weight_grad's, so the results are too.
struct Overlap {
  StepsDone steps_done{0};
  std::atomic<bool> recurrence_done{false};
  std::atomic<int64_t> handoff{-1};
};

RNN_EXT_INLINE void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

template <typename T, int64_t W, int64_t Regs>
RNN_EXT_INLINE void weight_grads_overlapped(const Backward& bw, const WeightGrad* wgs, int64_t n_wg, Overlap& ov,
                                            int tid, T* acc) {
  using Kernel = WeightGradKernel<T, W, Regs>;
  std::vector<std::unique_ptr<Kernel>> kerns;
  struct Pair {
    int64_t p;
    int64_t b;
    T* acc;
  };
  std::vector<Pair> pairs;
  for (int64_t p = 0; p < n_wg; ++p) {
    kerns.push_back(std::make_unique<Kernel>(wgs[p]));
    for (int64_t b = 0; b < kerns.back()->blocks(); ++b) {
      pairs.push_back({p, b, acc});
      acc += kerns.back()->acc_size();
    }
  }
  const int64_t n_pairs = static_cast<int64_t>(pairs.size()), late = n_pairs / 2;  // [late, n_pairs): the late half
  const int64_t chunks = kerns.empty() ? 0 : kerns[0]->chunks();
  const auto run = [&](int64_t i, int64_t p0, int64_t p1) RNN_EXT_LAMBDA_INLINE {
    for (int64_t q = p0; q < p1; ++q) kerns[pairs[q].p]->add_chunk(pairs[q].b, i, pairs[q].acc);
  };
  const auto store = [&](int64_t p0, int64_t p1) RNN_EXT_LAMBDA_INLINE {
    for (int64_t q = p0; q < p1; ++q) kerns[pairs[q].p]->store(pairs[q].b, pairs[q].acc);
  };
  if (tid == 0) {  // after the recurrence: the late half, from the chunk thread 1 hands over
    int64_t from;
    while ((from = ov.handoff.load(std::memory_order_acquire)) < 0) spin_pause();
    for (int64_t i = from; i < chunks; ++i) run(i, late, n_pairs);
    store(late, n_pairs);
    return;
  }
  // Rows [lo[d], hi[d]) are final once d steps are done (the steps finish in
  // reverse processing order, and their rows are contiguous and monotone).
  const int64_t T_ = bw.s.T;
  std::vector<int64_t> lo(T_ + 1), hi(T_ + 1);
  lo[0] = hi[0] = 0;
  for (int64_t d = 1; d <= T_; ++d) {
    const int64_t k = T_ - d, r0 = bw.s.offset[k], r1 = r0 + bw.s.rows[k];
    lo[d] = d == 1 ? r0 : std::min(lo[d - 1], r0);
    hi[d] = d == 1 ? r1 : std::max(hi[d - 1], r1);
  }
  bool own_late = true;
  for (int64_t i = 0; i < chunks; ++i) {
    const auto [r0, r1] = kerns[0]->chunk_rows(i);
    for (;;) {
      const int64_t d = ov.steps_done.load(std::memory_order_acquire);
      if (d == T_ || (d > 0 && lo[d] <= r0 && r1 <= hi[d])) break;
      spin_pause();
    }
    if (own_late && ov.recurrence_done.load(std::memory_order_acquire)) {
      own_late = false;
      ov.handoff.store(i, std::memory_order_release);
    }
    if (own_late) run(i, late, n_pairs);
    run(i, 0, late);
  }
  if (own_late) ov.handoff.store(chunks, std::memory_order_release);
  store(0, late);
}

// ------------------------------------------------------------ transpose
// dst (cols, ldd) <- src (rows r0..r1, lds)^T, in W x W tiles transposed in
// registers; the ragged edges element by element.
template <typename T, int64_t W>
RNN_EXT_INLINE void transpose_rows(const T* __restrict src, int64_t r0, int64_t r1, int64_t cols, int64_t lds,
                                   T* __restrict dst, int64_t ldd) {
  using V = typename VecOf<T, W>::type;
  for (int64_t i0 = r0; i0 < r1; i0 += W)
    for (int64_t j0 = 0; j0 < cols; j0 += W) {
      const int64_t in = std::min(W, r1 - i0), jn = std::min(W, cols - j0);
      if (in == W && jn == W) {
        V r[W];
        for (int64_t i = 0; i < W; ++i) std::memcpy(&r[i], src + (i0 + i) * lds + j0, sizeof(V));
        transpose_stages<V, W, W / 2>(r);
        for (int64_t j = 0; j < W; ++j) std::memcpy(dst + (j0 + j) * ldd + i0, &r[j], sizeof(V));
      } else {
        for (int64_t j = 0; j < jn; ++j)
          for (int64_t i = 0; i < in; ++i) dst[(j0 + j) * ldd + i0 + i] = src[(i0 + i) * lds + j0 + j];
      }
    }
}

// ------------------------------------------------------------ instantiation
using ForwardFn = void (*)(const Forward&, int, int, StepQueues*);
using BackwardFn = void (*)(const Backward&, int, int, StepsDone*, StepQueues*);
using OverlapFn = void (*)(const Backward&, const WeightGrad*, int64_t, Overlap&, int, void*);
using WeightGradFn = void (*)(const WeightGrad&, int, int);
using TransposeFn = void (*)(const void*, int64_t, int64_t, int64_t, int64_t, void*, int64_t);
struct EntryPoints {  // of one instruction set and dtype; fwd and bwd by Cell
  ForwardFn fwd[4];
  BackwardFn bwd[4];
  OverlapFn ov;
  WeightGradFn wg;
  TransposeFn tr;
};
// The entry points of one instruction set and dtype (T, vector lanes W,
// vector registers REGS), which the dispatch below picks from. One function
// per cell: GCC allocates registers per function, and with every cell's
// recurrence in one function it spilled a micro-kernel's loop bound to the
// stack (LSTM inference, (100, 32, 256, 256), 2 threads: 2% slower).
#define RNN_EXT_RECURRENCES(ATTR, SUFFIX, CELL, T, W, REGS)                                   \
  ATTR void fwd_##CELL##_##SUFFIX(const Forward& f, int t, int n, StepQueues* q) {           \
    forward_thread<T, W, REGS, Cell::CELL>(f, t, n, q);                                        \
  }                                                                                            \
  ATTR void bwd_##CELL##_##SUFFIX(const Backward& b, int t, int n, StepsDone* d, StepQueues* q) { \
    backward_thread<T, W, REGS, Cell::CELL>(b, t, n, d, q);                                    \
  }
#define RNN_EXT_ENTRY_POINTS(ATTR, SUFFIX, T, W, REGS)                                                     \
  RNN_EXT_RECURRENCES(ATTR, SUFFIX, kLstm, T, W, REGS)                                                      \
  RNN_EXT_RECURRENCES(ATTR, SUFFIX, kGru, T, W, REGS)                                                       \
  RNN_EXT_RECURRENCES(ATTR, SUFFIX, kRnnTanh, T, W, REGS)                                                   \
  RNN_EXT_RECURRENCES(ATTR, SUFFIX, kRnnRelu, T, W, REGS)                                                   \
  ATTR void ov_##SUFFIX(const Backward& b, const WeightGrad* w, int64_t nw, Overlap& o, int t, void* acc) { \
    weight_grads_overlapped<T, W, REGS>(b, w, nw, o, t, static_cast<T*>(acc));                             \
  }                                                                                                         \
  ATTR void wg_##SUFFIX(const WeightGrad& w, int t, int n) { weight_grad_thread<T, W, REGS>(w, t, n); }     \
  ATTR void tr_##SUFFIX(const void* s, int64_t r0, int64_t r1, int64_t c, int64_t lds, void* d,           \
                        int64_t ldd) {                                                                      \
    transpose_rows<T, W>(static_cast<const T*>(s), r0, r1, c, lds, static_cast<T*>(d), ldd);               \
  }                                                                                                         \
  constexpr EntryPoints ep_##SUFFIX{                                                                       \
      {fwd_kLstm_##SUFFIX, fwd_kGru_##SUFFIX, fwd_kRnnTanh_##SUFFIX, fwd_kRnnRelu_##SUFFIX},                \
      {bwd_kLstm_##SUFFIX, bwd_kGru_##SUFFIX, bwd_kRnnTanh_##SUFFIX, bwd_kRnnRelu_##SUFFIX},                \
      ov_##SUFFIX, wg_##SUFFIX, tr_##SUFFIX};

#if defined(__x86_64__) && defined(__GNUC__)
#define RNN_EXT_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,bmi2")))
#define RNN_EXT_AVX2 __attribute__((target("avx2,fma,bmi2")))
RNN_EXT_ENTRY_POINTS(RNN_EXT_AVX512, avx512_f32, float, 16, 32)
RNN_EXT_ENTRY_POINTS(RNN_EXT_AVX512, avx512_f64, double, 8, 32)
RNN_EXT_ENTRY_POINTS(RNN_EXT_AVX2, avx2_f32, float, 8, 16)
RNN_EXT_ENTRY_POINTS(RNN_EXT_AVX2, avx2_f64, double, 4, 16)
#endif
RNN_EXT_ENTRY_POINTS(, generic_f32, float, 4, 16)
RNN_EXT_ENTRY_POINTS(, generic_f64, double, 2, 16)

// What the CPU runs: the widest instruction set it has (or RNN_EXT_CPU_ISA allows).
const EntryPoints& entry_points(bool is_double) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa() == Isa::kAvx512) return is_double ? ep_avx512_f64 : ep_avx512_f32;
  if (isa() == Isa::kAvx2) return is_double ? ep_avx2_f64 : ep_avx2_f32;
#endif
  return is_double ? ep_generic_f64 : ep_generic_f32;
}

// Threads for one op call. A thread must get enough work per step to pay for
// the barrier (about a microsecond), so estimate the cycles of one step's
// products: per k, a tile of mr rows needs NV*mr/2 cycles at two FMAs per
// cycle, but no fewer than 4 (the FMA latency, when there are few accumulators).
constexpr int64_t kMinForwardCyclesPerThread = 2048;
constexpr int64_t kMinBackwardCyclesPerThread = 24576;

int team_size(int max_threads, int64_t min_cycles, int64_t blocks, int64_t rows, int64_t K, int64_t nv, int64_t mr) {
  const int64_t full = rows / mr, rest = rows % mr;
  const int64_t per_k = full * std::max<int64_t>(nv * mr / 2, 4) + (rest ? std::max<int64_t>(nv * rest / 2, 4) : 0);
  const int64_t cycles = blocks * K * per_k;
  int64_t n = std::min<int64_t>(max_threads, blocks);
  n = std::min<int64_t>(n, std::max<int64_t>(1, cycles / min_cycles));
  return static_cast<int>(std::max<int64_t>(1, n));
}

// Rows of the register tile the kernels use for nv vectors per panel row.
int64_t tile_rows_here(int64_t nv) { return tile_rows(isa() == Isa::kAvx512 ? 32 : 16, nv); }

template <typename F>
void run_team(int nt, const F& fn) {
  if (nt <= 1) {
    fn(0, 1);
    return;
  }
#pragma omp parallel num_threads(nt)
  fn(omp_get_thread_num(), omp_get_num_threads());
}

}  // namespace

int64_t packed_forward_size(Cell cell, bool is_double, int64_t H, int64_t K) {
  const int64_t W = lanes(is_double), units = forward_units(cell, W);
  return ceil_div(H, units) * K * forward_nv(cell) * W;
}

int64_t packed_backward_size(Cell cell, bool is_double, int64_t H) {
  const int64_t W = lanes(is_double), cols = kBackwardNv * W;
  return ceil_div(H, cols) * gates_of(cell) * H * cols;
}

void forward(const Forward& f) {
  const int64_t W = lanes(f.is_double);
  const int64_t nv = forward_nv(f.cell);
  const int64_t blocks = ceil_div(f.H, forward_units(f.cell, W));
  const int nt = team_size(f.threads, kMinForwardCyclesPerThread, blocks, f.B, f.H, nv, tile_rows_here(nv));
  const ForwardFn fn = entry_points(f.is_double).fwd[static_cast<size_t>(f.cell)];
  // The queues on one thread too (its blocks in order, as without them): GCC
  // inlines forward_thread's block twice, and in the copy without queues it kept
  // some of the LSTM micro-kernel's accumulators on the stack (AVX-512: one
  // thread, T=64, B=32, I=64, H=128, inference 6.5 ms against 4.1 for nn.LSTM).
  StepQueues queues(nt);
  run_team(nt, [&](int tid, int n) { fn(f, tid, n, &queues); });
}

void backward(const Backward& b) {
  const int64_t W = lanes(b.is_double), G = gates_of(b.cell) * b.H, blocks = ceil_div(b.H, kBackwardNv * W);
  // Each step every thread reads all of the gate gradients the others wrote
  // (G wide, not H): a second thread needs more work per step to pay for it
  // than in the forward (LSTM H=128: B=8 and 16 ran 5-8% slower on two threads,
  // B=32 15% faster).
  const int nt = team_size(b.threads, kMinBackwardCyclesPerThread, blocks, b.B, G, kBackwardNv,
                           tile_rows_here(kBackwardNv));
  const BackwardFn fn = entry_points(b.is_double).bwd[static_cast<size_t>(b.cell)];
  StepQueues queues(nt);
  run_team(nt, [&](int tid, int n) { fn(b, tid, n, nullptr, n > 1 ? &queues : nullptr); });
}

void backward_and_weight_grads(const Backward& b, const WeightGrad* w_in, int64_t n) {
  const int64_t W = lanes(b.is_double), G = gates_of(b.cell) * b.H, blocks = ceil_div(b.H, kBackwardNv * W);
  // Every block's accumulator at once, for the chunk-by-chunk order.
  int64_t acc_n = 0;
  bool same_rows = n > 0 && w_in[0].N > 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t cols = ceil_div(w_in[i].G, kBackwardNv * W) * kBackwardNv * W;
    acc_n += cols * (w_in[i].K + (w_in[i].d_bias ? 1 : 0));
    same_rows = same_rows && w_in[i].N == w_in[0].N && w_in[i].is_double == b.is_double;
  }
  const int64_t acc_bytes = acc_n * (b.is_double ? 8 : 4);
  // A shape whose recurrence runs on one thread even when two are there (so
  // decided without the thread count, which must not change the sums' order).
  // Its weight gradients are summed in the order the backward finishes the
  // rows, on one thread as on two; elsewhere from the first row up, which the
  // hardware prefetchers follow better (LSTM training at T=50, B=64,
  // I=H=512: 9% slower with the chunks taken the other way).
  const bool small = same_rows && acc_bytes <= l2_bytes() / 2 &&
                     team_size(2, kMinBackwardCyclesPerThread, blocks, b.B, G, kBackwardNv,
                               tile_rows_here(kBackwardNv)) == 1;
  const bool high_rows_first = b.s.T > 0 && b.s.offset[b.s.T - 1] > b.s.offset[0];  // forward-direction layer
  std::vector<WeightGrad> w(w_in, w_in + n);
  for (WeightGrad& x : w) x.rows_descending = small && high_rows_first;
  if (!small || b.threads < 2) {
    backward(b);
    for (const WeightGrad& x : w) weight_grad(x);
    return;
  }
  // (not zeroed: the first chunk of each block overwrites its accumulator)
  const std::unique_ptr<char[]> acc(new char[static_cast<size_t>(acc_bytes) + 64]);
  void* acc_p = acc.get() + (64 - reinterpret_cast<uintptr_t>(acc.get()) % 64) % 64;
  const EntryPoints& ep = entry_points(b.is_double);
  Overlap ov;
  run_team(2, [&](int tid, int team) {
    if (team < 2) {  // the runtime gave one thread: one after the other
      ep.bwd[static_cast<size_t>(b.cell)](b, 0, 1, nullptr, nullptr);
      for (const WeightGrad& x : w) ep.wg(x, 0, 1);
      return;
    }
    if (tid == 0) {
      ep.bwd[static_cast<size_t>(b.cell)](b, 0, 1, &ov.steps_done, nullptr);
      ov.recurrence_done.store(true, std::memory_order_release);
    }
    ep.ov(b, w.data(), n, ov, tid, acc_p);
  });
}

void weight_grad(const WeightGrad& w) {
  const int64_t G = w.G, K = w.K, N = w.N;
  if (N == 0) {  // no rows: the sums are empty
    const size_t bytes = (w.is_double ? 8 : 4);
    std::memset(w.dw, 0, static_cast<size_t>(G * w.k_split) * bytes);
    std::memset(w.dw_rest, 0, static_cast<size_t>(G * (K - w.k_split)) * bytes);
    if (w.d_bias) std::memset(w.d_bias, 0, static_cast<size_t>(G) * bytes);
    return;
  }
  const int64_t W = lanes(w.is_double), blocks = ceil_div(G, kBackwardNv * W);
  // One product, not a step: K rows of N each per block of gates.
  const int nt = team_size(w.threads, kMinForwardCyclesPerThread, blocks, K, N, kBackwardNv,
                           tile_rows_here(kBackwardNv));
  const WeightGradFn fn = entry_points(w.is_double).wg;
  run_team(nt, [&](int tid, int n) { fn(w, tid, n); });
}

void transpose(bool is_double, const void* src, int64_t rows, int64_t cols, int64_t lds, void* dst, int64_t ldd,
               int threads) {
  // Rows split in multiples of 16 among the threads (each writes its own columns of dst).
  const int64_t tiles = ceil_div(rows, 16);
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({threads, tiles, rows * cols / 65536 + 1})));
  const TransposeFn fn = entry_points(is_double).tr;
  run_team(nt, [&](int tid, int n) {
    const int64_t r0 = std::min(rows, tiles * tid / n * 16), r1 = std::min(rows, tiles * (tid + 1) / n * 16);
    fn(src, r0, r1, cols, lds, dst, ldd);
  });
}

}  // namespace fused
}  // namespace rnn_ext
