// EulerCFGGraph: warm-up on a side stream, capture, replay; the eager loop for CPU. See euler_cfg_graph.h.
//
// Capture follows the NVIDIA "PyTorch CUDA Graph" checklist and torch.cuda.graph:
// - warm up on a side stream first: libtorch capture fails without it, because cuBLAS/cuDNN handles and
//   workspaces are created lazily on first use (discuss.pytorch.org/t/170490); a step or two does it, since every
//   step of the loop runs the same kernels on the same shapes;
// - capture in thread-local mode (cudaStreamCaptureModeThreadLocal), so another thread's CUDA calls during the
//   capture (the main thread while a StreamWorker captures) do not invalidate it;
// - capture on a non-default stream, into a private memory pool (at::cuda::graph_pool_handle()), so tensors that
//   velocity_fn allocates during capture keep their addresses for every replay;
// - nothing in the loop syncs the host or allocates a static buffer: inputs go in with copy_, dt and guidance are
//   device scalars read by the kernel, and the noise is generated outside the graph by the caller.
#include "euler_cfg_graph.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <utility>

#include "checks.h"
#include "euler_cfg.h"

#ifdef RPFM_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace rpfm {

struct EulerCFGGraph::CudaState {
#ifdef RPFM_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif
};

namespace {

constexpr const char* kCls = "EulerCFGGraph";

Solver parse_solver(const std::string& s) {
  if (s == "euler") return Solver::kEuler;
  RPFM_CHECK(s == "heun", kCls, ": solver must be \"euler\" or \"heun\", got \"", s, "\"");
  return Solver::kHeun;
}

#ifdef RPFM_WITH_CUDA
// `waiter` waits for the work queued so far on `waitee` (Python: waiter.wait_stream(waitee)).
void wait_stream(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& waitee) {
  if (waiter == waitee) return;
  cudaEvent_t ev = nullptr;
  C10_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  C10_CUDA_CHECK(cudaEventRecord(ev, waitee.stream()));
  C10_CUDA_CHECK(cudaStreamWaitEvent(waiter.stream(), ev, 0));
  C10_CUDA_CHECK(cudaEventDestroy(ev));  // safe: destruction is deferred until the event completes
}
#endif

}  // namespace

EulerCFGGraph::EulerCFGGraph(VelocityFn velocity_fn, int64_t batch_size, std::vector<int64_t> latent_shape,
                             const at::Tensor& dt, double guidance, bool cfg, const std::string& solver,
                             at::ScalarType dtype, at::Device device, bool use_graph, int64_t warmup_steps)
    : velocity_fn_(std::move(velocity_fn)),
      batch_(batch_size),
      steps_(dt.defined() ? dt.numel() : 0),
      cfg_(cfg),
      solver_(parse_solver(solver)),
      dtype_(dtype),
      device_(device),
      use_graph_(use_graph),
      warmup_steps_(warmup_steps),
      cuda_(std::make_unique<CudaState>()) {
  RPFM_CHECK(velocity_fn_, kCls, ": velocity_fn must be callable, got None");
  RPFM_CHECK(batch_size >= 1, kCls, ": batch_size must be >= 1, got ", batch_size);
  RPFM_CHECK(latent_shape.size() == 3 && latent_shape[0] >= 1 && latent_shape[1] >= 1 && latent_shape[2] >= 1,
             kCls, ": latent_shape must be (C, h, w) with positive sizes, got ", c10::IntArrayRef(latent_shape));
  RPFM_CHECK(dt.defined() && dt.dim() == 1 && dt.numel() >= 1, kCls,
             ": dt must be a 1-D (steps,) table with steps >= 1, got ",
             dt.defined() ? dt.sizes() : c10::IntArrayRef{});
  RPFM_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, kCls,
             ": dtype must be float32, float16 or bfloat16, got ", dtype);
  RPFM_CHECK(device.is_cpu() || device.is_cuda(), kCls, ": device must be cpu or cuda, got ", device);
  RPFM_CHECK(!use_graph || device.is_cuda(), kCls, ": a CUDA graph was requested (use_graph=True) for device ",
             device, "; graphs need a CUDA device. Pass use_graph=False to run the loop eagerly");
#ifdef RPFM_WITH_CUDA
  if (device_.is_cuda() && !device_.has_index()) device_ = at::Device(at::kCUDA, c10::cuda::current_device());
