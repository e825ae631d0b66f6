// Matrix products of a few rows on the CPU: one step's gate products, input and
// weight gradients for a cell call (1-8 rows), and the stepwise path's per-step
// products at small batch. BLAS's call, packing and transposed-view overheads
// cost more than such a product; these loops read the operands as stored.
//
// Every tile keeps its sums in registers: GCC vectors of AVX2's width (the
// x86-64-v3 clone; the baseline clone runs each as two SSE halves), the tile
// loops fully unrolled so that its arrays never touch memory. Each output is
// the same sum in the same order whatever tile, or thread block, it falls in,
// so results do not depend on the thread count (tests/test_cpu_paths.py).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cpu/small_products.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RNN_EXT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RNN_EXT_CLONES
#endif
#define RNN_EXT_INLINE inline __attribute__((always_inline))
// Vectors passed by value only between always-inline functions: no call ABI involved.
#pragma GCC diagnostic ignored "-Wpsabi"
// Lambdas must inline too, or their loops escape the target clone.
#define RNN_EXT_LAMBDA_INLINE __attribute__((always_inline))

namespace rnn_ext {
namespace {

constexpr int64_t kVecBytes = 32;
template <typename T, int64_t Bytes = kVecBytes>
struct Vec {
  typedef T type __attribute__((vector_size(Bytes)));
};
template <typename T>
constexpr int64_t kLanes = kVecBytes / sizeof(T);

template <typename V, typename T>
RNN_EXT_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
RNN_EXT_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// A vector's lanes added in a fixed pairwise order: halves, then their halves.
template <typename T, int64_t Bytes = kVecBytes>
RNN_EXT_INLINE T lane_sum(typename Vec<T, Bytes>::type v) {
  if constexpr (Bytes == sizeof(T)) {
    return v[0];
  } else {
    using Half = typename Vec<T, Bytes / 2>::type;
    const Half lo = load<Half>(reinterpret_cast<const char*>(&v));
    const Half hi = load<Half>(reinterpret_cast<const char*>(&v) + sizeof(Half));
    return lane_sum<T, Bytes / 2>(lo + hi);
  }
}

// Splits [0, n) across threads in blocks of whole tiles of `tile` items, and
// only products big enough to pay for waking threads (~32K multiply-adds each).
// Whole tiles: an item then takes the same code (vector tile, or the scalar
// tail at n's end) on any thread count. The compiler may vectorise a scalar
// tail's sum in order but without fused multiply-adds, so a tail's bits can
// differ from a vector lane's.
template <typename F>
void parallel_tiles(int64_t n, int64_t tile, int64_t macs_per_item, const F& f) {
  const int64_t tiles = (n + tile - 1) / tile;
  const int64_t items = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, macs_per_item));
  at::parallel_for(0, tiles, (items + tile - 1) / tile, [&](int64_t t0, int64_t t1) {
    f(t0 * tile, std::min(n, t1 * tile));
  });
}

constexpr int64_t kSmallNtRows = 8;

// Up to this many rows share one read of the other operand; more go in groups.
constexpr int64_t kGroupRows = 4;
// Accumulator vectors per row in a tile of R rows: more as R shrinks, so that
// ~8 sums run side by side (the multiply-add latency) within AVX2's 16 registers.
constexpr int64_t tile_vectors(int64_t R) { return R == 1 ? 8 : R == 2 ? 4 : 2; }

// f(first row, std::integral_constant<int64_t, R>) for each group of R <= kGroupRows rows.
template <typename F>
RNN_EXT_INLINE void for_row_groups(int64_t rows, F&& f) {
  for (int64_t r0 = 0; r0 < rows; r0 += kGroupRows) {
    switch (std::min(kGroupRows, rows - r0)) {
      case 1: f(r0, std::integral_constant<int64_t, 1>()); break;
      case 2: f(r0, std::integral_constant<int64_t, 2>()); break;
      case 3: f(r0, std::integral_constant<int64_t, 3>()); break;
      default: f(r0, std::integral_constant<int64_t, 4>()); break;
    }
  }
}

