#include "geometry.h"

#include "checked_math.h"
#include "errors.h"
#include "limits.h"

namespace ncnn_onnx {
namespace {

std::string Str(int64_t v) { return std::to_string(v); }

void CheckLength(const char* name, const std::vector<int64_t>& values, size_t expected, const char* per) {
  if (!values.empty() && values.size() != expected) {
    throw InvalidArgument(std::string("attribute '") + name + "' has " + Str(static_cast<int64_t>(values.size())) +
                          " values, expected " + Str(static_cast<int64_t>(expected)) + " (" + per + ") for W of the given rank");
  }
}

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + Str(shape[i]);
  return out + "]";
}

std::vector<int64_t> ConvGeometry::OutputShape() const {
  std::vector<int64_t> shape = {batch, out_channels};
  for (int d = 0; d < ndim; ++d) shape.push_back(output[d]);
  return shape;
}

void CheckWeightShapes(const ConvAttributes& a, const std::vector<int64_t>& w, const std::vector<int64_t>* bias) {
  if (w.size() < 3 || w.size() > 2 + kMaxSpatialDims) {
    throw InvalidArgument("W must have rank 3, 4 or 5 (M, C/group, kernel...), got shape " + ShapeString(w));
  }
  for (int64_t v : w) {
    if (v < 0) throw InvalidArgument("W has a negative dimension: " + ShapeString(w));
  }
  const size_t ndim = w.size() - 2;
  if (w[1] < 1) throw InvalidArgument("W must have at least 1 input channel per group, got shape " + ShapeString(w));
  for (size_t d = 0; d < ndim; ++d) {
    if (w[2 + d] < 1) throw InvalidArgument("W's kernel dims must be >= 1, got shape " + ShapeString(w));
  }
  if (w[0] % a.group != 0) {
    throw InvalidArgument("group=" + Str(a.group) + " does not divide W's output channels M=" + Str(w[0]) +
                          " (W shape " + ShapeString(w) + ")");
  }
  CheckLength("kernel_shape", a.kernel_shape, ndim, "one per spatial dim");
  for (size_t d = 0; d < a.kernel_shape.size(); ++d) {
    if (a.kernel_shape[d] != w[2 + d]) {
      throw InvalidArgument("attribute 'kernel_shape' " + ShapeString(a.kernel_shape) + " disagrees with W's kernel dims " +
                            ShapeString(std::vector<int64_t>(w.begin() + 2, w.end())));
    }
  }
  CheckLength("strides", a.strides, ndim, "one per spatial dim");
  CheckLength("dilations", a.dilations, ndim, "one per spatial dim");
  CheckLength("pads", a.pads, 2 * ndim, "a begin and an end per spatial dim");
  if (bias != nullptr && (bias->size() != 1 || (*bias)[0] != w[0])) {
    throw InvalidArgument("B must have shape [M] = [" + Str(w[0]) + "], got " + ShapeString(*bias));
  }
}

ConvGeometry ResolveGeometry(const ConvAttributes& a, const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                             const std::vector<int64_t>* bias) {
  if (x.size() < 3 || x.size() > 2 + kMaxSpatialDims) {
    throw InvalidArgument("X must have rank 3, 4 or 5 (N, C, spatial...), got shape " + ShapeString(x));
  }
  if (w.size() != x.size()) {
    throw InvalidArgument("W must have the rank of X (" + Str(static_cast<int64_t>(x.size())) + "), got W shape " +
                          ShapeString(w) + " for X shape " + ShapeString(x));
  }
  for (int64_t v : x) {
    if (v < 0) throw InvalidArgument("X has a negative dimension: " + ShapeString(x));
  }
  CheckWeightShapes(a, w, bias);

  ConvGeometry g;
  g.ndim = static_cast<int>(x.size()) - 2;
  g.batch = x[0];
  g.in_channels = x[1];
  g.out_channels = w[0];
  g.group = a.group;
  if (g.in_channels % g.group != 0) {
    throw InvalidArgument("group=" + Str(g.group) + " does not divide X's channels C=" + Str(g.in_channels) +
                          " (X shape " + ShapeString(x) + ")");
  }
  g.group_in_channels = g.in_channels / g.group;
  g.group_out_channels = g.out_channels / g.group;
  if (w[1] != g.group_in_channels) {
    throw InvalidArgument("X has C=" + Str(g.in_channels) + " channels, so W.shape[1] must be C/group = " +
                          Str(g.group_in_channels) + ", got W shape " + ShapeString(w) + " with group=" + Str(g.group));
  }
  g.has_bias = bias != nullptr;
  g.epsilon = a.epsilon;
  g.center = a.center;
  g.scale = a.scale;

  g.kernel_size = 1;
  g.input_plane = 1;
  g.output_plane = 1;
  for (int d = 0; d < g.ndim; ++d) {
    const int64_t in = x[2 + d];
    const int64_t k = w[2 + d];
    const int64_t s = a.strides.empty() ? 1 : a.strides[d];
    const int64_t dil = a.dilations.empty() ? 1 : a.dilations[d];
    const int64_t span = CheckedAdd(CheckedMul(k - 1, dil, "the dilated kernel extent"), 1, "the dilated kernel extent");
    int64_t begin = 0, end = 0, out = 0;
    switch (a.auto_pad) {
      case AutoPad::kNotSet:
        if (!a.pads.empty()) {
          begin = a.pads[d];
          end = a.pads[g.ndim + d];
          CheckPad(a.limits, d, begin, in, span);
          CheckPad(a.limits, d, end, in, span);
        }
        break;
      case AutoPad::kValid:
        break;
      case AutoPad::kSameUpper:
      case AutoPad::kSameLower: {
        out = in / s + (in % s != 0 ? 1 : 0);
        if (out >= 1) {
          const int64_t needed = CheckedAdd(CheckedMul(out - 1, s, "the padded input extent"), span, "the padded input extent");
          const int64_t total = needed > in ? needed - in : 0;
          const int64_t small = total / 2;
          begin = a.auto_pad == AutoPad::kSameUpper ? small : total - small;
          end = total - begin;
        }
        break;
      }
    }
    const int64_t padded = CheckedAdd(CheckedAdd(in, begin, "the padded input extent"), end, "the padded input extent");
    out = padded >= span ? (padded - span) / s + 1 : 0;
    if (out < 1) {
      throw InvalidArgument("output size would be <= 0 in spatial dim " + Str(d) + ": input " + Str(in) + " + pads " +
                            Str(begin) + "+" + Str(end) + " is smaller than the dilated kernel extent " + Str(span) +
                            " (auto_pad " + AutoPadName(a.auto_pad) + ")");
    }
    g.input[d] = in;
    g.kernel[d] = k;
    g.output[d] = out;
    g.stride[d] = s;
    g.dilation[d] = dil;
    g.pad_begin[d] = begin;
    g.pad_end[d] = end;
    g.input_plane = CheckedMul(g.input_plane, in, "X's spatial size");
    g.kernel_size = CheckedMul(g.kernel_size, k, "the kernel size");
    g.output_plane = CheckedMul(g.output_plane, out, "the output's spatial size");
  }
  g.fan_in = CheckedMul(g.group_in_channels, g.kernel_size, "the patch length C/group * prod(kernel)");
  // Every element count a kernel indexes with must fit: X, W and Y.
  CheckedMul(CheckedMul(g.batch, g.in_channels, "X's element count"), g.input_plane, "X's element count");
  CheckedMul(g.out_channels, g.fan_in, "W's element count");
  CheckedMul(CheckedMul(g.batch, g.out_channels, "Y's element count"), g.output_plane, "Y's element count");
  return g;
}

}  // namespace ncnn_onnx
