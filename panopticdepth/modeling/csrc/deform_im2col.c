/* Modulated deformable im2col (DCNv2) for the CPU, bit-for-bit equal to torchvision's, and its
   backward.

   torchvision's CPU kernel computes, for every input channel c, kernel tap k and output position p,
       columns[c*K + k][p] = mask[k][p] * (w1*v1 + w2*v2 + w3*v3 + w4*v4)
   with the bilinear weights w and corner values v of the sampling point
       y = (oy*stride_h - pad_h + i*dil_h) + offset_y,  x = (ox*stride_w - pad_w + j*dil_w) + offset_x
   in one single-threaded loop that redoes the coordinate work for every channel. Here the same
   floating-point operations, in the same order, are split in two phases:

   1. `prepare`: per (k, p), once: the top-left corner's flat index into the zero-padded channel
      plane and the four weights (all 0 for a point outside (-1, H) x (-1, W)). For the backward
      (`frac` not NULL) it also keeps the fractional parts ly, lx, and gives a corner to points on
      the closed edges y = -1 or x = -1 too, whose weights stay 0.
   2. `columns`: per channel (threads take disjoint channels) and tap, along the positions: two
      paired loads, the weighted sum and the mask product, written where torchvision's column
      matrix has them (row c*K + k, column col0 + p).

   The caller pads every channel plane with one zero row on top, two at the bottom and one zero
   column on each side, so a corner outside the image reads 0 exactly as torchvision's bounds
   tests do, and a point outside the sampling range reads four zeros with four zero weights.
   Must be compiled with -ffp-contract=off: a fused multiply-add would round differently.

   `backward` (at the end of the file) is the gradient of the same operation. */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Built with -fopenmp, the library links libgomp.so.1, which resolves to the copy PyTorch has
   already loaded: one thread pool for PyTorch, MKL and this kernel, no threads spinning against
   each other. Without OpenMP the loops run serially. */
#ifdef _OPENMP
#include <omp.h>
#define PRAGMA(x) _Pragma(#x)
#define PARALLEL_FOR(threads) PRAGMA(omp parallel for num_threads((int)(threads)) schedule(static))
#define PARALLEL(threads) PRAGMA(omp parallel num_threads((int)(threads)))
#define THREAD_NUM() ((int64_t)omp_get_thread_num())
#define THREAD_COUNT() ((int64_t)omp_get_num_threads())
#else
#define PARALLEL_FOR(threads)
#define PARALLEL(threads)
#define THREAD_NUM() ((int64_t)0)
#define THREAD_COUNT() ((int64_t)1)
#endif

