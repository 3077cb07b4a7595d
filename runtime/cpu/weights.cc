#include "weights.h"

#include <cstring>

#include "half.h"
#include "job.h"

namespace ncnn_onnx::cpu {
namespace {

template <typename T>
double ToDouble(T v) {
  return static_cast<double>(v);
}
template <>
double ToDouble<Half>(Half v) {
  return static_cast<double>(HalfToFloat(v));
}

}  // namespace

template <typename T, typename Acc>
PackedWeights<Acc> PackWeights(const T* w, const T* b, int64_t out_channels, int64_t group, int64_t fan_in) {
  PackedWeights<Acc> p;
  p.out_channels = out_channels;
  p.group = group;
  p.fan_in = fan_in;
  const int64_t per_group = out_channels / group;
  p.panels = (per_group + kPanelRows - 1) / kPanelRows;
  const int64_t panel_size = fan_in * kPanelRows;
  const int64_t total = group * p.panels * panel_size;
  Acc* dst = p.panel_data.Reserve(static_cast<size_t>(total > 0 ? total : 1));
  std::memset(dst, 0, static_cast<size_t>(total) * sizeof(Acc));
  p.weight_sums.assign(static_cast<size_t>(out_channels), Acc(0));
  for (int64_t m = 0; m < out_channels; ++m) {
    const int64_t g = m / per_group;
    const int64_t local = m % per_group;
    Acc* panel = dst + (g * p.panels + local / kPanelRows) * panel_size + local % kPanelRows;
    const T* row = w + m * fan_in;
    double sum = 0.0;
    for (int64_t i = 0; i < fan_in; ++i) {
      const double v = ToDouble(row[i]);
      panel[i * kPanelRows] = static_cast<Acc>(v);
      sum += v;
    }
    p.weight_sums[static_cast<size_t>(m)] = static_cast<Acc>(sum);
  }
  if (b != nullptr) p.bias = ConvertBias<T, Acc>(b, out_channels);
  return p;
}

template <typename T, typename Acc>
std::vector<Acc> ConvertBias(const T* b, int64_t out_channels) {
  std::vector<Acc> bias(static_cast<size_t>(out_channels));
  for (int64_t m = 0; m < out_channels; ++m) bias[static_cast<size_t>(m)] = static_cast<Acc>(ToDouble(b[m]));
  return bias;
}

template std::vector<float> ConvertBias<float, float>(const float*, int64_t);
template std::vector<float> ConvertBias<Half, float>(const Half*, int64_t);
template std::vector<double> ConvertBias<double, double>(const double*, int64_t);
template PackedWeights<float> PackWeights<float, float>(const float*, const float*, int64_t, int64_t, int64_t);
template PackedWeights<float> PackWeights<Half, float>(const Half*, const Half*, int64_t, int64_t, int64_t);
template PackedWeights<double> PackWeights<double, double>(const double*, const double*, int64_t, int64_t, int64_t);

}  // namespace ncnn_onnx::cpu
