// CPU kernels of the DiT block's memory-bound ops, one pass over the activations each. See cpu_fused.h.
//
// Each (token) row of D floats is read once into L1 and every output element is written once:
//   adaln_modulate        u = LN(x) * (1 + scale) + shift                    (ATen: LayerNorm + addcmul = 2 passes)
//   gated_residual_adaln  x' = x + gate * (y + bias), u = LN(x') * (1 + scale) + shift (ATen: 3 passes, plus
//                         the bias pass addmm makes when the linear that produced y adds its own bias)
//   gelu_tanh_            x <- GELU(x + bias), in place: v * sigmoid(2u), u = sqrt(2/pi) (v + 0.044715 v^3),
//                         v = x + bias (so a matmul can skip ATen's bias pass: addmm copies the bias into
//                         its output before the GEMM, a full pass over the fc1 activations)
//                         (ATen: 5 passes in cache-sized chunks, or one GELU whose tanh is 3.5x a sigmoid here)
// The row loops are plain C++ that the compiler vectorises; on x86-64 each kernel is compiled twice, generic and
// with AVX2 + FMA (GCC/Clang target attributes), and the AVX2 copy runs when the CPU reports both features
// (cpu_fused_isa() says which), so one binary runs on any x86-64. The AVX2 GELU is written with intrinsics: a
// vector division costs more than the rest of the GELU on AMD Zen, so it uses a reciprocal estimate plus one
// Newton step. Results equal the eager reference up to float rounding (FMA, 8-lane partial sums, a polynomial exp
// and reciprocal with a few ulp error): the parity tests bound them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <optional>
#include <tuple>

#include "checks.h"
#include "cpu_fused.h"
#include "cpu_simd.h"

namespace rpfm {
namespace {

constexpr int kLanes = 8;  // partial sums per row: one AVX2 register of floats

// ------------------------------------------------------------------------------------------------ row kernels

// mean and 1/sqrt(var + eps) of one row (biased variance, two passes over the row while it sits in L1).
RPFM_INLINE void row_stats(const float* x, int64_t D, float eps, float& mean, float& rstd) {
  float acc[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += x[d + j];
  float sum = 0.f;
  for (; d < D; ++d) sum += x[d];
  for (int j = 0; j < kLanes; ++j) sum += acc[j];
  mean = sum / static_cast<float>(D);
  float sq[kLanes] = {};
  d = 0;
  for (; d + kLanes <= D; d += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const float c = x[d + j] - mean;
      sq[j] += c * c;
    }
  float var = 0.f;
  for (; d < D; ++d) var += (x[d] - mean) * (x[d] - mean);
  for (int j = 0; j < kLanes; ++j) var += sq[j];
  rstd = 1.f / std::sqrt(var / static_cast<float>(D) + eps);
}

// u = (x - mean) * rstd * (1 + scale) + shift over one row.
RPFM_INLINE void row_modulate(const float* __restrict x, const float* __restrict shift,
                              const float* __restrict scale, float* __restrict u, int64_t D, float mean,
                              float rstd) {
  for (int64_t d = 0; d < D; ++d) u[d] = (x[d] - mean) * rstd * (1.f + scale[d]) + shift[d];
}

// A (B, D) modulation vector with contiguous rows: batch b's row starts at p + b * stride.
struct Mod {
  const float* p;
  int64_t stride;
  const float* row(int64_t b) const { return p + b * stride; }
};

// Rows [begin, end) of x (rows, D); row r belongs to batch r / T.
RPFM_INLINE void adaln_rows(const float* x, Mod shift, Mod scale, float* u, int64_t D, int64_t T, float eps,
                            int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / T;
    float mean, rstd;
    row_stats(x + r * D, D, eps, mean, rstd);
    row_modulate(x + r * D, shift.row(b), scale.row(b), u + r * D, D, mean, rstd);
  }
}

// x' = x + gate * (y + bias) (bias: (D,) or null), then u = adaLN(x').
RPFM_INLINE void gated_adaln_rows(const float* x, const float* y, const float* bias, Mod gate, Mod shift, Mod scale,
                                  float* x_out, float* u, int64_t D, int64_t T, float eps, int64_t begin,
                                  int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / T;
    const float* __restrict xr = x + r * D;
    const float* __restrict yr = y + r * D;
    const float* __restrict g = gate.row(b);
    float* __restrict xo = x_out + r * D;
    if (bias != nullptr) {
      const float* __restrict bb = bias;
      for (int64_t d = 0; d < D; ++d) xo[d] = xr[d] + g[d] * (yr[d] + bb[d]);
    } else {
      for (int64_t d = 0; d < D; ++d) xo[d] = xr[d] + g[d] * yr[d];
    }
    float mean, rstd;
    row_stats(xo, D, eps, mean, rstd);
    row_modulate(xo, shift.row(b), scale.row(b), u + r * D, D, mean, rstd);
  }
}

// x[0:n] (+ bias[0:n] first when kBias) through the GELU, in place.
template <bool kBias>
RPFM_INLINE void gelu_tanh_range(float* x, const float* bias, int64_t n) {
  constexpr float k2 = 1.5957691216057308f;  // 2 * sqrt(2 / pi)
  constexpr float c = 0.044715f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = kBias ? x[i] + bias[i] : x[i];
    const float two_u = k2 * (v + c * v * v * v);
    x[i] = v / (1.f + exp_poly(-two_u));         // v * sigmoid(2u) = v * (1 + tanh u) / 2
  }
}