#define DEFINE_PREPARE(SUFFIX, T, FLOOR)                                                         \
void pd_dcn_prepare_##SUFFIX(const T* offset, int64_t height, int64_t width, int64_t out_h,      \
                             int64_t out_w, int64_t kernel_h, int64_t kernel_w, int64_t stride_h, \
                             int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,      \
                             int64_t dil_w, int64_t threads, int32_t* corner, T* weights,        \
                             T* frac)                                                            \
{                                                                                                \
    const int64_t positions = out_h * out_w;                                                     \
    const int64_t taps = kernel_h * kernel_w;                                                    \
    const int64_t n = taps * positions;                                                          \
    const int64_t padded_w = width + 2;                                                          \
    const int32_t outside = (int32_t)((height + 1) * padded_w);                                  \
    PARALLEL_FOR(threads)                                                                        \
    for (int64_t k = 0; k < taps; ++k) {                                                         \
        const int64_t i = k / kernel_w, j = k % kernel_w;                                        \
        const T* off_y = offset + (2 * k) * positions;                                           \
        const T* off_x = offset + (2 * k + 1) * positions;                                       \
        for (int64_t oy = 0; oy < out_h; ++oy) {                                                 \
            const T base_y = (T)(oy * stride_h - pad_h + i * dil_h);                             \
            for (int64_t ox = 0; ox < out_w; ++ox) {                                             \
                const int64_t p = oy * out_w + ox;                                               \
                const int64_t q = k * positions + p;                                             \
                const T y = base_y + off_y[p];                                                   \
                const T x = (T)(ox * stride_w - pad_w + j * dil_w) + off_x[p];                   \
                int32_t top_left = outside;                                                      \
                T w1 = 0, w2 = 0, w3 = 0, w4 = 0, ly = 0, lx = 0;                                \
                const int inside = !(y <= -1 || (T)height <= y || x <= -1 || (T)width <= x);     \
                /* The coordinate gradient also exists on the closed edges y = -1, x = -1. */    \
                const int edge = frac && !(y < -1 || (T)height <= y || x < -1 || (T)width <= x); \
                if (inside || edge) {                                                            \
                    const int64_t y_low = (int64_t)FLOOR(y);                                     \
                    const int64_t x_low = (int64_t)FLOOR(x);                                     \
                    ly = y - (T)y_low;                                                           \
                    lx = x - (T)x_low;                                                           \
                    if (inside) {                                                                \
                        const T hy = (T)1 - ly, hx = (T)1 - lx;                                  \
                        w1 = hy * hx;                                                            \
                        w2 = hy * lx;                                                            \
                        w3 = ly * hx;                                                            \
                        w4 = ly * lx;                                                            \
                    }                                                                            \
                    top_left = (int32_t)((y_low + 1) * padded_w + (x_low + 1));                  \
                }                                                                                \
                if (frac) {                                                                      \
                    frac[q] = ly;                                                                \
                    frac[n + q] = lx;                                                            \
                }                                                                                \
                corner[q] = top_left;                                                            \
                weights[q] = w1;                                                                 \
                weights[n + q] = w2;                                                             \
                weights[2 * n + q] = w3;                                                         \
                weights[3 * n + q] = w4;                                                         \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
}

/* float -> bfloat16 with round-to-nearest-even, as PyTorch converts (NaN stays a quiet NaN). */
static inline uint16_t pd_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#define STORE_SAME(v) (v)
#define STORE_BF16(v) pd_to_bf16(v)

/* The two corners of a bilinear row are adjacent in memory. For float they are read as one 64-bit
   load and split with shifts: measured 1.5x faster than two float loads or four vector gathers,
   and 3x faster than a memcpy into a float[2] (which GCC compiles to spills) on an AVX-512 Zen 4.
   The values, and so the arithmetic, are unchanged. */
static inline void pd_pair_f32(const float* p, float* a, float* b)
{
    uint64_t v;
    uint32_t lo, hi;
    memcpy(&v, p, sizeof v);
    lo = (uint32_t)v;
    hi = (uint32_t)(v >> 32);
    memcpy(a, &lo, sizeof lo);
    memcpy(b, &hi, sizeof hi);
}

static inline void pd_pair_f64(const double* p, double* a, double* b)
{
    *a = p[0];
    *b = p[1];
}

#define DEFINE_COLUMNS(NAME, T, OUT_T, STORE, PAIR)                                              \
static void NAME##_row(const T* restrict src, const int32_t* restrict corner,                    \
                       const T* restrict w1, const T* restrict w2, const T* restrict w3,         \
                       const T* restrict w4, const T* restrict mask, OUT_T* restrict out,        \
                       int64_t count, int64_t padded_w)                                          \
{                                                                                                \
    for (int64_t p = 0; p < count; ++p) {                                                        \
        const int64_t i = corner[p];                                                             \
        T v1, v2, v3, v4;                                                                        \
        PAIR(src + i, &v1, &v2);                                                                 \
        PAIR(src + i + padded_w, &v3, &v4);                                                      \
        const T val = w1[p] * v1 + w2[p] * v2 + w3[p] * v3 + w4[p] * v4;                         \
        out[p] = STORE(mask[p] * val);                                                           \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
void NAME(const T* padded, int64_t plane, int64_t padded_w, const T* mask, const int32_t* corner, \
          const T* weights, int64_t taps, int64_t positions, int64_t channels, int64_t threads,  \
          OUT_T* columns, int64_t ld, int64_t col0)                                              \
{                                                                                                \
    const int64_t n = taps * positions;                                                          \
    PARALLEL_FOR(threads)                                                                        \
    for (int64_t c = 0; c < channels; ++c) {                                                     \
        for (int64_t k = 0; k < taps; ++k) {                                                     \
            const int64_t q = k * positions;                                                     \
            NAME##_row(padded + c * plane, corner + q, weights + q, weights + n + q,             \
                       weights + 2 * n + q, weights + 3 * n + q, mask + q,                       \
                       columns + (c * taps + k) * ld + col0, positions, padded_w);               \
        }                                                                                        \
    }                                                                                            \
}

DEFINE_PREPARE(f32, float, floorf)
DEFINE_PREPARE(f64, double, floor)
DEFINE_COLUMNS(pd_dcn_columns_f32, float, float, STORE_SAME, pd_pair_f32)
DEFINE_COLUMNS(pd_dcn_columns_f64, double, double, STORE_SAME, pd_pair_f64)
/* bfloat16 columns from float32 sampling, for a bfloat16 GEMM (autocast inference). */
DEFINE_COLUMNS(pd_dcn_columns_f32_bf16, float, uint16_t, STORE_BF16, pd_pair_f32)

/* Backward of one image, from the column gradient G = weight^T @ grad_out, shape (C*K, positions)
   (row c*K + k, leading dimension `positions`). With g = G[c*K + k][p], m = mask[k][p], the
   corner values v1..v4 of (k, p) in channel c and the fractional parts ly, lx:

       grad_input at the four corners += g*m*w1 .. g*m*w4        (column to image)
       grad_mask[k][p]                += g * value
       grad_offset[2k][p]   (dy)      += g*m * (hx*(v3 - v1) + lx*(v4 - v2))
       grad_offset[2k+1][p] (dx)      += g*m * (hy*(v2 - v1) + ly*(v4 - v3))

   computed as top = v1 + lx*(v2 - v1), bottom = v3 + lx*(v4 - v3): dy = bottom - top,
   value = top + ly*dy, dx = (v2 - v1) + ly*((v4 - v3) - (v2 - v1)). The value counts only inside
   the sampling range (some weight nonzero); the coordinate gradient also on the edges y = -1 and
   x = -1, as torchvision's does.

   `corner`, `weights` and `frac` (ly, lx) come from `prepare` with a non-NULL `frac`. Threads take
   disjoint ranges of channels, so each grad_input plane (the zero-padded layout of the input; the
   caller keeps the interior) has one writer; the three per-(k, p) sums over channels go into one
   private accumulator block per thread (`partial`, room for `threads` blocks of 3*K*positions),
   added up at the end. The tap loop is outside the channel loop, so one tap's per-position arrays
   stay in cache while a thread's channels stream through, and channels go four at a time so the
   per-position loads and accumulator updates are shared. `grad_padded` may be NULL (no input
   gradient wanted). Summation order differs from torchvision's: equal to rounding, not bitwise. */
#define PD_BACKWARD_CHANNEL(J, T, PAIR, SCATTER)                                                           \
    {                                                                                            \
        T v1, v2, v3, v4;                                                                        \
        PAIR(src[J] + i, &v1, &v2);                                                              \
        PAIR(src[J] + i + padded_w, &v3, &v4);                                                   \
        const T e21 = v2 - v1, e43 = v4 - v3;                                                    \
        const T top = v1 + lx * e21, bottom = v3 + lx * e43;                                     \
        const T dy = bottom - top;                                                               \
        const T g = grad[J][p];                                                                  \
        sum_m += g * (top + ly * dy);                                                            \
        sum_y += g * dy;                                                                         \
        sum_x += g * (e21 + ly * (e43 - e21));                                                   \
        if (SCATTER) {                                                                           \
            T* restrict d = dst[J];                                                              \
            const T gm = g * m;                                                                  \
            d[i] += gm * a1;                                                                     \
            d[i + 1] += gm * a2;                                                                 \
            d[i + padded_w] += gm * a3;                                                          \
            d[i + padded_w + 1] += gm * a4;                                                      \
        }                                                                                        \
    }

#define DEFINE_BACKWARD_ROWS(NAME, T, PAIR, SCATTER, LANES)                                      \
static void NAME(const T* const* src, const int32_t* restrict corner, const T* restrict w1,      \
                 const T* restrict w2, const T* restrict w3, const T* restrict w4,               \
                 const T* restrict fy, const T* restrict fx, const T* restrict mask,             \
                 const T* const* grad, T* restrict acc_y, T* restrict acc_x, T* restrict acc_m,  \
                 T* const* dst, int64_t count, int64_t padded_w)                                 \
{                                                                                                \
    for (int64_t p = 0; p < count; ++p) {                                                        \
        const int64_t i = corner[p];                                                             \
        const T a1 = w1[p], a2 = w2[p], a3 = w3[p], a4 = w4[p];                                  \
        const T ly = fy[p], lx = fx[p], m = mask[p];                                             \
        T sum_m = 0, sum_y = 0, sum_x = 0;                                                       \
        PD_BACKWARD_CHANNEL(0, T, PAIR, SCATTER)                                                              \
        if (LANES == 4) {                                                                        \
            PD_BACKWARD_CHANNEL(1, T, PAIR, SCATTER)                                                          \
            PD_BACKWARD_CHANNEL(2, T, PAIR, SCATTER)                                                          \
            PD_BACKWARD_CHANNEL(3, T, PAIR, SCATTER)                                                          \
        }                                                                                        \
        const int inside = a1 != 0 || a2 != 0 || a3 != 0 || a4 != 0;                             \
        acc_m[p] += inside ? sum_m : (T)0;                                                       \
        acc_y[p] += m * sum_y;                                                                   \
        acc_x[p] += m * sum_x;                                                                   \
    }                                                                                            \
}

#define DEFINE_BACKWARD(SUFFIX, T, PAIR)                                                         \
DEFINE_BACKWARD_ROWS(pd_dcn_backward4_in_##SUFFIX, T, PAIR, 1, 4)                                \
DEFINE_BACKWARD_ROWS(pd_dcn_backward1_in_##SUFFIX, T, PAIR, 1, 1)                                \
DEFINE_BACKWARD_ROWS(pd_dcn_backward4_##SUFFIX, T, PAIR, 0, 4)                                   \
DEFINE_BACKWARD_ROWS(pd_dcn_backward1_##SUFFIX, T, PAIR, 0, 1)                                   \
                                                                                                 \
void pd_dcn_backward_##SUFFIX(const T* padded, int64_t plane, int64_t padded_w, const T* mask,   \
                              const int32_t* corner, const T* weights, const T* frac,            \
                              const T* grad_columns, int64_t taps, int64_t positions,            \
                              int64_t channels, int64_t threads, T* grad_padded, T* partial,     \
                              T* grad_offset, T* grad_mask)                                      \
{                                                                                                \
    const int64_t n = taps * positions;                                                          \
    int64_t team = 1;                                                                            \
    PARALLEL(threads)                                                                            \
    {                                                                                            \
        const int64_t tid = THREAD_NUM();                                                        \
        const int64_t size = THREAD_COUNT();                                                     \
        if (tid == 0)                                                                            \
            team = size;                                                                         \
        T* acc = partial + tid * 3 * n;                                                          \
        const int64_t c0 = channels * tid / size, c1 = channels * (tid + 1) / size;              \
        memset(acc, 0, (size_t)(3 * n) * sizeof(T));                                             \
        if (grad_padded)                                                                         \
            memset(grad_padded + c0 * plane, 0, (size_t)((c1 - c0) * plane) * sizeof(T));        \
        for (int64_t k = 0; k < taps; ++k) {                                                     \
            const int64_t q = k * positions;                                                     \
            for (int64_t c = c0; c < c1;) {                                                      \
                const int64_t lanes = c1 - c >= 4 ? 4 : 1;                                       \
                const T* src[4];                                                                 \
                const T* grad[4];                                                                \
                T* dst[4] = {NULL, NULL, NULL, NULL};                                            \
                for (int64_t j = 0; j < lanes; ++j) {                                            \
                    src[j] = padded + (c + j) * plane;                                           \
                    grad[j] = grad_columns + ((c + j) * taps + k) * positions;                   \
                    if (grad_padded)                                                             \
                        dst[j] = grad_padded + (c + j) * plane;                                  \
                }                                                                                \
                void (*row)(const T* const*, const int32_t* restrict, const T* restrict,         \
                            const T* restrict, const T* restrict, const T* restrict,             \
                            const T* restrict, const T* restrict, const T* restrict,             \
                            const T* const*, T* restrict, T* restrict, T* restrict, T* const*,   \
                            int64_t, int64_t);                                                   \
                if (grad_padded)                                                                 \
                    row = lanes == 4 ? pd_dcn_backward4_in_##SUFFIX : pd_dcn_backward1_in_##SUFFIX; \
                else                                                                             \
                    row = lanes == 4 ? pd_dcn_backward4_##SUFFIX : pd_dcn_backward1_##SUFFIX;    \
                row(src, corner + q, weights + q, weights + n + q, weights + 2 * n + q,          \
                    weights + 3 * n + q, frac + q, frac + n + q, mask + q, grad, acc + q,        \
                    acc + n + q, acc + 2 * n + q, dst, positions, padded_w);                     \
                c += lanes;                                                                      \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    PARALLEL_FOR(threads)                                                                        \
    for (int64_t q = 0; q < n; ++q) {                                                            \
        const int64_t k = q / positions, p = q % positions;                                      \
        T dy = 0, dx = 0, dm = 0;                                                                \
        for (int64_t t = 0; t < team; ++t) {                                                     \
            const T* acc = partial + t * 3 * n;                                                  \
            dy += acc[q];                                                                        \
            dx += acc[n + q];                                                                    \
            dm += acc[2 * n + q];                                                                \
        }                                                                                        \
        grad_offset[(2 * k) * positions + p] = dy;                                               \
        grad_offset[(2 * k + 1) * positions + p] = dx;                                           \
        grad_mask[q] = dm;                                                                       \
    }                                                                                            \
}

DEFINE_BACKWARD(f32, float, pd_pair_f32)
DEFINE_BACKWARD(f64, double, pd_pair_f64)
