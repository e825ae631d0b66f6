// Large per-call buffers of the recurrence driver (workspace, gate gradients,
// transposed inputs) on the CPU: memory the kernel asks for in 2 MB pages.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

namespace rnn_ext {

// Like at::empty. On Linux CPU, a buffer of 4 MB or more comes from its own
// mapping with MADV_HUGEPAGE (transparent huge pages, where the system allows
// them): fresh 4 KB pages cost about 2 us each to fault in on the VMs measured
// (a fresh 26 MB tensor: 10 ms to first touch, 1.9 ms with huge pages), and a
// buffer this size is fresh on most calls, since glibc hands such blocks back
// to the system on free. So freed mappings are kept for reuse by later calls,
// up to RNN_EXT_CPU_BUFFER_CACHE_MB (default 256; 0 turns the reuse off): even
// in 2 MB pages, the kernel zeroes every fresh page first (8% of an LSTM
// training step's samples at T=100, B=32, I=H=256).
// Smaller or non-CPU buffers, and other systems: at::empty.
at::Tensor empty_big(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace rnn_ext
