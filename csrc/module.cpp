// The single Python module rpfm._C: build_info() and the EulerCFGGraph class; nothing else (style.md §2.4 rule 12).
//
// Importing it also loads the rpfm::euler_cfg_step_ op registrations (euler_cfg.cpp, euler_cfg_cuda.cu), which are
// static initialisers in the same shared object. Import it only through rpfm/_ext.py, after `import torch`.
//
// Compiled against torch's bundled pybind11 headers (torch/csrc/utils/pybind.h), so the Tensor/dtype/device
// casters are torch's own; a pip pybind11 of another version would not match libtorch_python.
#include <torch/csrc/utils/pybind.h>
#include <torch/version.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "checks.h"
#include "cpu_fused.h"
#include "euler_cfg_graph.h"

namespace py = pybind11;

#define RPFM_STR2(x) #x
#define RPFM_STR(x) RPFM_STR2(x)

#ifndef RPFM_CUDA_VERSION
#define RPFM_CUDA_VERSION ""
#endif
#ifndef RPFM_CUDA_ARCHS
#define RPFM_CUDA_ARCHS ""
#endif
#ifndef RPFM_COMPILER
#define RPFM_COMPILER "unknown"
#endif

namespace {

py::dict build_info() {
  py::dict info;
  // The torch headers this extension was compiled against; rpfm/_ext.py compares it with torch.__version__.
  info["torch_version"] = std::string(RPFM_STR(TORCH_VERSION_MAJOR) "." RPFM_STR(TORCH_VERSION_MINOR) "." RPFM_STR(
      TORCH_VERSION_PATCH));
#ifdef RPFM_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["cuda_version"] = std::string(RPFM_CUDA_VERSION);
  info["archs"] = std::string(RPFM_CUDA_ARCHS);
  info["compiler"] = std::string(RPFM_COMPILER);
  // How EulerCFGGraph captures and what it keeps its state in (README, "The fast sampler").
  info["capture_mode"] = std::string("thread_local");
  info["state_dtype"] = std::string("float32");
  info["cpu_kernels"] = rpfm::cpu_fused_isa();
  return info;
}

// Wrap the Python callable as a C++ VelocityFn. The wrapper takes the GIL for each call (run() releases it), and
// its deleter takes the GIL too, so the graph object can be destroyed from any thread.
rpfm::VelocityFn wrap_velocity_fn(py::function fn) {
  std::shared_ptr<py::function> holder(new py::function(std::move(fn)), [](py::function* f) {
    py::gil_scoped_acquire gil;
    delete f;
  });
  return [holder](const at::Tensor& x_in, int64_t k) -> at::Tensor {
    py::gil_scoped_acquire gil;
    py::object out = (*holder)(x_in, k);
    at::Tensor v;
    try {
      v = out.cast<at::Tensor>();
    } catch (const py::cast_error&) {
      RPFM_CHECK(false, "EulerCFGGraph: velocity_fn(x_in, ", k, ") must return a Tensor, got ",
                 std::string(py::str(py::type::of(out))));
    }
    return v;
  };
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "rpfm compiled extension: the rpfm::euler_cfg_step_ op (torch.ops.rpfm) and the EulerCFGGraph sampler";

  // c10::Error -> RuntimeError (ValueError / TypeError for those subclasses) with the message only: pybind's
  // default translation would append libtorch's C++ backtrace.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  m.def("cpu_parallel_threads", &rpfm::cpu_parallel_threads,
        "Threads at::parallel_for used for this extension's CPU kernels in one trial (1 = serial build).");
  m.def("build_info", &build_info,
        "dict(torch_version, cuda, cuda_version, archs, compiler, capture_mode, state_dtype) describing how this "
        "extension was built");

