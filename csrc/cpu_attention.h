// Softmax attention for short sequences on the CPU (float32, inference). Schema (declared in cpu_attention.cpp):
//
//   rpfm::attention(Tensor q, Tensor k, Tensor v) -> Tensor
//       q, k, v (B, T, H, Dh) of one shape, float32 CPU, stride 1 along Dh (any other strides: the three views
//       of one fused qkv output are fine). Returns o (B, T, H, Dh), contiguous:
//       o[b, i, h] = sum_j softmax_j(q[b, i, h] . k[b, j, h] / sqrt(Dh)) v[b, j, h]. No mask, no dropout.
//
// Spec: rpfm/ops/reference.py (attention_ref). No autograd: rpfm/ops/attention.py calls it only when no gradient
// is needed.
#pragma once

#include <ATen/core/Tensor.h>

namespace rpfm {

at::Tensor attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace rpfm
