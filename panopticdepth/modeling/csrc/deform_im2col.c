/* Modulated deformable im2col (DCNv2) for the CPU, bit-for-bit equal to torchvision's.

   torchvision's CPU kernel computes, for every input channel c, kernel tap k and output position p,
       columns[c*K + k][p] = mask[k][p] * (w1*v1 + w2*v2 + w3*v3 + w4*v4)
   with the bilinear weights w and corner values v of the sampling point
       y = (oy*stride_h - pad_h + i*dil_h) + offset_y,  x = (ox*stride_w - pad_w + j*dil_w) + offset_x
   in one single-threaded loop that redoes the coordinate work for every channel. Here the same
   floating-point operations, in the same order, are split in two phases:

   1. `prepare`: per (k, p), once: the top-left corner's flat index into the zero-padded channel
      plane and the four weights (all 0 for a point outside (-1, H) x (-1, W)).
   2. `columns`: per channel (threads take disjoint channels) and tap, along the positions: two
      paired loads, the weighted sum and the mask product, written where torchvision's column
      matrix has them (row c*K + k, column col0 + p).

   The caller pads every channel plane with one zero row on top, two at the bottom and one zero
   column on each side, so a corner outside the image reads 0 exactly as torchvision's bounds
   tests do, and a point outside the sampling range reads four zeros with four zero weights.
   Must be compiled with -ffp-contract=off: a fused multiply-add would round differently. */

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Built with -fopenmp, the library links libgomp.so.1, which resolves to the copy PyTorch has
   already loaded: one thread pool for PyTorch, MKL and this kernel, no threads spinning against
   each other. Without OpenMP the loops run serially. */
#ifdef _OPENMP
#define PRAGMA(x) _Pragma(#x)
#define PARALLEL_FOR(threads) PRAGMA(omp parallel for num_threads((int)(threads)) schedule(static))
#else
#define PARALLEL_FOR(threads)
#endif

#define DEFINE_PREPARE(SUFFIX, T, FLOOR)                                                         \
void pd_dcn_prepare_##SUFFIX(const T* offset, int64_t height, int64_t width, int64_t out_h,      \
                             int64_t out_w, int64_t kernel_h, int64_t kernel_w, int64_t stride_h, \
                             int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,      \
                             int64_t dil_w, int64_t threads, int32_t* corner, T* weights)        \
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
                T w1 = 0, w2 = 0, w3 = 0, w4 = 0;                                                \
                if (!(y <= -1 || (T)height <= y || x <= -1 || (T)width <= x)) {                  \
                    const int64_t y_low = (int64_t)FLOOR(y);                                     \
                    const int64_t x_low = (int64_t)FLOOR(x);                                     \
                    const T ly = y - (T)y_low, lx = x - (T)x_low;                                \
                    const T hy = (T)1 - ly, hx = (T)1 - lx;                                      \
                    w1 = hy * hx;                                                                \
                    w2 = hy * lx;                                                                \
                    w3 = ly * hx;                                                                \
                    w4 = ly * lx;                                                                \
                    top_left = (int32_t)((y_low + 1) * padded_w + (x_low + 1));                  \
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
