// Splits a batch of items across threads (the warm worker pool). Plain C++: no Python, no pybind11.
#pragma once
#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "worker_pool.h"

namespace dprl {

// How many threads a batch of `items` holding `work` units (bytes, pairs) deserves: one per
// `work_per_thread`, at least 1, at most `max_threads` (0 = hardware count) and `items`.
// Small batches stay on the calling thread: handing a slice to a worker costs a few us when
// it is warm and 50-300 us when it has gone to sleep.
inline int64_t threads_for(int64_t items, int64_t work, int64_t work_per_thread, int max_threads) {
  int64_t t = max_threads > 0 ? max_threads : std::max(1u, std::thread::hardware_concurrency());
  t = std::min<int64_t>(t, work / std::max<int64_t>(work_per_thread, 1));
  t = std::min<int64_t>(t, items);
  return std::max<int64_t>(t, 1);
}

// Chunks per thread of a batch run on the pool: enough that a worker which wakes late still
// finds work to share, few enough that taking a chunk (one atomic add) costs nothing.
constexpr int64_t kChunksPerThread = 8;

// Calls fn(lo, hi) on contiguous slices covering [0, n), on up to `threads` threads: the calling
// thread and warm pool workers take chunks in turn; std::threads, one slice each, only when the
// pool is busy with another caller or has too few workers for the request.
template <class Fn>
void parallel_for(int64_t n, int64_t threads, Fn fn) {
  if (threads <= 1 || n <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  struct Slices {
    Fn* fn;
    int64_t n, chunk;
  };
  const PartFn part = [](void* ctx, int64_t k) {
    const auto* s = static_cast<const Slices*>(ctx);
    (*s->fn)(k * s->chunk, std::min(s->n, (k + 1) * s->chunk));
  };
  const int64_t pool_chunk = (n + threads * kChunksPerThread - 1) / (threads * kChunksPerThread);
  Slices chunks{&fn, n, pool_chunk};
  if (pool_run((n + pool_chunk - 1) / pool_chunk, threads - 1, part, &chunks)) return;
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> own;
  for (int64_t lo = chunk; lo < n; lo += chunk) {
    own.emplace_back(fn, lo, std::min(n, lo + chunk));
  }
  fn(int64_t{0}, std::min(n, chunk));
  for (auto& t : own) t.join();
}

}  // namespace dprl
