// CUDA registration of the recurrence ops. The driver (csrc/recurrence.cpp) is
// device-agnostic; it runs the GEMMs through ATen (cuBLAS on the current
// stream) and launches the fused step kernels of cells_cuda.cu on the stream
// returned here. Built only when setup.py compiles the CUDA sources.
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "recurrence.h"

namespace rnn_ext {

void* current_cuda_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

TORCH_LIBRARY_IMPL(rnn_ext, CUDA, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
  m.impl("gru_forward", &gru_forward);
  m.impl("gru_backward", &gru_backward);
  m.impl("rnn_forward", &rnn_forward);
  m.impl("rnn_backward", &rnn_backward);
}

}  // namespace rnn_ext
