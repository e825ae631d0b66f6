// Op schemas for the rnn_ext namespace, and the Python module stub.
//
// One op covers one layer, one direction, the whole sequence:
//   input        (T, B, I) time-major, or packed rows (N, I) with batch_sizes
//   h0 / c0      (B, Hout) / (B, H) initial state, in sorted batch order when packed
//   w_*, b_*     torch.nn layout and gate order (LSTM i,f,g,o; GRU r,z,n)
//   batch_sizes  int64 CPU tensor (cuDNN packed layout) or None
//   reverse      walk t from T-1 down to 0
//   need_grad    write the backward workspace; with false it has 0 rows
// Forward returns the output (same leading shape as input, last dim Hout),
// the final state(s), and a workspace holding exactly what backward needs
// (LSTM: activated gates + c per row, GRU: r, z, n and W_hn h + b_hn; RNN needs
// only its output). Backward returns a gradient for every differentiable input;
// grad_b_ih/grad_b_hh are always computed, grad_w_hr is empty without projection.
// Its output_mask (input, initial states, weights and biases) skips the work of
// the gradients not wanted (their outputs are then empty): dX's product, the
// last step's product into h0, the weight-gradient products.
// Autograd and fake (meta) kernels are registered in rnn_ext/_ops.py.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `from rnn_ext import _C` loads this library, which runs the TORCH_LIBRARY
// registrations below. No pybind11: the ops are reached through torch.ops.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(rnn_ext, m) {
  m.def(
      "lstm_forward(Tensor input, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? w_hr, Tensor? batch_sizes, bool reverse, bool need_grad) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "lstm_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor? batch_sizes, bool reverse, Tensor output, Tensor workspace, "
      "bool[3] output_mask=[True, True, True]) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "gru_forward(Tensor input, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? batch_sizes, bool reverse, bool need_grad) -> (Tensor, Tensor, Tensor)");
  m.def(
      "gru_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? batch_sizes, bool reverse, Tensor output, Tensor workspace, bool[3] output_mask=[True, True, True]) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "rnn_forward(Tensor input, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? batch_sizes, bool relu, bool reverse) -> (Tensor, Tensor)");
  m.def(
      "rnn_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? batch_sizes, bool relu, bool reverse, Tensor output, bool[3] output_mask=[True, True, True]) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The eager training call: the forward op behind a C++ autograd node
  // (csrc/eager_autograd.cpp), returning the forward op's outputs but the
  // workspace (the node keeps it); its double backward goes through
  // *_backward_graph, implemented in Python (rnn_ext/_ops.py).
  m.def(
      "lstm_forward_eager(Tensor input, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? w_hr, Tensor? batch_sizes, bool reverse, bool need_grad) -> (Tensor, Tensor, Tensor)");
  m.def(
      "lstm_backward_graph(Tensor? grad_output, Tensor? grad_h_n, Tensor? grad_c_n, Tensor input, Tensor h0, "
      "Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor? batch_sizes, "
      "bool reverse, Tensor output, bool[8] needs) -> Tensor[]");
  m.def(
      "gru_forward_eager(Tensor input, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? batch_sizes, bool reverse, bool need_grad) -> (Tensor, Tensor)");
  m.def(
      "gru_backward_graph(Tensor? grad_output, Tensor? grad_h_n, Tensor input, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? batch_sizes, bool reverse, Tensor output, bool[6] needs) -> Tensor[]");
  m.def(
      "rnn_forward_eager(Tensor input, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? batch_sizes, bool relu, bool reverse) -> (Tensor, Tensor)");
  m.def(
      "rnn_backward_graph(Tensor? grad_output, Tensor? grad_h_n, Tensor input, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? batch_sizes, bool relu, bool reverse, Tensor output, bool[6] needs) "
      "-> Tensor[]");
}
