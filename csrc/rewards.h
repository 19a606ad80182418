// Batched reward-side work over many completions at once. Plain C++: no Python, no pybind11.
#pragma once
#include <cstdint>

#include "box_parse.h"

namespace dprl {

// A batch of texts as (pointer, byte length) pairs; the bytes are borrowed, not copied.
struct TextBatch {
  const char* const* ptr = nullptr;  // [n]
  const int64_t* len = nullptr;      // [n]
  int64_t n = 0;
  int64_t total_bytes = 0;
};

// For every text: its box (boxes: [n, 4], NaN rows where none) and whether it follows the
// <think>..</think><answer>..</answer> format (format: [n], 0/1). image_wh / input_wh: [n, 2]
// (only read with Coords::kPixels; input_wh may be null). Batches over ~256 KiB of text are split
// across up to max_threads threads (0 = hardware count).
void analyze_batch(const TextBatch& texts, const ParseOptions& opt, const double* image_wh,
                   const double* input_wh, float* boxes, uint8_t* format, int max_threads = 0);

// letters: [n], the upper-case choice letter of each text or 0 (see parse_letter).
void letters_batch(const TextBatch& texts, bool answer_only, char* letters, int max_threads = 0);

// out[i] = max_j IoU(pred[i], gt[j]) over j in [offsets[i], offsets[i + 1]); 0 when that range
// is empty or no pair overlaps. pred: [n, 4], gt: [offsets[n], 4], offsets: [n + 1] ascending.
void best_iou_ragged(const float* pred, int64_t n, const float* gt, const int64_t* offsets,
                     float* out, int max_threads = 0);

// The built-in reward terms that score_batch computes (dprl/rewards/functions.py documents them
// and holds the same rules for the Python path).
enum class TermKind : int32_t {
  kFormat = 0,        // 0.5 for <think>..</think><answer>..</answer> + 0.5 for a box in the answer
  kIou = 1,           // best IoU over the sample's ground-truth boxes
  kIouThreshold = 2,  // IoU if IoU >= tau else 0
  kIouSquared = 3,    // IoU * IoU
  kAcc = 4,           // 1 if IoU >= tau else 0
};

struct RewardTerm {
  TermKind kind = TermKind::kFormat;
  float tau = 0.0f;
  float weight = 1.0f;
};

// Every term of a weighted reward in one pass over the texts: per text, parse the box, check
// the format, take the best IoU over gt[offsets[i]:offsets[i + 1]], then score each term.
// parts: [n_terms, n] (term-major, before weighting); total: [n], the float32 sum of
// weight * part in term order (as the Python path adds them). gt may be null when no term
// reads the IoU.
void score_batch(const TextBatch& texts, const ParseOptions& opt, const double* image_wh,
                 const double* input_wh, const float* gt, const int64_t* offsets,
                 const RewardTerm* terms, int64_t n_terms, float* parts, float* total,
                 int max_threads = 0);

}  // namespace dprl
