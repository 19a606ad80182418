#include "rewards.h"

#include <algorithm>

#include "box_iou.h"
#include "parallel.h"

namespace dprl {
namespace {
// Measured on a 2-core x86 machine: scanning runs at several GB/s, so a thread pays for its
// start (~50 us) once it has a few hundred KiB of text.
constexpr int64_t kBytesPerThread = 256 << 10;
constexpr int64_t kPairsPerThread = 1 << 16;
}  // namespace

void analyze_batch(const TextBatch& texts, const ParseOptions& opt, const double* image_wh,
                   const double* input_wh, float* boxes, uint8_t* format, int max_threads) {
  const bool pixels = opt.coords == Coords::kPixels;
  const int64_t threads = threads_for(texts.n, texts.total_bytes, kBytesPerThread, max_threads);
  parallel_for(texts.n, threads, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const char* s = texts.ptr[i];
      const int64_t n = texts.len[i];
      format[i] = format_ok(s, n) ? 1 : 0;
      parse_box(s, n, opt, pixels ? image_wh + 2 * i : nullptr,
                pixels && input_wh ? input_wh + 2 * i : nullptr, boxes + 4 * i);
    }
  });
}

void letters_batch(const TextBatch& texts, bool answer_only, char* letters, int max_threads) {
  const int64_t threads = threads_for(texts.n, texts.total_bytes, kBytesPerThread, max_threads);
  parallel_for(texts.n, threads, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) letters[i] = parse_letter(texts.ptr[i], texts.len[i], answer_only);
  });
}

void best_iou_ragged(const float* pred, int64_t n, const float* gt, const int64_t* offsets,
                     float* out, int max_threads) {
  const int64_t pairs = n > 0 ? offsets[n] - offsets[0] : 0;
  const int64_t threads = threads_for(n, pairs, kPairsPerThread, max_threads);
  parallel_for(n, threads, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float best = 0.0f;
      for (int64_t j = offsets[i]; j < offsets[i + 1]; ++j) {
        best = std::max(best, iou_one(pred + 4 * i, gt + 4 * j));
      }
      out[i] = best;
    }
  });
}

}  // namespace dprl
