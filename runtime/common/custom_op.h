// The OrtCustomOp definition of NormalizedConv for one execution provider and one element type.
// It holds the op's schema (inputs X, W, optional B; output Y) and the C-callable
// trampolines that create, run and destroy a kernel. No exception crosses into onnxruntime: each
// trampoline converts it to an OrtStatus that names the op and the node.
//
// A Kernel type provides:
//   static constexpr const char* kProvider;   // execution provider, e.g. "CPUExecutionProvider"
//   Kernel(const OrtApi&, const OrtKernelInfo*, ONNXTensorElementDataType, bool activation);
//     (activation: the node is a NormalizedConvActivation)
//   void Compute(OrtKernelContext*) const;    // may run concurrently on one kernel
//   const std::string& node_name() const;
//   const char* op_name() const;              // kOpName or kActivationOpName
#pragma once

#include <onnxruntime_c_api.h>

#include <string>

#include "ort_api.h"

namespace ncnn_onnx {

inline constexpr const char* kDomain = "ncnn_onnx";
inline constexpr const char* kOpName = "NormalizedConv";
// NormalizedConv followed by an activation, as one node: what the Python session helper fuses the pair into
// for the CPU provider (ncnn_onnx/runtime/fusion.py), with the attributes 'activation' and
// 'activation_params' (common/activation.h). Not an exporter's op: files keep NormalizedConv.
inline constexpr const char* kActivationOpName = "NormalizedConvActivation";
inline constexpr int kOpVersion = 1;

template <class Kernel>
class KernelOp : public OrtCustomOp {
 public:
  explicit KernelOp(ONNXTensorElementDataType type, bool activation = false)
      : OrtCustomOp{}, type_(type), activation_(activation) {
    version = kOrtApiVersion;
    GetName = [](const OrtCustomOp* op) { return static_cast<const KernelOp*>(op)->name(); };
    GetExecutionProviderType = [](const OrtCustomOp*) { return Kernel::kProvider; };
    // X's type picks the kernel; W and B accept any type so that a mismatch reaches the kernel, which
    // names it ("W has element type float32, expected float16 like X"), instead of onnxruntime's bare
    // "could not find an implementation".
    GetInputType = [](const OrtCustomOp* op, size_t index) {
      return index == 0 ? static_cast<const KernelOp*>(op)->type_ : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    };
    GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return 3; };
    GetOutputType = [](const OrtCustomOp* op, size_t) { return static_cast<const KernelOp*>(op)->type_; };
    GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
    GetInputCharacteristic = [](const OrtCustomOp*, size_t index) {
      return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
    };
    GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
    GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
    GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
    GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
    GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
    GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
    // onnxruntime builds one schema per custom-op name, so a node of a model importing ncnn_onnx:2 still
    // resolves to version 1 and reaches this kernel: the kernel cannot see the import. The Python session
    // helper refuses such models before onnxruntime sees them (docs/op.md, "Limits").
    GetStartVersion = [](const OrtCustomOp*) { return kOpVersion; };
    GetEndVersion = [](const OrtCustomOp*) { return kOpVersion; };
    CreateKernelV2 = &Create;
    KernelComputeV2 = &Compute;
    KernelDestroy = &Destroy;
  }

 private:
  static OrtStatus* ORT_API_CALL Create(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info,
                                        void** kernel) noexcept {
    *kernel = nullptr;
    std::string node;
    const auto* self = static_cast<const KernelOp*>(op);
    try {
      node = NodeName(*api, info);
      *kernel = new Kernel(*api, info, self->type_, self->activation_);
      return nullptr;
    } catch (...) {
      return StatusFromCurrentException(*api, self->name(), node);
    }
  }

  static OrtStatus* ORT_API_CALL Compute(void* kernel, OrtKernelContext* context) noexcept {
    const auto* k = static_cast<const Kernel*>(kernel);
    try {
      k->Compute(context);
      return nullptr;
    } catch (...) {
      return StatusFromCurrentException(Api(), k->op_name(), k->node_name());
    }
  }

  static void ORT_API_CALL Destroy(void* kernel) noexcept { delete static_cast<Kernel*>(kernel); }

  const char* name() const { return activation_ ? kActivationOpName : kOpName; }

  ONNXTensorElementDataType type_;
  bool activation_;
};

}  // namespace ncnn_onnx
