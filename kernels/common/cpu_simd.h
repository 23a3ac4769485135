// Shared C++ of the ops' compiled CPU paths: 32-byte vector types, vector exp / log /
// sigmoid / softplus, loads of W channels through a stride, and the task scheduler.
//
// The kernels vectorise across channels: a vector holds W consecutive channels of one
// (batch row, time step), W = 8 float32 or 4 float64. In channel-last memory ((b, l, d),
// the Mamba block's own layout) those are adjacent and load as one vector; any other
// stride is gathered lane by lane (load_lanes / store_lanes), so every layout works and
// none needs a copy. Vectors are GCC vector types: `omp simd` auto-vectorisation of the
// same loops was several times slower.
#pragma once

#include <ATen/Parallel.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace simd {

template <typename T> struct Lanes {
  static constexpr int64_t width = 32 / sizeof(T);
  typedef T Vec __attribute__((vector_size(32)));
};
template <typename T> using Vec = typename Lanes<T>::Vec;
template <typename T> constexpr int64_t lanes = Lanes<T>::width;

// A (b, d, l) tensor through its strides; p is null for an absent optional tensor.
template <typename T> struct BDL {
  T* p = nullptr;
  int64_t sb = 0, sd = 0, sl = 0;
  T* at(int64_t bi, int64_t c, int64_t t) const { return p + bi * sb + c * sd + t * sl; }
};

template <typename T> inline Vec<T> splat(T x) { return x - Vec<T>{}; }

// The same 32 bytes read as another vector type (memcpy: no aliasing questions).
template <typename To, typename From> inline To bits_as(From x) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To y;
  std::memcpy(&y, &x, sizeof(y));
  return y;
}

// Lane-wise min and max: one vminps / vmaxps where AVX is there (GCC does not turn the
// ternary into them), the ternary elsewhere. NaN in a gives b, as the ternary does.
inline Vec<float> vmin(Vec<float> a, Vec<float> b) {
#if defined(__AVX__)
  return _mm256_min_ps(a, b);
#else
  return a < b ? a : b;
#endif
}
inline Vec<float> vmax(Vec<float> a, Vec<float> b) {
#if defined(__AVX__)
  return _mm256_max_ps(a, b);
#else
  return a > b ? a : b;
#endif
}

// Unaligned vector load and store (memcpy compiles to one vmovups).
template <typename T> inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T> inline void store(T* p, Vec<T> v) { std::memcpy(p, &v, sizeof(v)); }

// `count` (<= W) values at p, p + stride, ...; the lanes past count are 0.
template <typename T> inline Vec<T> load_lanes(const T* p, int64_t stride, int64_t count) {
  if (stride == 1 && count == lanes<T>) return load(p);
  Vec<T> v{};
  for (int64_t j = 0; j < count; ++j) v[j] = p[j * stride];
  return v;
}
template <typename T> inline void store_lanes(T* p, int64_t stride, int64_t count, Vec<T> v) {
  if (stride == 1 && count == lanes<T>) return store(p, v);
  for (int64_t j = 0; j < count; ++j) p[j * stride] = v[j];
}

template <typename T> inline T sum_lanes(Vec<T> v) {
  T s = 0;
  for (int64_t i = 0; i < lanes<T>; ++i) s += v[i];
  return s;
}

// Lane i of the result is the sum of v[i]'s lanes, for W vectors v[0..W): a transpose and
// add in log2(W) shuffle rounds instead of W horizontal sums.
inline Vec<float> lane_sums(const Vec<float>* v) {
  auto pairs = [](Vec<float> a, Vec<float> b) {
    return __builtin_shufflevector(a, b, 0, 8, 2, 10, 4, 12, 6, 14) +
           __builtin_shufflevector(a, b, 1, 9, 3, 11, 5, 13, 7, 15);
  };
  auto quads = [](Vec<float> a, Vec<float> b) {
    return __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13) +
           __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
  };
  const Vec<float> lo = quads(pairs(v[0], v[1]), pairs(v[2], v[3]));
  const Vec<float> hi = quads(pairs(v[4], v[5]), pairs(v[6], v[7]));
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(lo, hi, 4, 5, 6, 7, 12, 13, 14, 15);
}
inline Vec<double> lane_sums(const Vec<double>* v) {
  const Vec<double> a = __builtin_shufflevector(v[0], v[1], 0, 4, 2, 6) +
                        __builtin_shufflevector(v[0], v[1], 1, 5, 3, 7);
  const Vec<double> b = __builtin_shufflevector(v[2], v[3], 0, 4, 2, 6) +
                        __builtin_shufflevector(v[2], v[3], 1, 5, 3, 7);
  return __builtin_shufflevector(a, b, 0, 1, 4, 5) + __builtin_shufflevector(a, b, 2, 3, 6, 7);
}

// out[k] += sum of v[k]'s lanes, for k < count.
template <typename T> inline void add_lane_sums(const Vec<T>* v, int64_t count, T* out) {
  constexpr int64_t W = lanes<T>;
  int64_t k = 0;
  for (; k + W <= count; k += W) store(out + k, load(out + k) + lane_sums(v + k));
  for (; k < count; ++k) out[k] += sum_lanes<T>(v[k]);
}

