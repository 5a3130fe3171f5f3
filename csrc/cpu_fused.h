// CPU kernels of the DiT block's memory-bound ops (float32, inference). Schemas (declared in cpu_fused.cpp):
//
//   rpfm::adaln_modulate(Tensor x, Tensor shift, Tensor scale, float eps) -> Tensor
//       x (B, T, D) contiguous; shift, scale (B, D) with contiguous rows. u = LN(x) * (1 + scale) + shift.
//   rpfm::gated_residual_adaln(Tensor x, Tensor y, Tensor gate, Tensor shift, Tensor scale, float eps,
//                              Tensor? bias=None) -> (Tensor, Tensor)
//       x, y (B, T, D) contiguous; gate, shift, scale (B, D); bias (D,) or None.
//       x' = x + gate * (y + bias); u = LN(x') * (1 + scale) + shift.
//   rpfm::gelu_tanh_(Tensor(a!) x, Tensor? bias=None) -> ()
//       x (..., N) contiguous, bias (N,) or None; in place: x <- tanh-GELU(x + bias), computed as
//       v * sigmoid(2u), u = sqrt(2/pi) (v + 0.044715 v^3), v = x + bias.
//
// Spec: rpfm/ops/reference.py (adaln_modulate_ref, gated_residual_adaln_ref, gelu_tanh_ref). LayerNorm has no
// affine parameters (DiT's adaLN). No autograd: rpfm/ops/cpu.py calls these only when no gradient is needed.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <optional>
#include <tuple>

namespace rpfm {

at::Tensor adaln_modulate_cpu(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps);

std::tuple<at::Tensor, at::Tensor> gated_residual_adaln_cpu(const at::Tensor& x, const at::Tensor& y,
                                                            const at::Tensor& gate, const at::Tensor& shift,
                                                            const at::Tensor& scale, double eps,
                                                            const std::optional<at::Tensor>& bias);

void gelu_tanh_cpu_(at::Tensor& x, const std::optional<at::Tensor>& bias);

// Which copy of the kernels this CPU runs: "avx2+fma" or "generic" (reported by build_info()["cpu_kernels"]).
std::string cpu_fused_isa();

// How many threads at::parallel_for gave this extension's kernels just now (with torch.get_num_threads() > 1 it
// must be more than 1: built without OpenMP, torch's header-inline parallel_for runs everything on one thread).
int64_t cpu_parallel_threads();

}  // namespace rpfm