// ------------------------------------------------------------------------------------------------ dispatch

#ifdef RPFM_X86_DISPATCH
// The same GELU, 8 floats at a time: exp_avx2 (cpu_simd.h), then 1 / (1 + e) as rcp + one Newton step (~1 ulp).
template <bool kBias>
RPFM_AVX2 void gelu_tanh_range_avx2(float* x, const float* bias, int64_t n) {
  const __m256 neg_k2 = _mm256_set1_ps(-1.5957691216057308f);  // -2 sqrt(2 / pi): z = -2u
  const __m256 c = _mm256_set1_ps(0.044715f);
  const __m256 one = _mm256_set1_ps(1.f), two = _mm256_set1_ps(2.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if constexpr (kBias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
    const __m256 v2 = _mm256_mul_ps(v, v);
    __m256 z = _mm256_mul_ps(neg_k2, _mm256_fmadd_ps(_mm256_mul_ps(c, v2), v, v));   // -2u
    const __m256 d = _mm256_add_ps(exp_avx2(z), one);                                // 1 + exp(-2u)
    __m256 inv = _mm256_rcp_ps(d);
    inv = _mm256_mul_ps(inv, _mm256_fnmadd_ps(d, inv, two));                       // Newton: inv (2 - d inv)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(v, inv));
  }
  gelu_tanh_range<kBias>(x + i, kBias ? bias + i : nullptr, n - i);
}

RPFM_AVX2 void adaln_rows_avx2(const float* x, Mod shift, Mod scale, float* u, int64_t D, int64_t T, float eps,
                               int64_t begin, int64_t end) {
  adaln_rows(x, shift, scale, u, D, T, eps, begin, end);
}

RPFM_AVX2 void gated_adaln_rows_avx2(const float* x, const float* y, const float* bias, Mod gate, Mod shift,
                                     Mod scale, float* x_out, float* u, int64_t D, int64_t T, float eps,
                                     int64_t begin, int64_t end) {
  gated_adaln_rows(x, y, bias, gate, shift, scale, x_out, u, D, T, eps, begin, end);
}

#endif

}  // namespace

// Declared in cpu_simd.h; RPFM_CPU_KERNELS=generic forces the generic copy.
bool use_avx2() {
#ifdef RPFM_X86_DISPATCH
  static const bool yes = [] {
    const char* force = std::getenv("RPFM_CPU_KERNELS");
    if (force != nullptr && std::string(force) == "generic") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
#else
  return false;
#endif
}

namespace {

// ------------------------------------------------------------------------------------------------ checks

constexpr const char* kAdaln = "adaln_modulate";
constexpr const char* kGated = "gated_residual_adaln";
constexpr const char* kGelu = "gelu_tanh_";

void check_activation(const char* op, const char* name, const at::Tensor& t) {
  RPFM_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  RPFM_CHECK(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
  RPFM_CHECK(t.dim() == 3, op, ": ", name, " must be (B, T, D), got shape ", t.sizes());
  RPFM_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (call .contiguous() first)");
}

// shift / scale / gate: (B, D) float32 CPU with contiguous rows (a row of a larger table, or a chunk of a wider
// (B, k D) tensor, is fine: each vector keeps its own row stride).
Mod check_mod(const char* op, const char* name, const at::Tensor& m, const at::Tensor& x) {
  RPFM_CHECK(m.device().is_cpu() && m.scalar_type() == at::kFloat, op, ": ", name,
             " must be a float32 CPU tensor, got ", m.scalar_type(), " on ", m.device());
  RPFM_CHECK(m.dim() == 2 && m.size(0) == x.size(0) && m.size(1) == x.size(2), op, ": ", name, " must be (B, D) = (",
             x.size(0), ", ", x.size(2), "), got ", m.sizes());
  RPFM_CHECK(m.stride(1) == 1 || m.size(1) <= 1, op, ": ", name,
             " must have contiguous rows (stride 1 along D), got strides ", m.strides());
  return Mod{m.const_data_ptr<float>(), m.stride(0)};
}

// Rows per task: ~16K floats, so a (1024, 192) activation splits across two threads and tiny ones stay on one.
int64_t row_grain(int64_t D) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(D, 1)); }

}  // namespace

