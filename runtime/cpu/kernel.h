// NormalizedConv on CPUExecutionProvider: reads the attributes once, packs W and B once when they are
// constant initializers, and runs each call as independent tasks on onnxruntime's intra-op thread pool.
#pragma once

#include <onnxruntime_c_api.h>

#include <memory>
#include <string>

#include "../common/activation.h"
#include "../common/attributes.h"
#include "../common/custom_op.h"
#include "../common/geometry.h"
#include "backends.h"
#include "weights.h"

namespace ncnn_onnx::cpu {

class CpuKernel {
 public:
  static constexpr const char* kProvider = "CPUExecutionProvider";

  // activation: a NormalizedConvActivation node, whose activation is read from its attributes.
  CpuKernel(const OrtApi& api, const OrtKernelInfo* info, ONNXTensorElementDataType type, bool activation);
  void Compute(OrtKernelContext* context) const;
  const std::string& node_name() const { return node_name_; }
  const char* op_name() const { return fused_ ? kActivationOpName : kOpName; }

 private:
  template <typename T, typename Acc>
  void Run(OrtKernelContext* context, const Routine<T, Acc>& routine, const PackedWeights<Acc>* constant) const;
  // Runs run(job, 0..tasks-1) on onnxruntime's intra-op pool (inline for a single task).
  template <typename T, typename Acc>
  void RunTasks(OrtKernelContext* context, const Job<T, Acc>& job, void (*run)(const Job<T, Acc>&, int64_t),
                int64_t tasks) const;

  const OrtApi& api_;
  std::string node_name_;
  ONNXTensorElementDataType type_;
  ConvAttributes attributes_;
  bool fused_;
  Activation activation_;
  Backend backend_;
  // Packed at creation when W (and B, if given) are constant initializers; read-only afterwards, so
  // concurrent Compute calls share them.
  std::unique_ptr<PackedWeights<float>> constant_f32_;
  std::unique_ptr<PackedWeights<double>> constant_f64_;
};

}  // namespace ncnn_onnx::cpu