// ---------------------------------------------------------------- a @ w^T
// out[r, n] = a[r, :] . w[n, :]: one vector accumulator per output along K, its
// lanes summed pairwise, then the K tail. A tile of R rows and C rows of w shares
// its loads; C = tile_vectors(R).
constexpr int64_t kNtColumnTile = 8;  // w rows kept hot in L1 for every row group

template <typename T, int64_t R, int64_t C>
RNN_EXT_INLINE void nt_tile(const T* __restrict a, const T* __restrict w, T* __restrict out, int64_t K, int64_t N,
                            int64_t n, bool accumulate) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = kLanes<T>;
  V acc[R][C];
#pragma GCC unroll 16
  for (int64_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int64_t c = 0; c < C; ++c) acc[r][c] = V{};
  int64_t k = 0;
  for (; k + L <= K; k += L) {
    V wv[C];
#pragma GCC unroll 16
    for (int64_t c = 0; c < C; ++c) wv[c] = load<V>(w + (n + c) * K + k);
#pragma GCC unroll 16
    for (int64_t r = 0; r < R; ++r) {
      const V av = load<V>(a + r * K + k);
#pragma GCC unroll 16
      for (int64_t c = 0; c < C; ++c) acc[r][c] += av * wv[c];
    }
  }
#pragma GCC unroll 16
  for (int64_t r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int64_t c = 0; c < C; ++c) {
      T sum = lane_sum<T>(acc[r][c]);
      for (int64_t kk = k; kk < K; ++kk) sum += a[r * K + kk] * w[(n + c) * K + kk];
      T* o = out + r * N + n + c;
      *o = accumulate ? *o + sum : sum;
    }
  }
}

template <typename T>
RNN_EXT_CLONES void nt_block(const T* a, const T* w, T* out, int64_t rows, int64_t K, int64_t N, int64_t n0,
                             int64_t n1, bool accumulate) {
  for (int64_t n = n0; n < n1; n += kNtColumnTile) {
    const int64_t cols = std::min(kNtColumnTile, n1 - n);
    for_row_groups(rows, [&](int64_t r0, auto rows_c) RNN_EXT_LAMBDA_INLINE {
      constexpr int64_t R = decltype(rows_c)::value, C = tile_vectors(R);
      const T* ar = a + r0 * K;
      T* o = out + r0 * N;
      int64_t c = 0;
      for (; c + C <= cols; c += C) nt_tile<T, R, C>(ar, w, o, K, N, n + c, accumulate);
      for (; c < cols; ++c) nt_tile<T, R, 1>(ar, w, o, K, N, n + c, accumulate);
    });
  }
}

// ---------------------------------------------------------------- a @ b
// out[r, n] (+)= sum_i a[r, i] * b[i, n] in order of i: a tile holds R rows x C
// vectors of columns (C = tile_vectors(R)); per i, C loads of b's row and R
// broadcasts of a.
template <typename T>
constexpr int64_t nn_column_tile = 8 * kLanes<T>;  // b's columns kept hot for every row group

template <typename T, int64_t R, int64_t C>
RNN_EXT_INLINE void nn_tile(const T* __restrict a, const T* __restrict b, T* __restrict out, int64_t K, int64_t N,
                            int64_t n, bool accumulate) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = kLanes<T>;
  V acc[R][C];
#pragma GCC unroll 16
  for (int64_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int64_t c = 0; c < C; ++c) acc[r][c] = accumulate ? load<V>(out + r * N + n + c * L) : V{};
  for (int64_t i = 0; i < K; ++i) {
    V bv[C];
#pragma GCC unroll 16
    for (int64_t c = 0; c < C; ++c) bv[c] = load<V>(b + i * N + n + c * L);
#pragma GCC unroll 16
    for (int64_t r = 0; r < R; ++r) {
      const T ar = a[r * K + i];
#pragma GCC unroll 16
      for (int64_t c = 0; c < C; ++c) acc[r][c] += ar * bv[c];
    }
  }