#else
  RPFM_CHECK(!device.is_cuda(), kCls, ": rpfm._C was built without CUDA (RPFM_WITH_CUDA=OFF) but device is ",
             device, ". Rebuild on a machine with nvcc and a CUDA torch: pip install --no-build-isolation .");
#endif
  RPFM_CHECK(warmup_steps >= 1, kCls, ": warmup_steps must be >= 1 (capture fails without warm-up), got ",
             warmup_steps);

  // Normal tensors even when constructed inside torch.inference_mode(): inference tensors could not be updated in
  // place by a later call made outside it ("Inplace update to inference tensor outside InferenceMode").
  const c10::InferenceMode not_inference(/*enabled=*/false);
  std::vector<int64_t> shape{batch_size, latent_shape[0], latent_shape[1], latent_shape[2]};
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device_);
  x_ = at::zeros(shape, f32);  // the ODE state is fp32 whatever the model's dtype
  shape[0] = cfg ? 2 * batch_size : batch_size;
  x_in_ = at::zeros(shape, at::TensorOptions().dtype(dtype).device(device_));
  if (solver_ == Solver::kHeun) x_pred_ = at::zeros_like(x_);
  dt_ = at::zeros({steps_}, f32);
  half_dt_ = at::zeros({steps_}, f32);
  guidance_ = at::ones({}, f32);
  set_dt(dt);
  set_guidance(guidance);
}

EulerCFGGraph::~EulerCFGGraph() = default;

std::string EulerCFGGraph::solver() const { return solver_ == Solver::kHeun ? "heun" : "euler"; }

int64_t EulerCFGGraph::nfe() const { return solver_ == Solver::kHeun ? 2 * steps_ : steps_; }

std::string EulerCFGGraph::key() const {
  return detail::cat("(shape=", x_.sizes(), ", steps=", steps_, ", dtype=", dtype_, ", cfg=", cfg_ ? 1 : 0,
                     ", solver=", solver(), ", device=", device_, ")");
}

bool EulerCFGGraph::captured() const {
#ifdef RPFM_WITH_CUDA
  return cuda_->graph != nullptr;
#else
  return false;
#endif
}

void EulerCFGGraph::set_guidance(double guidance) {
  RPFM_CHECK(std::isfinite(guidance), kCls, ": guidance must be finite, got ", guidance);
  RPFM_CHECK(cfg_ || guidance == 1.0, kCls, ": guidance must stay 1.0 when cfg=False (the unconditional branch "
             "is not computed), got ", guidance, ". Build the sampler with cfg=True to change it");
  guidance_.fill_(guidance);  // a device write; a captured graph reads the new value at its next replay
}

void EulerCFGGraph::set_dt(const at::Tensor& dt) {
  RPFM_CHECK(dt.dim() == 1 && dt.numel() == steps_, kCls, ": dt must have shape (", steps_, ",), got ",
             dt.sizes());
  RPFM_CHECK(dt.scalar_type() == at::kFloat || dt.scalar_type() == at::kDouble, kCls,
             ": dt must be float32 or float64, got ", dt.scalar_type());
  dt_.copy_(dt);                 // copies into the static table: no recapture needed
  at::mul_out(half_dt_, dt_, 0.5);  // exact in fp32
}

at::Tensor EulerCFGGraph::velocity(const at::Tensor& src, int64_t k) {
  if (cfg_) {
    x_in_.narrow(0, 0, batch_).copy_(src);       // conditional half
    x_in_.narrow(0, batch_, batch_).copy_(src);  // unconditional half
  } else {
    x_in_.copy_(src);
  }
  at::Tensor v = velocity_fn_(x_in_, k);
  RPFM_CHECK(v.defined(), kCls, ": velocity_fn(x_in, ", k, ") returned an undefined tensor");
  RPFM_CHECK(v.sizes() == x_in_.sizes(), kCls, ": velocity_fn(x_in, ", k, ") returned shape ", v.sizes(),
             ", expected ", x_in_.sizes(),
             cfg_ ? " (the doubled batch: conditional half first, then unconditional)" : " (x_in's shape)");
  RPFM_CHECK(v.scalar_type() == dtype_, kCls, ": velocity_fn(x_in, ", k, ") returned dtype ", v.scalar_type(),
             ", expected ", dtype_);
  RPFM_CHECK(v.device() == device_, kCls, ": velocity_fn(x_in, ", k, ") returned a tensor on ", v.device(),
             ", expected ", device_);
  return v.is_contiguous() ? v : v.contiguous();
}

