#include "ort_api.h"

#include <atomic>
#include <exception>
#include <new>
#include <vector>

#include "errors.h"

namespace ncnn_onnx {
namespace {

std::atomic<const OrtApi*> g_api{nullptr};

}  // namespace

const OrtApi& Api() { return *g_api.load(std::memory_order_acquire); }

void SetApi(const OrtApi* api) { g_api.store(api, std::memory_order_release); }

void ThrowOnError(const OrtApi& api, OrtStatus* status) {
  if (status == nullptr) return;
  const int code = static_cast<int>(api.GetErrorCode(status));
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  throw OrtError(code, message);
}

OrtStatus* StatusFromCurrentException(const OrtApi& api, const char* op_name, const std::string& node_name) noexcept {
  OrtErrorCode code = ORT_RUNTIME_EXCEPTION;
  std::string what;
  try {
    throw;
  } catch (const InvalidArgument& e) {
    code = ORT_INVALID_ARGUMENT;
    what = e.what();
  } catch (const OrtError& e) {
    code = static_cast<OrtErrorCode>(e.code());
    what = e.what();
  } catch (const std::bad_alloc&) {
    code = ORT_FAIL;
    what = "out of memory";
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "unknown error";
  }
  try {
    const std::string message = std::string(op_name) + " node '" + node_name + "': " + what;
    return api.CreateStatus(code, message.c_str());
  } catch (...) {
    // Building the message itself ran out of memory; a fixed text still reaches the user.
    return api.CreateStatus(ORT_FAIL, "ncnn_onnx: out of memory while reporting an error");
  }
}

std::string NodeName(const OrtApi& api, const OrtKernelInfo* info) {
  size_t size = 0;
  OrtStatus* status = api.KernelInfo_GetNodeName(info, nullptr, &size);
  if (status != nullptr || size == 0) {
    if (status != nullptr) api.ReleaseStatus(status);
    return "";
  }
  std::vector<char> name(size);
  status = api.KernelInfo_GetNodeName(info, name.data(), &size);
  if (status != nullptr) {
    api.ReleaseStatus(status);
    return "";
  }
  return std::string(name.data());
}

}  // namespace ncnn_onnx