std::string cpu_fused_isa() { return use_avx2() ? "avx2+fma" : "generic"; }

int64_t cpu_parallel_threads() {
  std::atomic<int64_t> most{0};
  at::parallel_for(0, 1 << 12, 1, [&](int64_t, int64_t) {
    const int64_t n = at::get_thread_num() + 1;
    int64_t seen = most.load();
    while (n > seen && !most.compare_exchange_weak(seen, n)) {
    }
  });
  return most.load();
}

// ------------------------------------------------------------------------------------------------ the ops

at::Tensor adaln_modulate_cpu(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps) {
  check_activation(kAdaln, "x", x);
  const Mod sh = check_mod(kAdaln, "shift", shift, x);
  const Mod sc = check_mod(kAdaln, "scale", scale, x);
  at::Tensor u = at::empty_like(x);
  const int64_t T = x.size(1), D = x.size(2), rows = x.size(0) * T;
  if (rows == 0 || D == 0) return u;
  const float* xp = x.const_data_ptr<float>();
  float* up = u.mutable_data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, rows, row_grain(D), [&](int64_t begin, int64_t end) {
#ifdef RPFM_X86_DISPATCH
    if (use_avx2()) return adaln_rows_avx2(xp, sh, sc, up, D, T, e, begin, end);
#endif
    adaln_rows(xp, sh, sc, up, D, T, e, begin, end);
  });
  return u;
}

std::tuple<at::Tensor, at::Tensor> gated_residual_adaln_cpu(const at::Tensor& x, const at::Tensor& y,
                                                            const at::Tensor& gate, const at::Tensor& shift,
                                                            const at::Tensor& scale, double eps,
                                                            const std::optional<at::Tensor>& bias) {
  check_activation(kGated, "x", x);
  check_activation(kGated, "y", y);
  RPFM_CHECK(y.sizes() == x.sizes(), kGated, ": y must have x's shape ", x.sizes(), ", got ", y.sizes());
  const Mod gp = check_mod(kGated, "gate", gate, x);
  const Mod sh = check_mod(kGated, "shift", shift, x);
  const Mod sc = check_mod(kGated, "scale", scale, x);
  const float* bp = nullptr;
  if (bias.has_value()) {
    const at::Tensor& bt = *bias;
    RPFM_CHECK(bt.dim() == 1 && bt.size(0) == x.size(2), kGated, ": bias must be (D,) = (", x.size(2),
               ",), got shape ", bt.sizes());
    RPFM_CHECK(bt.device().is_cpu() && bt.scalar_type() == at::kFloat && bt.is_contiguous(), kGated,
               ": bias must be a contiguous float32 CPU tensor, got ", bt.scalar_type(), " on ", bt.device());
    bp = bt.const_data_ptr<float>();
  }
  at::Tensor x_out = at::empty_like(x);
  at::Tensor u = at::empty_like(x);
  const int64_t T = x.size(1), D = x.size(2), rows = x.size(0) * T;
  if (rows == 0 || D == 0) return {x_out, u};
  const float* xp = x.const_data_ptr<float>();
  const float* yp = y.const_data_ptr<float>();
  float* xo = x_out.mutable_data_ptr<float>();
  float* up = u.mutable_data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, rows, row_grain(D), [&](int64_t begin, int64_t end) {
#ifdef RPFM_X86_DISPATCH
    if (use_avx2()) return gated_adaln_rows_avx2(xp, yp, bp, gp, sh, sc, xo, up, D, T, e, begin, end);
#endif
    gated_adaln_rows(xp, yp, bp, gp, sh, sc, xo, up, D, T, e, begin, end);
  });
  return {x_out, u};
}

