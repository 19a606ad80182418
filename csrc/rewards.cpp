#include "rewards.h"

#include <algorithm>
#include <cmath>

#include "box_iou.h"
#include "parallel.h"

namespace dprl {
namespace {
// Measured on a 2-core x86 machine: scanning runs at several GB/s, so a thread pays for its
// start (~50 us) once it has a few hundred KiB of text.
constexpr int64_t kBytesPerThread = 256 << 10;
constexpr int64_t kPairsPerThread = 1 << 16;

// Text i's tags and box (the box read from the answer or the whole text, as opt says), and
// its per-text image sizes when coordinates are pixels (null otherwise).
struct ParsedText {
  TextTags tags;
  const double* image_wh;
  const double* input_wh;
};

inline ParsedText parse_text(const TextBatch& texts, int64_t i, const ParseOptions& opt,
                             const double* image_wh, const double* input_wh, float* box) {
  const bool pixels = opt.coords == Coords::kPixels;
  const char* s = texts.ptr[i];
  const int64_t n = texts.len[i];
  ParsedText out{scan_tags(s, n),  // one walk over the tags for the answer span and the format
                 pixels ? image_wh + 2 * i : nullptr,
                 pixels && input_wh ? input_wh + 2 * i : nullptr};
  parse_box(s, n, opt.answer_only ? out.tags.answer : Span{0, n, true}, opt, out.image_wh,
            out.input_wh, box);
  return out;
}
}  // namespace

void analyze_batch(const TextBatch& texts, const ParseOptions& opt, const double* image_wh,
                   const double* input_wh, float* boxes, uint8_t* format, int max_threads) {
  const int64_t threads = threads_for(texts.n, texts.total_bytes, kBytesPerThread, max_threads);
  parallel_for(texts.n, threads, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      format[i] = parse_text(texts, i, opt, image_wh, input_wh, boxes + 4 * i).tags.format ? 1 : 0;
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

namespace {
bool has_nan(const float* box) {
  return std::isnan(box[0]) || std::isnan(box[1]) || std::isnan(box[2]) || std::isnan(box[3]);
}
}  // namespace

void score_batch(const TextBatch& texts, const ParseOptions& opt, const double* image_wh,
                 const double* input_wh, const float* gt, const int64_t* offsets,
                 const RewardTerm* terms, int64_t n_terms, float* parts, float* total,
                 int max_threads) {
  bool need_format = false, need_iou = false;
  for (int64_t k = 0; k < n_terms; ++k) {
    (terms[k].kind == TermKind::kFormat ? need_format : need_iou) = true;
  }
  const int64_t threads = threads_for(texts.n, texts.total_bytes, kBytesPerThread, max_threads);
  parallel_for(texts.n, threads, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float box[4];
      const ParsedText t = parse_text(texts, i, opt, image_wh, input_wh, box);
      float format = 0.0f;
      if (need_format) {
        float answer_box[4];
        const float* in_ans = box;
        if (!opt.answer_only) {  // the format term's box half always reads the answer
          parse_box(texts.ptr[i], texts.len[i], t.tags.answer, opt, t.image_wh, t.input_wh, answer_box);
          in_ans = answer_box;
        }
        format = 0.5f * (t.tags.format ? 1.0f : 0.0f) + 0.5f * (has_nan(in_ans) ? 0.0f : 1.0f);
      }
      float iou = 0.0f;
      if (need_iou) {
        for (int64_t j = offsets[i]; j < offsets[i + 1]; ++j) iou = std::max(iou, iou_one(box, gt + 4 * j));
      }
      float sum = 0.0f;
      for (int64_t k = 0; k < n_terms; ++k) {
        float v = 0.0f;
        switch (terms[k].kind) {
          case TermKind::kFormat: v = format; break;
          case TermKind::kIou: v = iou; break;
          case TermKind::kIouThreshold: v = iou >= terms[k].tau ? iou : 0.0f; break;
          case TermKind::kIouSquared: v = iou * iou; break;
          case TermKind::kAcc: v = iou >= terms[k].tau ? 1.0f : 0.0f; break;
        }
        parts[k * texts.n + i] = v;
        // Rounded product, then rounded sum: what numpy's float32 `total += w * part` does
        // (the extension is built with -ffp-contract=off, so no fused multiply-add).
        const float weighted = terms[k].weight * v;
        sum += weighted;
      }
      total[i] = sum;
    }
  });
}

}  // namespace dprl
