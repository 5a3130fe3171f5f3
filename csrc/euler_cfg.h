// rpfm::euler_cfg_step_ — one Euler step with classifier-free guidance, in place on x.
//
// Spec: rpfm/ops/reference.py::euler_cfg_step_ref. Schema (declared once, in euler_cfg.cpp):
//
//   rpfm::euler_cfg_step_(Tensor(a!) x, Tensor v, Tensor dt, Tensor guidance) -> ()
//
//   x: (B, ...) state, float32 / float16 / bfloat16, contiguous.
//   v: (2B, ...) = [cond; uncond] velocities of the batched CFG forward, or (B, ...) when guidance is off
//      (then `guidance` is ignored). Same device as x, contiguous; x's dtype, or float16 / bfloat16 when x is
//      float32 (the samplers keep the ODE state in fp32 and the model in its own dtype).
//   dt, guidance: 0-dim float32 tensors on x's device (device scalars: a captured CUDA graph reads them through
//      pointers, so writing new values into them changes a replay without recapture).
//   x <- x + dt * (v_u + guidance * (v_c - v_u))   (or x + dt * v), computed in fp32, stored in x's dtype.
//
// Implementations: CPU and Meta in euler_cfg.cpp, CUDA in euler_cfg_cuda.cu.
#pragma once

#include <ATen/core/Tensor.h>

namespace rpfm {

// Shape/dtype checks shared by every implementation (messages name the tensor, print got-vs-expected).
// Uses symbolic sizes so the Meta kernel works under torch.compile with dynamic shapes. Returns true when v holds
// the [cond; uncond] pair (v.size(0) == 2B). Device and contiguity are checked by check_euler_cfg_storage.
bool check_euler_cfg_inputs(const at::Tensor& x, const at::Tensor& v, const at::Tensor& dt,
                            const at::Tensor& guidance);

// Checks that only make sense for real storage: same device for all four, x and v contiguous.
void check_euler_cfg_storage(const at::Tensor& x, const at::Tensor& v, const at::Tensor& dt,
                             const at::Tensor& guidance);

// Calls the op through the dispatcher, so C++ callers (the graph sampler) reach the CPU or CUDA kernel.
void euler_cfg_step_(at::Tensor& x, const at::Tensor& v, const at::Tensor& dt, const at::Tensor& guidance);

}  // namespace rpfm
