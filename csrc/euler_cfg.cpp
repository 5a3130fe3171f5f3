// rpfm::euler_cfg_step_: schema, shared checks, CPU and Meta kernels. See euler_cfg.h for the contract.
//
// This translation unit includes only <ATen/ATen.h> + <torch/library.h> (not <torch/extension.h>), which
// halves its compile time. It is compiled with -ffp-contract=off so the CPU kernel rounds exactly like the
// eager reference (separate fp32 multiply and add, no fused multiply-add).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "euler_cfg.h"

namespace rpfm {

namespace {
constexpr const char* kOp = "euler_cfg_step_";
}  // namespace

bool check_euler_cfg_inputs(const at::Tensor& x, const at::Tensor& v, const at::Tensor& dt,
                            const at::Tensor& guidance) {
  const auto st = x.scalar_type();
  const auto vt = v.scalar_type();
  RPFM_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16, kOp,
             ": x must be float32, float16 or bfloat16, got ", st);
  // A float32 state with a low-precision velocity is the samplers' normal case (the ODE state stays fp32).
  RPFM_CHECK(vt == st || (st == at::kFloat && (vt == at::kHalf || vt == at::kBFloat16)), kOp,
             ": v must have the dtype of x (", st, "), or be float16/bfloat16 with a float32 x, got ", vt);
  RPFM_CHECK(x.dim() >= 1, kOp, ": x must have a batch dim (B, ...), got a 0-dim tensor");
  RPFM_CHECK(v.dim() == x.dim() && v.sym_sizes().slice(1) == x.sym_sizes().slice(1), kOp,
             ": v must have shape (B, ...) or (2B, ...) with x's trailing dims, got v ", v.sym_sizes(),
             " for x ", x.sym_sizes());
  const c10::SymInt& B = x.sym_size(0);
  const c10::SymInt& Bv = v.sym_size(0);
  const bool cfg = Bv == 2 * B && B != 0;
  RPFM_CHECK(cfg || Bv == B, kOp, ": v must have batch B=", B, " (guidance off) or 2B=", 2 * B,
             " ([cond; uncond]), got v ", v.sym_sizes(), " for x ", x.sym_sizes());
  RPFM_CHECK_DIM(kOp, dt, 0);
  RPFM_CHECK_DTYPE(kOp, dt, at::kFloat);
  RPFM_CHECK_DIM(kOp, guidance, 0);
  RPFM_CHECK_DTYPE(kOp, guidance, at::kFloat);
  return cfg;
}

void check_euler_cfg_storage(const at::Tensor& x, const at::Tensor& v, const at::Tensor& dt,
                             const at::Tensor& guidance) {
  RPFM_CHECK_SAME_DEVICE(kOp, v, x);
  RPFM_CHECK_SAME_DEVICE(kOp, dt, x);
  RPFM_CHECK_SAME_DEVICE(kOp, guidance, x);
  RPFM_CHECK_CONTIGUOUS(kOp, x);
  RPFM_CHECK_CONTIGUOUS(kOp, v);
}

void euler_cfg_step_(at::Tensor& x, const at::Tensor& v, const at::Tensor& dt, const at::Tensor& guidance) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("rpfm::euler_cfg_step_", "")
                       .typed<void(at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  op.call(x, v, dt, guidance);
}

namespace {

// x[i] <- x[i] + dt * (vu[i] + w * (vc[i] - vu[i])), with vc = v[0:n], vu = v[n:2n] (n = x.numel()), because
// the flat layout of a contiguous (2B, ...) tensor is the B conditional rows followed by the B unconditional ones.
template <typename scalar_t, typename v_t>
void euler_cfg_cpu_kernel(scalar_t* x, const v_t* v, int64_t n, bool cfg, float dt, float w) {
  constexpr int64_t kGrain = 1 << 15;
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    if (cfg) {
      const v_t* vc = v;
      const v_t* vu = v + n;
      for (int64_t i = begin; i < end; ++i) {
        const float u = static_cast<float>(vu[i]);
        const float g = u + w * (static_cast<float>(vc[i]) - u);
        x[i] = static_cast<scalar_t>(static_cast<float>(x[i]) + dt * g);
      }
    } else {
      for (int64_t i = begin; i < end; ++i) {
        x[i] = static_cast<scalar_t>(static_cast<float>(x[i]) + dt * static_cast<float>(v[i]));
      }
    }
  });
}

