// What the CPU kernels of rpfm._C share: the x86-64 dispatch macros, the ISA choice, and a polynomial exp.
//
// On x86-64 with GCC or Clang each kernel is compiled twice, generic and with AVX2 + FMA (target attributes), and
// the AVX2 copy runs when use_avx2() says the CPU has both features; one binary runs on any x86-64.
// exp: Cephes' expf (v = n ln2 + r, |r| <= ln2 / 2, degree-6 polynomial in r, times 2^n built from the exponent
// bits), v clamped to [-87, 88]; a few ulp from std::exp. No libm call, no floor() and no std::min (GCC does not
// inline a default-target function into the Haswell clone), so loops over it vectorise; files using it are built
// with -fno-trapping-math, which lets GCC turn the clamps into vector selects.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RPFM_X86_DISPATCH 1
#define RPFM_AVX2 __attribute__((target("avx2,fma")))
#include <immintrin.h>
#endif
#define RPFM_INLINE inline __attribute__((always_inline))

namespace rpfm {

// True when the AVX2 + FMA copies run: the CPU has both and RPFM_CPU_KERNELS is not "generic" (the tests compare
// both copies; the variable is read once, at the first call). Always false off x86-64.
bool use_avx2();

RPFM_INLINE float exp_poly(float v) {
  v = v < -87.f ? -87.f : v;
  v = v > 88.f ? 88.f : v;
  constexpr float kRound = 12582912.f;                       // 1.5 * 2^23: adding it rounds to an integer
  const float fn = (v * 1.44269504088896341f + kRound) - kRound;  // n = round(v / ln 2)
  float r = v - fn * 0.693359375f;
  r = r + fn * 2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
}

#ifdef RPFM_X86_DISPATCH
// exp_poly, 8 floats at a time. The clamp's operand order matters: max/min return their second operand when either
// is NaN, so a NaN goes through (as in exp_poly) instead of becoming exp(-87).
RPFM_AVX2 RPFM_INLINE __m256 exp_avx2(__m256 v) {
  v = _mm256_min_ps(_mm256_set1_ps(88.f), _mm256_max_ps(_mm256_set1_ps(-87.f), v));
  const __m256 round = _mm256_set1_ps(12582912.f);
  const __m256 fn = _mm256_sub_ps(_mm256_fmadd_ps(v, _mm256_set1_ps(1.44269504088896341f), round), round);
  __m256 r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(0.693359375f), v);
  r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(-2.12194440e-4f), r);
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500e-4f), r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.f));
  const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fn), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(two_n));
}
#endif

}  // namespace rpfm
