// Access to the onnxruntime C API. The library never links libonnxruntime: the API table comes from the
// OrtApiBase that onnxruntime hands to RegisterCustomOps, and only the C API is used, so the version
// requested below is the only coupling to an onnxruntime release.
#pragma once

#include <onnxruntime_c_api.h>

#include <cstdint>
#include <string>

namespace ncnn_onnx {

// The oldest C API with everything the library calls (KernelContext_ParallelFor arrived in 17, the CUDA
// kernel's KernelContext_GetScratchBuffer in 18). Asking for the oldest sufficient version, not the
// headers' newest, lets one build load in every onnxruntime >= 1.18.
constexpr uint32_t kOrtApiVersion = 18;
static_assert(ORT_API_VERSION >= kOrtApiVersion,
              "the onnxruntime headers are older than the C API version this library needs");

// The table stored by RegisterCustomOps; valid for the life of the process once registration succeeded.
const OrtApi& Api();
void SetApi(const OrtApi* api);

// Turns a non-null status into an OrtError (and releases the status).
void ThrowOnError(const OrtApi& api, OrtStatus* status);

// Builds the OrtStatus for the exception being handled, prefixed with the op and node it came from.
// Call only inside a catch block.
OrtStatus* StatusFromCurrentException(const OrtApi& api, const char* op_name, const std::string& node_name) noexcept;

// The node's name from its kernel info, or "" where onnxruntime cannot say.
std::string NodeName(const OrtApi& api, const OrtKernelInfo* info);

}  // namespace ncnn_onnx
