// Winograd F(4x4, 3x3) and F(2x2, 5x5) convolutions of NHWC float32 tiles (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2015), built once per instruction set: compile with -DWINO_ISA=avx512|avx2|generic
// and the matching -march. Per block of 64 output tiles: the 6x6 input patches are transformed (B^T d B) into 36
// matrices [tiles, c] that stay in cache, multiplied by the 36 transformed kernel matrices [c, k] (u = G g G^T,
// computed by the caller, laid out as winograd_api.h says), and the 36 products transformed back (A^T m A) into 4x4
// (or 2x2) output pixels: 36 multiplies per 16 outputs instead of 144 (per 4 instead of 100), which is where the speed
// comes from. Both use the points 0, 1, -1, 2, -2 and infinity, so they share B; channels go along the vector lanes.
#include "winograd_api.h"

#if !defined(WINO_ISA)
#error "compile with -DWINO_ISA=avx512, avx2 or generic"
#endif

namespace inception_winograd {
namespace WINO_ISA {
namespace {

// Lanes per vector and vectors per register block of the product: 16 x 4 (AVX-512, 32 registers), 8 x 2 (AVX2,
// 16 registers), 4 x 2 (SSE2). Channel counts are multiples of 16, so every lane count divides them.
#if defined(__AVX512F__)
constexpr int kLanes = 16, kMaxVectors = 4;
#elif defined(__AVX2__)
constexpr int kLanes = 8, kMaxVectors = 2;
#else
constexpr int kLanes = 4, kMaxVectors = 2;
#endif
constexpr int kRows = 6;  // output tiles per register block

typedef float vf __attribute__((vector_size(kLanes * 4)));
typedef float vfu __attribute__((vector_size(kLanes * 4), aligned(4), may_alias));
inline vf Load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void Store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// V = B^T d B for one 6x6 patch; V[p] goes to out + p * stride.
inline void InputTransform(const vf d[6][6], float* out, int64_t stride) {
  vf t[6][6];
  for (int j = 0; j < 6; ++j) {
    const vf d0 = d[0][j], d1 = d[1][j], d2 = d[2][j], d3 = d[3][j], d4 = d[4][j], d5 = d[5][j];
    t[0][j] = 4.f * d0 - 5.f * d2 + d4;
    t[1][j] = d3 + d4 - 4.f * (d1 + d2);
    t[2][j] = 4.f * (d1 - d2) + d4 - d3;
    t[3][j] = 2.f * (d3 - d1) + d4 - d2;
    t[4][j] = 2.f * (d1 - d3) + d4 - d2;
    t[5][j] = 4.f * d1 - 5.f * d3 + d5;
  }
  for (int i = 0; i < 6; ++i) {
    const vf d0 = t[i][0], d1 = t[i][1], d2 = t[i][2], d3 = t[i][3], d4 = t[i][4], d5 = t[i][5];
    float* row = out + i * 6 * stride;
    Store(row, 4.f * d0 - 5.f * d2 + d4);
    Store(row + stride, d3 + d4 - 4.f * (d1 + d2));
    Store(row + 2 * stride, 4.f * (d1 - d2) + d4 - d3);
    Store(row + 3 * stride, 2.f * (d3 - d1) + d4 - d2);
    Store(row + 4 * stride, 2.f * (d1 - d3) + d4 - d2);
    Store(row + 5 * stride, 4.f * d1 - 5.f * d3 + d5);
  }
}

// o = A^T m A for one tile's 36 products m[p] = in[p * stride]: F(4x4, 3x3).
inline void OutputTransform(const float* in, int64_t stride, vf o[4][4]) {
  vf t[4][6];
  for (int j = 0; j < 6; ++j) {
    const vf m0 = Load(in + j * stride), m1 = Load(in + (6 + j) * stride), m2 = Load(in + (12 + j) * stride),
             m3 = Load(in + (18 + j) * stride), m4 = Load(in + (24 + j) * stride), m5 = Load(in + (30 + j) * stride);
    const vf a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
    t[0][j] = m0 + a + c;
    t[1][j] = b + 2.f * d;
    t[2][j] = a + 4.f * c;
    t[3][j] = b + 8.f * d + m5;
  }
  for (int i = 0; i < 4; ++i) {
    const vf a = t[i][1] + t[i][2], b = t[i][1] - t[i][2], c = t[i][3] + t[i][4], d = t[i][3] - t[i][4];
    o[i][0] = t[i][0] + a + c;
    o[i][1] = b + 2.f * d;
    o[i][2] = a + 4.f * c;
    o[i][3] = b + 8.f * d + t[i][5];
  }
}

// The same for F(2x2, 5x5): A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]].
inline void OutputTransform(const float* in, int64_t stride, vf o[2][2]) {
  vf t[2][6];
  for (int j = 0; j < 6; ++j) {
    const vf m0 = Load(in + j * stride), m1 = Load(in + (6 + j) * stride), m2 = Load(in + (12 + j) * stride),
             m3 = Load(in + (18 + j) * stride), m4 = Load(in + (24 + j) * stride), m5 = Load(in + (30 + j) * stride);
    t[0][j] = m0 + (m1 + m2) + (m3 + m4);
    t[1][j] = (m1 - m2) + 2.f * (m3 - m4) + m5;
  }
  for (int i = 0; i < 2; ++i) {
    o[i][0] = t[i][0] + (t[i][1] + t[i][2]) + (t[i][3] + t[i][4]);
    o[i][1] = (t[i][1] - t[i][2]) + 2.f * (t[i][3] - t[i][4]) + t[i][5];
  }
}

// out[R, NV * kLanes] = a[R, depth] (row stride lda) . b[depth, NV * kLanes] (row stride ldb), held in registers.
template <int R, int NV>
inline void Block(const float* a, int64_t lda, const float* b, int64_t ldb, float* out, int64_t ldo, int64_t depth) {
  vf acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vf{};
  for (int64_t i = 0; i < depth; ++i) {
    vf bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = Load(b + i * ldb + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const float s = a[r * lda + i];
      for (int v = 0; v < NV; ++v) acc[r][v] += s * bv[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) Store(out + r * ldo + v * kLanes, acc[r][v]);
}

template <int NV>
void Rows(const float* a, int64_t lda, const float* b, int64_t ldb, float* out, int64_t ldo, int64_t rows,
          int64_t depth) {
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows) Block<kRows, NV>(a + r * lda, lda, b, ldb, out + r * ldo, ldo, depth);
  a += r * lda, out += r * ldo;
  switch (rows - r) {
    case 5: Block<5, NV>(a, lda, b, ldb, out, ldo, depth); break;
    case 4: Block<4, NV>(a, lda, b, ldb, out, ldo, depth); break;
    case 3: Block<3, NV>(a, lda, b, ldb, out, ldo, depth); break;
    case 2: Block<2, NV>(a, lda, b, ldb, out, ldo, depth); break;
    case 1: Block<1, NV>(a, lda, b, ldb, out, ldo, depth); break;
    default: break;
  }
}

// out[rows, cols] = a[rows, depth] . b[depth, cols]; cols is a multiple of kLanes.
void Product(const float* a, int64_t lda, const float* b, int64_t ldb, float* out, int64_t ldo, int64_t rows,
             int64_t cols, int64_t depth) {
  for (int64_t j = 0; j < cols; j += kMaxVectors * kLanes) {
    switch (Min(kMaxVectors, (cols - j) / kLanes)) {
      case 4: Rows<4>(a, lda, b + j, ldb, out + j, ldo, rows, depth); break;
      case 3: Rows<3>(a, lda, b + j, ldb, out + j, ldo, rows, depth); break;
      case 2: Rows<2>(a, lda, b + j, ldb, out + j, ldo, rows, depth); break;
      default: Rows<1>(a, lda, b + j, ldb, out + j, ldo, rows, depth); break;
    }
  }
}

// kOut x kOut output tiles from 6x6 input patches: kOut = 4 for 3x3 kernels, 2 for 5x5.
template <int kOut>
void Run(const float* x, const float* u, float* y, const Geometry& g, int64_t t0, int64_t t1, float* scratch) {
  constexpr int64_t kPad = (6 - kOut) / 2;
  const int64_t th = (g.h + kOut - 1) / kOut, tw = (g.w + kOut - 1) / kOut, tiles = t1 - t0, c = g.c, k = g.k;
  float* v = scratch;                            // [36, tiles, c]: transformed input patches
  float* m = scratch + 36 * kTileBlock * c;      // [36, tiles, kColumnBlock]: products
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t t = t0 + i, n = t / (th * tw), y0 = (t / tw) % th * kOut - kPad, x0 = t % tw * kOut - kPad;
    const bool inside = y0 >= 0 && x0 >= 0 && y0 + 6 <= g.h && x0 + 6 <= g.w;
    for (int64_t c0 = 0; c0 < c; c0 += kLanes) {
      vf d[6][6];
      for (int a = 0; a < 6; ++a)
        for (int b = 0; b < 6; ++b) {
          const int64_t yy = y0 + a, xx = x0 + b;
          d[a][b] = (inside || (yy >= 0 && yy < g.h && xx >= 0 && xx < g.w))
                        ? Load(x + ((n * g.h + yy) * g.w + xx) * c + c0)
                        : vf{};
        }
      InputTransform(d, v + i * c + c0, tiles * c);
    }
  }
  for (int64_t k0 = 0; k0 < k; k0 += kColumnBlock) {
    const int64_t cols = Min(kColumnBlock, k - k0);
    for (int p = 0; p < 36; ++p)
      Product(v + p * tiles * c, c, u + 36 * c * k0 + p * c * cols, cols, m + p * tiles * kColumnBlock, kColumnBlock,
              tiles, cols, c);
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t t = t0 + i, n = t / (th * tw), ty = (t / tw) % th * kOut, tx = t % tw * kOut;
      for (int64_t j = 0; j < cols; j += kLanes) {
        vf o[kOut][kOut];
        OutputTransform(m + i * kColumnBlock + j, tiles * kColumnBlock, o);
        for (int a = 0; a < kOut && ty + a < g.h; ++a)
          for (int b = 0; b < kOut && tx + b < g.w; ++b)
            Store(y + ((n * g.h + ty + a) * g.w + tx + b) * k + k0 + j, o[a][b]);
      }
    }
  }
}

}  // namespace

void RunTilesImpl(const float* x, const float* u, float* y, const Geometry& g, int64_t t0, int64_t t1,
                  float* scratch) {
  if (g.r == 5)
    Run<2>(x, u, y, g, t0, t1, scratch);
  else
    Run<4>(x, u, y, g, t0, t1, scratch);
}

}  // namespace WINO_ISA
}  // namespace inception_winograd
