// Softmax attention on the CPU for the short sequences of small DiTs (float32, inference). See cpu_attention.h.
//
// One task per (batch, head, block of kQBlock query rows), spread over ATen's threads. A task packs its head's keys
// transposed, K^T (Dh, Tp) with Tp = T rounded up to 8 and zero columns after T, so that a row of scores is a sum
// over d of q[d] * K^T[d, :] (broadcast-and-FMA on contiguous rows, no horizontal sums); then for each query row:
// scores s = q K^T * Dh^-1/2, p = exp(s - max s), o = (p V) / sum p, written straight into o's (B, T, H, Dh)
// layout, so the output projection reads it with no copy. q, k and v are read through their strides: the three
// (B, T, H, Dh) views of one fused qkv matmul output need no copies either.
//
// Why: PyTorch's CPU flash attention (SDPA) is built for long sequences; on the demo model (T = 64, Dh = 64,
// 48 heads of a CFG-doubled batch of 8) it took ~1.4 ms per call here, ~11 % of a sampling step (profile in
// bench/RESULTS.md). Memory per task: (Dh + kQBlock) * Tp floats of scratch, so any T works; the Python
// wrapper (rpfm/ops/cpu.py) hands sequences over CPP_ATTENTION_MAX_T tokens to SDPA, whose key blocking wins there.
// Results equal the reference up to float rounding (FMA, a polynomial exp with a few ulp error).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "checks.h"
#include "cpu_attention.h"
#include "cpu_simd.h"

