// Fused multi-head attention for XLA:CPU (float32), called through the XLA FFI.
//
// Why: XLA:CPU runs attention at the GPICL paper's shapes (100x100 scores, heads of
// 32) as separate small batched dots, transposes and softmax passes over memory; the
// best XLA layout measured 0.33 of the matmul peak. Here each (sequence, head) is one
// unit of work whose scores stay in L1/L2: scores, mask, softmax and the weighted sum
// in one pass, and the backward pass recomputes the scores from the saved
// log-sum-exp (as flash attention does) instead of storing them. Column ranges with
// no allowed key (the causal upper triangle) are skipped.
//
// Layout: q, k, v, o: [..., T, H, D] (leading dims = batch N); mask: [..., T, T]
// bool (True = may attend) with M leading elements, M dividing N: sequence n uses
// mask n / (N / M). lse: [..., H, T]. A row with no allowed key attends uniformly to
// all T keys with zero gradient to q and k, as the einsum form with a finfo.min fill.
//
// Built on first use by models/cpu_attention.py (g++ -O3 -march=native).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int W = 16;  // Floats per vector (one AVX-512 register, two AVX2, four NEON).
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef float vf_unaligned __attribute__((vector_size(64), aligned(4)));

inline vf load(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }
inline void store(float* p, vf x) { *reinterpret_cast<vf_unaligned*>(p) = x; }
inline vf splat(float x) { return vf{} + x; }
inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

// exp(x) on a vector (Cephes expf: range reduction to |r| <= ln2/2, degree-7
// polynomial; within 2 ulp). Inputs are clamped, so masked logits stay finite.
inline vf vexp(vf x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  x = x > 88.0f ? splat(88.0f) : x;
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer.
  vf n = (x * 1.44269504088896341f + magic) - magic;
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)e;
}

float hmax(vf x) {
  float m = x[0];
  for (int i = 1; i < W; ++i) m = std::max(m, x[i]);
  return m;
}

float hsum(vf x) {
  float s = 0;
  for (int i = 0; i < W; ++i) s += x[i];
  return s;
}

