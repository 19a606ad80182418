#include "box_iou.h"

#include <algorithm>
#include <cmath>

#include "parallel.h"

namespace dprl {

namespace {
void rows(const float* a, int64_t lo, int64_t hi, const float* b, int64_t m, float* out) {
  for (int64_t i = lo; i < hi; ++i) {
    for (int64_t j = 0; j < m; ++j) out[i * m + j] = iou_one(a + 4 * i, b + 4 * j);
  }
}
}  // namespace

void box_iou_pairwise(const float* a, int64_t n, const float* b, int64_t m, float* out,
                      int max_threads) {
  constexpr int64_t kPairsPerThread = 1 << 16;
  const int64_t threads = threads_for(n, n * m, kPairsPerThread, max_threads);
  parallel_for(n, threads, [&](int64_t lo, int64_t hi) { rows(a, lo, hi, b, m, out); });
}

}  // namespace dprl
