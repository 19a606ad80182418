// Pairwise IoU of axis-aligned boxes (x1, y1, x2, y2). Plain C++: no Python, no pybind11.
#pragma once
#include <cstdint>

namespace dprl {

// A box takes part in IoU only if all four coordinates are finite and it has positive width
// and height; any other box (a NaN row for "no box parsed", swapped corners, zero area) has
// IoU 0 with everything. This keeps rewards finite whatever a completion contained.
bool box_is_valid(const float* box);

// IoU of two boxes, computed in double and returned as float; 0 if either box is invalid.
float iou_one(const float* a, const float* b);

// out[i * m + j] = IoU(a[i], b[j]) for a: [n, 4], b: [m, 4], out: [n, m], all row-major.
// Large problems are split by rows across up to `max_threads` threads (0 = hardware count).
void box_iou_pairwise(const float* a, int64_t n, const float* b, int64_t m, float* out,
                      int max_threads = 0);

}  // namespace dprl