#pragma GCC unroll 16
  for (int64_t r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int64_t c = 0; c < C; ++c) store(out + r * N + n + c * L, acc[r][c]);
}

// One column of the tail past the last vector: the tile's order of terms, though
// not always its bits (see parallel_tiles).
template <typename T, int64_t R>
RNN_EXT_INLINE void nn_column(const T* __restrict a, const T* __restrict b, T* __restrict out, int64_t K, int64_t N,
                              int64_t n, bool accumulate) {
  for (int64_t r = 0; r < R; ++r) {
    T sum = accumulate ? out[r * N + n] : T(0);
    for (int64_t i = 0; i < K; ++i) sum += a[r * K + i] * b[i * N + n];
    out[r * N + n] = sum;
  }
}

template <typename T>
RNN_EXT_CLONES void nn_block(const T* a, const T* b, T* out, int64_t rows, int64_t K, int64_t N, int64_t n0,
                             int64_t n1, bool accumulate) {
  constexpr int64_t L = kLanes<T>;
  for (int64_t n = n0; n < n1; n += nn_column_tile<T>) {
    const int64_t cols = std::min(nn_column_tile<T>, n1 - n);
    for_row_groups(rows, [&](int64_t r0, auto rows_c) RNN_EXT_LAMBDA_INLINE {
      constexpr int64_t R = decltype(rows_c)::value, C = tile_vectors(R);
      const T* ar = a + r0 * K;
      T* o = out + r0 * N;
      int64_t c = 0;
      for (; c + C * L <= cols; c += C * L) nn_tile<T, R, C>(ar, b, o, K, N, n + c, accumulate);
      for (; c + L <= cols; c += L) nn_tile<T, R, 1>(ar, b, o, K, N, n + c, accumulate);
      for (; c < cols; ++c) nn_column<T, R>(ar, b, o, K, N, n + c, accumulate);
    });
  }
}

// ---------------------------------------------------------------- a^T @ b
// out[g, k] = sum_r a[r, g] * b[r, k] in order of r, colsum[g] = sum_r a[r, g].
// A tile holds kTnRowTile rows of out x C vectors; a single row of a (one row of the
// batch) is an outer product, written row by row.
constexpr int64_t kTnRowTile = 4;

template <typename T, int64_t G4, int64_t C>
RNN_EXT_INLINE void tn_tile(const T* __restrict a, const T* __restrict b, T* __restrict out, int64_t rows, int64_t G,
                            int64_t K, int64_t g, int64_t k) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = kLanes<T>;
  V acc[G4][C];
  {
    V bv[C];
#pragma GCC unroll 16
    for (int64_t c = 0; c < C; ++c) bv[c] = load<V>(b + k + c * L);
#pragma GCC unroll 16
    for (int64_t j = 0; j < G4; ++j)
#pragma GCC unroll 16
      for (int64_t c = 0; c < C; ++c) acc[j][c] = a[g + j] * bv[c];
  }
  for (int64_t r = 1; r < rows; ++r) {
    V bv[C];
#pragma GCC unroll 16
    for (int64_t c = 0; c < C; ++c) bv[c] = load<V>(b + r * K + k + c * L);
#pragma GCC unroll 16
    for (int64_t j = 0; j < G4; ++j) {
      const T ar = a[r * G + g + j];
#pragma GCC unroll 16
      for (int64_t c = 0; c < C; ++c) acc[j][c] += ar * bv[c];
    }
  }
#pragma GCC unroll 16
  for (int64_t j = 0; j < G4; ++j)
#pragma GCC unroll 16
    for (int64_t c = 0; c < C; ++c) store(out + (g + j) * K + k + c * L, acc[j][c]);
}

