// The autograd node of a plain eager training call, in C++.
//
// rnn_ext/_ops.py routes a call that needs a graph, with no forward-mode AD and
// no torch.func transform active, to the *_forward_eager ops: the forward op
// behind a torch::autograd::Function. It saves what the Python autograd.Function
// there saves and calls the same backward op, at 20-40 us less a call (an
// RNNCell training call at B=1, H=256 is ~150 us in all). One difference: its
// output_mask follows what the backward at hand computes (needs_input_grad here
// asks the engine), the Function's what requires grad; the gradients asked for
// are the same bits (tests/test_call_paths.py). Forward AD, torch.func,
// torch.jit.trace and torch.compile keep the Python Function or the forward op.
// Double backward (create_graph=True, grad mode on in backward) goes to the
// *_backward_graph ops, implemented in Python (rnn_ext/_ops.py, loaded with the
// package): the reference recompute that the Function's backward runs then.
// The nodes return no workspace: compiled autograd refuses a node that marks an
// output non-differentiable, so the workspace stays a saved tensor only.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

namespace rnn_ext {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

Tensor value_or_undefined(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }
OptTensor as_optional(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }
Tensor or_zeros(const Tensor& grad, const Tensor& like) { return grad.defined() ? grad : at::zeros_like(like); }

// needs_input_grad of each forward argument: the node numbers only the tensors
// it was given (an absent optional tensor and a bool have no edge).
std::vector<bool> arg_needs(AutogradContext* ctx, const std::vector<bool>& is_tensor) {
  std::vector<bool> need(is_tensor.size(), false);
  size_t edge = 0;
  for (size_t i = 0; i < is_tensor.size(); ++i)
    if (is_tensor[i]) need[i] = ctx->needs_input_grad(edge++);
  return need;
}

// The backward op's output_mask from arg_needs: input, states (arguments
// 1 .. n_states), weights (the next n_weights).
std::array<bool, 3> output_mask(const std::vector<bool>& need, size_t n_states, size_t n_weights) {
  std::array<bool, 3> mask{need[0], false, false};
  for (size_t i = 1; i <= n_states; ++i) mask[1] = mask[1] || need[i];
  for (size_t i = 1 + n_states; i <= n_states + n_weights; ++i) mask[2] = mask[2] || need[i];
  return mask;
}

// A gradient of the backward op where the mask asked for it and the input exists.
Tensor wanted(bool asked, const Tensor& input, const Tensor& grad) {
  return asked && input.defined() ? grad : Tensor();
}

// RNN's and GRU's gradients in their nodes' argument order (input, h0, w_ih, w_hh,
// b_ih, b_hh, then three non-tensors) from the backward op's six outputs; saved:
// the saved tensors, those six inputs first.
variable_list one_state_grads(const std::array<bool, 3>& mask, const variable_list& saved,
                              const std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>& g) {
  const auto& [dx, dh0, dw_ih, dw_hh, db_ih, db_hh] = g;
  return {wanted(mask[0], saved[0], dx),    wanted(mask[1], saved[1], dh0),   wanted(mask[2], saved[2], dw_ih),
          wanted(mask[2], saved[3], dw_hh), wanted(mask[2], saved[4], db_ih), wanted(mask[2], saved[5], db_hh),
          Tensor(),                         Tensor(),                         Tensor()};
}

// Double backward: the Python op's gradients, one per differentiable argument
// (placeholders where not needed), then undefined ones for the other arguments.
variable_list from_graph_op(const std::vector<Tensor>& grads, const std::vector<bool>& need) {
  variable_list out(need.size());
  for (size_t i = 0; i < grads.size(); ++i)
    if (need[i]) out[i] = grads[i];
  return out;
}

// The forward ops, called through the dispatcher; below autograd (a call under
// torch._C._AutoDispatchBelowAutograd, fake tensors) an eager op is its forward op.
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward_plain(
    const Tensor& input, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& batch_sizes, bool reverse,
    bool need_grad) {
  static const auto op = typed_op<std::tuple<Tensor, Tensor, Tensor, Tensor>(
      const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
      const OptTensor&, const OptTensor&, bool, bool)>("rnn_ext::lstm_forward");
  return op.call(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need_grad);
}
// The eager ops return no workspace (the node keeps it).
std::tuple<Tensor, Tensor, Tensor> lstm_eager_plain(
    const Tensor& input, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& batch_sizes, bool reverse,
    bool need_grad) {
  auto [y, h_n, c_n, ws] = lstm_forward_plain(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, false);
  return {y, h_n, c_n};
}
std::tuple<Tensor, Tensor, Tensor> gru_forward_plain(const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                                                     const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                                     const OptTensor& batch_sizes, bool reverse, bool need_grad) {
  static const auto op = typed_op<std::tuple<Tensor, Tensor, Tensor>(
      const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
      const OptTensor&, bool, bool)>("rnn_ext::gru_forward");
  return op.call(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, need_grad);
}
std::tuple<Tensor, Tensor> gru_eager_plain(const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                                           const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                           const OptTensor& batch_sizes, bool reverse, bool need_grad) {
  auto [y, h_n, ws] = gru_forward_plain(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, false);
  return {y, h_n};
}
std::tuple<Tensor, Tensor> rnn_forward_plain(const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                                             const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                             const OptTensor& batch_sizes, bool relu, bool reverse) {
  static const auto op = typed_op<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                             const Tensor&, const OptTensor&, const OptTensor&,
                                                             const OptTensor&, bool, bool)>("rnn_ext::rnn_forward");
  return op.call(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, relu, reverse);
}

