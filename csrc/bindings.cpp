// The only file that includes pybind11: converts arrays, checks shapes, releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "box_iou.h"

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

namespace {

void check_boxes(const FloatArray& x, const char* name) {
  if (x.ndim() != 2 || x.shape(1) != 4) {
    std::string shape = "(";
    for (py::ssize_t d = 0; d < x.ndim(); ++d) shape += (d ? ", " : "") + std::to_string(x.shape(d));
    throw py::value_error(std::string(name) + " must have shape [N, 4] (x1, y1, x2, y2), got " +
                          shape + ")");
  }
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

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "dprl C++ extension: box IoU (and, as it grows, box parsing and rewards)";
  m.def("box_iou", &box_iou, py::arg("a"), py::arg("b"), py::arg("max_threads") = 0,
        "Pairwise IoU of a: [N, 4] and b: [M, 4] float32 boxes (x1, y1, x2, y2) -> [N, M].\n"
        "Invalid boxes (non-finite, zero or negative area) have IoU 0.");
}
