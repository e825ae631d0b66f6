#include "big_buffers.h"

#include <ATen/ATen.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>

namespace rnn_ext {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kMinBytes = size_t{4} << 20;

#if defined(__linux__)
struct Mapping {
  void* base;
  size_t length;
};

void unmap(void* ctx) {
  auto* m = static_cast<Mapping*>(ctx);
  munmap(m->base, m->length);
  delete m;
}
#endif

}  // namespace

at::Tensor empty_big(at::IntArrayRef sizes, const at::TensorOptions& options) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t bytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  if (options.device().is_cpu() && bytes >= kMinBytes) {
    // Over-map by one huge page so that the data can start on a 2 MB boundary.
    const size_t length = (bytes + 2 * kHugePage - 1) / kHugePage * kHugePage;
    void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base != MAP_FAILED) {
      const auto addr = reinterpret_cast<uintptr_t>(base);
      void* data = reinterpret_cast<void*>((addr + kHugePage - 1) / kHugePage * kHugePage);
      madvise(data, length - (static_cast<char*>(data) - static_cast<char*>(base)), MADV_HUGEPAGE);  // a hint
      auto* ctx = new Mapping{base, length};
      return at::from_blob(
          data, sizes, [ctx](void*) { unmap(ctx); }, options);
    }
  }
#endif
  return at::empty(sizes, options);
}

}  // namespace rnn_ext
