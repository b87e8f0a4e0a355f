// Autograd kernels of the self-correcting block, registered from C++ (common.h says why and how).
//
// self_correcting_block saves x and out, and its backward recomputes la from them
// (derain::_self_correcting_block_backward). The training form _self_correcting_block_train also
// returns la, with the final ReLU's mask in its sign bit: non-differentiable, saved instead of out,
// so the backward (derain::_self_correcting_block_backward_la) skips a convolution.
#include <torch/library.h>

#include "common.h"

namespace derain {
namespace {

using namespace autograd;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using T = const at::Tensor&;

at::Tensor block_op(T x, T w1, T b1, T w3, T b3, int64_t d) {
  static const auto op = op_handle<at::Tensor(T, T, T, T, T, int64_t)>("derain::self_correcting_block");
  return op.call(x, w1, b1, w3, b3, d);
}

Grads block_backward_op(T g, T x, T out, T w1, T b1, T w3, T b3, int64_t d) {
  static const auto op =
      op_handle<Grads(T, T, T, T, T, T, T, int64_t)>("derain::_self_correcting_block_backward");
  return op.call(g, x, out, w1, b1, w3, b3, d);
}

std::tuple<at::Tensor, at::Tensor> block_train_op(T x, T w1, T b1, T w3, T b3, int64_t d) {
  static const auto op = op_handle<std::tuple<at::Tensor, at::Tensor>(T, T, T, T, T, int64_t)>(
      "derain::_self_correcting_block_train");
  return op.call(x, w1, b1, w3, b3, d);
}

Grads block_backward_la_op(T g, T x, T la, T w1, T w3, int64_t d) {
  static const auto op =
      op_handle<Grads(T, T, T, T, T, int64_t)>("derain::_self_correcting_block_backward_la");
  return op.call(g, x, la, w1, w3, d);
}

variable_list grad_list(const Grads& g) {
  return {std::get<0>(g), std::get<1>(g), std::get<2>(g), std::get<3>(g), std::get<4>(g), at::Tensor()};
}

class Block : public torch::autograd::Function<Block> {
 public:
  static at::Tensor forward(AutogradContext* ctx, T x, T w1, T b1, T w3, T b3, int64_t d) {
    at::AutoDispatchBelowADInplaceOrView below;
    at::Tensor out = block_op(x, w1, b1, w3, b3, d);
    ctx->save_for_backward({x, out, w1, b1, w3, b3});
    ctx->saved_data["d"] = d;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    return grad_list(block_backward_op(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], ctx->saved_data["d"].toInt()));
  }
};

class BlockTrain : public torch::autograd::Function<BlockTrain> {
 public:
  static variable_list forward(AutogradContext* ctx, T x, T w1, T b1, T w3, T b3, int64_t d) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [out, la] = block_train_op(x, w1, b1, w3, b3, d);
    ctx->mark_non_differentiable({la});
    ctx->set_materialize_grads(false);  // no full-size zero gradient for la
    ctx->save_for_backward({x, la, w1, w3});
    ctx->saved_data["d"] = d;
    return {out, la};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return variable_list(6);
    const auto s = ctx->get_saved_variables();
    return grad_list(block_backward_la_op(grads[0], s[0], s[1], s[2], s[3], ctx->saved_data["d"].toInt()));
  }
};

bool needs_block_graph(T x, T w1, T b1, T w3, T b3) { return needs_graph({&x, &w1, &b1, &w3, &b3}); }

at::Tensor block_autograd(T x, T w1, T b1, T w3, T b3, int64_t d) {
  if (!needs_block_graph(x, w1, b1, w3, b3)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return block_op(x, w1, b1, w3, b3, d);
  }
  return Block::apply(x, w1, b1, w3, b3, d);
}

std::tuple<at::Tensor, at::Tensor> block_train_autograd(T x, T w1, T b1, T w3, T b3, int64_t d) {
  if (!needs_block_graph(x, w1, b1, w3, b3)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return block_train_op(x, w1, b1, w3, b3, d);
  }
  auto out = BlockTrain::apply(x, w1, b1, w3, b3, d);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, Autograd, m) {
  m.impl("self_correcting_block", &block_autograd);
  m.impl("_self_correcting_block_train", &block_train_autograd);
}

}  // namespace derain
