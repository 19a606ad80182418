// Pairwise IoU of axis-aligned boxes (x1, y1, x2, y2). Plain C++: no Python, no pybind11.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace dprl {

// A box takes part in IoU only if all four coordinates are finite and it has positive width
// and height; any other box (a NaN row for "no box parsed", swapped corners, zero area) has
// IoU 0 with everything. This keeps rewards finite whatever a completion contained.
// Defined here so the reward loops inline them: a call per pair was a tenth of the fused
// reward pass on ~250-character completions.
inline bool box_is_valid(const float* box) {
  for (int k = 0; k < 4; ++k) {
    if (!std::isfinite(box[k])) return false;
  }
  return box[2] > box[0] && box[3] > box[1];
}

// IoU of two boxes, computed in double and returned as float; 0 if either box is invalid.
inline float iou_one(const float* a, const float* b) {
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

// out[i * m + j] = IoU(a[i], b[j]) for a: [n, 4], b: [m, 4], out: [n, m], all row-major.
// Large problems are split by rows across up to `max_threads` threads (0 = hardware count).
void box_iou_pairwise(const float* a, int64_t n, const float* b, int64_t m, float* out,
                      int max_threads = 0);

}  // namespace dprl
