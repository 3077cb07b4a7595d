// The CPU op definitions registered in the ncnn_onnx domain: NormalizedConv and NormalizedConvActivation
// for float32, float16 and float64 on CPUExecutionProvider. Static storage: they outlive every session that uses them.
#pragma once

#include <onnxruntime_c_api.h>

#include <vector>

namespace ncnn_onnx::cpu {

const std::vector<OrtCustomOp*>& CustomOps();

}  // namespace ncnn_onnx::cpu
