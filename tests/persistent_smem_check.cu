// The tensor-core persistent forward's shared memory, as host and kernel each
// decide it (csrc/cuda/persistent_common.cuh): the host gives the kernel a
// fixed part (forward_mma_fixed) and as many staged rows as fit; the kernel
// takes the whole-batch pass when its launch's dynamic shared memory holds it
// (whole_batch_pass, here with that launch size) and puts h_{t-1} after its
// fixed part. For every case: the launch fits, the kernel's fixed part is the
// host's, the whole-batch pass has the whole batch staged, and the partial
// tiles it writes fit below h_{t-1}. Host code only: built by nvcc, run on the
// CPU (tests/test_persistent_smem.py).
#include "cuda/persistent_common.cuh"

#include <cstdio>

using namespace rnn_ext;

int main() {
  long cases = 0, whole = 0, bad = 0;
  const int64_t kSmemMax[] = {232448 - 1024, 166912 - 1024, 101376 - 1024};  // H100/H200, A100, sm_86
  for (const int64_t smem_max : kSmemMax)
    for (const int64_t elem : {int64_t{2}, int64_t{4}})
      for (const int64_t NG : {int64_t{1}, int64_t{3}, int64_t{4}})
        for (int64_t H = 1; H <= 1024; H += 13)
          for (const int64_t U : {int64_t{1}, int64_t{4}, (H + 15) / 16, (H + 131) / 132})
            for (int64_t B = 1; B <= 320; B += 5) {
              if (U < 1 || U > kMaxUnits) continue;
              const MmaSmem L(NG * U, H, elem);
              const int64_t per_row = MmaSmem(1, H, elem).ld * elem;
              const int64_t fixed = forward_mma_fixed(L, B, elem, smem_max);
              const int64_t staged = staged_rows(smem_max, fixed, per_row, B, kTile);
              if (staged < kTile) continue;  // declined
              ++cases;
              const int64_t launch = fixed + staged * per_row;
              const bool pass_all = whole_batch_pass_fits(L, B, elem, launch);  // the kernel's choice
              const int64_t kernel_fixed = pass_all ? whole_batch_fixed(L, B) : L.fixed();
              const int64_t n_tiles = pass_all ? round_up(B, kTile) / kTile : 1;
              const int64_t splits = pass_all ? k_splits(L.m_tiles, n_tiles, L.k_steps) : L.splits;
              const int64_t tiles_end = L.w + splits * L.m_tiles * n_tiles * kTile * kTile * 4;
              const bool ok = launch <= smem_max && kernel_fixed == fixed && tiles_end <= kernel_fixed &&
                              (!pass_all || staged >= round_up(B, kTile)) && (B > kWholeBatchFrom || !pass_all);
              whole += pass_all;
              if (!ok && bad++ < 5)
                std::printf("FAIL smem_max=%ld elem=%ld NG=%ld H=%ld U=%ld B=%ld\n", static_cast<long>(smem_max),
                            static_cast<long>(elem), static_cast<long>(NG), static_cast<long>(H),
                            static_cast<long>(U), static_cast<long>(B));
            }
  std::printf("%ld cases, %ld whole-batch passes, %ld failures\n", cases, whole, bad);
  return bad == 0 ? 0 : 1;
}