namespace {

template <bool kBias>
void gelu_rows(float* x, const float* bias, int64_t n) {
#ifdef RPFM_X86_DISPATCH
  if (use_avx2()) return gelu_tanh_range_avx2<kBias>(x, bias, n);
#endif
  gelu_tanh_range<kBias>(x, bias, n);
}

}  // namespace

void gelu_tanh_cpu_(at::Tensor& x, const std::optional<at::Tensor>& bias) {
  RPFM_CHECK(x.device().is_cpu(), kGelu, ": x must be a CPU tensor, got ", x.device());
  RPFM_CHECK(x.scalar_type() == at::kFloat, kGelu, ": x must be float32, got ", x.scalar_type());
  RPFM_CHECK(x.is_contiguous(), kGelu, ": x must be contiguous (it is updated in place)");
  float* p = x.mutable_data_ptr<float>();
  if (!bias.has_value()) {
    at::parallel_for(0, x.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
      gelu_rows<false>(p + begin, nullptr, end - begin);
    });
    return;
  }
  const at::Tensor& b = *bias;
  RPFM_CHECK(x.dim() >= 1 && b.dim() == 1 && b.size(0) == x.size(-1), kGelu, ": bias must be (N,) with N = x's last ",
             "dim (", x.dim() >= 1 ? x.size(-1) : 0, "), got shape ", b.sizes());
  RPFM_CHECK(b.device().is_cpu() && b.scalar_type() == at::kFloat && b.is_contiguous(), kGelu,
             ": bias must be a contiguous float32 CPU tensor, got ", b.scalar_type(), " on ", b.device());
  const int64_t N = x.size(-1), rows = N == 0 ? 0 : x.numel() / N;
  const float* bp = b.const_data_ptr<float>();
  at::parallel_for(0, rows, row_grain(N) * 2, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) gelu_rows<true>(p + r * N, bp, N);
  });
}

namespace {

// Meta kernels: shapes only, for FakeTensor / torch.compile / opcheck.
at::Tensor adaln_modulate_meta(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double) {
  RPFM_CHECK(x.dim() == 3, kAdaln, ": x must be (B, T, D), got shape ", x.sizes());
  return at::empty_like(x);
}

std::tuple<at::Tensor, at::Tensor> gated_residual_adaln_meta(const at::Tensor& x, const at::Tensor& y,
                                                             const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, double,
                                                             const std::optional<at::Tensor>&) {
  RPFM_CHECK(x.dim() == 3 && y.sizes() == x.sizes(), kGated, ": x and y must be (B, T, D) of one shape, got ",
             x.sizes(), " and ", y.sizes());
  return {at::empty_like(x), at::empty_like(x)};
}

void gelu_tanh_meta_(at::Tensor&, const std::optional<at::Tensor>&) {}

}  // namespace
}  // namespace rpfm

TORCH_LIBRARY_FRAGMENT(rpfm, m) {
  m.def("adaln_modulate(Tensor x, Tensor shift, Tensor scale, float eps) -> Tensor");
  m.def("gated_residual_adaln(Tensor x, Tensor y, Tensor gate, Tensor shift, Tensor scale, float eps, "
        "Tensor? bias=None) -> (Tensor, Tensor)");
  m.def("gelu_tanh_(Tensor(a!) x, Tensor? bias=None) -> ()");
}

TORCH_LIBRARY_IMPL(rpfm, CPU, m) {
  m.impl("adaln_modulate", &rpfm::adaln_modulate_cpu);
  m.impl("gated_residual_adaln", &rpfm::gated_residual_adaln_cpu);
  m.impl("gelu_tanh_", &rpfm::gelu_tanh_cpu_);
}

TORCH_LIBRARY_IMPL(rpfm, Meta, m) {
  m.impl("adaln_modulate", &rpfm::adaln_modulate_meta);
  m.impl("gated_residual_adaln", &rpfm::gated_residual_adaln_meta);
  m.impl("gelu_tanh_", &rpfm::gelu_tanh_meta_);
}
