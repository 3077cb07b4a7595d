// What the layer's native kernels (depthwise.cc, channels.cc) share: their status codes, the
// vector-width clones and the worker split over torch's OpenMP team.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <new>
#include <thread>
#include <vector>

#include "common/errors.h"

namespace ncnn_onnx::layer {

enum Status : int { kOk = 0, kBadShape = 1, kNullTensor = 2, kOutOfMemory = 3, kInternal = 4 };

// The vector width is picked at load time (GCC/Clang function multiversioning): the kernels are plain
// C++ (or GCC vector types) and the compiler vectorizes each clone for its instruction set. Off under
// AddressSanitizer, which does not support the clones' resolvers.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__SANITIZE_ADDRESS__)
#define NCNN_ONNX_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), flatten))
#else
#define NCNN_ONNX_CLONES
#endif

// libgomp's entry points, found only where the process has already loaded it (torch's CPU builds do, for
// their intra-op threads). Running on torch's own OpenMP team matters: after a torch op its workers spin
// for a while before they sleep, and threads of our own would fight them for the cores (measured: a 3x3
// depthwise forward at 2 threads took 4.4 ms beside spinning workers, 1.4 ms on the team). The library
// never loads libgomp itself (onnxruntime sessions do not need it); without it, std::thread serves.
struct Gomp {
  void (*parallel)(void (*)(void*), void*, unsigned, unsigned) = nullptr;  // GOMP_parallel
  int (*thread_num)() = nullptr;                                           // omp_get_thread_num
  int (*num_threads)() = nullptr;                                          // omp_get_num_threads
};

const Gomp& LoadedGomp();

// Splits the items [0, items) into contiguous runs, one per worker, and calls fn(begin, end) for each:
// on the process's OpenMP team when there is one, else on threads started here (the caller's thread takes
// the first run; a thread that cannot be started leaves its run to the caller's thread). Returns kOk, or
// the status of an exception a run threw.
template <typename Fn>
int Parallel(int64_t items, int32_t threads, Fn fn) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, items));
  std::atomic<int> status{kOk};
  auto run = [&](int64_t t) {
    try {
      fn(items * t / workers, items * (t + 1) / workers);
    } catch (const std::bad_alloc&) {
      status = kOutOfMemory;
    } catch (...) {
      status = kInternal;
    }
  };
  const Gomp& gomp = LoadedGomp();
  if (workers > 1 && gomp.parallel != nullptr) {
    struct Team {
      decltype(run)* task;
      const Gomp* gomp;
      int64_t workers;
    } team{&run, &gomp, workers};
    gomp.parallel(
        [](void* data) {
          const Team& t = *static_cast<Team*>(data);
          // The team may be smaller than asked (nested or limited): each member takes every size-th run.
          const int64_t size = std::max(1, t.gomp->num_threads());
          for (int64_t r = t.gomp->thread_num(); r < t.workers; r += size) (*t.task)(r);
        },
        &team, static_cast<unsigned>(workers), 0);
    return status;
  }
  std::vector<std::thread> pool;
  std::vector<int64_t> inline_runs = {0};
  for (int64_t t = 1; t < workers; ++t) {
    try {
      pool.emplace_back(run, t);
    } catch (...) {
      inline_runs.push_back(t);
    }
  }
  for (const int64_t t : inline_runs) run(t);
  for (std::thread& th : pool) th.join();
  return status;
}

// What the last kBadShape of this thread said (ncnn_onnx_layer_error returns it).
void RememberError(const char* message);

// Runs fn(), turning the exceptions a size check or an allocation throws into status codes.
template <typename Fn>
int Guarded(Fn fn) {
  try {
    RememberError("");
    return fn();
  } catch (const InvalidArgument& e) {
    RememberError(e.what());
    return kBadShape;
  } catch (const std::bad_alloc&) {
    return kOutOfMemory;
  } catch (...) {
    return kInternal;
  }
}

}  // namespace ncnn_onnx::layer