void EulerCFGGraph::step(int64_t i) {
  const c10::NoGradGuard no_grad;  // sampling never needs autograd (and a tape would grow across the loop)
  const at::Tensor dt_i = dt_.select(0, i);  // 0-dim view: the kernel reads the table entry through a pointer
  const at::Tensor v1 = velocity(x_, i);     // x_in <- x (cast to dtype); v in dtype; the update is fp32
  if (solver_ == Solver::kEuler) {
    euler_cfg_step_(x_, v1, dt_i, guidance_);
    return;
  }
  const at::Tensor half_dt_i = half_dt_.select(0, i);
  x_pred_.copy_(x_);
  euler_cfg_step_(x_pred_, v1, dt_i, guidance_);  // predictor: x + dt * k1
  euler_cfg_step_(x_, v1, half_dt_i, guidance_);  // x + dt/2 * k1
  const at::Tensor v2 = velocity(x_pred_, i + 1);
  euler_cfg_step_(x_, v2, half_dt_i, guidance_);  // + dt/2 * k2
}

void EulerCFGGraph::loop() {
  for (int64_t i = 0; i < steps_; ++i) step(i);
}

void EulerCFGGraph::warm_up() {
  for (int64_t it = 0; it < warmup_steps_; ++it) step(it % steps_);
}

void EulerCFGGraph::capture() {
  RPFM_CHECK(use_graph_, kCls, ".capture: this sampler runs eagerly (use_graph=False, device ", device_,
             "); CUDA graphs need use_graph=True and a CUDA device");
#ifdef RPFM_WITH_CUDA
  const c10::cuda::CUDAGuard device_guard(device_);
  cuda_->graph.reset();  // drop an earlier capture (and its pool) first
  const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(device_.index());
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device_.index());

  // Warm-up: a few single steps on the side stream, after whatever the caller queued on its stream (x <- noise).
  // The first velocity_fn call also checks the output shape, so a bad velocity_fn fails here, before capture.
  wait_stream(side, current);
  {
    const c10::cuda::CUDAStreamGuard stream_guard(side);
    warm_up();
  }
  wait_stream(current, side);
  c10::cuda::device_synchronize();  // as torch.cuda.graph does: no pending work may race the capture

  auto graph = std::make_unique<at::cuda::CUDAGraph>();
  {
    const c10::cuda::CUDAStreamGuard stream_guard(side);  // capture must not use the legacy default stream
    graph->capture_begin(at::cuda::graph_pool_handle(), cudaStreamCaptureModeThreadLocal);
    try {
      loop();
    } catch (...) {
      // End the capture so the stream is usable again, then report the original error.
      try {
        graph->capture_end();
      } catch (...) {
      }
      throw;
    }
    graph->capture_end();  // also instantiates the executable graph
  }
  cuda_->graph = std::move(graph);
#endif
}

at::Tensor EulerCFGGraph::run(const at::Tensor& noise) {
  RPFM_CHECK(noise.defined(), kCls, ".run: noise is undefined");
  RPFM_CHECK(noise.sizes() == x_.sizes(), kCls, ".run: noise must have shape ", x_.sizes(), " (the captured ",
             "key is ", key(), "), got ", noise.sizes(), ". Build a new sampler for a new shape");
  RPFM_CHECK(noise.scalar_type() == at::kFloat || noise.scalar_type() == dtype_, kCls,
             ".run: noise must be float32 (the state's dtype) or ", dtype_, ", got ", noise.scalar_type());
  RPFM_CHECK(noise.device() == device_, kCls, ".run: noise must be on ", device_, ", got ", noise.device());
  x_.copy_(noise);
  if (!use_graph_) {
    loop();
    return x_;
  }
#ifdef RPFM_WITH_CUDA
  const c10::cuda::CUDAGuard device_guard(device_);
  if (!cuda_->graph) {
    capture();
    x_.copy_(noise);  // warm-up overwrote the state
  }
  cuda_->graph->replay();  // on the current stream, after the copy above
#endif
  return x_;
}

}  // namespace rpfm
