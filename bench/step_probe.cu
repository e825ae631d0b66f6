// What one step of a persistent recurrence pays to synchronise, on this GPU:
// the floor under the persistent kernels' time per step (issue 5 asks for at
// most 1 us a step). Each probe runs `steps` iterations in one launch; the
// time per step is (t(2S) - t(S)) / S, so the launch itself drops out. Probes:
//   grid.sync        cooperative groups' grid barrier (what the kernels use), one block per SM
//   counter barrier  thread 0 of each block: one release-add on a global counter, then
//                    spins on acquire loads until every block of the step arrived
//   grid.sync + h    grid.sync, then every block reads the whole h_t (B x H, 2-byte
//                    elements) that all blocks wrote, through L2 (__ldcg, 16-byte loads)
//   cluster.sync     thread-block cluster barrier, one cluster of 2 to 16 blocks (sm_90+)
// Prints a markdown table. Build and run: python -m bench.step_probe.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace cg = cooperative_groups;

#define CHECK(call)                                                                          \
  do {                                                                                       \
    cudaError_t err_ = (call);                                                               \
    if (err_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

constexpr int kThreads = 256;

__global__ void grid_sync_loop(int64_t steps) {
  cg::grid_group grid = cg::this_grid();
  for (int64_t i = 0; i < steps; ++i) grid.sync();
}

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void add_release(unsigned* p, unsigned v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// The counter only grows: step i is over when it reaches i * blocks (steps *
// blocks stays below 2^32 for the step counts used here).
__global__ void counter_barrier_loop(int64_t steps, unsigned* counter) {
  for (int64_t i = 1; i <= steps; ++i) {
    __syncthreads();  // the block's work of the step is done
    if (threadIdx.x == 0) {
      add_release(counter, 1u);
      const unsigned target = static_cast<unsigned>(i) * gridDim.x;
      while (load_acquire(counter) < target) {
      }
    }
    __syncthreads();
  }
}

// h: two buffers of n16 16-byte pieces (step parity). Block b writes its share
// of the current buffer, meets the others, then reads the whole buffer.
__global__ void exchange_loop(int64_t steps, uint4* h, int64_t n16, unsigned* sink) {
  cg::grid_group grid = cg::this_grid();
  const int64_t share = (n16 + gridDim.x - 1) / gridDim.x, first = blockIdx.x * share;
  unsigned acc = 0;
  for (int64_t i = 0; i < steps; ++i) {
    uint4* buf = h + (i % 2) * n16;
    for (int64_t e = first + threadIdx.x; e < first + share && e < n16; e += blockDim.x)
      buf[e] = make_uint4(static_cast<unsigned>(i), 1u, 2u, 3u);
    grid.sync();
    for (int64_t e = threadIdx.x; e < n16; e += blockDim.x) {
      const uint4 v = __ldcg(buf + e);
      acc ^= v.x ^ v.w;
    }
  }
  if (acc == 0xdeadbeefu) sink[0] = acc;  // keeps the loads
}

__global__ void cluster_sync_loop(int64_t steps) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  for (int64_t i = 0; i < steps; ++i) cluster.sync();
#endif
}

// Microseconds per step of `launch(steps)`: the median over 5 tries of (t(2S) - t(S)) / S.
template <typename Launch>
double per_step_us(int64_t S, const Launch& launch) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  auto time_ms = [&](int64_t steps) {
    CHECK(cudaEventRecord(a));
    launch(steps);
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    return static_cast<double>(ms);
  };
  time_ms(S);  // warm-up
  std::vector<double> us;
  for (int k = 0; k < 5; ++k) us.push_back((time_ms(2 * S) - time_ms(S)) * 1e3 / S);
  std::sort(us.begin(), us.end());
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return us[2];
}

template <typename Kernel>
void launch_cooperative(Kernel kernel, int blocks, void** args) {
  CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(blocks), dim3(kThreads), args, 0,
                                    nullptr));
}

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each row out as it is measured (a hang keeps them)
  int dev = 0, sms = 0, major = 0, minor = 0;
  CHECK(cudaGetDevice(&dev));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, dev));
  const int64_t S = 2000;
  std::printf("# Synchronisation per step: %s, sm_%d%d, %d SMs, %d threads a block, %lld and %lld steps a launch\n\n",
              prop.name, major, minor, sms, kThreads, static_cast<long long>(S), static_cast<long long>(2 * S));
  std::printf("| probe | blocks | bytes exchanged | us per step |\n|---|---|---|---|\n");

  for (int blocks : {sms / 4, sms / 2, sms}) {
    if (blocks < 1) continue;
    const double us = per_step_us(S, [&](int64_t steps) {
      void* args[] = {&steps};
      launch_cooperative(grid_sync_loop, blocks, args);
    });
    std::printf("| grid.sync | %d | 0 | %.3f |\n", blocks, us);
  }

  unsigned* counter = nullptr;
  CHECK(cudaMalloc(&counter, sizeof(unsigned)));
  for (int blocks : {sms / 4, sms / 2, sms}) {
    if (blocks < 1) continue;
    const double us = per_step_us(S, [&](int64_t steps) {
      CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned)));
      void* args[] = {&steps, &counter};
      launch_cooperative(counter_barrier_loop, blocks, args);  // all resident: the spin needs that
    });
    std::printf("| counter barrier | %d | 0 | %.3f |\n", blocks, us);
  }

  uint4* h = nullptr;
  const int64_t max_bytes = 64 * 1024 * 2;
  CHECK(cudaMalloc(&h, 2 * max_bytes));
  for (int64_t bytes : {int64_t{1} * 256 * 2, int64_t{16} * 768 * 2, int64_t{64} * 1024 * 2}) {
    int64_t n16 = bytes / 16;
    const double us = per_step_us(S, [&](int64_t steps) {
      void* args[] = {&steps, &h, &n16, &counter};
      launch_cooperative(exchange_loop, sms, args);
    });
    std::printf("| grid.sync + h | %d | %lld | %.3f |\n", sms, static_cast<long long>(bytes), us);
  }

  // (the cluster kernel's body is sm_90 code: a build for an older target has it empty)
  cudaFuncAttributes cluster_attrs{};
  CHECK(cudaFuncGetAttributes(&cluster_attrs, cluster_sync_loop));
  if (major >= 9 && cluster_attrs.ptxVersion < 90)
    std::printf("| cluster.sync | - | 0 | (not built for sm_90: python -m bench.step_probe --arch 90) |\n");
  if (major >= 9 && cluster_attrs.ptxVersion >= 90) {
    CHECK(cudaFuncSetAttribute(cluster_sync_loop, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    for (int size : {2, 4, 8, 16}) {
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(size);
      config.blockDim = dim3(kThreads);
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = size;
      attr.val.clusterDim.y = 1;
      attr.val.clusterDim.z = 1;
      config.attrs = &attr;
      config.numAttrs = 1;
      int clusters = 0;
      if (cudaOccupancyMaxActiveClusters(&clusters, cluster_sync_loop, &config) != cudaSuccess || clusters < 1) {
        cudaGetLastError();
        std::printf("| cluster.sync | %d | 0 | (a cluster of %d does not fit) |\n", size, size);
        continue;
      }
      const double us = per_step_us(S, [&](int64_t steps) {
        CHECK(cudaLaunchKernelEx(&config, cluster_sync_loop, steps));
      });
      std::printf("| cluster.sync | %d | 0 | %.3f |\n", size, us);
    }
  }
  CHECK(cudaFree(h));
  CHECK(cudaFree(counter));
  return 0;
}