  py::class_<rpfm::EulerCFGGraph>(m, "EulerCFGGraph", R"doc(
Fixed-step Euler/Heun + CFG sampling loop over static buffers, captured into one CUDA graph (CPU: eager loop).

velocity_fn(x_in, k) -> v is called with x_in of shape (B_in, C, h, w) (B_in = 2B when cfg: [x; x]) and the
index k of the time-grid point to evaluate at; it must return v of x_in's shape and dtype (conditional half first
when cfg). dt: (steps,) step sizes. The state is float32 whatever `dtype` (the model's) is. run(noise) returns the
static fp32 state buffer: clone it to keep it across runs. Not thread-safe: one caller at a time.
Use rpfm.integrators.GraphEulerCFG rather than this class directly.)doc")
      .def(py::init([](py::function velocity_fn, int64_t batch_size, std::vector<int64_t> latent_shape,
                       const at::Tensor& dt, double guidance, bool cfg, const std::string& solver,
                       at::ScalarType dtype, at::Device device, bool use_graph, int64_t warmup_steps) {
             return std::make_unique<rpfm::EulerCFGGraph>(wrap_velocity_fn(std::move(velocity_fn)), batch_size,
                                                          std::move(latent_shape), dt, guidance, cfg, solver, dtype,
                                                          device, use_graph, warmup_steps);
           }),
           py::arg("velocity_fn"), py::kw_only(), py::arg("batch_size"), py::arg("latent_shape"), py::arg("dt"),
           py::arg("guidance"), py::arg("cfg"), py::arg("solver") = "euler", py::arg("dtype"), py::arg("device"),
           py::arg("use_graph"), py::arg("warmup_steps") = 2)
      .def("capture", &rpfm::EulerCFGGraph::capture,
           "Warm up on a side stream, then capture the loop into a CUDA graph (run() does this on first use).")
      .def("warm_up", &rpfm::EulerCFGGraph::warm_up,
           "Run warmup_steps single steps from the current state (capture() does this first); overwrites x.")
      .def("run", &rpfm::EulerCFGGraph::run, py::arg("noise"), py::call_guard<py::gil_scoped_release>(),
           "Copy noise (B, C, h, w) into the state, replay (or loop), return the state buffer (not a copy).")
      .def("set_guidance", &rpfm::EulerCFGGraph::set_guidance, py::arg("guidance"),
           "Write a new CFG scale into the device scalar the graph reads (no recapture).")
      .def("set_dt", &rpfm::EulerCFGGraph::set_dt, py::arg("dt"),
           "Copy a new (steps,) step-size table into the static table the graph reads (no recapture).")
      .def_property_readonly("captured", &rpfm::EulerCFGGraph::captured)
      .def_property_readonly("use_graph", &rpfm::EulerCFGGraph::use_graph)
      .def_property_readonly("batch_size", &rpfm::EulerCFGGraph::batch_size)
      .def_property_readonly("steps", &rpfm::EulerCFGGraph::steps)
      .def_property_readonly("cfg", &rpfm::EulerCFGGraph::cfg)
      .def_property_readonly("solver", &rpfm::EulerCFGGraph::solver)
      .def_property_readonly("dtype", &rpfm::EulerCFGGraph::dtype)
      .def_property_readonly("state_dtype", [](const rpfm::EulerCFGGraph&) { return rpfm::EulerCFGGraph::state_dtype(); })
      .def_property_readonly("warmup_steps", &rpfm::EulerCFGGraph::warmup_steps)
      .def_property_readonly("device", &rpfm::EulerCFGGraph::device)
      .def_property_readonly("shape", &rpfm::EulerCFGGraph::shape)
      .def_property_readonly("nfe", &rpfm::EulerCFGGraph::nfe)
      .def_property_readonly("x", &rpfm::EulerCFGGraph::x)
      .def_property_readonly("dt", &rpfm::EulerCFGGraph::dt)
      .def_property_readonly("guidance", &rpfm::EulerCFGGraph::guidance)
      .def_property_readonly("key", &rpfm::EulerCFGGraph::key)
      .def("__repr__", [](const rpfm::EulerCFGGraph& g) {
        return "EulerCFGGraph" + g.key() + (g.captured() ? " [captured]" : "");
      });
}
