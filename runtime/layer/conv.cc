#include "conv.h"

#include <limits>
#include <stdexcept>
#include <vector>

#include "common/attributes.h"
#include "common/checked_math.h"
#include "common/errors.h"
#include "common/geometry.h"
#include "cpu/backends.h"
#include "cpu/forward.h"
#include "cpu/weights.h"
#include "parallel.h"

namespace ncnn_onnx::layer {
namespace {

ConvAttributes AttributesOf(const NcnnOnnxConvCall& call) {
  const int64_t rank = call.rank;
  ConvAttributes a;
  a.kernel_shape.assign(call.w_shape + 2, call.w_shape + 2 + rank);
  a.strides.assign(call.strides, call.strides + rank);
  a.dilations.assign(call.dilations, call.dilations + rank);
  a.pads.assign(call.pads, call.pads + 2 * rank);
  a.group = call.group;
  a.epsilon = call.epsilon;
  a.center = call.center != 0;
  a.scale = call.scale != 0;
  // The limits guard a session against an untrusted model file; a layer's caller owns its tensors and
  // may pad as far as torch lets it, so neither the pad nor the buffer limit applies (an allocation that
  // fails is reported as out of memory).
  a.limits.max_pad = std::numeric_limits<int64_t>::max();
  a.limits.max_buffer_bytes = std::numeric_limits<int64_t>::max();
  ValidateConvAttributes(a);
  return a;
}

// A task's failure in a worker, carried out of Forward (which frees its buffers on the way).
struct TaskFailed : std::runtime_error {
  int status;
  explicit TaskFailed(int s) : std::runtime_error("a task failed"), status(s) {}
};

}  // namespace
}  // namespace ncnn_onnx::layer

extern "C" {

__attribute__((visibility("default"))) int ncnn_onnx_conv_forward(const NcnnOnnxConvCall* call) {
  using namespace ncnn_onnx;
  using namespace ncnn_onnx::layer;
  if (call == nullptr || call->x == nullptr || call->w == nullptr || call->y == nullptr) return kNullTensor;
  if (call->rank < 1 || call->rank > 3) return kBadShape;
  return Guarded([&] {
    const ConvAttributes attributes = AttributesOf(*call);
    const std::vector<int64_t> x(call->x_shape, call->x_shape + 2 + call->rank);
    const std::vector<int64_t> w(call->w_shape, call->w_shape + 2 + call->rank);
    const std::vector<int64_t> b = {call->w_shape[0]};
    const ConvGeometry geometry = ResolveGeometry(attributes, x, w, call->b != nullptr ? &b : nullptr);
    // Picked once, as a session picks it: NCNN_ONNX_CPU_ISA caps it.
    static const cpu::Backend backend = cpu::SelectBackend();
    cpu::ForwardCall<float, float> forward;
    forward.geometry = &geometry;
    forward.x = call->x;
    forward.w = call->w;
    forward.b = call->b;
    forward.y = call->y;
    forward.limits = &attributes.limits;
    const auto* packed = static_cast<const cpu::PackedWeights<float>*>(call->packed);
    if (packed != nullptr) {
      if (packed->out_channels != geometry.out_channels || packed->group != geometry.group ||
          packed->fan_in != geometry.fan_in || !packed->bias.empty())
        throw InvalidArgument("the packed weights do not fit this call's W");
      forward.packed = packed;
    }
    try {
      cpu::Forward(backend, backend.f32, forward,
                   [&](const cpu::Job<float, float>& job, void (*run)(const cpu::Job<float, float>&, int64_t),
                       int64_t tasks) {
                     const int status = Parallel(tasks, call->threads, [&](int64_t t0, int64_t t1) {
                       for (int64_t t = t0; t < t1; ++t) run(job, t);
                     });
                     if (status != kOk) throw TaskFailed(status);
                   });
    } catch (const TaskFailed& failed) {
      return failed.status;
    }
    return static_cast<int>(kOk);
  });
}

__attribute__((visibility("default"))) int ncnn_onnx_conv_pack(const NcnnOnnxConvCall* call, void** packed) {
  using namespace ncnn_onnx;
  using namespace ncnn_onnx::layer;
  if (call == nullptr || call->w == nullptr || packed == nullptr) return kNullTensor;
  if (call->rank < 1 || call->rank > 3) return kBadShape;
  return Guarded([&] {
    ConvAttributes attributes = AttributesOf(*call);
    const std::vector<int64_t> w(call->w_shape, call->w_shape + 2 + call->rank);
    CheckWeightShapes(attributes, w, nullptr);
    int64_t fan_in = 1;
    for (size_t d = 1; d < w.size(); ++d) fan_in = CheckedMul(fan_in, w[d], "the packed weights");
    // Without B: the call passes its own (M values, converted per call).
    *packed = new cpu::PackedWeights<float>(cpu::PackWeights<float, float>(call->w, nullptr, w[0], call->group, fan_in));
    return static_cast<int>(kOk);
  });
}

__attribute__((visibility("default"))) void ncnn_onnx_conv_release(void* packed) {
  delete static_cast<ncnn_onnx::cpu::PackedWeights<float>*>(packed);
}

}  // extern "C"
