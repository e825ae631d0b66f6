// Runs csrc/gemm_plan.h's plans through a reference column-major GEMM with
// cuBLAS's argument rules, against the row-major product read through the
// strides, for random sizes (0, 1 and larger) and layouts (dense, transposed,
// padded, one-element dimensions with odd strides, rows and columns both
// strided). Built and run by tests/test_gemm_plan.py; prints one summary line
// and exits 1 on the first mismatch or rule broken.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "gemm_plan.h"

using rnn_ext::GemmOperand;
using rnn_ext::GemmPlan;

namespace {

std::mt19937_64 rng(12345);
int planned = 0, declined = 0;
int64_t pick(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

// A row-major (rows, cols) matrix's strides, in one of several layouts, and
// the storage it needs.
struct Layout {
  int64_t s0, s1, size;
  const char* name;
};
Layout layout(int64_t rows, int64_t cols) {
  const int64_t pad = pick(0, 3), kind = pick(0, 5);
  Layout l{};
  switch (kind) {
    case 0: l = {std::max<int64_t>(cols, 1), 1, 0, "dense"}; break;
    case 1: l = {1, std::max<int64_t>(rows, 1), 0, "transposed"}; break;
    case 2: l = {std::max<int64_t>(cols, 1) + pad, 1, 0, "padded rows"}; break;
    case 3: l = {1, std::max<int64_t>(rows, 1) + pad, 0, "padded columns"}; break;
    case 4: l = {2 * std::max<int64_t>(cols, 1) + 1, 2, 0, "strided both"}; break;  // no dense dimension
    default:  // a size-1 dimension with an odd stride, else dense
      l = {rows == 1 ? pick(0, 7) : std::max<int64_t>(cols, 1), cols == 1 ? pick(0, 7) : 1, 0, "odd unit stride"};
  }
  int64_t last = 0;
  if (rows > 0 && cols > 0) last = (rows - 1) * l.s0 + (cols - 1) * l.s1;
  l.size = rows > 0 && cols > 0 ? last + 1 : 0;
  return l;
}

bool fail(const char* what, int64_t M, int64_t N, int64_t K) {
  std::printf("FAIL: %s at M=%lld N=%lld K=%lld\n", what, (long long)M, (long long)N, (long long)K);
  return false;
}

// Element (r, c) of column-major X (ld) under op.
double at(const std::vector<double>& x, const GemmOperand& o, int64_t r, int64_t c) {
  return o.transpose ? x[c + r * o.ld] : x[r + c * o.ld];
}

bool check_case() {
  const int64_t M = pick(0, 2) == 0 ? pick(0, 1) : pick(1, 9);
  const int64_t N = pick(0, 2) == 0 ? pick(0, 1) : pick(1, 9);
  const int64_t K = pick(0, 2) == 0 ? pick(0, 1) : pick(1, 9);
  if (M == 0 || N == 0) return true;  // the caller returns before planning
  const Layout la = layout(M, K), lb = layout(K, N), lo = layout(M, N);
  std::vector<double> a(la.size + 1), b(lb.size + 1), out(lo.size + 1, -7.0);
  for (auto& v : a) v = pick(-9, 9);
  for (auto& v : b) v = pick(-9, 9);
  const int64_t as[2] = {la.s0, la.s1}, bs[2] = {lb.s0, lb.s1}, os[2] = {lo.s0, lo.s1};
  GemmPlan p;
  const bool ok = rnn_ext::plan_gemm(M, N, K, as, bs, os, &p);
  // A plan must exist for every layout with a dense dimension (out: dense rows).
  const bool a_ok = la.s1 == 1 || la.s0 == 1 || M == 1 || K == 1;
  const bool b_ok = lb.s1 == 1 || lb.s0 == 1 || K == 1 || N == 1;
  const bool o_ok = lo.s1 == 1 || N == 1;
  if (!ok) {
    ++declined;
    return (a_ok && b_ok && o_ok) ? fail("no plan for a layout BLAS takes", M, N, K) : true;
  }
  ++planned;
  // cuBLAS's argument rules
  if (p.m != N || p.n != M || p.k != K) return fail("sizes", M, N, K);
  if (p.A.ld < std::max<int64_t>(1, p.A.transpose ? p.k : p.m)) return fail("lda", M, N, K);
  if (p.B.ld < std::max<int64_t>(1, p.B.transpose ? p.n : p.k)) return fail("ldb", M, N, K);
  if (p.ldc < std::max<int64_t>(1, p.m)) return fail("ldc", M, N, K);
  // C = op(A) op(B), A = b's storage, B = a's storage, C = out's
  for (int64_t j = 0; j < p.n; ++j)
    for (int64_t i = 0; i < p.m; ++i) {
      double sum = 0;
      for (int64_t l = 0; l < p.k; ++l) sum += at(b, p.A, i, l) * at(a, p.B, l, j);
      out[i + j * p.ldc] = sum;
    }
  // against the row-major product through the strides
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < N; ++c) {
      double want = 0;
      for (int64_t l = 0; l < K; ++l) want += a[r * la.s0 + l * la.s1] * b[l * lb.s0 + c * lb.s1];
      if (out[r * lo.s0 + c * lo.s1] != want) {
        std::printf("a %s, b %s, out %s: ", la.name, lb.name, lo.name);
        return fail("wrong element", M, N, K);
      }
    }
  return true;
}

}  // namespace

int main() {
  const int cases = 20000;
  for (int i = 0; i < cases; ++i)
    if (!check_case()) return 1;
  std::printf("gemm_plan_check: %d cases, %d planned and right, %d declined (no dense dimension)\n", cases,
              planned, declined);
  if (planned < cases / 4 || declined == 0) return 1;  // the layouts drawn cover both outcomes
  return 0;
}