// exp of 8 floats: Cephes-style range reduction and polynomial, about 1 ulp; 0 below
// float's normal range, exp(88.38) above it.
inline Vec<float> exp_vec(Vec<float> x) {
  typedef int32_t IVec __attribute__((vector_size(32)));
  const float lo = -87.3365447504f, hi = 88.3762626647949f;
  const Vec<float> xc = vmax(vmin(x, splat(hi)), splat(lo));
  Vec<float> k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  Vec<float> r = xc - k * 0.693359375f + k * 2.12194440e-4f;
  Vec<float> p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const IVec bits = (__builtin_convertvector(k, IVec) + 127) << 23;  // 2^k
  const Vec<float> result = p * bits_as<Vec<float>>(bits);
  return x < lo ? Vec<float>{} : result;
}

// 2^x of 8 floats, the recurrence's decay (cheaper than exp_vec: no range reduction by
// ln 2, the scale added to the exponent bits directly). x is clamped to [-125, 127], so
// 2^-125 (2.4e-38) stands in for anything smaller. A degree-6 polynomial on [-0.5, 0.5]
// (least-squares fit towards minimax): relative error under 1.1e-7, about 1 ulp.
inline Vec<float> exp2_vec(Vec<float> x) {
  typedef uint32_t UVec __attribute__((vector_size(32)));
  x = vmax(vmin(x, splat(127.0f)), splat(-125.0f));
  // 1.5 * 2^23: the sum rounds x to the nearest integer k and keeps it in the low
  // mantissa bits, so (bits << 23) is k in the exponent field.
  const Vec<float> shifted = x + 12582912.0f;
  const Vec<float> f = x - (shifted - 12582912.0f);  // in [-0.5, 0.5]
  Vec<float> p = splat(1.535334221809202e-4f);
  p = p * f + 1.33988724529959e-3f;
  p = p * f + 9.618437402715901e-3f;
  p = p * f + 5.550332476058171e-2f;
  p = p * f + 2.402264791347821e-1f;
  p = p * f + 6.931472028528299e-1f;
  p = p * f + 1.0f;  // 2^f, in [0.707, 1.415]
  return bits_as<Vec<float>>(bits_as<UVec>(p) + (bits_as<UVec>(shifted) << 23));
}

// Natural log of 8 positive normal floats: Cephes logf (mantissa in [sqrt(1/2), sqrt(2)),
// a degree-9 polynomial), about 1 ulp.
inline Vec<float> log_vec(Vec<float> x) {
  typedef int32_t IVec __attribute__((vector_size(32)));
  const IVec bits = bits_as<IVec>(x);
  Vec<float> m = bits_as<Vec<float>>((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  Vec<float> e = __builtin_convertvector((bits >> 23) - 126, Vec<float>);
  const auto small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const Vec<float> z = m * m;
  Vec<float> y = splat(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z - 2.12194440e-4f * e - 0.5f * z;
  return m + y + 0.693359375f * e;
}

// float64 is for checking against the reference: the C library, lane by lane.
inline Vec<double> exp_vec(Vec<double> x) {
  for (int64_t i = 0; i < lanes<double>; ++i) x[i] = std::exp(x[i]);
  return x;
}
inline Vec<double> exp2_vec(Vec<double> x) {
  for (int64_t i = 0; i < lanes<double>; ++i) x[i] = std::exp2(x[i]);
  return x;
}
inline Vec<double> log1p_vec(Vec<double> x) {
  for (int64_t i = 0; i < lanes<double>; ++i) x[i] = std::log1p(x[i]);
  return x;
}
// log1p(e) for e >= 0 from log(1 + e), with Goldberg's correction for small e.
inline Vec<float> log1p_vec(Vec<float> e) {
  const Vec<float> w = e + 1.0f;
  const Vec<float> lp = log_vec(w) * e / (w - 1.0f);
  return w == 1.0f ? e : lp;
}

template <typename T> inline Vec<T> sigmoid_vec(Vec<T> x) {
  return T(1) / (T(1) + exp_vec(-x));
}
// softplus(x) = log(1 + exp(x)); x itself above 20, as torch's F.softplus.
template <typename T> inline Vec<T> softplus_vec(Vec<T> x) {
  const Vec<T> capped = x < T(20) ? x : splat(T(20));
  return x > T(20) ? x : log1p_vec(exp_vec(capped));
}

// How many of torch's intra-op threads to use on n_tasks tasks worth `work` units: at
// most one per task, and one per min_work units, since waking a thread for tiny work
// costs more than the work (and on a busy machine may wait for a time slice).
inline int64_t workers_for(int64_t n_tasks, int64_t work, int64_t min_work) {
  const int64_t wanted = std::min<int64_t>(n_tasks, work / std::max<int64_t>(1, min_work));
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), wanted));
}

// Runs body(task, scratch) for every task in [0, n_tasks) on `workers` of torch's
// intra-op threads (one `at::parallel_for` region: one fork, one join; at::get_thread_num()
// is below `workers` inside). Tasks are handed out one at a time from a shared counter
// rather than in fixed shares: on a busy machine a descheduled thread then delays only
// the task it holds, and the running threads take the rest. Each thread
// default-constructs one Scratch.
template <typename Scratch, typename Body>
void run_tasks(int64_t n_tasks, int64_t workers, const Body& body) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    Scratch scratch;
    for (int64_t task; (task = next.fetch_add(1, std::memory_order_relaxed)) < n_tasks;)
      body(task, scratch);
  });
}

}  // namespace simd