// ------------------------------------------------------------------ RNN
struct RnnNode : torch::autograd::Function<RnnNode> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                               const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                               const OptTensor& batch_sizes, bool relu, bool reverse) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [y, h_n] = rnn_forward_plain(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, relu, reverse);
    // h_n is not saved (backward needs only h0's shape), so callers may modify it in place
    ctx->save_for_backward({input, h0, w_ih, w_hh, value_or_undefined(b_ih), value_or_undefined(b_hh),
                            value_or_undefined(batch_sizes), y});
    ctx->saved_data["relu"] = relu;
    ctx->saved_data["reverse"] = reverse;
    ctx->set_materialize_grads(false);
    return {y, h_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &input = s[0], &h0 = s[1], &w_ih = s[2], &w_hh = s[3], &b_ih = s[4], &b_hh = s[5],
                 &batch_sizes = s[6], &y = s[7];
    const bool relu = ctx->saved_data["relu"].toBool(), reverse = ctx->saved_data["reverse"].toBool();
    const std::vector<bool> need =
        arg_needs(ctx, {true, true, true, true, b_ih.defined(), b_hh.defined(), batch_sizes.defined(), false, false});
    if (c10::GradMode::is_enabled()) {
      static const auto graph_op = typed_op<std::vector<Tensor>(
          const OptTensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
          const OptTensor&, const OptTensor&, const OptTensor&, bool, bool, const Tensor&, std::array<bool, 6>)>(
          "rnn_ext::rnn_backward_graph");
      const std::array<bool, 6> need6{need[0], need[1], need[2], need[3], need[4], need[5]};
      return from_graph_op(graph_op.call(as_optional(grads[0]), as_optional(grads[1]), input, h0, w_ih, w_hh,
                                         as_optional(b_ih), as_optional(b_hh), as_optional(batch_sizes), relu,
                                         reverse, y, need6),
                           need);
    }
    static const auto op = typed_op<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
        const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
        bool, bool, const Tensor&, std::array<bool, 3>)>("rnn_ext::rnn_backward");
    const std::array<bool, 3> mask = output_mask(need, 1, 4);
    at::AutoDispatchBelowADInplaceOrView below;
    return one_state_grads(mask, s, op.call(or_zeros(grads[0], y), or_zeros(grads[1], h0), input, h0, w_ih, w_hh,
                                            as_optional(batch_sizes), relu, reverse, y, mask));
  }
};

std::tuple<Tensor, Tensor> rnn_forward_eager(const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                                             const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                             const OptTensor& batch_sizes, bool relu, bool reverse) {
  variable_list out = RnnNode::apply(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, relu, reverse);
  return {out[0], out[1]};
}

// ------------------------------------------------------------------ GRU
struct GruNode : torch::autograd::Function<GruNode> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                               const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                               const OptTensor& batch_sizes, bool reverse, bool need_grad) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [y, h_n, ws] = gru_forward_plain(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, need_grad);
    ctx->save_for_backward({input, h0, w_ih, w_hh, value_or_undefined(b_ih), value_or_undefined(b_hh),
                            value_or_undefined(batch_sizes), y, ws});
    ctx->saved_data["reverse"] = reverse;
    ctx->set_materialize_grads(false);
    return {y, h_n};  // (not the workspace: compiled autograd refuses mark_non_differentiable)
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &input = s[0], &h0 = s[1], &w_ih = s[2], &w_hh = s[3], &b_ih = s[4], &b_hh = s[5],
                 &batch_sizes = s[6], &y = s[7], &ws = s[8];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const std::vector<bool> need =
        arg_needs(ctx, {true, true, true, true, b_ih.defined(), b_hh.defined(), batch_sizes.defined(), false, false});
    if (c10::GradMode::is_enabled()) {
      static const auto graph_op = typed_op<std::vector<Tensor>(
          const OptTensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
          const OptTensor&, const OptTensor&, const OptTensor&, bool, const Tensor&, std::array<bool, 6>)>(
          "rnn_ext::gru_backward_graph");
      const std::array<bool, 6> need6{need[0], need[1], need[2], need[3], need[4], need[5]};
      return from_graph_op(graph_op.call(as_optional(grads[0]), as_optional(grads[1]), input, h0, w_ih, w_hh,
                                         as_optional(b_ih), as_optional(b_hh), as_optional(batch_sizes), reverse, y,
                                         need6),
                           need);
    }
    static const auto op = typed_op<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
        const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
        bool, const Tensor&, const Tensor&, std::array<bool, 3>)>("rnn_ext::gru_backward");
    const std::array<bool, 3> mask = output_mask(need, 1, 4);
    at::AutoDispatchBelowADInplaceOrView below;
    return one_state_grads(mask, s, op.call(or_zeros(grads[0], y), or_zeros(grads[1], h0), input, h0, w_ih, w_hh,
                                            as_optional(batch_sizes), reverse, y, ws, mask));
  }
};