namespace rpfm {
namespace {

constexpr int64_t kQBlock = 64;   // query rows per task
constexpr const char* kOp = "attention";

// A (B, T, H, Dh) tensor read through its strides (elements); Dh has stride 1.
struct Heads {
  const float* p;
  int64_t sb, st, sh;
  const float* row(int64_t b, int64_t t, int64_t h) const { return p + b * sb + t * st + h * sh; }
};

struct Task {
  Heads q, k, v;
  float* o;          // contiguous (B, T, H, Dh)
  int64_t T, H, Dh, Tp;
  float scale;
};

// ------------------------------------------------------------------------------------------------ generic

// kt (Dh, Tp): K^T of head (b, h), zero columns from T on.
RPFM_INLINE void pack_kt(const Task& a, int64_t b, int64_t h, float* kt) {
  for (int64_t j = 0; j < a.Tp; ++j) {
    const float* kj = j < a.T ? a.k.row(b, j, h) : nullptr;
    for (int64_t d = 0; d < a.Dh; ++d) kt[d * a.Tp + j] = kj != nullptr ? kj[d] : 0.f;
  }
}

// Rows [i0, i1) of head (b, h); kt packed, s: scratch of Tp floats.
RPFM_INLINE void attend_rows(const Task& a, int64_t b, int64_t h, int64_t i0, int64_t i1, const float* kt,
                             float* s) {
  const int64_t T = a.T, Tp = a.Tp, Dh = a.Dh, H = a.H;
  for (int64_t i = i0; i < i1; ++i) {
    const float* qi = a.q.row(b, i, h);
    for (int64_t j = 0; j < Tp; ++j) s[j] = 0.f;
    for (int64_t d = 0; d < Dh; ++d) {
      const float qd = qi[d] * a.scale;
      const float* ktd = kt + d * Tp;
      for (int64_t j = 0; j < Tp; ++j) s[j] += qd * ktd[j];
    }
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < T; ++j) mx = s[j] > mx ? s[j] : mx;
    float sum = 0.f;
    for (int64_t j = 0; j < T; ++j) {
      s[j] = exp_poly(s[j] - mx);
      sum += s[j];
    }
    float* oi = a.o + ((b * T + i) * H + h) * Dh;
    for (int64_t d = 0; d < Dh; ++d) oi[d] = 0.f;
    for (int64_t j = 0; j < T; ++j) {
      const float pj = s[j];
      const float* vj = a.v.row(b, j, h);
      for (int64_t d = 0; d < Dh; ++d) oi[d] += pj * vj[d];
    }
    const float inv = 1.f / sum;
    for (int64_t d = 0; d < Dh; ++d) oi[d] *= inv;
  }
}

// ------------------------------------------------------------------------------------------------ AVX2

#ifdef RPFM_X86_DISPATCH
// C[r, :] = row_scale[r] * (A[r, :] B) for R rows and 8 V columns: A (R, K) with row stride lda, B (K, 8 V) with row
// stride ldb, both stride 1 along a row. R x V accumulators stay in registers (6 x 2 = 12 of the 16 ymm), so each
// step over K loads R broadcasts and V vectors for R V FMAs: both matmuls of attention run on it.
template <int R, int V>
RPFM_AVX2 RPFM_INLINE void tile_avx2(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* C,
                                     int64_t ldc, const float* row_scale) {
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < V; ++u) acc[r][u] = _mm256_setzero_ps();
  for (int64_t kk = 0; kk < K; ++kk) {
    __m256 b[V];
    for (int u = 0; u < V; ++u) b[u] = _mm256_loadu_ps(B + kk * ldb + 8 * u);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(A + r * lda + kk);
      for (int u = 0; u < V; ++u) acc[r][u] = _mm256_fmadd_ps(a, b[u], acc[r][u]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m256 sc = _mm256_set1_ps(row_scale[r]);
    for (int u = 0; u < V; ++u) _mm256_storeu_ps(C + r * ldc + 8 * u, _mm256_mul_ps(acc[r][u], sc));
  }
}

// C (M, N) = diag(row_scale) A (M, K) B (K, N), N % 8 == 0: 6-row, 16-column tiles, then the edges.
template <int R>
RPFM_AVX2 RPFM_INLINE void rows_avx2(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* C,
                                     int64_t ldc, int64_t N, const float* row_scale) {
  int64_t n = 0;
  for (; n + 16 <= N; n += 16) tile_avx2<R, 2>(A, lda, B + n, ldb, K, C + n, ldc, row_scale);
  if (n < N) tile_avx2<R, 1>(A, lda, B + n, ldb, K, C + n, ldc, row_scale);
}

RPFM_AVX2 void matmul_avx2(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* C,
                           int64_t ldc, int64_t M, int64_t N, const float* row_scale) {
  int64_t m = 0;
  for (; m + 6 <= M; m += 6) rows_avx2<6>(A + m * lda, lda, B, ldb, K, C + m * ldc, ldc, N, row_scale + m);
  switch (M - m) {
    case 5: rows_avx2<5>(A + m * lda, lda, B, ldb, K, C + m * ldc, ldc, N, row_scale + m); break;
    case 4: rows_avx2<4>(A + m * lda, lda, B, ldb, K, C + m * ldc, ldc, N, row_scale + m); break;
    case 3: rows_avx2<3>(A + m * lda, lda, B, ldb, K, C + m * ldc, ldc, N, row_scale + m); break;
    case 2: rows_avx2<2>(A + m * lda, lda, B, ldb, K, C + m * ldc, ldc, N, row_scale + m); break;
    case 1: rows_avx2<1>(A + m * lda, lda, B, ldb, K, C + m * ldc, ldc, N, row_scale + m); break;
    default: break;
  }
}

// p = exp(s - max s) over s[0:T] in place; returns sum p.
RPFM_AVX2 float softmax_numerator_avx2(float* s, int64_t T) {
  const int64_t T8 = T / 8 * 8;
  __m256 mx8 = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < T8; j += 8) mx8 = _mm256_max_ps(mx8, _mm256_loadu_ps(s + j));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mx8);
  float mx = lanes[0];
  for (int u = 1; u < 8; ++u) mx = lanes[u] > mx ? lanes[u] : mx;
  for (int64_t j = T8; j < T; ++j) mx = s[j] > mx ? s[j] : mx;
  const __m256 mxv = _mm256_set1_ps(mx);
  __m256 sum8 = _mm256_setzero_ps();
  for (int64_t j = 0; j < T8; j += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), mxv));
    _mm256_storeu_ps(s + j, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  _mm256_store_ps(lanes, sum8);
  float sum = 0.f;
  for (int u = 0; u < 8; ++u) sum += lanes[u];
  for (int64_t j = T8; j < T; ++j) {
    s[j] = exp_poly(s[j] - mx);
    sum += s[j];
  }
  return sum;
}

