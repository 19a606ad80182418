// The only file that includes pybind11: converts arguments, checks shapes, releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "box_iou.h"
#include "box_parse.h"
#include "rewards.h"

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

Texts borrow_texts(const py::handle& seq) {
  if (PyUnicode_Check(seq.ptr()) || PyBytes_Check(seq.ptr()) || !PySequence_Check(seq.ptr())) {
    throw py::type_error("texts must be a list or tuple of str or bytes, got " +
                         std::string(py::str(py::type::of(seq))));
  }
  Texts t;
  t.owner = py::reinterpret_steal<py::object>(PySequence_Tuple(seq.ptr()));
  if (!t.owner) throw py::error_already_set();
  const Py_ssize_t n = PyTuple_GET_SIZE(t.owner.ptr());
  t.ptr.resize(n);
  t.len.resize(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
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

py::tuple analyze(const py::handle& texts, bool answer_only, bool last, uint32_t formats,
                  int coords, int swapped, bool clamp, const py::object& image_wh,
                  const py::object& input_wh, int max_threads) {
  const dprl::ParseOptions opt = make_options(answer_only, last, formats, coords, swapped, clamp);
  Texts t = borrow_texts(texts);
  const auto n = static_cast<py::ssize_t>(t.ptr.size());
  DoubleArray image, input;
  const double* pimage = nullptr;
  const double* pinput = nullptr;
  if (opt.coords == dprl::Coords::kPixels) {
    if (image_wh.is_none()) throw py::value_error("coords=pixels needs image_wh [N, 2]");
    image = DoubleArray::ensure(image_wh);
    if (!image) throw py::error_already_set();
    check_sizes(image, "image_wh", n);
    pimage = image.data();
    if (!input_wh.is_none()) {
      input = DoubleArray::ensure(input_wh);
      if (!input) throw py::error_already_set();
      check_sizes(input, "input_wh", n);
      pinput = input.data();
    }
  }
  py::array_t<float> boxes({n, py::ssize_t{4}});
  py::array_t<uint8_t> format(n);
  float* pb = boxes.mutable_data();
  uint8_t* pf = format.mutable_data();
  {
    py::gil_scoped_release release;
    dprl::analyze_batch(t.batch(), opt, pimage, pinput, pb, pf, max_threads);
  }
  return py::make_tuple(boxes, format);
}

py::array_t<uint8_t> parse_letters(const py::handle& texts, bool answer_only, int max_threads) {
  Texts t = borrow_texts(texts);
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
  check_boxes(gt, "gt");
  const auto n = pred.shape(0);
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
  py::array_t<float> out(n);
  const float* pp = pred.data();
  const float* pg = gt.data();
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
  m.def("best_iou_ragged", &best_iou_ragged, py::arg("pred"), py::arg("gt"), py::arg("offsets"),
        py::arg("max_threads") = 0,
        "pred [N, 4], gt [K, 4], offsets int64 [N + 1] -> float32 [N]: best IoU of pred[i] over "
        "gt[offsets[i]:offsets[i + 1]] (0 when empty).");
}
