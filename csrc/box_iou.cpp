#include "box_iou.h"

#include <algorithm>
#include <cmath>

#include "parallel.h"

namespace dprl {

bool box_is_valid(const float* box) {
  for (int k = 0; k < 4; ++k) {
    if (!std::isfinite(box[k])) return false;
  }
  return box[2] > box[0] && box[3] > box[1];
}

float iou_one(const float* a, const float* b) {
  if (!box_is_valid(a) || !box_is_valid(b)) return 0.0f;
  // double: float32 products of 1e19-sized coordinates overflow; doubles keep them finite.
  const double iw = std::min<double>(a[2], b[2]) - std::max<double>(a[0], b[0]);
  const double ih = std::min<double>(a[3], b[3]) - std::max<double>(a[1], b[1]);
  if (iw <= 0.0 || ih <= 0.0) return 0.0f;
  const double inter = iw * ih;
  const double area_a = (double(a[2]) - a[0]) * (double(a[3]) - a[1]);
  const double area_b = (double(b[2]) - b[0]) * (double(b[3]) - b[1]);
  const double uni = area_a + area_b - inter;
  if (!(uni > 0.0) || !std::isfinite(uni)) return 0.0f;
  return static_cast<float>(inter / uni);
}

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
