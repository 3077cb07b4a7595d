#include "ops.h"

#include "../common/custom_op.h"
#include "kernel.h"

namespace ncnn_onnx::cpu {

const std::vector<OrtCustomOp*>& CustomOps() {
  // Never destroyed: onnxruntime keeps pointers to these in sessions that may be torn down after this
  // library's static destructors run (at interpreter exit).
  static const auto* ops = new std::vector<OrtCustomOp*>{
      new KernelOp<CpuKernel>(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT),
      new KernelOp<CpuKernel>(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16),
      new KernelOp<CpuKernel>(ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE),
      new KernelOp<CpuKernel>(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, true),
      new KernelOp<CpuKernel>(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, true),
      new KernelOp<CpuKernel>(ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, true),
  };
  return *ops;
}

}  // namespace ncnn_onnx::cpu
