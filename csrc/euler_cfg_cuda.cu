// rpfm::euler_cfg_step_ CUDA kernel. Contract: euler_cfg.h; spec: rpfm/ops/reference.py::euler_cfg_step_ref.
//
// Memory-bound elementwise update over n = x.numel() elements. A contiguous (2B, ...) v is the B conditional rows
// followed by the B unconditional ones, so element i of x pairs with v[i] (cond) and v[i + n] (uncond).
//
// - dt and guidance are read from device memory inside the kernel, never with .item(): a captured CUDA graph keeps
//   their addresses, so writing new values into those 0-dim tensors changes the next replay without recapture.
// - Launched on the current stream (c10::cuda::getCurrentCUDAStream(), which at::cuda:: re-exports), so it is
//   captured by CUDA graphs and ordered with torch ops.
// - Includes only c10/cuda headers (not ATen/cuda/CUDAContext.h, which pulls in cuBLAS/cuSPARSE headers).
// - Vector loads/stores (16 bytes for the wider type) when x, v and v + n are aligned to their pack size and n is a
//   multiple of the vector width (always true for latents with C*h*w a multiple of 8); a scalar grid-stride loop
//   otherwise. The state x may be float32 with a float16/bfloat16 v (the samplers' fp32 ODE state).
// - fp32 arithmetic with __fmul_rn/__fadd_rn/__fsub_rn: no fused multiply-add, so the result rounds exactly like
//   the eager reference (separate multiply and add) and like the CPU kernel.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "checks.h"
#include "euler_cfg.h"

namespace rpfm {
namespace {

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T val[N];
};

__device__ __forceinline__ float guided(float vc, float vu, float w) {
  return __fadd_rn(vu, __fmul_rn(w, __fsub_rn(vc, vu)));
}

__device__ __forceinline__ float step(float x, float dt, float v) { return __fadd_rn(x, __fmul_rn(dt, v)); }

// One thread handles VEC consecutive elements per iteration of a grid-stride loop over n / VEC packs. x_t is the
// state's type and v_t the velocity's (equal, or float state with a half/bfloat16 velocity).
template <typename x_t, typename v_t, int VEC, bool CFG>
__global__ void euler_cfg_vec_kernel(x_t* __restrict__ x, const v_t* __restrict__ v, int64_t n,
                                     const float* __restrict__ dt_ptr, const float* __restrict__ w_ptr) {
  using PX = Pack<x_t, VEC>;
  using PV = Pack<v_t, VEC>;
  const float dt = *dt_ptr;
  const float w = CFG ? *w_ptr : 1.0f;
  const int64_t packs = n / VEC;
  PX* xp = reinterpret_cast<PX*>(x);
  const PV* vcp = reinterpret_cast<const PV*>(v);
  const PV* vup = reinterpret_cast<const PV*>(v + n);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < packs;
       p += int64_t(gridDim.x) * blockDim.x) {
    PX xv = xp[p];
    const PV vc = vcp[p];
    if constexpr (CFG) {
      const PV vu = vup[p];
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float g = guided(static_cast<float>(vc.val[k]), static_cast<float>(vu.val[k]), w);
        xv.val[k] = static_cast<x_t>(step(static_cast<float>(xv.val[k]), dt, g));
      }
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        xv.val[k] = static_cast<x_t>(step(static_cast<float>(xv.val[k]), dt, static_cast<float>(vc.val[k])));
      }
    }
    xp[p] = xv;
  }
}

template <typename x_t, typename v_t, bool CFG>
__global__ void euler_cfg_scalar_kernel(x_t* __restrict__ x, const v_t* __restrict__ v, int64_t n,
                                        const float* __restrict__ dt_ptr, const float* __restrict__ w_ptr) {
  const float dt = *dt_ptr;
  const float w = CFG ? *w_ptr : 1.0f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float vc = static_cast<float>(v[i]);
    const float g = CFG ? guided(vc, static_cast<float>(v[i + n]), w) : vc;
    x[i] = static_cast<x_t>(step(static_cast<float>(x[i]), dt, g));
  }
}

