// RectGrad's per-layer gate on the CPU in one pass over the layer (see cpu_gate.py).
//
// For each row (sample) of a layer: bound the q-th percentile of the scores from below with a strided sample,
// write out = g where score >= bound (0 elsewhere) while collecting those candidates, select the exact t-th largest
// score among them (tau) and zero the candidates <= tau. The caller recomputes the layer another way whenever a row's
// status says the bound was not below tau (too few candidates) or too loose (too many).
// Plain C ABI, no Python or PyTorch headers: it compiles in a second and is called through ctypes. Built with
// -fopenmp it runs on the OpenMP runtime PyTorch has already loaded (same soname), i.e. on PyTorch's own threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

template <typename T> struct Candidate { T score; int32_t index; };

template <typename T> static inline T tiny() { return std::numeric_limits<T>::denorm_min(); }

template <typename T> static inline T score_of(T a, T g, int absolute) {
  T s = a * g;  // PR1; PR2 is its absolute value
  return absolute ? std::fabs(s) : s;
}

// The scan below, four floats at a time where SSE2 is there (every x86-64): the comparison's bit mask finds the
// few candidates. Returns where it stopped; the scalar loop finishes the row (and does all of it elsewhere).
#if defined(__SSE2__)
template <bool count_nonnegative>
static int64_t simd_scan(const float* a, const float* g, float* out, int64_t lo, int64_t hi, float bound,
                         int absolute, Candidate<float>* c, int64_t capacity, int64_t& n, int64_t& nonneg) {
  const __m128 b = _mm_set1_ps(bound), zero = _mm_setzero_ps(), sign = _mm_set1_ps(-0.0f);
  int64_t i = lo;
  for (; i + 4 <= hi; i += 4) {
    __m128 gv = _mm_loadu_ps(g + i);
    __m128 s = _mm_mul_ps(_mm_loadu_ps(a + i), gv);
    if (absolute) s = _mm_andnot_ps(sign, s);
    __m128 keep = _mm_cmpge_ps(s, b);  // false for NaN
    _mm_storeu_ps(out + i, _mm_and_ps(keep, gv));
    if (count_nonnegative) nonneg += __builtin_popcount(_mm_movemask_ps(_mm_cmpge_ps(s, zero)));
    int mask = _mm_movemask_ps(keep);
    if (mask) {
      alignas(16) float scores[4];
      _mm_store_ps(scores, s);
      do {
        int j = __builtin_ctz(mask);
        mask &= mask - 1;
        if (n < capacity) c[n] = Candidate<float>{scores[j], (int32_t)(i + j)};
        ++n;
      } while (mask);
    }
  }
  return i;
}
#else
template <bool count_nonnegative>
static int64_t simd_scan(const float*, const float*, float*, int64_t lo, int64_t, float, int, Candidate<float>*,
                         int64_t, int64_t&, int64_t&) {
  return lo;
}
#endif

template <bool count_nonnegative>
static int64_t simd_scan(const double*, const double*, double*, int64_t lo, int64_t, double, int,
                         Candidate<double>*, int64_t, int64_t&, int64_t&) {
  return lo;  // float64: the scalar loop
}

// out[i] = g[i] where score >= bound, 0 elsewhere, for i in [lo, hi) of one row; the candidates (score >= bound) are
// stored in c (at most capacity of them); returns how many there are. With count_nonnegative, *nonnegative gets the
// number of scores >= 0.
template <typename T, bool count_nonnegative>
static int64_t scan(const T* a, const T* g, T* out, int64_t lo, int64_t hi, T bound, int absolute,
                    Candidate<T>* c, int64_t capacity, int64_t* nonnegative) {
  int64_t n = 0, nonneg = 0, i = simd_scan<count_nonnegative>(a, g, out, lo, hi, bound, absolute, c, capacity, n,
                                                               nonneg);
  for (; i < hi; ++i) {
    T s = score_of(a[i], g[i], absolute);
    out[i] = s >= bound ? g[i] : T(0);
    if (count_nonnegative) nonneg += s >= T(0);
    if (s >= bound) {
      if (n < capacity) c[n] = Candidate<T>{s, (int32_t)i};
      ++n;
    }
  }
  if (count_nonnegative) *nonnegative = nonneg;
  return n;
}

// The rank-th largest score of a strided sample of [lo, hi) (NaN lowest), at least the smallest positive value
// (then the candidates are the positive scores).
template <typename T>
static T sample_bound(const T* a, const T* g, int64_t lo, int64_t hi, int64_t stride, int64_t rank, int absolute,
                      std::vector<T>& sample) {
  sample.clear();
  for (int64_t i = lo; i < hi; i += stride) {
    T s = score_of(a[i], g[i], absolute);
    sample.push_back(std::isnan(s) ? -std::numeric_limits<T>::infinity() : s);
  }
  int64_t r = std::min<int64_t>(rank, (int64_t)sample.size());
  std::nth_element(sample.begin(), sample.begin() + (r - 1), sample.end(), std::greater<T>());
  return sample[r - 1] > tiny<T>() ? sample[r - 1] : tiny<T>();
}