// Rows g .. g+G4-1 of out: vector tiles, then the K tail and the column sums.
template <typename T, int64_t G4>
RNN_EXT_INLINE void tn_rows(const T* a, const T* b, T* out, int64_t rows, int64_t G, int64_t K, int64_t g) {
  constexpr int64_t L = kLanes<T>;
  int64_t k = 0;
  for (; k + 2 * L <= K; k += 2 * L) tn_tile<T, G4, 2>(a, b, out, rows, G, K, g, k);
  for (; k + L <= K; k += L) tn_tile<T, G4, 1>(a, b, out, rows, G, K, g, k);
  for (int64_t j = g; j < g + G4; ++j) {
    for (int64_t kk = k; kk < K; ++kk) {
      T sum = a[j] * b[kk];
      for (int64_t r = 1; r < rows; ++r) sum += a[r * G + j] * b[r * K + kk];
      out[j * K + kk] = sum;
    }
  }
}

template <typename T>
RNN_EXT_CLONES void tn_block(const T* a, const T* b, T* out, T* colsum, int64_t rows, int64_t G, int64_t K,
                             int64_t g0, int64_t g1) {
  if (rows == 1) {  // measured: the tiles' four output streams are slower for a plain outer product
    for (int64_t g = g0; g < g1; ++g) {
      T* __restrict o = out + g * K;
      const T ag = a[g];
      for (int64_t k = 0; k < K; ++k) o[k] = ag * b[k];
    }
  } else {
    int64_t g = g0;
    for (; g + kTnRowTile <= g1; g += kTnRowTile) tn_rows<T, kTnRowTile>(a, b, out, rows, G, K, g);
    for (; g < g1; ++g) tn_rows<T, 1>(a, b, out, rows, G, K, g);
  }
  if (colsum) {
    for (int64_t g = g0; g < g1; ++g) {
      T sum = a[g];
      for (int64_t r = 1; r < rows; ++r) sum += a[r * G + g];
      colsum[g] = sum;
    }
  }
}

template <typename F>
void dispatch(DType dtype, const char* name, F&& f) {
  if (dtype == DType::kFloat) return f(float());
  if (dtype == DType::kDouble) return f(double());
  throw std::invalid_argument(std::string("rnn_ext: ") + name + " supports float32 and float64 only");
}

}  // namespace

void small_mm_cpu(DType dtype, const void* a, const void* b, void* out, int64_t rows, int64_t K, int64_t N,
                  bool accumulate) {
  dispatch(dtype, "small_mm_cpu", [&](auto t) {
    using T = decltype(t);
    parallel_tiles(N, nn_column_tile<T>, rows * K, [&](int64_t n0, int64_t n1) {
      nn_block<T>(static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), rows, K, N, n0, n1,
                  accumulate);
    });
  });
}

int64_t small_nt_max_rows() { return kSmallNtRows; }

void small_nt_cpu(DType dtype, const void* a, const void* w, void* out, int64_t rows, int64_t K, int64_t N,
                  bool accumulate) {
  if (rows > kSmallNtRows) throw std::invalid_argument("rnn_ext: small_nt_cpu takes at most 8 rows");
  dispatch(dtype, "small_nt_cpu", [&](auto t) {
    using T = decltype(t);
    parallel_tiles(N, kNtColumnTile, rows * K, [&](int64_t n0, int64_t n1) {
      nt_block<T>(static_cast<const T*>(a), static_cast<const T*>(w), static_cast<T*>(out), rows, K, N, n0, n1,
                  accumulate);
    });
  });
}

void small_tn_cpu(DType dtype, const void* a, const void* b, void* out, void* colsum, int64_t rows, int64_t G,
                  int64_t K) {
  if (rows < 1) throw std::invalid_argument("rnn_ext: small_tn_cpu needs a row");
  dispatch(dtype, "small_tn_cpu", [&](auto t) {
    using T = decltype(t);
    parallel_tiles(G, kTnRowTile, rows * K, [&](int64_t g0, int64_t g1) {
      tn_block<T>(static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), static_cast<T*>(colsum),
                  rows, G, K, g0, g1);
    });
  });
}

}  // namespace rnn_ext
