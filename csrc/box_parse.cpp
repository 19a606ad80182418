#include "box_parse.h"

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <clocale>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <locale.h>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace dprl {
namespace {

constexpr char kThinkOpen[] = "<think>";
constexpr char kThinkClose[] = "</think>";
constexpr char kAnswerOpen[] = "<answer>";
constexpr char kAnswerClose[] = "</answer>";

inline bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_alnum(char c) {
  return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

inline const char* skip_blanks(const char* p, const char* e) {
  while (p < e && is_blank(*p)) ++p;
  return p;
}

template <size_t M>
bool starts_with(const char* p, const char* e, const char (&t)[M]) {
  return e - p >= static_cast<std::ptrdiff_t>(M - 1) && std::memcmp(p, t, M - 1) == 0;
}

constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                             1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// One number as written, and its value when the scan could compute it exactly (see scan_number).
// No default initialisers: parse_box keeps eight on the stack per text, and zeroing them showed
// up as a tenth of its time; scan_number fills every field of a token it returns.
struct Token {
  const char* p;
  const char* e;
  double value;
  bool exact;
};

// Powers of ten as integers, for telling "462.0" (integral) from "462.5" without a division.
constexpr uint64_t kPow10Int[] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull,
                                  10000000ull, 100000000ull, 1000000000ull, 10000000000ull,
                                  100000000000ull, 1000000000000ull, 10000000000000ull,
                                  100000000000000ull, 1000000000000000ull};

// Digits in [p, e) (a digit run, maybe with one '.') after any leading zeros. Only for runs
// longer than 15 digits, which are rare: shorter ones have at most 15 significant digits anyway.
int64_t significant_digits(const char* p, const char* e) {
  int64_t count = 0;
  bool leading = true;
  for (; p < e; ++p) {
    if (*p == '.') continue;
    leading = leading && *p == '0';
    count += !leading;
  }
  return count;
}

// NUM = [+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)? taken greedily; null if no number starts at p.
// Greedy equals the regex's backtracking here: whatever a shorter number would leave behind
// starts with [0-9.eE+-], which can never be the blank or punctuation that must follow.
//
// The same walk gathers the digits, so the common case needs no second pass: Clinger's exact case,
// a decimal with at most 15 significant digits and at most 22 after the point, is m or m / 10^k
// with m and 10^k both exact doubles, and one IEEE division rounds it correctly. Model outputs
// ("123", "0.457") are nearly all like this; the rest (exponents, long digit runs) leave
// tok->exact false and go through from_chars. The digit loops do nothing but accumulate m: every
// other fact is derived once the run has ended.
const char* scan_number(const char* p, const char* e, Token* tok) {
  const char* q = p;
  bool neg = false;
  if (q < e && (*q == '+' || *q == '-')) neg = *q++ == '-';
  uint64_t m = 0;  // wraps harmlessly past 19 digits: such numbers are not exact anyway
  const char* d = q;
  for (; q < e && is_digit(*q); ++q) m = m * 10 + uint64_t(*q - '0');
  const uint64_t whole = m;
  int64_t digits = q - d, fraction = 0;
  if (q < e && *q == '.') {
    const char* f = ++q;
    for (; q < e && is_digit(*q); ++q) m = m * 10 + uint64_t(*q - '0');
    fraction = q - f;
    digits += fraction;
  }
  if (digits == 0) return nullptr;
  bool exact = fraction <= 22 && (digits <= 15 || significant_digits(d, q) <= 15);
  if (q < e && (*q == 'e' || *q == 'E')) {
    const char* r = q + 1;
    if (r < e && (*r == '+' || *r == '-')) ++r;
    const char* x = r;
    while (r < e && is_digit(*r)) ++r;
    if (r > x) {
      q = r;
      exact = false;
    }
  }
  double v = 0.0;
  if (exact) {
    // An integral value written with a fraction ("462.0") is the whole part exactly: no division
    // (its latency showed up as an eighth of parse_box's time on model-style boxes). With at most
    // 15 significant digits, a non-zero whole part leaves at most 15 - 1 digits after the point,
    // so whole * 10^fraction cannot overflow.
    const bool integral = fraction == 0 || (whole == 0 ? m == 0 : m == whole * kPow10Int[fraction]);
    v = integral ? double(whole) : double(m) / kPow10[fraction];
  }
  tok->p = p;
  tok->e = q;
  tok->value = neg ? -v : v;
  tok->exact = exact;
  return q;
}

// The first byte in [p, e) equal to `a` or `b`, or e. Sixteen bytes per step where SSE2 is there
// (every x86-64). Inline rather than memchr: most spans searched are short (the gap to the next
// tag, an answer's "<|box_start|>" or '{"bbox_2d": ' prefix), where a library call's set-up is
// much of the work.
inline const char* find_either(const char* p, const char* e, char a, char b) {
#if defined(__SSE2__)
  const __m128i va = _mm_set1_epi8(a), vb = _mm_set1_epi8(b);
  for (; e - p >= 16; p += 16) {
    const __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const int hits = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(chunk, va), _mm_cmpeq_epi8(chunk, vb)));
    if (hits) return p + __builtin_ctz(static_cast<unsigned>(hits));
  }
#endif
  while (p < e && *p != a && *p != b) ++p;
  return p;
}