std::tuple<Tensor, Tensor> gru_forward_eager(const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                                             const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                             const OptTensor& batch_sizes, bool reverse, bool need_grad) {
  variable_list out = GruNode::apply(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, need_grad);
  return {out[0], out[1]};
}

// ------------------------------------------------------------------ LSTM
struct LstmNode : torch::autograd::Function<LstmNode> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& h0, const Tensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                               const OptTensor& w_hr, const OptTensor& batch_sizes, bool reverse, bool need_grad) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [y, h_n, c_n, ws] =
        lstm_forward_plain(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need_grad);
    ctx->save_for_backward({input, h0, c0, w_ih, w_hh, value_or_undefined(b_ih), value_or_undefined(b_hh),
                            value_or_undefined(w_hr), value_or_undefined(batch_sizes), y, ws});
    ctx->saved_data["reverse"] = reverse;
    ctx->set_materialize_grads(false);
    return {y, h_n, c_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &input = s[0], &h0 = s[1], &c0 = s[2], &w_ih = s[3], &w_hh = s[4], &b_ih = s[5], &b_hh = s[6],
                 &w_hr = s[7], &batch_sizes = s[8], &y = s[9], &ws = s[10];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const std::vector<bool> need = arg_needs(ctx, {true, true, true, true, true, b_ih.defined(), b_hh.defined(),
                                                   w_hr.defined(), batch_sizes.defined(), false, false});
    if (c10::GradMode::is_enabled()) {
      static const auto graph_op = typed_op<std::vector<Tensor>(
          const OptTensor&, const OptTensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&,
          const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&, bool,
          const Tensor&, std::array<bool, 8>)>("rnn_ext::lstm_backward_graph");
      const std::array<bool, 8> need8{need[0], need[1], need[2], need[3], need[4], need[5], need[6], need[7]};
      return from_graph_op(graph_op.call(as_optional(grads[0]), as_optional(grads[1]), as_optional(grads[2]), input,
                                         h0, c0, w_ih, w_hh, as_optional(b_ih), as_optional(b_hh), as_optional(w_hr),
                                         as_optional(batch_sizes), reverse, y, need8),
                           need);
    }
    static const auto op = typed_op<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
        const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
        const Tensor&, const OptTensor&, const OptTensor&, bool, const Tensor&, const Tensor&, std::array<bool, 3>)>(
        "rnn_ext::lstm_backward");
    const std::array<bool, 3> mask = output_mask(need, 2, 5);
    at::AutoDispatchBelowADInplaceOrView below;
    auto [dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr] =
        op.call(or_zeros(grads[0], y), or_zeros(grads[1], h0), or_zeros(grads[2], c0), input, h0, c0, w_ih, w_hh,
                as_optional(w_hr), as_optional(batch_sizes), reverse, y, ws, mask);
    return {wanted(mask[0], input, dx), wanted(mask[1], h0, dh0), wanted(mask[1], c0, dc0),
            wanted(mask[2], w_ih, dw_ih), wanted(mask[2], w_hh, dw_hh), wanted(mask[2], b_ih, db_ih),
            wanted(mask[2], b_hh, db_hh), wanted(mask[2], w_hr, dw_hr), Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor> lstm_forward_eager(
    const Tensor& input, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& batch_sizes, bool reverse,
    bool need_grad) {
  variable_list out = LstmNode::apply(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need_grad);
  return {out[0], out[1], out[2]};
}

}  // namespace
}  // namespace rnn_ext

TORCH_LIBRARY_IMPL(rnn_ext, CompositeExplicitAutograd, m) {
  m.impl("lstm_forward_eager", &rnn_ext::lstm_eager_plain);
  m.impl("gru_forward_eager", &rnn_ext::gru_eager_plain);
  m.impl("rnn_forward_eager", &rnn_ext::rnn_forward_plain);
}

TORCH_LIBRARY_IMPL(rnn_ext, Autograd, m) {
  m.impl("lstm_forward_eager", &rnn_ext::lstm_forward_eager);
  m.impl("gru_forward_eager", &rnn_ext::gru_forward_eager);
  m.impl("rnn_forward_eager", &rnn_ext::rnn_forward_eager);
}
