// The only file that includes pybind11: converts arguments, checks shapes, releases the GIL.
#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

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

void check_formats(uint32_t formats) {
  if (formats == 0 || (formats & ~uint32_t(dprl::kAllFormats))) {
    throw py::value_error("formats must be a non-empty combination of BoxFormat.POINTS, "
                          "BoxFormat.LIST and BoxFormat.TUPLE");
  }
}

// Readable reprs: enum members print as Coords.AUTO, flags as BoxFormat.POINTS|LIST.
std::string str_of(const py::object& x) { return py::str(x).cast<std::string>(); }

std::string repr_options(const dprl::ParseOptions& o) {
  return "ParseOptions(answer_only=" + str_of(py::bool_(o.answer_only)) +
         ", last=" + str_of(py::bool_(o.last)) +
         ", formats=" + str_of(py::cast(static_cast<dprl::BoxFormat>(o.formats))) +
         ", coords=" + str_of(py::cast(o.coords)) + ", swapped=" + str_of(py::cast(o.swapped)) +
         ", clamp=" + str_of(py::bool_(o.clamp)) + ")";
}

std::string repr_term(const dprl::RewardTerm& t) {
  return "RewardTerm(kind=" + str_of(py::cast(t.kind)) + ", tau=" + str_of(py::float_(t.tau)) +
         ", weight=" + str_of(py::float_(t.weight)) + ")";
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

py::tuple analyze(const py::handle& texts, const dprl::ParseOptions& opt,
                  const py::object& image_wh, const py::object& input_wh, int max_threads) {
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

py::tuple score_batch(const py::handle& texts, const std::vector<dprl::RewardTerm>& terms,
                      const dprl::ParseOptions& opt, const py::object& gt_in,
                      const py::object& offsets_in, const py::object& image_wh,
                      const py::object& input_wh, int max_threads) {
  if (terms.empty()) throw py::value_error("terms must hold at least one RewardTerm");
  Texts t = borrow_texts(texts, max_threads);
  const auto n = static_cast<py::ssize_t>(t.ptr.size());
  const PixelSizes sizes = pixel_sizes(opt, image_wh, input_wh, n);
  bool need_iou = false;
  for (const dprl::RewardTerm& term : terms) need_iou |= term.kind != dprl::TermKind::kFormat;
  // Ground truth is read only by the IoU terms; a format-only reward may leave it out.
  FloatArray gt;
  Int64Array offsets;
  const bool has_gt = !gt_in.is_none();
  if (has_gt == offsets_in.is_none()) {
    throw py::value_error("gt and offsets go together: give both or neither");
  }
  if (has_gt) {
    gt = FloatArray::ensure(gt_in);
    offsets = Int64Array::ensure(offsets_in);
    if (!gt || !offsets) throw py::error_already_set();
    check_ragged(gt, offsets, n);
  } else if (need_iou) {
    throw py::value_error("IoU terms need the ground truth: gt [K, 4] and offsets [N + 1]");
  }
  const auto n_terms = static_cast<py::ssize_t>(terms.size());
  py::array_t<float> total(n);
  py::array_t<float> parts({n_terms, n});
  float* ptotal = total.mutable_data();
  float* pparts = parts.mutable_data();
  const float* pg = has_gt ? gt.data() : nullptr;
  const int64_t* po = has_gt ? offsets.data() : nullptr;
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

  // Enums as Python enum.Enum subclasses (dprl/rewards/options.py and terms.py hold the Python
  // enums with the same member names, for the reference path that runs without this module).
  py::native_enum<dprl::BoxFormat>(m, "BoxFormat", "enum.Flag",
                                   "Box syntaxes a parse accepts; combine them with |.")
      .value("POINTS", dprl::kPoints, "(x1,y1),(x2,y2): Qwen2-VL, box tokens around it or not")
      .value("LIST", dprl::kList, "[x1, y1, x2, y2], also inside JSON such as {\"bbox_2d\": ...}")
      .value("TUPLE", dprl::kTuple, "(x1, y1, x2, y2)")
      .finalize();
  py::native_enum<dprl::Coords>(m, "Coords", "enum.Enum",
                                "How parsed numbers map to the output frame.")
      .value("AUTO", dprl::Coords::kAuto, "0-1000; a box with all four values in [0, 1] is x1000")
      .value("NORM1000", dprl::Coords::kNorm1000, "0-1000 as written")
      .value("FRACTION", dprl::Coords::kFraction, "0-1 fractions, always x1000")
      .value("PIXELS", dprl::Coords::kPixels,
             "pixels of the resized model input, rescaled to the original image")
      .finalize();
  py::native_enum<dprl::Swapped>(m, "Swapped", "enum.Enum",
                                 "What a box with x1 > x2 or y1 > y2 becomes.")
      .value("FIX", dprl::Swapped::kFix, "reorder the corners")
      .value("REJECT", dprl::Swapped::kReject, "no box")
      .finalize();
  py::native_enum<dprl::TermKind>(m, "TermKind", "enum.Enum",
                                  "The built-in reward terms score_batch computes.")
      .value("FORMAT", dprl::TermKind::kFormat,
             "0.5 for <think>..</think><answer>..</answer> + 0.5 for a box in the answer")
      .value("IOU", dprl::TermKind::kIou, "best IoU over the sample's ground-truth boxes")
      .value("IOU_THRESHOLD", dprl::TermKind::kIouThreshold, "IoU if IoU >= tau else 0")
      .value("IOU_SQUARED", dprl::TermKind::kIouSquared, "IoU * IoU")
      .value("ACC", dprl::TermKind::kAcc, "1 if IoU >= tau else 0")
      .finalize();

  py::class_<dprl::ParseOptions>(m, "ParseOptions",
                                 "How a box is read out of a completion (csrc/box_parse.h).")
      .def(py::init([](bool answer_only, bool last, dprl::BoxFormat formats, dprl::Coords coords,
                       dprl::Swapped swapped, bool clamp) {
             check_formats(formats);
             dprl::ParseOptions o;
             o.answer_only = answer_only;
             o.last = last;
             o.formats = formats;
             o.coords = coords;
             o.swapped = swapped;
             o.clamp = clamp;
             return o;
           }),
           py::kw_only(), py::arg("answer_only") = true, py::arg("last") = true,
           py::arg("formats") = dprl::kAllFormats, py::arg("coords") = dprl::Coords::kAuto,
           py::arg("swapped") = dprl::Swapped::kFix, py::arg("clamp") = false,
           "Every field has its default unless given (all of them keyword-only).")
      .def_readwrite("answer_only", &dprl::ParseOptions::answer_only,
                     "search only between the first <answer> and the next </answer>")
      .def_readwrite("last", &dprl::ParseOptions::last,
                     "take the last match (DeepPerception) instead of the first")
      .def_property(
          "formats",
          [](const dprl::ParseOptions& o) { return static_cast<dprl::BoxFormat>(o.formats); },
          [](dprl::ParseOptions& o, dprl::BoxFormat f) {
            check_formats(f);
            o.formats = f;
          },
          "the box syntaxes that count (a non-empty BoxFormat combination)")
      .def_readwrite("coords", &dprl::ParseOptions::coords, "the coordinate frame")
      .def_readwrite("swapped", &dprl::ParseOptions::swapped, "what swapped corners become")
      .def_readwrite("clamp", &dprl::ParseOptions::clamp,
                     "clamp to [0, 1000], or to the original image with Coords.PIXELS")
      .def("__repr__", &repr_options);

  py::class_<dprl::RewardTerm>(m, "RewardTerm", "One built-in term of a weighted reward.")
      .def(py::init([](dprl::TermKind kind, float tau, float weight) {
             return dprl::RewardTerm{kind, tau, weight};
           }),
           py::arg("kind") = dprl::TermKind::kFormat, py::arg("tau") = 0.0f,
           py::arg("weight") = 1.0f,
           "kind, its threshold tau (read by IOU_THRESHOLD and ACC only) and its weight.")
      .def_readwrite("kind", &dprl::RewardTerm::kind, "which term")
      .def_readwrite("tau", &dprl::RewardTerm::tau, "threshold of IOU_THRESHOLD and ACC")
      .def_readwrite("weight", &dprl::RewardTerm::weight, "weight in the total")
      .def("__repr__", &repr_term);

  m.def("box_iou", &box_iou, py::arg("a"), py::arg("b"), py::arg("max_threads") = 0,
        "Pairwise IoU of a: [N, 4] and b: [M, 4] float32 boxes (x1, y1, x2, y2) -> [N, M].\n"
        "Invalid boxes (non-finite, zero or negative area) have IoU 0.");
  m.def("analyze", &analyze, py::arg("texts"), py::arg("options") = dprl::ParseOptions(),
        py::kw_only(), py::arg("image_wh") = py::none(), py::arg("input_wh") = py::none(),
        py::arg("max_threads") = 0,
        "texts: list of str/bytes -> (boxes float32 [N, 4] with NaN rows, format uint8 [N]).\n"
        "image_wh, input_wh: float64 [N, 2] (width, height), read with Coords.PIXELS only.");
  m.def("parse_letters", &parse_letters, py::arg("texts"), py::arg("answer_only") = true,
        py::arg("max_threads") = 0,
        "texts: list of str/bytes -> uint8 [N], the ASCII code of each choice letter or 0.");
  m.def("score_batch", &score_batch, py::arg("texts"), py::arg("terms"),
        py::arg("options") = dprl::ParseOptions(), py::kw_only(), py::arg("gt") = py::none(),
        py::arg("offsets") = py::none(), py::arg("image_wh") = py::none(),
        py::arg("input_wh") = py::none(), py::arg("max_threads") = 0,
        "Every term of a weighted reward in one pass over the texts -> (total float32 [N], "
        "parts float32 [T, N]).\n"
        "terms: RewardTerm [T]; gt float32 [K, 4] and offsets int64 [N + 1]: the ground truth "
        "of text i is gt[offsets[i]:offsets[i + 1]] (both may be None when every term is "
        "FORMAT); image_wh, input_wh as in analyze.");
  m.def("best_iou_ragged", &best_iou_ragged, py::arg("pred"), py::arg("gt"), py::arg("offsets"),
        py::arg("max_threads") = 0,
        "pred [N, 4], gt [K, 4], offsets int64 [N + 1] -> float32 [N]: best IoU of pred[i] over "
        "gt[offsets[i]:offsets[i + 1]] (0 when empty).");
  m.def("pool_workers", &dprl::pool_workers,
        "Warm worker threads this process keeps for big batches (hardware threads - 1; started "
        "on first use, rebuilt in a forked child).");
}
