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
// - 16-byte vector loads/stores when x, v and v + n are 16-byte aligned and n is a multiple of the vector width
//   (always true for latents with C*h*w a multiple of 8); a scalar grid-stride loop otherwise.
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

// One thread handles VEC consecutive elements per iteration of a grid-stride loop over n / VEC packs.
template <typename scalar_t, int VEC, bool CFG>
__global__ void euler_cfg_vec_kernel(scalar_t* __restrict__ x, const scalar_t* __restrict__ v, int64_t n,
                                     const float* __restrict__ dt_ptr, const float* __restrict__ w_ptr) {
  using P = Pack<scalar_t, VEC>;
  const float dt = *dt_ptr;
  const float w = CFG ? *w_ptr : 1.0f;
  const int64_t packs = n / VEC;
  P* xp = reinterpret_cast<P*>(x);
  const P* vcp = reinterpret_cast<const P*>(v);
  const P* vup = reinterpret_cast<const P*>(v + n);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < packs;
       p += int64_t(gridDim.x) * blockDim.x) {
    P xv = xp[p];
    const P vc = vcp[p];
    if constexpr (CFG) {
      const P vu = vup[p];
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float g = guided(static_cast<float>(vc.val[k]), static_cast<float>(vu.val[k]), w);
        xv.val[k] = static_cast<scalar_t>(step(static_cast<float>(xv.val[k]), dt, g));
      }
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        xv.val[k] = static_cast<scalar_t>(step(static_cast<float>(xv.val[k]), dt, static_cast<float>(vc.val[k])));
      }
    }
    xp[p] = xv;
  }
}

template <typename scalar_t, bool CFG>
__global__ void euler_cfg_scalar_kernel(scalar_t* __restrict__ x, const scalar_t* __restrict__ v, int64_t n,
                                        const float* __restrict__ dt_ptr, const float* __restrict__ w_ptr) {
  const float dt = *dt_ptr;
  const float w = CFG ? *w_ptr : 1.0f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float vc = static_cast<float>(v[i]);
    const float g = CFG ? guided(vc, static_cast<float>(v[i + n]), w) : vc;
    x[i] = static_cast<scalar_t>(step(static_cast<float>(x[i]), dt, g));
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

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

template <typename scalar_t, bool CFG>
void launch(scalar_t* x, const scalar_t* v, int64_t n, const float* dt, const float* w,
            const c10::cuda::CUDAStream& stream) {
  constexpr int VEC = 16 / sizeof(scalar_t);  // 4 x fp32 or 8 x fp16/bf16 per 16-byte access
  const bool vec_ok = n % VEC == 0 && aligned16(x) && aligned16(v) && (!CFG || aligned16(v + n));
  const c10::DeviceIndex device = stream.device_index();
  if (vec_ok) {
    euler_cfg_vec_kernel<scalar_t, VEC, CFG>
        <<<num_blocks(n / VEC, device), kThreads, 0, stream.stream()>>>(x, v, n, dt, w);
  } else {
    euler_cfg_scalar_kernel<scalar_t, CFG><<<num_blocks(n, device), kThreads, 0, stream.stream()>>>(x, v, n, dt, w);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void dispatch_cfg(const at::Tensor& x, const at::Tensor& v, bool cfg, const at::Tensor& dt,
                  const at::Tensor& guidance, const c10::cuda::CUDAStream& stream) {
  const int64_t n = x.numel();
  auto* xp = x.mutable_data_ptr<scalar_t>();
  const auto* vp = v.const_data_ptr<scalar_t>();
  const float* dtp = dt.const_data_ptr<float>();
  const float* wp = guidance.const_data_ptr<float>();
  if (cfg) {
    launch<scalar_t, true>(xp, vp, n, dtp, wp, stream);
  } else {
    launch<scalar_t, false>(xp, vp, n, dtp, wp, stream);
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
    case at::kFloat:
      dispatch_cfg<float>(x, v, cfg, dt, guidance, stream);
      break;
    case at::kHalf:
      dispatch_cfg<at::Half>(x, v, cfg, dt, guidance, stream);
      break;
    case at::kBFloat16:
      dispatch_cfg<at::BFloat16>(x, v, cfg, dt, guidance, stream);
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