// Where a box can start: the next '(' or '['.
inline const char* find_box_open(const char* p, const char* e) { return find_either(p, e, '(', '['); }

// blanks, NUM, blanks
inline const char* number_field(const char* p, const char* e, Token* tok) {
  p = scan_number(skip_blanks(p, e), e, tok);
  return p ? skip_blanks(p, e) : nullptr;
}

inline const char* expect(const char* p, const char* e, char c) {
  return (p && p < e && *p == c) ? p + 1 : nullptr;
}

// Tries every enabled box syntax at p (which holds '(' or '['); returns the end of the match and
// fills tok[0..3], or null. Points and tuples both open with "(NUM,NUM" and part at the next
// mark (')' or ','), so at most one syntax can match at any position.
const char* match_box(const char* p, const char* e, uint32_t formats, Token* tok) {
  if (*p == '[') {
    if (!(formats & kList)) return nullptr;
    const char* q = p + 1;
    for (int k = 0; k < 4 && q; ++k) {
      q = number_field(q, e, &tok[k]);
      q = expect(q, e, k < 3 ? ',' : ']');
    }
    return q;
  }
  if (!(formats & (kPoints | kTuple))) return nullptr;
  const char* q = number_field(p + 1, e, &tok[0]);
  q = expect(q, e, ',');
  if (q) q = number_field(q, e, &tok[1]);
  if (!q || q >= e) return nullptr;
  if (*q == ')') {
    if (!(formats & kPoints)) return nullptr;
    q = expect(skip_blanks(q + 1, e), e, ',');
    if (q) q = expect(skip_blanks(q, e), e, '(');
    if (q) q = number_field(q, e, &tok[2]);
    q = expect(q, e, ',');
    if (q) q = number_field(q, e, &tok[3]);
    return expect(q, e, ')');
  }
  if (*q != ',' || !(formats & kTuple)) return nullptr;
  ++q;
  q = number_field(q, e, &tok[2]);
  q = expect(q, e, ',');
  if (q) q = number_field(q, e, &tok[3]);
  return expect(q, e, ')');
}

// Decimal text -> the correctly rounded double (as Python's float() gives). from_chars is
// locale-free; it reports out-of-range (overflow to inf, underflow to 0) without a value, so
// those rare tokens go through strtod_l in the "C" locale, which returns inf or 0 as Python does.
double to_double(const Token& t) {
  if (t.exact) return t.value;
  const char* p = t.p;
  if (*p == '+') ++p;  // from_chars takes no '+'
  double v = 0.0;
  auto res = std::from_chars(p, t.e, v, std::chars_format::general);
  if (res.ec == std::errc() && res.ptr == t.e) return v;
  static locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", static_cast<locale_t>(0));
  std::string copy(p, t.e);
  return strtod_l(copy.c_str(), nullptr, c_locale);
}

inline bool fits_float(double v) { return std::isfinite(v) && std::fabs(v) <= double(FLT_MAX); }

void no_box(float* box) {
  for (int k = 0; k < 4; ++k) box[k] = std::numeric_limits<float>::quiet_NaN();
}

}  // namespace

