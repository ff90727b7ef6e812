// XLA FFI handler for the Winograd convolutions (winograd_isa.cc): checks the shapes, picks the widest
// instruction set the CPU runs, and spreads blocks of output tiles over XLA's intra-op thread pool.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "winograd_api.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace inception_winograd {
namespace {

struct Isa {
  const char* name;
  RunTiles run;
};

bool CpuRuns(const char* isa) {
#if defined(__x86_64__) && defined(WINO_X86)
  __builtin_cpu_init();
  if (!std::strcmp(isa, "avx512"))
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  if (!std::strcmp(isa, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return !std::strcmp(isa, "generic");
}

// The widest build this CPU runs; INCEPTION_WINOGRAD_ISA=avx2|generic asks for a narrower one (tests use it).
Isa PickIsa() {
  static const Isa kAll[] = {
#if defined(__x86_64__) && defined(WINO_X86)
      {"avx512", avx512::RunTilesImpl},
      {"avx2", avx2::RunTilesImpl},
#endif
      {"generic", generic::RunTilesImpl},
  };
  const char* asked = std::getenv("INCEPTION_WINOGRAD_ISA");
  for (const Isa& isa : kAll)
    if ((!asked || !*asked || !std::strcmp(asked, isa.name)) && CpuRuns(isa.name)) return isa;
  return kAll[sizeof(kAll) / sizeof(kAll[0]) - 1];
}

const Isa& Chosen() {
  static const Isa isa = PickIsa();
  return isa;
}

// Work shared by the calling thread and the pool's: blocks are claimed from `next`, and the caller waits only for
// blocks already claimed, never for a task to start, so a pool busy with other work cannot deadlock it.
struct Job {
  const float *x, *u;
  float* y;
  Geometry g;
  int64_t tiles;
  RunTiles run;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex mu;
  std::condition_variable finished;
};

void Work(Job& job) {
  thread_local std::vector<float> scratch;
  const int64_t need = ScratchFloats(job.g);
  if (static_cast<int64_t>(scratch.size()) < need) scratch.resize(need);
  for (int64_t t; (t = job.next.fetch_add(kTileBlock)) < job.tiles;) {
    const int64_t end = t + kTileBlock < job.tiles ? t + kTileBlock : job.tiles;
    job.run(job.x, job.u, job.y, job.g, t, end, scratch.data());
    if (job.done.fetch_add(end - t) + (end - t) == job.tiles) {
      std::lock_guard<std::mutex> lock(job.mu);
      job.finished.notify_all();
    }
  }
}

ffi::Error Conv(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> u, ffi::ResultBuffer<ffi::F32> y,
                int64_t kernel_size) {
  const auto xd = x.dimensions(), ud = u.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || ud.size() != 1 || yd.size() != 4 || yd[0] != xd[0] || yd[1] != xd[1] || yd[2] != xd[2] ||
      ud[0] != 36 * xd[3] * yd[3])
    return ffi::Error::InvalidArgument(
        "inception_winograd_conv takes x [n, h, w, c] and u [36 * c * k] (winograd_api.h) and gives y [n, h, w, k]");
  if (kernel_size != 3 && kernel_size != 5)
    return ffi::Error::InvalidArgument("inception_winograd_conv computes 3x3 and 5x5 kernels, not " +
                                       std::to_string(kernel_size));
  const Geometry g{xd[0], xd[1], xd[2], xd[3], yd[3], kernel_size};
  if (g.c % 16 || g.k % 16)
    return ffi::Error::InvalidArgument("inception_winograd_conv needs channel counts that are multiples of 16, got " +
                                       std::to_string(g.c) + " -> " + std::to_string(g.k));
  auto job = std::make_shared<Job>();
  job->x = x.typed_data(), job->u = u.typed_data(), job->y = y->typed_data(), job->g = g;
  const int64_t out_tile = 7 - kernel_size;  // 4x4 output pixels per 6x6 patch for 3x3 kernels, 2x2 for 5x5
  job->tiles = g.n * ((g.h + out_tile - 1) / out_tile) * ((g.w + out_tile - 1) / out_tile);
  job->run = Chosen().run;
  if (job->tiles == 0) return ffi::Error::Success();
  const int64_t blocks = (job->tiles + kTileBlock - 1) / kTileBlock;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), blocks) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([job] { Work(*job); });
  Work(*job);
  std::unique_lock<std::mutex> lock(job->mu);
  job->finished.wait(lock, [&] { return job->done.load() == job->tiles; });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace inception_winograd

XLA_FFI_DEFINE_HANDLER_SYMBOL(InceptionWinogradConv, inception_winograd::Conv,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kernel_size"));

// The output channels per block of the transformed kernel's layout (winograd_api.h), for the caller that lays it out.
extern "C" int InceptionWinogradColumnBlock() { return static_cast<int>(inception_winograd::kColumnBlock); }

// The instruction set the handler uses on this CPU, for logs and tests.
extern "C" const char* InceptionWinogradIsa() { return inception_winograd::Chosen().name; }
