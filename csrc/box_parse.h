// Finding answers, boxes and choice letters in one completion's text. Plain C++: no Python.
//
// Every rule here works on bytes and only ever matches ASCII, so invalid UTF-8, NUL bytes or
// megabyte-long texts are just bytes that match nothing. The Python reference
// (dprl/rewards/reference.py) states the same rules as regular expressions; tests hold the two
// equal.
#pragma once
#include <cstdint>

namespace dprl {

// Box syntaxes, as a bit mask. NUM = [+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?, blanks
// (space, tab, CR, LF) allowed around every number and punctuation mark.
enum BoxFormat : uint32_t {
  kPoints = 1,  // (x1,y1),(x2,y2): Qwen2-VL, with or without <|box_start|>..<|box_end|> around it
  kList = 2,    // [x1, y1, x2, y2]: also the lists inside JSON such as {"bbox_2d": [...]}
  kTuple = 4,   // (x1, y1, x2, y2)
  kAllFormats = 7,
};

enum class Coords : int32_t {
  kAuto = 0,      // 0-1000 (Qwen2-VL); a box whose four values all lie in [0, 1] is scaled x1000
  kNorm1000 = 1,  // 0-1000 as written
  kFraction = 2,  // 0-1 fractions, always scaled x1000
  kPixels = 3,    // pixels of the resized model input, rescaled to the original image
};

enum class Swapped : int32_t {
  kFix = 0,     // x1 > x2 or y1 > y2: reorder the corners
  kReject = 1,  // x1 > x2 or y1 > y2: no box
};

struct ParseOptions {
  bool answer_only = true;  // search only between the first <answer> and the next </answer>
  bool last = true;         // take the last match (DeepPerception) instead of the first
  uint32_t formats = kAllFormats;
  Coords coords = Coords::kAuto;
  Swapped swapped = Swapped::kFix;
  bool clamp = false;  // clamp to [0, 1000] (normalised) or to the original image (pixels)
};

// [begin, end) of the text between the first "<answer>" and the first "</answer>" after it;
// found = false (and an empty span) when either tag is missing.
struct Span {
  int64_t begin = 0, end = 0;
  bool found = false;
};
Span answer_span(const char* s, int64_t n);

// The DeepPerception format rule: blanks, "<think>", anything, the first "</think>", blanks,
// "<answer>", anything, the first "</answer>" after it, blanks, end of text.
bool format_ok(const char* s, int64_t n);

// Both of the above from one walk over the text's tags (what a reward needs per completion).
struct TextTags {
  Span answer;
  bool format = false;
};
TextTags scan_tags(const char* s, int64_t n);

// Writes the parsed box (x1, y1, x2, y2) to box[0..3], or four NaNs when there is none.
// A match whose coordinates do not fit a finite float32 (1e308, huge digit strings) is no box.
// image_wh / input_wh: (width, height) of the original image and of the model input; used only
// with Coords::kPixels (and for clamping there); input_wh may be null (= image_wh).
void parse_box(const char* s, int64_t n, const ParseOptions& opt, const double* image_wh,
               const double* input_wh, float* box);
// The same, searching only `region` of the text (an answer span already found, or the whole
// text); opt.answer_only is not read.
void parse_box(const char* s, int64_t n, const Span& region, const ParseOptions& opt,
               const double* image_wh, const double* input_wh, float* box);

// Multiple-choice answer: in the answer (or the whole text), after blanks and an optional "(",
// one ASCII letter not followed by a letter or digit. Returns it upper-cased, or 0 if none.
char parse_letter(const char* s, int64_t n, bool answer_only);

}  // namespace dprl