// The t-th largest of a row's n candidates (tau); zeroes out_row at every candidate <= tau (strict >).
template <typename T>
static T select_row(T* out_row, Candidate<T>* c, int64_t n, int64_t t) {
  std::nth_element(c, c + (t - 1), c + n,
                   [](const Candidate<T>& x, const Candidate<T>& y) { return x.score > y.score; });
  T tau = c[t - 1].score;
  for (int64_t j = 0; j < n; ++j)
    if (!(c[j].score > tau)) out_row[c[j].index] = T(0);
  return tau;
}

// Tasks (row, piece), in parallel: bound the piece from its own sample and scan it. With one piece per row the row
// is selected at once. status[row] = 1: recompute the layer.
template <typename T>
static void scan_tasks(const T* a, const T* g, T* out, int64_t n, int64_t m, int64_t pieces, int64_t stride,
                       int64_t rank, int absolute, int64_t t, int64_t limit, Candidate<T>* cand, int64_t capacity,
                       int64_t* counts, T* bounds, int64_t* nonnegative, int8_t* status, int threads) {
  int64_t piece_len = (m + pieces - 1) / pieces;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> sample;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < n * pieces; ++k) {
      int64_t row = k / pieces, lo = (k % pieces) * piece_len, hi = std::min(m, lo + piece_len);
      const T* a_row = a + row * m;
      const T* g_row = g + row * m;
      T* out_row = out + row * m;
      Candidate<T>* c = cand + k * capacity;
      T bound = sample_bound(a_row, g_row, lo, hi, stride, rank, absolute, sample);
      int64_t found = bound == tiny<T>()
                          ? scan<T, true>(a_row, g_row, out_row, lo, hi, bound, absolute, c, capacity, nonnegative + k)
                          : scan<T, false>(a_row, g_row, out_row, lo, hi, bound, absolute, c, capacity,
                                           nonnegative + k);
      counts[k] = found;
      bounds[k] = bound;
      if (pieces == 1) {
        if (found < t && bound == tiny<T>() && nonnegative[k] >= t) status[row] = 0;  // tau = 0: all candidates pass
        else if ((status[row] = found > capacity || found < t || found > limit) == 0) select_row(out_row, c, found, t);
      }
    }
  }
}

// Rows of a layer scanned in several pieces, in parallel: join the pieces' candidates and select. The t-th largest
// candidate is the row's t-th largest value only if it is >= every piece's bound (all values above it were kept).
template <typename T>
static void select_rows(T* out, int64_t n, int64_t m, int64_t pieces, int64_t t, int64_t limit, Candidate<T>* cand,
                        int64_t capacity, const int64_t* counts, const T* bounds, const int64_t* nonnegative,
                        int8_t* status, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < n; ++row) {
    Candidate<T>* c = cand + row * pieces * capacity;
    int64_t found = 0, nonneg = 0;
    bool overflow = false;
    T highest = bounds[row * pieces];
    for (int64_t p = 0; p < pieces; ++p) {
      int64_t k = counts[row * pieces + p];
      overflow = overflow || k > capacity;
      highest = std::max(highest, bounds[row * pieces + p]);
      nonneg += highest == tiny<T>() ? nonnegative[row * pieces + p] : 0;
      if (!overflow && p > 0 && k > 0) std::memmove(c + found, c + p * capacity, k * sizeof(Candidate<T>));
      found += k;
    }
    if (found < t && highest == tiny<T>() && nonneg >= t) {  // tau = 0: every candidate (positive score) passes
      status[row] = 0;
      continue;
    }
    status[row] = overflow || found < t || found > limit;
    if (!status[row]) status[row] = !(select_row(out + row * m, c, found, t) >= highest);
  }
}

#define EXPORT(T, SUFFIX)                                                                                           \
  extern "C" void scan_tasks_##SUFFIX(const T* a, const T* g, T* out, int64_t n, int64_t m, int64_t pieces,       \
                                      int64_t stride, int64_t rank, int absolute, int64_t t, int64_t limit,        \
                                      void* cand, int64_t capacity, int64_t* counts, T* bounds,                    \
                                      int64_t* nonnegative, int8_t* status, int threads) {                         \
    scan_tasks<T>(a, g, out, n, m, pieces, stride, rank, absolute, t, limit, (Candidate<T>*)cand, capacity,       \
                  counts, bounds, nonnegative, status, threads);                                                   \
  }                                                                                                                \
  extern "C" void select_rows_##SUFFIX(T* out, int64_t n, int64_t m, int64_t pieces, int64_t t, int64_t limit,    \
                                       void* cand, int64_t capacity, const int64_t* counts, const T* bounds,       \
                                       const int64_t* nonnegative, int8_t* status, int threads) {                  \
    select_rows<T>(out, n, m, pieces, t, limit, (Candidate<T>*)cand, capacity, counts, bounds, nonnegative, status, \
                   threads);                                                                                       \
  }                                                                                                                \
  extern "C" int64_t candidate_size_##SUFFIX() { return sizeof(Candidate<T>); }

EXPORT(float, f32)
EXPORT(double, f64)

extern "C" int openmp() {  // whether the kernel runs on several threads
#if defined(_OPENMP)
  return 1;
#else
  return 0;
#endif
}
