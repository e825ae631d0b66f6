// float32 on the CPU goes through oneDNN's matmul, all but the small products (torch's own
// mkldnn::_linear_pointwise op, called through the dispatcher so that no
// oneDNN header or symbol is needed here); float32, float16 and bfloat16 on
// CUDA straight through cuBLAS (csrc/cuda/cublas_gemm.cpp: float32 with
// rnn_ext's TF32 choice, float32_as_tf32); everything else through at::mm.
// Why: torch's CPU float32 GEMM is MKL's sgemm, which on AMD CPUs runs at
// about half of what oneDNN reaches on the same cores (AMD EPYC Zen 5, 2
// threads, (3200 x 2048) @ (2048 x 1024): 190 vs 414 GFLOP/s), and oneDNN is
// what nn.LSTM itself uses on the CPU. RNN_EXT_CPU_GEMM=blas keeps at::mm.
#include "matmul.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include "cpu/fused_cpu.h"

#include <cstdlib>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#include <string>

namespace rnn_ext {
namespace {

// The op, or null when this torch has no oneDNN (or the op is absent).
const c10::OperatorHandle* onednn_linear() {
  static const c10::OperatorHandle* op = []() -> const c10::OperatorHandle* {
    if (!at::hasMKLDNN()) return nullptr;
    auto handle = c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
    if (!handle || !handle->hasKernelForDispatchKey(c10::DispatchKey::CPU)) return nullptr;
    return new c10::OperatorHandle(*handle);  // lives for the process
  }();
  return op;
}

// b, dense with K contiguous: a copy for b = w.t() of a dense w, by the
// register-tiled transpose (dx = d_gates @ W_ih passes W_ih.t(): at::contiguous
// took 1.1 ms for a 1024 x 256 W_ih, 2 threads; this 0.05 ms).
at::Tensor k_contiguous(const at::Tensor& b) {
  if (b.is_contiguous() || b.dim() != 2 || b.stride(0) != 1 || b.stride(1) != b.size(0)) return b.contiguous();
  at::Tensor out = at::empty(b.sizes(), b.options());
  fused::transpose(false, b.data_ptr(), b.size(1), b.size(0), b.size(0), out.data_ptr(), b.size(1),
                   at::get_num_threads());
  return out;
}

// Read per call (a getenv next to a large product), so that a process can switch.
bool blas_forced() {
  const char* env = std::getenv("RNN_EXT_CPU_GEMM");
  return env && std::string(env) == "blas";
}

// The CUDA tensors whose products go straight to cuBLAS (csrc/cuda/cublas_gemm.cpp).
bool cuda_blas(const at::Tensor& t) {
#ifdef RNN_EXT_WITH_CUDA
  return t.is_cuda() && cuda_blas_dtype(t.scalar_type());
#else
  (void)t;
  return false;
#endif
}

// cuDNN's RNN setting where this torch names operations by string (2.9:
// allowTF32CuDNN("rnn"), as its cuDNN RNN code asks), else its one cuDNN
// setting (older). Overloads, not a version test: the first drops out where
// that call does not compile. (2.10 on take the enum: float32_as_tf32; headers
// of 2.9, 2.10 and 2.11 read.)
template <typename Ctx>
auto cudnn_rnn_tf32(const Ctx& ctx, int) -> decltype(ctx.allowTF32CuDNN(std::string("rnn"))) {
  return ctx.allowTF32CuDNN(std::string("rnn"));
}
template <typename Ctx>
bool cudnn_rnn_tf32(const Ctx& ctx, long) {
  return ctx.allowTF32CuDNN();
}

}  // namespace

bool float32_as_tf32() {
  if (at::NoTF32Guard::should_disable_tf32()) return false;
  auto& ctx = at::globalContext();
  // nn.LSTM runs on cuDNN where cuDNN is present and enabled (torch.backends.cudnn.is_acceptable)
  const bool cudnn = ctx.userEnabledCuDNN() && at::Context::hasCuDNN();
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
  // what cuDNN's RNN descriptor and torch's cuBLAS calls read; neither throws
  if (cudnn) return ctx.allowTF32CuDNN(at::Float32Op::RNN);
  return ctx.float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) == at::Float32Precision::TF32;
#else
  try {  // these may throw where the setting was made through both the old and the new API
    return cudnn ? cudnn_rnn_tf32(ctx, 0) : ctx.allowTF32CuBLAS();
  } catch (const c10::Error&) {  // then full float32
    return false;
  }
#endif
}