bool aligned(const void* p, std::uintptr_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

int sm_count(c10::DeviceIndex device) {
  static thread_local int cached_device = -1;
  static thread_local int cached_sms = 0;
  if (device != cached_device) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&cached_sms, cudaDevAttrMultiProcessorCount, device));
    cached_device = device;
  }
  return cached_sms;
}

int num_blocks(int64_t work, c10::DeviceIndex device) {
  // Enough blocks to fill the GPU a few times over; the grid-stride loop covers the rest.
  const int sms = sm_count(device);
  const int64_t wanted = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, int64_t(sms) * 8)));
}

template <typename x_t, typename v_t, bool CFG>
void launch(x_t* x, const v_t* v, int64_t n, const float* dt, const float* w, const c10::cuda::CUDAStream& stream) {
  // 16-byte accesses to the wider of the two types: 4 x fp32, or 8 x fp16/bf16 when both are 16-bit.
  constexpr int VEC = 16 / (sizeof(x_t) > sizeof(v_t) ? sizeof(x_t) : sizeof(v_t));
  constexpr std::uintptr_t kx = sizeof(x_t) * VEC, kv = sizeof(v_t) * VEC;
  const bool vec_ok = n % VEC == 0 && aligned(x, kx) && aligned(v, kv) && (!CFG || aligned(v + n, kv));
  const c10::DeviceIndex device = stream.device_index();
  if (vec_ok) {
    euler_cfg_vec_kernel<x_t, v_t, VEC, CFG>
        <<<num_blocks(n / VEC, device), kThreads, 0, stream.stream()>>>(x, v, n, dt, w);
  } else {
    euler_cfg_scalar_kernel<x_t, v_t, CFG><<<num_blocks(n, device), kThreads, 0, stream.stream()>>>(x, v, n, dt, w);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename x_t, typename v_t>
void dispatch_cfg(const at::Tensor& x, const at::Tensor& v, bool cfg, const at::Tensor& dt,
                  const at::Tensor& guidance, const c10::cuda::CUDAStream& stream) {
  const int64_t n = x.numel();
  auto* xp = x.mutable_data_ptr<x_t>();
  const auto* vp = v.const_data_ptr<v_t>();
  const float* dtp = dt.const_data_ptr<float>();
  const float* wp = guidance.const_data_ptr<float>();
  if (cfg) {
    launch<x_t, v_t, true>(xp, vp, n, dtp, wp, stream);
  } else {
    launch<x_t, v_t, false>(xp, vp, n, dtp, wp, stream);
  }
}

void euler_cfg_step_cuda(at::Tensor& x, const at::Tensor& v, const at::Tensor& dt, const at::Tensor& guidance) {
  const bool cfg = check_euler_cfg_inputs(x, v, dt, guidance);
  check_euler_cfg_storage(x, v, dt, guidance);
  RPFM_CHECK_CUDA("euler_cfg_step_", x);
  if (x.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(x.device().index());
  switch (x.scalar_type()) {
    case at::kFloat:  // the samplers' fp32 state, with a velocity in the model's dtype
      if (v.scalar_type() == at::kHalf) {
        dispatch_cfg<float, at::Half>(x, v, cfg, dt, guidance, stream);
      } else if (v.scalar_type() == at::kBFloat16) {
        dispatch_cfg<float, at::BFloat16>(x, v, cfg, dt, guidance, stream);
      } else {
        dispatch_cfg<float, float>(x, v, cfg, dt, guidance, stream);
      }
      break;
    case at::kHalf:
      dispatch_cfg<at::Half, at::Half>(x, v, cfg, dt, guidance, stream);
      break;
    case at::kBFloat16:
      dispatch_cfg<at::BFloat16, at::BFloat16>(x, v, cfg, dt, guidance, stream);
      break;
    default:
      RPFM_CHECK(false, "euler_cfg_step_: unsupported dtype ", x.scalar_type());  // unreachable: checked
  }
}

}  // namespace
}  // namespace rpfm

TORCH_LIBRARY_IMPL(rpfm, CUDA, m) {
  m.impl("euler_cfg_step_", &rpfm::euler_cfg_step_cuda);
}