void euler_cfg_step_cpu(at::Tensor& x, const at::Tensor& v, const at::Tensor& dt, const at::Tensor& guidance) {
  const bool cfg = check_euler_cfg_inputs(x, v, dt, guidance);
  check_euler_cfg_storage(x, v, dt, guidance);
  RPFM_CHECK(x.device().is_cpu(), kOp, ": the CPU kernel got x on ", x.device());
  const int64_t n = x.numel();
  if (n == 0) return;
  // On CPU the scalars are host memory: reading them is not a device sync.
  const float dt_f = *dt.const_data_ptr<float>();
  const float w = cfg ? *guidance.const_data_ptr<float>() : 1.0f;
  switch (x.scalar_type()) {
    case at::kFloat:
      if (v.scalar_type() == at::kHalf) {
        euler_cfg_cpu_kernel(x.mutable_data_ptr<float>(), v.const_data_ptr<at::Half>(), n, cfg, dt_f, w);
      } else if (v.scalar_type() == at::kBFloat16) {
        euler_cfg_cpu_kernel(x.mutable_data_ptr<float>(), v.const_data_ptr<at::BFloat16>(), n, cfg, dt_f, w);
      } else {
        euler_cfg_cpu_kernel(x.mutable_data_ptr<float>(), v.const_data_ptr<float>(), n, cfg, dt_f, w);
      }
      break;
    case at::kHalf:
      euler_cfg_cpu_kernel(x.mutable_data_ptr<at::Half>(), v.const_data_ptr<at::Half>(), n, cfg, dt_f, w);
      break;
    case at::kBFloat16:
      euler_cfg_cpu_kernel(x.mutable_data_ptr<at::BFloat16>(), v.const_data_ptr<at::BFloat16>(), n, cfg, dt_f, w);
      break;
    default:
      RPFM_CHECK(false, kOp, ": unsupported dtype ", x.scalar_type());  // unreachable: checked above
  }
}

// Fake (meta) kernel: validates shapes and dtypes, touches no data. torch.compile, FakeTensor and
// torch.library.opcheck need it; the op returns nothing, so there is nothing to allocate.
void euler_cfg_step_meta(at::Tensor& x, const at::Tensor& v, const at::Tensor& dt, const at::Tensor& guidance) {
  check_euler_cfg_inputs(x, v, dt, guidance);
  // A meta tensor mixed with real ones dispatches here too; under FakeTensor all four are meta. (No contiguity
  // check: it would need concrete strides under dynamic shapes.)
  RPFM_CHECK_SAME_DEVICE(kOp, v, x);
  RPFM_CHECK_SAME_DEVICE(kOp, dt, x);
  RPFM_CHECK_SAME_DEVICE(kOp, guidance, x);
}

}  // namespace
}  // namespace rpfm

// The schema is declared once, here. It mutates x and returns nothing (the recommended form for in-place custom
// ops: torch.compile functionalises it cleanly, and opcheck accepts it).
TORCH_LIBRARY(rpfm, m) {
  m.def("euler_cfg_step_(Tensor(a!) x, Tensor v, Tensor dt, Tensor guidance) -> ()");
}

TORCH_LIBRARY_IMPL(rpfm, CPU, m) {
  m.impl("euler_cfg_step_", &rpfm::euler_cfg_step_cpu);
}

TORCH_LIBRARY_IMPL(rpfm, Meta, m) {
  m.impl("euler_cfg_step_", &rpfm::euler_cfg_step_meta);
}