// The same rows as attend_rows with Dh % 8 == 0, as two tiled matmuls: S = (Q K^T) * scale for all rows of the
// block, the softmax numerators row by row, then O = diag(1 / sum) P V straight into o. s: (kQBlock, Tp) scratch.
RPFM_AVX2 void attend_rows_avx2(const Task& a, int64_t b, int64_t h, int64_t i0, int64_t i1, const float* kt,
                                float* s) {
  const int64_t T = a.T, Tp = a.Tp, Dh = a.Dh, H = a.H, M = i1 - i0;
  float scale[kQBlock];
  for (int64_t r = 0; r < M; ++r) scale[r] = a.scale;
  matmul_avx2(a.q.row(b, i0, h), a.q.st, kt, Tp, Dh, s, Tp, M, Tp, scale);
  for (int64_t r = 0; r < M; ++r) scale[r] = 1.f / softmax_numerator_avx2(s + r * Tp, T);
  matmul_avx2(s, Tp, a.v.row(b, 0, h), a.v.st, T, a.o + ((b * T + i0) * H + h) * Dh, H * Dh, M, Dh, scale);
}
#endif

Heads check_heads(const char* name, const at::Tensor& t, const at::Tensor& q) {
  RPFM_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, kOp, ": ", name,
             " must be a float32 CPU tensor, got ", t.scalar_type(), " on ", t.device());
  RPFM_CHECK(t.dim() == 4, kOp, ": ", name, " must be (B, T, H, Dh), got shape ", t.sizes());
  RPFM_CHECK(t.sizes() == q.sizes(), kOp, ": ", name, " must have q's shape ", q.sizes(), ", got ", t.sizes());
  RPFM_CHECK(t.stride(3) == 1 || t.size(3) <= 1, kOp, ": ", name,
             " must have stride 1 along Dh (call .contiguous() first), got strides ", t.strides());
  return Heads{t.const_data_ptr<float>(), t.stride(0), t.stride(1), t.stride(2)};
}

}  // namespace

at::Tensor attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const Heads hq = check_heads("q", q, q), hk = check_heads("k", k, q), hv = check_heads("v", v, q);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), Dh = q.size(3);
  at::Tensor o = at::empty({B, T, H, Dh}, q.options().memory_format(at::MemoryFormat::Contiguous));
  if (o.numel() == 0) return o;
  const int64_t Tp = (T + 7) / 8 * 8, blocks = (T + kQBlock - 1) / kQBlock;
  const Task task{hq, hk, hv, o.mutable_data_ptr<float>(), T, H, Dh, Tp,
                  static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)))};
#ifdef RPFM_X86_DISPATCH
  const bool avx2 = use_avx2() && Dh % 8 == 0;
#else
  const bool avx2 = false;
#endif
  at::parallel_for(0, B * H * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>((Dh + kQBlock) * Tp + 16));
    float* kt = scratch.data() + (16 - reinterpret_cast<uintptr_t>(scratch.data()) / 4 % 16) % 16;  // 64-byte aligned
    float* s = kt + Dh * Tp;
    int64_t packed = -1;                    // the (b, h) whose K^T is in kt
    for (int64_t id = begin; id < end; ++id) {
      const int64_t bh = id / blocks, blk = id % blocks, b = bh / H, h = bh % H;
      if (bh != packed) {
        pack_kt(task, b, h, kt);
        packed = bh;
      }
      const int64_t i0 = blk * kQBlock, i1 = std::min(T, i0 + kQBlock);
#ifdef RPFM_X86_DISPATCH
      if (avx2) {
        attend_rows_avx2(task, b, h, i0, i1, kt, s);
        continue;
      }
#endif
      attend_rows(task, b, h, i0, i1, kt, s);
    }
  });
  return o;
}

namespace {

at::Tensor attention_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  RPFM_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(), kOp,
             ": q, k and v must be (B, T, H, Dh) of one shape, got ", q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  return at::empty(q.sizes(), q.options());
}

}  // namespace
}  // namespace rpfm

TORCH_LIBRARY_FRAGMENT(rpfm, m) {
  m.def("attention(Tensor q, Tensor k, Tensor v) -> Tensor");
}

TORCH_LIBRARY_IMPL(rpfm, CPU, m) {
  m.impl("attention", &rpfm::attention_cpu);
}

TORCH_LIBRARY_IMPL(rpfm, Meta, m) {
  m.impl("attention", &rpfm::attention_meta);
}