// C[r, j] = sum_d A[r, d] * Bt[d, j] for R rows and NV vectors of columns.
template <int R, int NV>
inline void abt_tile(const float* A, int lda, const float* Bt, int ldb, float* C, int ldc,
                     int depth) {
  vf acc[R][NV] = {};
  for (int d = 0; d < depth; ++d) {
    vf b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = load(Bt + d * ldb + v * W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      vf a = splat(A[r * lda + d]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) store(C + r * ldc + v * W, acc[r][v]);
}

// 4 rows of C[:, j0:j1] = A Bt (j0, j1 multiples of W).
void abt_rows4(const float* A, int lda, const float* Bt, int ldb, float* C, int ldc, int depth,
               int j0, int j1) {
  int j = j0;
  for (; j + 4 * W <= j1; j += 4 * W) abt_tile<4, 4>(A, lda, Bt + j, ldb, C + j, ldc, depth);
  switch ((j1 - j) / W) {
    case 3: abt_tile<4, 3>(A, lda, Bt + j, ldb, C + j, ldc, depth); break;
    case 2: abt_tile<4, 2>(A, lda, Bt + j, ldb, C + j, ldc, depth); break;
    case 1: abt_tile<4, 1>(A, lda, Bt + j, ldb, C + j, ldc, depth); break;
    default: break;
  }
}

// C[r, :] = sum_{j in [j0, j1)} P[r, j] * V[j, :] for R rows and NV vectors of V's width;
// with Transposed, P[j, r] (P's columns r are contiguous, so no transpose is materialised).
template <int R, int NV, bool Transposed>
inline void pv_tile(const float* P, int ldp, const float* V, int ldv, float* C, int ldc, int j0,
                    int j1) {
  vf acc[R][NV] = {};
  for (int j = j0; j < j1; ++j) {
    vf b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = load(V + j * ldv + v * W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      vf a = splat(Transposed ? P[j * ldp + r] : P[r * ldp + j]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) store(C + r * ldc + v * W, acc[r][v]);
}

// 8 rows of C = P[:, j0:j1] V (Transposed: P[j0:j1, cols]^T V), V of width dp (a multiple
// of W), in chunks of 2 vectors.
template <bool Transposed>
void pv_rows8(const float* P, int ldp, const float* V, int dp, float* C, int j0, int j1) {
  int c = 0;
  for (; c + 2 * W <= dp; c += 2 * W)
    pv_tile<8, 2, Transposed>(P, ldp, V + c, dp, C + c, dp, j0, j1);
  if (c < dp) pv_tile<8, 1, Transposed>(P, ldp, V + c, dp, C + c, dp, j0, j1);
}

// What a mask allows, per row and per column, precomputed once per call.
struct MaskInfo {
  std::vector<float> bias;    // [T, Tp]: 0 allowed, -1e30 masked or padding.
  std::vector<float> keep;    // [T, Tp]: 1 allowed, 0 masked or padding.
  std::vector<int> lo, hi;    // [Tp]: allowed columns of row i lie in [lo, hi) (tight).
  std::vector<int> clo, chi;  // [Tp]: rows that attend to column j lie in [clo, chi).
  std::vector<char> dead;     // [T]: the row allows no key.
};

MaskInfo mask_info(const bool* m, int T, int Tp) {
  MaskInfo info;
  info.bias.assign(size_t(T) * Tp, -1e30f);
  info.keep.assign(size_t(T) * Tp, 0.0f);
  info.lo.assign(Tp, 0);
  info.hi.assign(Tp, 0);
  info.clo.assign(Tp, T);
  info.chi.assign(Tp, 0);
  info.dead.assign(T, 0);
  for (int i = 0; i < T; ++i) {
    int lo = T, hi = 0;
    for (int j = 0; j < T; ++j) {
      if (!m[i * T + j]) continue;
      info.bias[size_t(i) * Tp + j] = 0.0f;
      info.keep[size_t(i) * Tp + j] = 1.0f;
      lo = std::min(lo, j);
      hi = j + 1;
    }
    info.dead[i] = hi == 0;
    if (info.dead[i]) lo = 0, hi = T;  // Uniform over all keys (see the header).
    info.lo[i] = lo;
    info.hi[i] = hi;
    for (int j = 0; j < T; ++j) {
      if (m[i * T + j] || info.dead[i]) {
        info.clo[j] = std::min(info.clo[j], i);
        info.chi[j] = i + 1;
      }
    }
  }
  return info;
}

// Vector-aligned union of the rows' column ranges over rows [i0, i0 + n).
void block_range(const MaskInfo& mi, int i0, int n, int T, int align, int* lo, int* hi,
                 bool columns = false) {
  const std::vector<int>& l = columns ? mi.clo : mi.lo;
  const std::vector<int>& h = columns ? mi.chi : mi.hi;
  int a = 1 << 30, b = 0;
  for (int i = i0; i < std::min(i0 + n, T); ++i) {
    if (h[i] <= l[i]) continue;
    a = std::min(a, l[i]);
    b = std::max(b, h[i]);
  }
  if (b == 0) a = 0;
  *lo = a / align * align;
  *hi = round_up(b, align);
}

struct Dims {
  int64_t N, M, T, H, D;
  int Tp, Dp;
};

// Per-thread buffers, 64-byte aligned.
struct Scratch {
  float* base = nullptr;
  explicit Scratch(size_t floats) {
    base = static_cast<float*>(std::aligned_alloc(64, (floats * 4 + 63) / 64 * 64));
  }
  ~Scratch() { std::free(base); }
};

// Runs body(unit, scratch) for unit in [0, n) on the caller and XLA's intra-op
// threads; each thread gets its own `scratch_floats` of scratch.
//
// The caller never waits for a helper that has not started: several of these calls run
// at once on the same pool (vmapped seeds, independent layers), and a caller blocked on
// queued helpers can hold every pool thread (a deadlock seen with 8 such calls on 8
// threads). Helpers that start after all units are claimed return without touching
// `body`; the caller waits only for helpers inside the unit loop.
template <typename F>
void parallel_units(ffi::ThreadPool& pool, int64_t n, size_t scratch_floats, const F& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::mutex mu;
    std::condition_variable cv;
    int64_t running = 0;  // Helpers inside the unit loop.
  };
  auto st = std::make_shared<State>();
  const F* fn = &body;
  auto units = [st, n, scratch_floats, fn] {
    Scratch s(scratch_floats);
    for (int64_t u; (u = st->next.fetch_add(1)) < n;) (*fn)(u, s.base);
  };
  int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), n));
  for (int64_t t = 1; t < threads; ++t) {
    pool.Schedule([st, n, units] {
      {
        std::lock_guard<std::mutex> lock(st->mu);
        if (st->next.load() >= n) return;  // All claimed: the caller may be gone.
        ++st->running;
      }
      units();
      std::lock_guard<std::mutex> lock(st->mu);
      if (--st->running == 0) st->cv.notify_all();
    });
  }
  units();
  std::unique_lock<std::mutex> lock(st->mu);
  st->cv.wait(lock, [&] { return st->running == 0; });
}

