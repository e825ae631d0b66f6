#include "big_buffers.h"

#include <ATen/ATen.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace rnn_ext {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kMinBytes = size_t{4} << 20;

#if defined(__linux__) && defined(MADV_HUGEPAGE)
struct Mapping {
  void* base;
  size_t length;
};

// Mappings whose tensors were freed, kept for the next call of the same shape
// (a training loop asks for the same buffers every step) up to a byte cap;
// the oldest are unmapped first when a newer one would pass it.
class MappingCache {
 public:
  MappingCache() {
    const char* env = std::getenv("RNN_EXT_CPU_BUFFER_CACHE_MB");
    cap_ = (env ? static_cast<size_t>(std::strtoull(env, nullptr, 10)) : size_t{256}) << 20;
  }

  // A cached mapping of at least `length` bytes and at most twice that, the
  // smallest such; else a null base.
  Mapping take(size_t length) {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i) {
      const size_t l = free_[i].length;
      if (l >= length && l <= 2 * length && (best == free_.size() || l < free_[best].length)) best = i;
    }
    if (best == free_.size()) return {nullptr, 0};
    const Mapping m = free_[best];
    free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
    bytes_ -= m.length;
    return m;
  }

  void give(Mapping m) {
    std::vector<Mapping> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (m.length > cap_) {
        evicted.push_back(m);
      } else {
        while (bytes_ + m.length > cap_) {
          evicted.push_back(free_.front());
          bytes_ -= free_.front().length;
          free_.erase(free_.begin());
        }
        free_.push_back(m);
        bytes_ += m.length;
      }
    }
    for (const Mapping& e : evicted) munmap(e.base, e.length);
  }

 private:
  std::mutex mutex_;
  std::vector<Mapping> free_;  // oldest first
  size_t bytes_ = 0, cap_;
};

MappingCache& cache() {
  static MappingCache* c = new MappingCache();  // never destroyed: tensors may outlive static teardown
  return *c;
}

void release(void* ctx) {
  auto* m = static_cast<Mapping*>(ctx);
  cache().give(*m);
  delete m;
}

Mapping map_huge(size_t length) {
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return {nullptr, 0};
  madvise(base, length, MADV_HUGEPAGE);  // a hint
  return {base, length};
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
    Mapping m = cache().take(length);
    if (!m.base) m = map_huge(length);
    if (m.base) {
      const auto addr = reinterpret_cast<uintptr_t>(m.base);
      void* data = reinterpret_cast<void*>((addr + kHugePage - 1) / kHugePage * kHugePage);
      auto* ctx = new Mapping(m);
      return at::from_blob(
          data, sizes, [ctx](void*) { release(ctx); }, options);
    }
  }
#endif
  return at::empty(sizes, options);
}

}  // namespace rnn_ext
