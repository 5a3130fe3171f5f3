// EulerCFGGraph: the fixed-step Euler / Heun + classifier-free-guidance sampling loop, captured once into a single
// CUDA graph and replayed (style.md §2.3 "Capture rules"). The Python wrapper is rpfm/integrators.py::GraphEulerCFG;
// its eager twin (the spec) is EagerEulerCFG in the same file.
//
// The loop, for i = 0 .. steps-1 (velocity_fn(x_in, k) evaluates the field at the k-th point t_k of a time grid the
// Python side owns; dt[i] = t_{i+1} - t_i):
//
//   euler:  x_in <- cfg ? [x; x] : x;       v = velocity_fn(x_in, i);   euler_cfg_step_(x, v, dt[i], w)
//   heun:   x_in <- cfg ? [x; x] : x;       v1 = velocity_fn(x_in, i)
//           x_pred <- x;  euler_cfg_step_(x_pred, v1, dt[i], w)           predictor: x + dt * k1
//           euler_cfg_step_(x, v1, dt[i]/2, w)                            x + dt/2 * k1
//           x_in <- cfg ? [x_pred; x_pred] : x_pred;  v2 = velocity_fn(x_in, i + 1)
//           euler_cfg_step_(x, v2, dt[i]/2, w)                            + dt/2 * k2 (the last step included)
//
// with k = w-combined velocity v_u + w (v_c - v_u) when cfg (velocity_fn returns the doubled batch, conditional
// half first) and k = v otherwise.
//
// Invariants:
// - Static buffers, allocated once here and never reallocated: the state x (B, C, h, w) and the Heun predictor
//   x_pred, always float32 (the ODE state never rounds to the model's dtype: 60 bf16 Euler steps drift ~3x further
//   from fp32 than an fp32 state does); the model input x_in (B or 2B, C, h, w) in `dtype` (x cast on copy); the
//   step tables dt and dt/2 (steps,) and the guidance scale (0-dim), fp32, all on `device`. The captured graph
//   holds their addresses, so set_guidance() and set_dt() are device writes that take effect at the next replay
//   without recapture. They are allocated outside inference mode whatever the caller's mode, so a first call
//   inside torch.inference_mode() does not turn them into inference tensors that later calls cannot update.
// - Capture key: (B, C, h, w, steps, dtype, cfg, solver, device). They are fixed at construction; a different key
//   needs a new EulerCFGGraph (which captures again). velocity_fn must not change shape or control flow per call.
// - run(noise) returns x itself: the next run overwrites it. Clone the result to keep it across runs.
// - velocity_fn is called with the GIL held (by the binding's wrapper) during warm-up and capture, and on every
//   step when running eagerly (CPU, or use_graph=false). A replay never calls it.
// - Capture uses cudaStreamCaptureModeThreadLocal: CUDA calls made by other threads while this one captures (a
//   StreamWorker captures its first frame on a worker thread) neither fail nor invalidate the capture.
// - Warm-up runs `warmup_steps` single steps (not whole loops): one step already runs every kernel and shape of
//   the loop, so a first call costs about one run plus warmup_steps steps.
// - Not thread-safe: one caller at a time (the Python wrappers hold a lock).
// - On CPU, or with use_graph=false, run() executes the same loop eagerly in C++, so code written against this
//   class runs anywhere.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rpfm {

// velocity_fn(x_in, k) -> v, with x_in (B_in, C, h, w) and v of the same shape and dtype (B_in = 2B when cfg).
using VelocityFn = std::function<at::Tensor(const at::Tensor& x_in, int64_t k)>;

enum class Solver { kEuler, kHeun };

class EulerCFGGraph {
 public:
  // dt: (steps,) step sizes (any device; float32 or float64, copied as float32). guidance: the CFG scale w,
  // finite; with cfg=false it must be 1 (no unconditional pass exists to weigh). solver: "euler" or "heun".
  // use_graph: capture a CUDA graph (needs a CUDA device); false runs the loop eagerly.
  EulerCFGGraph(VelocityFn velocity_fn, int64_t batch_size, std::vector<int64_t> latent_shape,
                const at::Tensor& dt, double guidance, bool cfg, const std::string& solver,
                at::ScalarType dtype, at::Device device, bool use_graph, int64_t warmup_steps = 2);
  ~EulerCFGGraph();
  EulerCFGGraph(const EulerCFGGraph&) = delete;
  EulerCFGGraph& operator=(const EulerCFGGraph&) = delete;

  // Warm up (warm_up() on a side stream), then capture one loop into a CUDA graph. Called by run() on first use;
  // call it yourself to control when the one-time cost happens. Errors on CPU / use_graph=false.
  void capture();
  // Run `warmup_steps` steps from the current state on the current stream (any device); overwrites x.
  void warm_up();
  // noise: (B, C, h, w), float32 or `dtype`, on `device`. Copies it into x, replays (or loops), returns x (float32;
  // see invariants).
  at::Tensor run(const at::Tensor& noise);

  void set_guidance(double guidance);
  void set_dt(const at::Tensor& dt);

  bool captured() const;
  bool use_graph() const { return use_graph_; }
  int64_t batch_size() const { return batch_; }
  int64_t steps() const { return steps_; }
  bool cfg() const { return cfg_; }
  std::string solver() const;
  at::ScalarType dtype() const { return dtype_; }
  static constexpr at::ScalarType state_dtype() { return at::kFloat; }
  int64_t warmup_steps() const { return warmup_steps_; }
  at::Device device() const { return device_; }
  std::vector<int64_t> shape() const { return x_.sizes().vec(); }
  int64_t nfe() const;  // velocity_fn evaluations per run(): steps (euler) or 2 * steps (heun)
  const at::Tensor& x() const { return x_; }
  at::Tensor dt() const { return dt_; }
  at::Tensor guidance() const { return guidance_; }
  std::string key() const;  // human-readable capture key, for logs and error messages

 private:
  struct CudaState;  // the CUDA graph and its memory pool; empty in a CPU-only build

  at::Tensor velocity(const at::Tensor& src, int64_t k);  // fill x_in from src, call velocity_fn, check v
  void step(int64_t i);                                   // step i of the loop over the static buffers
  void loop();                                            // one full sampling loop over the static buffers

  VelocityFn velocity_fn_;
  int64_t batch_;
  int64_t steps_;
  bool cfg_;
  Solver solver_;
  at::ScalarType dtype_;
  at::Device device_;
  bool use_graph_;
  int64_t warmup_steps_;

  at::Tensor x_;         // (B, C, h, w) fp32 state
  at::Tensor x_in_;      // (B_in, C, h, w) model input in `dtype`, B_in = cfg ? 2B : B
  at::Tensor x_pred_;    // (B, C, h, w) fp32 Heun predictor (undefined for euler)
  at::Tensor dt_;        // (steps,) fp32
  at::Tensor half_dt_;   // (steps,) fp32, dt / 2 (Heun)
  at::Tensor guidance_;  // () fp32

  std::unique_ptr<CudaState> cuda_;
};

}  // namespace rpfm
