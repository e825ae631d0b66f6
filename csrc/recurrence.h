// Forward and backward of one layer-direction over a whole sequence, for
// LSTM (optional projection), GRU and RNN. Device-agnostic host code: ATen
// GEMMs plus the fused pointwise step kernels of csrc/common/cell_steps.h.
// Registered for the CPU key in recurrence.cpp and for CUDA in
// csrc/cuda/register_cuda.cpp. Schemas and argument docs: csrc/rnn_ext.cpp.
#pragma once
#include <array>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace rnn_ext {
using at::Tensor;
using OptTensor = std::optional<Tensor>;

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(
    const Tensor& input, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& batch_sizes,
    bool reverse, bool need_grad);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& input,
    const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& w_hr,
    const OptTensor& batch_sizes, bool reverse, const Tensor& output, const Tensor& workspace,
    std::array<bool, 3> output_mask);

std::tuple<Tensor, Tensor, Tensor> gru_forward(
    const Tensor& input, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
    const OptTensor& b_hh, const OptTensor& batch_sizes, bool reverse, bool need_grad);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& batch_sizes, bool reverse,
    const Tensor& output, const Tensor& workspace, std::array<bool, 3> output_mask);

std::tuple<Tensor, Tensor> rnn_forward(
    const Tensor& input, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
    const OptTensor& b_hh, const OptTensor& batch_sizes, bool relu, bool reverse);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& batch_sizes, bool relu, bool reverse,
    const Tensor& output, std::array<bool, 3> output_mask);

#ifdef RNN_EXT_WITH_CUDA
// The current CUDA stream of the current device, as a cudaStream_t.
void* current_cuda_stream();
#endif

}  // namespace rnn_ext
