// The only file that includes pybind11: converts arguments, checks shapes, releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "box_iou.h"
#include "box_parse.h"
#include "rewards.h"
#include "worker_pool.h"

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using Int32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

namespace {

std::string shape_of(const py::array& x) {
  std::string shape = "(";
  for (py::ssize_t d = 0; d < x.ndim(); ++d) shape += (d ? ", " : "") + std::to_string(x.shape(d));
  return shape + ")";
}

void check_boxes(const FloatArray& x, const char* name) {
  if (x.ndim() != 2 || x.shape(1) != 4) {
    throw py::value_error(std::string(name) + " must have shape [N, 4] (x1, y1, x2, y2), got " +
                          shape_of(x));
  }
}

void check_sizes(const DoubleArray& x, const char* name, py::ssize_t n) {
  if (x.ndim() != 2 || x.shape(0) != n || x.shape(1) != 2) {
    throw py::value_error(std::string(name) + " must have shape [" + std::to_string(n) +
                          ", 2] (width, height), got " + shape_of(x));
  }
}

// Borrowed views of a sequence of str/bytes. The texts are never copied: an ASCII or already
// UTF-8-cached str lends its buffer, bytes lend theirs; only a str holding lone surrogates is
// encoded (surrogatepass, as the Python reference does). `owner` is a tuple holding a reference to
// every item, so nothing can free a buffer while the GIL is released.
struct Texts {
  py::object owner;
  std::vector<py::object> encoded;
  std::vector<const char*> ptr;
  std::vector<int64_t> len;
  dprl::TextBatch batch() const {
    dprl::TextBatch b;
    b.ptr = ptr.data();
    b.len = len.data();
    b.n = static_cast<int64_t>(ptr.size());
    for (int64_t x : len) b.total_bytes += x;
    return b;
  }
};

// Batches of at least this many texts wake the worker pool before their texts are read: after a
// pause (the rest of a training step) its workers sleep, and waking one costs about as long as
// reading 8192 texts' buffers; begun first, the two overlap. A batch that then proves too small
// to split only leaves a worker polling for its spin time.
constexpr Py_ssize_t kWakePoolItems = 1024;

Texts borrow_texts(const py::handle& seq, int max_threads) {
  if (PyUnicode_Check(seq.ptr()) || PyBytes_Check(seq.ptr()) || !PySequence_Check(seq.ptr())) {
    throw py::type_error("texts must be a list or tuple of str or bytes, got " +
                         std::string(py::str(py::type::of(seq))));
  }
  const Py_ssize_t size = PySequence_Size(seq.ptr());
  if (size < 0) {
    PyErr_Clear();  // an odd sequence: PySequence_Tuple below reports what is wrong with it
  } else if (max_threads != 1 && size >= kWakePoolItems) {
    dprl::pool_wake();
  }
  Texts t;
  t.owner = py::reinterpret_steal<py::object>(PySequence_Tuple(seq.ptr()));
  if (!t.owner) throw py::error_already_set();
  const Py_ssize_t n = PyTuple_GET_SIZE(t.owner.ptr());
  t.ptr.resize(n);
  t.len.resize(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
    // The str objects lie scattered over the heap: ask for later ones while reading this one.
    if (i + 8 < n) __builtin_prefetch(PyTuple_GET_ITEM(t.owner.ptr(), i + 8));
    PyObject* item = PyTuple_GET_ITEM(t.owner.ptr(), i);
    if (PyUnicode_Check(item)) {
      Py_ssize_t size = 0;
      const char* data = PyUnicode_AsUTF8AndSize(item, &size);
      if (!data) {
        PyErr_Clear();
        PyObject* raw = PyUnicode_AsEncodedString(item, "utf-8", "surrogatepass");
        if (!raw) throw py::error_already_set();
        t.encoded.push_back(py::reinterpret_steal<py::object>(raw));
        data = PyBytes_AS_STRING(raw);
        size = PyBytes_GET_SIZE(raw);
      }
      t.ptr[i] = data;
      t.len[i] = size;
    } else if (PyBytes_Check(item)) {
      t.ptr[i] = PyBytes_AS_STRING(item);
      t.len[i] = PyBytes_GET_SIZE(item);
    } else {
      throw py::type_error("texts[" + std::to_string(i) + "] must be str or bytes, got " +
                           std::string(py::str(py::type::of(py::handle(item)))));
    }
  }
  return t;
}

dprl::ParseOptions make_options(bool answer_only, bool last, uint32_t formats, int coords,
                                int swapped, bool clamp) {
  if (formats == 0 || (formats & ~uint32_t(dprl::kAllFormats))) {
    throw py::value_error("formats must be a non-empty mask of 1 (points), 2 (list), 4 (tuple)");
  }
  if (coords < 0 || coords > 3) throw py::value_error("coords must be 0..3");
  if (swapped < 0 || swapped > 1) throw py::value_error("swapped must be 0 or 1");
  dprl::ParseOptions o;
  o.answer_only = answer_only;
  o.last = last;
  o.formats = formats;
  o.coords = static_cast<dprl::Coords>(coords);
  o.swapped = static_cast<dprl::Swapped>(swapped);
  o.clamp = clamp;
  return o;
}

// image_wh / input_wh as [n, 2] float64 arrays when the coordinates are pixels; null otherwise.
struct PixelSizes {
  DoubleArray image, input;
  const double* image_ptr = nullptr;
  const double* input_ptr = nullptr;
};

PixelSizes pixel_sizes(const dprl::ParseOptions& opt, const py::object& image_wh,
                       const py::object& input_wh, py::ssize_t n) {
  PixelSizes p;
  if (opt.coords != dprl::Coords::kPixels) return p;
  if (image_wh.is_none()) throw py::value_error("coords=pixels needs image_wh [N, 2]");
  p.image = DoubleArray::ensure(image_wh);
  if (!p.image) throw py::error_already_set();
  check_sizes(p.image, "image_wh", n);
  p.image_ptr = p.image.data();
  if (!input_wh.is_none()) {
    p.input = DoubleArray::ensure(input_wh);
    if (!p.input) throw py::error_already_set();
    check_sizes(p.input, "input_wh", n);
    p.input_ptr = p.input.data();
  }
  return p;
}

py::tuple analyze(const py::handle& texts, bool answer_only, bool last, uint32_t formats,
                  int coords, int swapped, bool clamp, const py::object& image_wh,
                  const py::object& input_wh, int max_threads) {
  const dprl::ParseOptions opt = make_options(answer_only, last, formats, coords, swapped, clamp);
  Texts t = borrow_texts(texts, max_threads);
  const auto n = static_cast<py::ssize_t>(t.ptr.size());
  const PixelSizes sizes = pixel_sizes(opt, image_wh, input_wh, n);
  py::array_t<float> boxes({n, py::ssize_t{4}});
  py::array_t<uint8_t> format(n);
  float* pb = boxes.mutable_data();
  uint8_t* pf = format.mutable_data();
  {
    py::gil_scoped_release release;
    dprl::analyze_batch(t.batch(), opt, sizes.image_ptr, sizes.input_ptr, pb, pf, max_threads);
  }
  return py::make_tuple(boxes, format);
}

// Checks ragged ground truth: gt [K, 4] and offsets [n + 1] from 0 to K, non-decreasing.
void check_ragged(const FloatArray& gt, const Int64Array& offsets, py::ssize_t n) {
  check_boxes(gt, "gt");
  if (offsets.ndim() != 1 || offsets.shape(0) != n + 1) {
    throw py::value_error("offsets must have shape [" + std::to_string(n + 1) + "], got " +
                          shape_of(offsets));
  }
  const int64_t* po = offsets.data();
  if (po[0] != 0 || po[n] != gt.shape(0)) {
    throw py::value_error("offsets must start at 0 and end at len(gt)");
  }
  for (py::ssize_t i = 0; i < n; ++i) {
    if (po[i + 1] < po[i]) throw py::value_error("offsets must be non-decreasing");
  }
}

py::tuple score_batch(const py::handle& texts, bool answer_only, bool last, uint32_t formats,
                      int coords, int swapped, bool clamp, const py::object& image_wh,
                      const py::object& input_wh, const FloatArray& gt, const Int64Array& offsets,
                      const Int32Array& kinds, const FloatArray& taus, const FloatArray& weights,
                      int max_threads) {
  const dprl::ParseOptions opt = make_options(answer_only, last, formats, coords, swapped, clamp);
  Texts t = borrow_texts(texts, max_threads);
  const auto n = static_cast<py::ssize_t>(t.ptr.size());
  const PixelSizes sizes = pixel_sizes(opt, image_wh, input_wh, n);
  check_ragged(gt, offsets, n);
  const py::ssize_t n_terms = kinds.size();
  if (kinds.ndim() != 1 || taus.ndim() != 1 || weights.ndim() != 1 || taus.size() != n_terms ||
      weights.size() != n_terms || n_terms == 0) {
    throw py::value_error("kinds, taus and weights must be 1-D with one entry per term (>= 1)");
  }
  std::vector<dprl::RewardTerm> terms(n_terms);
  for (py::ssize_t k = 0; k < n_terms; ++k) {
    const int32_t kind = kinds.data()[k];
    if (kind < 0 || kind > 4) throw py::value_error("term kinds must be 0..4");
    terms[k] = {static_cast<dprl::TermKind>(kind), taus.data()[k], weights.data()[k]};
  }
  py::array_t<float> total(n);
  py::array_t<float> parts({n_terms, n});
  float* ptotal = total.mutable_data();
  float* pparts = parts.mutable_data();
  const float* pg = gt.data();
  const int64_t* po = offsets.data();
  {
    py::gil_scoped_release release;
    dprl::score_batch(t.batch(), opt, sizes.image_ptr, sizes.input_ptr, pg, po, terms.data(),
                      n_terms, pparts, ptotal, max_threads);
  }
  return py::make_tuple(total, parts);
}

py::array_t<uint8_t> parse_letters(const py::handle& texts, bool answer_only, int max_threads) {
  Texts t = borrow_texts(texts, max_threads);
  py::array_t<uint8_t> out(static_cast<py::ssize_t>(t.ptr.size()));
  char* po = reinterpret_cast<char*>(out.mutable_data());
  {
    py::gil_scoped_release release;
    dprl::letters_batch(t.batch(), answer_only, po, max_threads);
  }
  return out;
}

py::array_t<float> box_iou(const FloatArray& a, const FloatArray& b, int max_threads) {
  check_boxes(a, "a");
  check_boxes(b, "b");
  const auto n = a.shape(0), m = b.shape(0);
  py::array_t<float> out({n, m});
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.mutable_data();
  {
    py::gil_scoped_release release;
    dprl::box_iou_pairwise(pa, n, pb, m, po, max_threads);
  }
  return out;
}

py::array_t<float> best_iou_ragged(const FloatArray& pred, const FloatArray& gt,
                                   const Int64Array& offsets, int max_threads) {
  check_boxes(pred, "pred");
  const auto n = pred.shape(0);
  check_ragged(gt, offsets, n);
  py::array_t<float> out(n);
  const float* pp = pred.data();
  const float* pg = gt.data();
  const int64_t* po = offsets.data();
  float* pout = out.mutable_data();
  {
    py::gil_scoped_release release;
    dprl::best_iou_ragged(pp, n, pg, po, pout, max_threads);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "dprl C++ extension: box parsing, IoU and reward scoring over whole batches";
  m.def("box_iou", &box_iou, py::arg("a"), py::arg("b"), py::arg("max_threads") = 0,
        "Pairwise IoU of a: [N, 4] and b: [M, 4] float32 boxes (x1, y1, x2, y2) -> [N, M].\n"
        "Invalid boxes (non-finite, zero or negative area) have IoU 0.");
  m.def("analyze", &analyze, py::arg("texts"), py::arg("answer_only") = true,
        py::arg("last") = true, py::arg("formats") = uint32_t(dprl::kAllFormats),
        py::arg("coords") = 0, py::arg("swapped") = 0, py::arg("clamp") = false,
        py::arg("image_wh") = py::none(), py::arg("input_wh") = py::none(),
        py::arg("max_threads") = 0,
        "texts: list of str/bytes -> (boxes float32 [N, 4] with NaN rows, format uint8 [N]).");
  m.def("parse_letters", &parse_letters, py::arg("texts"), py::arg("answer_only") = true,
        py::arg("max_threads") = 0,
        "texts: list of str/bytes -> uint8 [N], the ASCII code of each choice letter or 0.");
  m.def("score_batch", &score_batch, py::arg("texts"), py::arg("answer_only"), py::arg("last"),
        py::arg("formats"), py::arg("coords"), py::arg("swapped"), py::arg("clamp"),
        py::arg("image_wh"), py::arg("input_wh"), py::arg("gt"), py::arg("offsets"),
        py::arg("kinds"), py::arg("taus"), py::arg("weights"), py::arg("max_threads") = 0,
        "Every built-in reward term in one pass: texts, parse options, ragged ground truth "
        "(gt [K, 4], offsets [N + 1]) and terms (kinds int32 [T]: 0 format, 1 iou, "
        "2 iou_threshold, 3 iou_squared, 4 acc; taus, weights float32 [T]) -> (total float32 "
        "[N], parts float32 [T, N]).");
  m.def("best_iou_ragged", &best_iou_ragged, py::arg("pred"), py::arg("gt"), py::arg("offsets"),
        py::arg("max_threads") = 0,
        "pred [N, 4], gt [K, 4], offsets int64 [N + 1] -> float32 [N]: best IoU of pred[i] over "
        "gt[offsets[i]:offsets[i + 1]] (0 when empty).");
  m.def("pool_workers", &dprl::pool_workers,
        "Warm worker threads this process keeps for big batches (hardware threads - 1; started "
        "on first use, rebuilt in a forked child).");
}
