// The interface between the Winograd kernel's instruction-set builds (winograd_isa.cc, compiled once per ISA) and
// the XLA FFI handler (winograd_ffi.cc). Plain C types only: the ISA builds share no inline library code with the
// rest, so the linker cannot hand an AVX-512 copy of a shared function to a CPU without AVX-512.
#pragma once
#include <cstdint>

namespace inception_winograd {

// x [n, h, w, c] -> y [n, h, w, k], an r x r stride-1 convolution padded by (r - 1) / 2 on every side; r is 3
// (F(4x4, 3x3): 4x4 output tiles) or 5 (F(2x2, 5x5): 2x2 tiles). Both read 6x6 input patches.
struct Geometry {
  int64_t n, h, w, c, k, r;
};

constexpr int64_t kTileBlock = 64;   // output tiles transformed and multiplied together
constexpr int64_t kColumnBlock = 64; // output channels per pass over a tile block

// Scratch floats one worker needs for a block of tiles.
inline int64_t ScratchFloats(const Geometry& g) { return 36 * kTileBlock * (g.c + kColumnBlock); }

// Computes the output tiles [t0, t1) (t1 - t0 <= kTileBlock) of x with the transformed kernel u, [36, c, k] cut into
// blocks of kColumnBlock output channels, each block [36, c, width] contiguous: the panel one pass multiplies by is
// one stretch of memory (up to 30% faster than rows strided by k).
using RunTiles = void (*)(const float* x, const float* u, float* y, const Geometry& g, int64_t t0, int64_t t1,
                          float* scratch);

namespace avx512 { void RunTilesImpl(const float*, const float*, float*, const Geometry&, int64_t, int64_t, float*); }
namespace avx2 { void RunTilesImpl(const float*, const float*, float*, const Geometry&, int64_t, int64_t, float*); }
namespace generic { void RunTilesImpl(const float*, const float*, float*, const Geometry&, int64_t, int64_t, float*); }

}  // namespace inception_winograd