// Copies head h of sequence n ([T, D] with row stride H*D) into a [Tp, Dp] tile
// whose padding (rows >= T, columns >= D) is zero.
void gather_head(const float* x, const Dims& d, int64_t n, int64_t h, float* tile) {
  const int64_t stride = d.H * d.D;
  const float* src = x + (n * d.T * d.H + h) * d.D;
  if (d.D == d.Dp) {
    for (int t = 0; t < d.T; ++t)
      for (int c = 0; c < d.Dp; c += W) store(tile + t * d.Dp + c, load(src + t * stride + c));
  } else {
    for (int t = 0; t < d.T; ++t) {
      std::memcpy(tile + t * d.Dp, src + t * stride, sizeof(float) * d.D);
      std::memset(tile + t * d.Dp + d.D, 0, sizeof(float) * (d.Dp - d.D));
    }
  }
  std::memset(tile + d.T * d.Dp, 0, sizeof(float) * (d.Tp - d.T) * d.Dp);
}

void scatter_head(const float* tile, const Dims& d, int64_t n, int64_t h, float* x) {
  const int64_t stride = d.H * d.D;
  float* dst = x + (n * d.T * d.H + h) * d.D;
  if (d.D == d.Dp) {
    for (int t = 0; t < d.T; ++t)
      for (int c = 0; c < d.Dp; c += W) store(dst + t * stride + c, load(tile + t * d.Dp + c));
  } else {
    for (int t = 0; t < d.T; ++t)
      std::memcpy(dst + t * stride, tile + t * d.Dp, sizeof(float) * d.D);
  }
}