namespace {

// Whether a CPU float32 product a (M, K) @ bt (N, K)^T goes to oneDNN rather than
// at::mm (MKL's sgemm). oneDNN costs ~10 us a call to set up, and bt must have K
// contiguous (else copied: k_contiguous). Measured (AMD EPYC VM, 2 threads, oneDNN /
// MKL us): M=1 K=N=256 13.0 / 4.6; M=8 (K, N) = (256, 1024) 51 / 50; M=64 there 128 /
// 285; M=8 (512, 2048) 91 / 188. So oneDNN from 2^20 multiply-adds, and MKL for up
// to 16 rows against a bt it would copy (one step's dX = dG W_ih, 1024 x 256: the
// copy alone ~50 us, MKL's whole product 55).
// On Intel CPUs never with a copy: MKL takes bt's layout as it is and is the faster
// there (Xeon VM, AVX-512, 2 threads, dG (M, G) @ W (G, K), MKL / oneDNN with the copy,
// us: M=64 G=K=256 35 / 138; M=64 G=1024 K=256 135 / 501; M=3200 there 5970 / 6327).
// On AMD CPUs before Zen 5 (mkl_full_speed) MKL and oneDNN (without the copy) run within
// 15% of each other (EPYC Zen 4 VM, 2 threads, dG (M, G) @ W (G, K), MKL / oneDNN us, G=1024
// K=256: M=32 140 / 144, M=128 420 / 399, M=256 791 / 674, M=3200 8911 / 8426; G=K=256,
// M=64: 54 / 58), so there the copy pays from 128 rows on.
// may_copy false: never with a copy (a per-step product would copy bt every step).
const c10::OperatorHandle* onednn_for(const at::Tensor& a, const at::Tensor& bt, bool may_copy = true) {
  const c10::OperatorHandle* op = onednn_linear();
  if (!op || blas_forced() || !a.is_cpu() || a.scalar_type() != at::kFloat || bt.scalar_type() != at::kFloat)
    return nullptr;
  const int64_t M = a.size(0), K = a.size(1), N = bt.size(0);
  const bool needs_copy = !(bt.stride(1) == 1 && bt.stride(0) == K);
  const int64_t copy_from_rows = mkl_full_speed() ? 128 : 16;
  if (M * K * N < (int64_t{1} << 20) || (needs_copy && (M <= copy_from_rows || !may_copy || intel_cpu())))
    return nullptr;
  return op;  // (never empty: at::mm returns zeros for K == 0, oneDNN gets only non-empty products)
}

at::Tensor onednn_nt(const c10::OperatorHandle& op, const at::Tensor& a, const at::Tensor& bt) {
  // The op wants both operands with K contiguous: (M, K) and (N, K).
  torch::jit::Stack stack{a.contiguous(), k_contiguous(bt), c10::IValue(), std::string("none"),
                          c10::List<std::optional<c10::Scalar>>({std::nullopt}), c10::IValue()};
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

}  // namespace

bool intel_cpu() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool intel = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") != 0;
  }();
  return intel;
#else
  return false;
#endif
}

bool mkl_full_speed() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool full = [] {
    if (intel_cpu()) return true;
    __builtin_cpu_init();
    if (__builtin_cpu_is("amd") == 0) return false;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
    const unsigned base = (eax >> 8) & 0xf, family = base == 0xf ? base + ((eax >> 20) & 0xff) : base;
    return family < 0x1a;  // Zen 5 is family 0x1A
  }();
  return full;
#else
  return false;
#endif
}

void mm_into(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
#ifdef RNN_EXT_WITH_CUDA
  if (cuda_blas(out)) return cuda_mm(out, a, b, accumulate, out.scalar_type() == at::kFloat && float32_as_tf32());
#endif
  at::Tensor o = out;  // at::mm_out takes a non-const reference
  if (const c10::OperatorHandle* op = accumulate ? nullptr : onednn_for(a, b.t(), /*may_copy=*/false)) {
    o.copy_(onednn_nt(*op, a, b.t()));
  } else if (accumulate) {
    o.addmm_(a, b);
  } else {
    at::mm_out(o, a, b);
  }
}

at::Tensor product(const at::Tensor& a, const at::Tensor& b) {
  if (!cuda_blas(a)) return at::mm(a, b);
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  mm_into(out, a, b);
  return out;
}

at::Tensor matmul_nt(const at::Tensor& a, const at::Tensor& bt) {
  if (cuda_blas(a)) return product(a, bt.t());
  if (const c10::OperatorHandle* op = onednn_for(a, bt)) return onednn_nt(*op, a, bt);
  return at::mm(a, bt.t());
}

}  // namespace rnn_ext
