// Fused whole-sequence CPU kernels (see fused_cpu.h for the contract): the
// dispatch, which picks the instruction set once per process and a team of
// threads per call. The kernels are templates in fused_cpu_kernels.h,
// instantiated per instruction set in fused_cpu_avx512_f32.cpp,
// fused_cpu_avx512_f64.cpp, fused_cpu_avx2.cpp and fused_cpu_generic.cpp.
#include "cpu/fused_cpu.h"

#include "cpu/fused_cpu_kernels.h"

namespace rnn_ext {
namespace fused {
namespace {

using namespace detail;

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
  StepQueues queues(nt);
  run_team(nt, [&](int tid, int n) { fn(f, tid, n, n > 1 ? &queues : nullptr); });
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
