// The library's one exported symbol. onnxruntime calls RegisterCustomOps when a session options object
// registers this library; it adds the ncnn_onnx domain with the NormalizedConv kernels of every execution
// provider the library was built with.
#include <onnxruntime_c_api.h>

#include <exception>
#include <string>
#include <vector>

#include "common/custom_op.h"
#include "common/ort_api.h"
#include "cpu/ops.h"

#ifdef NCNN_ONNX_WITH_CUDA
// Defined under runtime/cuda/ (compiled only when CMake finds a CUDA compiler and CUDA sources):
// the CUDA op definitions, same name and schema as the CPU ones (common/custom_op.h), provider
// "CUDAExecutionProvider".
namespace ncnn_onnx::cuda {
const std::vector<OrtCustomOp*>& CustomOps();
}  // namespace ncnn_onnx::cuda
#endif

namespace ncnn_onnx {
namespace {

std::vector<OrtCustomOp*> AllOps() {
  std::vector<OrtCustomOp*> ops = cpu::CustomOps();
#ifdef NCNN_ONNX_WITH_CUDA
  const std::vector<OrtCustomOp*>& cuda_ops = cuda::CustomOps();
  ops.insert(ops.end(), cuda_ops.begin(), cuda_ops.end());
#endif
  return ops;
}

OrtCustomOpDomain* CreateDomain(const OrtApi& api) {
  OrtCustomOpDomain* domain = nullptr;
  ThrowOnError(api, api.CreateCustomOpDomain(kDomain, &domain));
  for (OrtCustomOp* op : AllOps()) {
    OrtStatus* status = api.CustomOpDomain_Add(domain, op);
    if (status != nullptr) {
      api.ReleaseCustomOpDomain(domain);
      ThrowOnError(api, status);
    }
  }
  return domain;
}

// One domain for the whole process, shared by every session options that registers the library.
// Deliberately never released: sessions keep pointers into it and may outlive any owner we could name.
// A failed creation throws out of the initializer, so the next registration tries again.
OrtCustomOpDomain* SharedDomain(const OrtApi& api) {
  static OrtCustomOpDomain* const domain = CreateDomain(api);
  return domain;
}

}  // namespace
}  // namespace ncnn_onnx

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  using ncnn_onnx::kOrtApiVersion;
  const OrtApi* api = api_base != nullptr ? api_base->GetApi(kOrtApiVersion) : nullptr;
  if (api == nullptr) {
    // Too old an onnxruntime for our API version; version 1 of the API can still say so.
    const OrtApi* v1 = api_base != nullptr ? api_base->GetApi(1) : nullptr;
    if (v1 == nullptr) return nullptr;  // not an onnxruntime at all: nothing can report an error
    const std::string message = std::string("ncnn_onnx custom ops need onnxruntime with C API version ") +
                                std::to_string(kOrtApiVersion) + " (onnxruntime >= 1.18); this is onnxruntime " +
                                api_base->GetVersionString();
    return v1->CreateStatus(ORT_FAIL, message.c_str());
  }
  ncnn_onnx::SetApi(api);
  try {
    return api->AddCustomOpDomain(options, ncnn_onnx::SharedDomain(*api));
  } catch (const std::exception& e) {
    const std::string message = std::string("ncnn_onnx: registering the custom ops failed: ") + e.what();
    return api->CreateStatus(ORT_FAIL, message.c_str());
  } catch (...) {
    return api->CreateStatus(ORT_FAIL, "ncnn_onnx: registering the custom ops failed");
  }
}
