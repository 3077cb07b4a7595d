#include "kernel.h"

#include <atomic>
#include <exception>
#include <mutex>
#include <vector>
#include <type_traits>

#include "../common/checked_math.h"
#include "../common/errors.h"
#include "../common/ort_api.h"
#include "../common/tensor.h"
#include "forward.h"
#include "half.h"
#include "job.h"

namespace ncnn_onnx::cpu {
namespace {

template <typename T>
struct TypeOf;
template <>
struct TypeOf<float> {
  static constexpr ONNXTensorElementDataType kValue = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
};
template <>
struct TypeOf<Half> {
  static constexpr ONNXTensorElementDataType kValue = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
};
template <>
struct TypeOf<double> {
  static constexpr ONNXTensorElementDataType kValue = ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
};

// Runs job tasks on onnxruntime's intra-op pool. Task exceptions must not unwind through onnxruntime's
// threads: the first one is kept and rethrown on the calling thread once every task has returned.
template <typename T, typename Acc>
struct ParallelRun {
  const Job<T, Acc>* job;
  void (*run)(const Job<T, Acc>&, int64_t);
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::exception_ptr error;

  static void Task(void* data, size_t index) noexcept {
    auto* self = static_cast<ParallelRun*>(data);
    if (self->failed.load(std::memory_order_relaxed)) return;
    try {
      self->run(*self->job, static_cast<int64_t>(index));
    } catch (...) {
      std::lock_guard<std::mutex> lock(self->mutex);
      if (!self->error) self->error = std::current_exception();
      self->failed.store(true, std::memory_order_relaxed);
    }
  }
};

}  // namespace

CpuKernel::CpuKernel(const OrtApi& api, const OrtKernelInfo* info, ONNXTensorElementDataType type, bool activation)
    : api_(api), node_name_(NodeName(api, info)), type_(type), attributes_(ReadConvAttributes(api, info)),
      fused_(activation), activation_(activation ? ReadActivation(api, info) : Activation{}),
      backend_(SelectBackend()) {
  // A constant W (with B, when B is constant too) is checked and packed now: a bad model fails at session
  // creation, and calls skip the packing. A B that is not constant (a graph input) is read per call; an
  // absent B (the empty name, as exporters write for a convolution followed by a norm) is no reason to
  // re-pack W every call.
  int is_constant = 0;
  const OrtValue* w_value = nullptr;
  ThrowOnError(api, api.KernelInfoGetConstantInput_tensor(info, 1, &is_constant, &w_value));
  if (!is_constant || w_value == nullptr) return;
  const TensorInfo w = DescribeTensor(api, w_value);
  CheckType("W", w, type_);
  size_t inputs = 0;
  ThrowOnError(api, api.KernelInfo_GetInputCount(info, &inputs));
  TensorInfo b;
  bool has_bias = false;
  if (inputs > 2) {
    int bias_constant = 0;
    const OrtValue* b_value = nullptr;
    ThrowOnError(api, api.KernelInfoGetConstantInput_tensor(info, 2, &bias_constant, &b_value));
    if (bias_constant && b_value != nullptr) {
      b = DescribeTensor(api, b_value);
      CheckType("B", b, type_);
      has_bias = true;
    }
  }
  CheckWeightShapes(attributes_, w.shape, has_bias ? &b.shape : nullptr);
  int64_t fan_in = 1;
  for (size_t d = 1; d < w.shape.size(); ++d) fan_in *= w.shape[d];
  const int64_t out_channels = w.shape[0];
  switch (type_) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      constant_f32_ = std::make_unique<PackedWeights<float>>(PackWeights<float, float>(
          static_cast<const float*>(w.data), has_bias ? static_cast<const float*>(b.data) : nullptr, out_channels,
          attributes_.group, fan_in));
      break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      constant_f32_ = std::make_unique<PackedWeights<float>>(PackWeights<Half, float>(
          static_cast<const Half*>(w.data), has_bias ? static_cast<const Half*>(b.data) : nullptr, out_channels,
          attributes_.group, fan_in));
      break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      constant_f64_ = std::make_unique<PackedWeights<double>>(PackWeights<double, double>(
          static_cast<const double*>(w.data), has_bias ? static_cast<const double*>(b.data) : nullptr,
          out_channels, attributes_.group, fan_in));
      break;
    default:
      break;
  }
}

void CpuKernel::Compute(OrtKernelContext* context) const {
  switch (type_) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      Run<float, float>(context, backend_.f32, constant_f32_.get());
      break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      Run<Half, float>(context, backend_.f16, constant_f32_.get());
      break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      Run<double, double>(context, backend_.f64, constant_f64_.get());
      break;
    default:
      throw InvalidArgument(std::string("unsupported element type ") + ElementTypeName(type_) +
                            "; supported: float32, float16, float64");
  }
}

template <typename T, typename Acc>
void CpuKernel::Run(OrtKernelContext* context, const Routine<T, Acc>& preferred,
                    const PackedWeights<Acc>* constant) const {
  const ConvCall call = ReadCall(api_, context, attributes_, TypeOf<T>::kValue);
  ForwardCall<T, Acc> forward;
  forward.geometry = &call.geometry;
  forward.x = static_cast<const T*>(call.x.data);
  forward.w = static_cast<const T*>(call.w.data);
  forward.b = call.has_bias ? static_cast<const T*>(call.b.data) : nullptr;
  forward.packed = constant;
  forward.y = static_cast<T*>(GetOutput(api_, context, 0, call.geometry.OutputShape()));
  forward.limits = &attributes_.limits;
  forward.activation = activation_;
  Forward(backend_, preferred, forward, [&](const Job<T, Acc>& job, void (*run)(const Job<T, Acc>&, int64_t),
                                            int64_t tasks) { RunTasks(context, job, run, tasks); });
}

template <typename T, typename Acc>
void CpuKernel::RunTasks(OrtKernelContext* context, const Job<T, Acc>& job,
                         void (*run)(const Job<T, Acc>&, int64_t), int64_t tasks) const {
  if (tasks <= 0) return;
  if (tasks == 1) {
    run(job, 0);
    return;
  }
  ParallelRun<T, Acc> parallel;
  parallel.job = &job;
  parallel.run = run;
  ThrowOnError(api_, api_.KernelContext_ParallelFor(context, &ParallelRun<T, Acc>::Task, static_cast<size_t>(tasks),
                                                    0, &parallel));
  if (parallel.error) std::rethrow_exception(parallel.error);
}

}  // namespace ncnn_onnx::cpu