TextTags scan_tags(const char* s, int64_t n) {
  const char* e = s + n;
  const char* p0 = skip_blanks(s, e);
  const bool think_first = starts_with(p0, e, kThinkOpen);
  // First "<answer>" anywhere and the first "</answer>" after it (the answer span); the first
  // "</think>" after the opening "<think>", the "<answer>" that must follow it after blanks, and
  // the first "</answer>" after that one (the format rule). Tags can't overlap (each starts at
  // its own '<'), so every later '<' lies past the tag before it.
  const char *a_open = nullptr, *a_close = nullptr;
  const char *t_close = nullptr, *f_open = nullptr, *f_close = nullptr;
  bool format_settled = !think_first;
  const char* p = think_first ? p0 + sizeof(kThinkOpen) - 1 : s;
  // One walk over the '<' of the text, sixteen bytes at a time through the chain of thought.
  while (p < e && !(a_close && format_settled)) {
    const char* q = find_either(p, e, '<', '<');
    if (q == e) break;
    p = q + 1;
    // The tags sought here (<answer>, </answer>, </think>) have 'a' or '/' second; skip the rest.
    const char second = q + 1 < e ? q[1] : '\0';
    if (second != 'a' && second != '/') continue;
    if (starts_with(q, e, kAnswerOpen)) {
      if (!a_open) a_open = q;
      p = q + sizeof(kAnswerOpen) - 1;
    } else if (starts_with(q, e, kAnswerClose)) {
      if (a_open && !a_close) a_close = q;
      if (f_open && !f_close) {
        f_close = q;
        format_settled = true;
      }
      p = q + sizeof(kAnswerClose) - 1;
    } else if (starts_with(q, e, kThinkClose)) {
      if (think_first && !t_close) {
        t_close = q;
        const char* after = skip_blanks(q + sizeof(kThinkClose) - 1, e);
        if (starts_with(after, e, kAnswerOpen)) {
          f_open = after;
        } else {
          format_settled = true;  // no "<answer>" right after the first "</think>"
        }
      }
      p = q + sizeof(kThinkClose) - 1;
    }
  }
  TextTags tags;
  if (a_open && a_close) tags.answer = {a_open + sizeof(kAnswerOpen) - 1 - s, a_close - s, true};
  tags.format = f_close && skip_blanks(f_close + sizeof(kAnswerClose) - 1, e) == e;
  return tags;
}

Span answer_span(const char* s, int64_t n) { return scan_tags(s, n).answer; }

bool format_ok(const char* s, int64_t n) { return scan_tags(s, n).format; }

void parse_box(const char* s, int64_t n, const ParseOptions& opt, const double* image_wh,
               const double* input_wh, float* box) {
  parse_box(s, n, opt.answer_only ? answer_span(s, n) : Span{0, n, true}, opt, image_wh, input_wh,
            box);
}

void parse_box(const char* s, int64_t n, const Span& region, const ParseOptions& opt,
               const double* image_wh, const double* input_wh, float* box) {
  if (!region.found) return no_box(box);
  const char* p = s + region.begin;
  const char* e = s + region.end;
  // Non-overlapping matches left to right, as re.finditer gives; keep the first or the last.
  Token slots[2][4];
  Token* tok = slots[0];       // the match being tried
  Token* chosen = nullptr;     // the last full match, in the other slot
  while ((p = find_box_open(p, e)) < e) {
    const char* q = match_box(p, e, opt.formats, tok);
    if (!q) {
      ++p;
      continue;
    }
    chosen = tok;
    tok = (tok == slots[0]) ? slots[1] : slots[0];
    if (!opt.last) break;
    p = q;
  }
  if (!chosen) return no_box(box);

  double v[4];
  for (int k = 0; k < 4; ++k) v[k] = to_double(chosen[k]);
  bool scale = opt.coords == Coords::kFraction;
  if (opt.coords == Coords::kAuto) {
    scale = true;
    for (int k = 0; k < 4; ++k) scale = scale && v[k] >= 0.0 && v[k] <= 1.0;
  }
  if (scale) {
    for (int k = 0; k < 4; ++k) v[k] = v[k] * 1000.0;
  }
  double limit_w = 1000.0, limit_h = 1000.0;
  if (opt.coords == Coords::kPixels) {
    const double* in = input_wh ? input_wh : image_wh;
    for (int k = 0; k < 4; ++k) v[k] = v[k] * image_wh[k % 2] / in[k % 2];
    limit_w = image_wh[0];
    limit_h = image_wh[1];
  }
  for (int k = 0; k < 4; ++k) {
    if (!fits_float(v[k])) return no_box(box);
  }
  if (v[0] > v[2] || v[1] > v[3]) {
    if (opt.swapped == Swapped::kReject) return no_box(box);
    if (v[0] > v[2]) std::swap(v[0], v[2]);
    if (v[1] > v[3]) std::swap(v[1], v[3]);
  }
  if (opt.clamp) {
    for (int k = 0; k < 4; ++k) v[k] = std::min(std::max(v[k], 0.0), k % 2 ? limit_h : limit_w);
  }
  for (int k = 0; k < 4; ++k) box[k] = static_cast<float>(v[k]);
}

char parse_letter(const char* s, int64_t n, bool answer_only) {
  const char* p = s;
  const char* e = s + n;
  if (answer_only) {
    const Span span = answer_span(s, n);
    if (!span.found) return 0;
    p = s + span.begin;
    e = s + span.end;
  }
  p = skip_blanks(p, e);
  if (p < e && *p == '(') ++p;
  if (p >= e) return 0;
  const char c = *p;
  const bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
  if (!letter || (p + 1 < e && is_alnum(p[1]))) return 0;
  return (c >= 'a') ? static_cast<char>(c - 'a' + 'A') : c;
}

}  // namespace dprl