// dst[Dp or Tp rows...]: the transpose of a [rows, cols] tile (row strides given).
void transpose(const float* src, int rows, int cols, int lds, float* dst, int ldd) {
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

// Fills row i of P (and dS) outside [a, b) with zeros.
void zero_outside(float* row, int a, int b, int Tp) {
  std::memset(row, 0, sizeof(float) * a);
  std::memset(row + b, 0, sizeof(float) * (Tp - b));
}

Dims get_dims(const ffi::AnyBuffer::Dimensions& q, const ffi::AnyBuffer::Dimensions& m,
              ffi::Error* err) {
  Dims d{};
  if (q.size() < 3 || m.size() < 2) {
    *err = ffi::Error::InvalidArgument("attention: q needs [..., T, H, D], mask [..., T, T]");
    return d;
  }
  d.T = q[q.size() - 3], d.H = q[q.size() - 2], d.D = q[q.size() - 1];
  d.N = 1;
  for (size_t i = 0; i + 3 < q.size(); ++i) d.N *= q[i];
  d.M = 1;
  for (size_t i = 0; i + 2 < m.size(); ++i) d.M *= m[i];
  if (m[m.size() - 1] != d.T || m[m.size() - 2] != d.T || d.M == 0 || d.N % d.M != 0)
    *err = ffi::Error::InvalidArgument("attention: mask must be [..., T, T] with a leading size "
                                       "dividing the batch");
  d.Tp = round_up(int(d.T), W);
  d.Dp = round_up(int(d.D), W);
  return d;
}

// The MaskInfo of each of the d.M masks ([M, T, T], row-major).
std::vector<MaskInfo> mask_infos(const bool* mask, const Dims& d) {
  std::vector<MaskInfo> masks;
  for (int64_t m = 0; m < d.M; ++m) masks.push_back(mask_info(mask + m * d.T * d.T, int(d.T), d.Tp));
  return masks;
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask, float scale,
                   ffi::ResultBuffer<ffi::F32> o, ffi::ResultBuffer<ffi::F32> lse) {
  ffi::Error err = ffi::Error::Success();
  const Dims d = get_dims(q.dimensions(), mask.dimensions(), &err);
  if (err.failure()) return err;
  const std::vector<MaskInfo> masks = mask_infos(mask.typed_data(), d);
  const int T = int(d.T), Tp = d.Tp, Dp = d.Dp;
  const size_t tile = size_t(Tp) * Dp, square = size_t(Tp) * Tp;

  struct Body {
    const Dims& d;
    const std::vector<MaskInfo>& masks;
    const float *q, *k, *v;
    float *o, *lse, scale;
    int T, Tp, Dp;
    size_t tile, square;
    void operator()(int64_t unit, float* scratch) const {
      float *Q = scratch, *Kt = Q + tile, *V = Kt + tile, *O = V + tile, *S = O + tile,
            *P = S + square;
      const int64_t n = unit / d.H, h = unit % d.H;
      const MaskInfo& mi = masks[n / (d.N / d.M)];
      gather_head(q, d, n, h, Q);
      gather_head(v, d, n, h, V);
      gather_head(k, d, n, h, O);  // O as temporary for K.
      std::memset(Kt, 0, sizeof(float) * tile);
      transpose(O, T, Dp, Dp, Kt, Tp);
      float* lse_row = lse + (n * d.H + h) * T;
      for (int i0 = 0; i0 < Tp; i0 += 4) {
        int a, b;
        block_range(mi, i0, 4, T, W, &a, &b);
        if (b > a) abt_rows4(Q + i0 * Dp, Dp, Kt, Tp, S + i0 * Tp, Tp, int(d.D), a, b);
        for (int i = i0; i < std::min(i0 + 4, T); ++i) {
          float* srow = S + i * Tp;
          float* prow = P + i * Tp;
          zero_outside(prow, a, b, Tp);
          if (mi.dead[i]) {
            for (int j = a; j < b; ++j) prow[j] = j < T ? 1.0f / T : 0.0f;
            lse_row[i] = 0.0f;
            continue;
          }
          const float* bias = mi.bias.data() + size_t(i) * Tp;
          const float* keep = mi.keep.data() + size_t(i) * Tp;
          vf mx = splat(-1e30f);
          for (int j = a; j < b; j += W) {
            vf x = load(srow + j) * scale + load(bias + j);
            store(srow + j, x);
            mx = mx > x ? mx : x;
          }
          const float m = hmax(mx);
          vf sum = {};
          for (int j = a; j < b; j += W) {
            vf e = vexp(load(srow + j) - m) * load(keep + j);
            store(prow + j, e);
            sum += e;
          }
          const float total = hsum(sum);
          const float inv = 1.0f / total;
          for (int j = a; j < b; j += W) store(prow + j, load(prow + j) * inv);
          lse_row[i] = m + std::log(total);
        }
      }
      for (int i0 = 0; i0 < Tp; i0 += 8) {
        int a, b;
        block_range(mi, i0, 8, T, 1, &a, &b);
        pv_rows8<false>(P + i0 * Tp, Tp, V, Dp, O + i0 * Dp, a, b);
      }
      scatter_head(O, d, n, h, o);
    }
  };
  Body body{d, masks, q.typed_data(), k.typed_data(), v.typed_data(), o->typed_data(),
            lse->typed_data(), scale, T, Tp, Dp, tile, square};
  parallel_units(pool, d.N * d.H, 4 * tile + 2 * square, body);
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask,
                    ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse,
                    ffi::Buffer<ffi::F32> dout, float scale, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  ffi::Error err = ffi::Error::Success();
  const Dims d = get_dims(q.dimensions(), mask.dimensions(), &err);
  if (err.failure()) return err;
  const std::vector<MaskInfo> masks = mask_infos(mask.typed_data(), d);
  const int T = int(d.T), Tp = d.Tp, Dp = d.Dp;
  const size_t tile = size_t(Tp) * Dp, square = size_t(Tp) * Tp;

  struct Body {
    const Dims& d;
    const std::vector<MaskInfo>& masks;
    const float *q, *k, *v, *o, *lse, *dout;
    float *dq, *dk, *dv, scale;
    int T, Tp, Dp;
    size_t tile, square;
    void operator()(int64_t unit, float* scratch) const {
      float *Q = scratch, *K = Q + tile, *Kt = K + tile, *Vt = Kt + tile, *dO = Vt + tile,
            *dQ = dO + tile, *dK = dQ + tile, *dV = dK + tile, *S = dV + tile, *P = S + square,
            *dS = P + square, *Tr = dS + square, *Di = Tr + square;
      const int64_t n = unit / d.H, h = unit % d.H;
      const MaskInfo& mi = masks[n / (d.N / d.M)];
      gather_head(q, d, n, h, Q);
      gather_head(k, d, n, h, K);
      gather_head(dout, d, n, h, dO);
      std::memset(Kt, 0, sizeof(float) * tile);
      transpose(K, T, Dp, Dp, Kt, Tp);
      gather_head(v, d, n, h, dV);  // dV as temporary for V.
      std::memset(Vt, 0, sizeof(float) * tile);
      transpose(dV, T, Dp, Dp, Vt, Tp);
      gather_head(o, d, n, h, dQ);  // dQ as temporary for O.
      for (int i = 0; i < T; ++i) {
        float acc = 0;
        for (int c = 0; c < d.D; ++c) acc += dO[i * Dp + c] * dQ[i * Dp + c];
        Di[i] = acc;
      }
      const float* lse_row = lse + (n * d.H + h) * T;
      for (int i0 = 0; i0 < Tp; i0 += 4) {
        int a, b;
        block_range(mi, i0, 4, T, W, &a, &b);
        if (b > a) {
          abt_rows4(Q + i0 * Dp, Dp, Kt, Tp, S + i0 * Tp, Tp, int(d.D), a, b);
          abt_rows4(dO + i0 * Dp, Dp, Vt, Tp, Tr + i0 * Tp, Tp, int(d.D), a, b);  // dP.
        }
        for (int i = i0; i < std::min(i0 + 4, Tp); ++i) {
          float* prow = P + i * Tp;
          float* dsrow = dS + i * Tp;
          if (i >= T) {
            std::memset(prow, 0, sizeof(float) * Tp);
            std::memset(dsrow, 0, sizeof(float) * Tp);
            continue;
          }
          zero_outside(prow, a, b, Tp);
          zero_outside(dsrow, a, b, Tp);
          if (mi.dead[i]) {
            for (int j = a; j < b; ++j) prow[j] = j < T ? 1.0f / T : 0.0f, dsrow[j] = 0.0f;
            continue;
          }
          const float* keep = mi.keep.data() + size_t(i) * Tp;
          const float l = lse_row[i], di = Di[i];
          for (int j = a; j < b; j += W) {
            vf p = vexp(load(S + i * Tp + j) * scale - l) * load(keep + j);
            store(prow + j, p);
            store(dsrow + j, p * (load(Tr + i * Tp + j) - di) * scale);
          }
        }
      }
      for (int i0 = 0; i0 < Tp; i0 += 8) {  // dQ = dS K.
        int a, b;
        block_range(mi, i0, 8, T, 1, &a, &b);
        pv_rows8<false>(dS + i0 * Tp, Tp, K, Dp, dQ + i0 * Dp, a, b);
      }
      for (int j0 = 0; j0 < Tp; j0 += 8) {  // dV = P^T dO, dK = dS^T Q.
        int a, b;
        block_range(mi, j0, 8, T, 1, &a, &b, /*columns=*/true);
        pv_rows8<true>(P + j0, Tp, dO, Dp, dV + j0 * Dp, a, b);
        pv_rows8<true>(dS + j0, Tp, Q, Dp, dK + j0 * Dp, a, b);
      }
      scatter_head(dQ, d, n, h, dq);
      scatter_head(dK, d, n, h, dk);
      scatter_head(dV, d, n, h, dv);
    }
  };
  Body body{d, masks, q.typed_data(), k.typed_data(), v.typed_data(), o.typed_data(),
            lse.typed_data(), dout.typed_data(), dq->typed_data(), dk->typed_data(),
            dv->typed_data(), scale, T, Tp, Dp, tile, square};
  parallel_units(pool, d.N * d.H, 8 * tile + 4 * square + Tp, body);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
