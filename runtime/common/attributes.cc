#include "attributes.h"

#include <onnxruntime_c_api.h>

#include <cmath>
#include <string>

#include "errors.h"
#include "ort_api.h"

namespace ncnn_onnx {
namespace {

// The ways an attribute can be stored; probing them tells "absent" from "present with the wrong type".
enum class Stored { kAbsent, kInt, kFloat, kString, kInts, kFloats, kOther };

bool Succeeds(const OrtApi& api, OrtStatus* status) {
  if (status == nullptr) return true;
  api.ReleaseStatus(status);
  return false;
}

Stored Probe(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  int64_t i = 0;
  float f = 0;
  size_t size = 0;
  if (Succeeds(api, api.KernelInfoGetAttribute_int64(info, name, &i))) return Stored::kInt;
  if (Succeeds(api, api.KernelInfoGetAttribute_float(info, name, &f))) return Stored::kFloat;
  if (Succeeds(api, api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) return Stored::kString;
  size = 0;
  if (Succeeds(api, api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size))) return Stored::kInts;
  size = 0;
  if (Succeeds(api, api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size))) return Stored::kFloats;
  // A tensor, graph or other kind: present, and never what this op expects.
  OrtAllocator* allocator = nullptr;
  if (Succeeds(api, api.GetAllocatorWithDefaultOptions(&allocator))) {
    OrtValue* value = nullptr;
    if (Succeeds(api, api.KernelInfoGetAttribute_tensor(info, name, allocator, &value))) {
      api.ReleaseValue(value);
      return Stored::kOther;
    }
  }
  return Stored::kAbsent;
}

const char* StoredName(Stored stored) {
  switch (stored) {
    case Stored::kInt: return "an int";
    case Stored::kFloat: return "a float";
    case Stored::kString: return "a string";
    case Stored::kInts: return "a list of ints";
    case Stored::kFloats: return "a list of floats";
    default: return "another kind of attribute";
  }
}

[[noreturn]] void WrongType(const char* name, const char* expected, Stored got) {
  throw InvalidArgument(std::string("attribute '") + name + "' must be " + expected + ", got " + StoredName(got));
}

// Each reader returns false when the attribute is absent.
bool ReadInt(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t* out) {
  if (Succeeds(api, api.KernelInfoGetAttribute_int64(info, name, out))) return true;
  const Stored stored = Probe(api, info, name);
  if (stored != Stored::kAbsent) WrongType(name, "an int", stored);
  return false;
}

bool ReadFloat(const OrtApi& api, const OrtKernelInfo* info, const char* name, float* out) {
  if (Succeeds(api, api.KernelInfoGetAttribute_float(info, name, out))) return true;
  const Stored stored = Probe(api, info, name);
  if (stored != Stored::kAbsent) WrongType(name, "a float", stored);
  return false;
}

bool ReadString(const OrtApi& api, const OrtKernelInfo* info, const char* name, std::string* out) {
  size_t size = 0;
  if (Succeeds(api, api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) {
    std::string value(size, '\0');
    ThrowOnError(api, api.KernelInfoGetAttribute_string(info, name, value.data(), &size));
    value.resize(size > 0 ? size - 1 : 0);  // drop the terminating NUL onnxruntime counts
    *out = value;
    return true;
  }
  const Stored stored = Probe(api, info, name);
  if (stored != Stored::kAbsent) WrongType(name, "a string", stored);
  return false;
}

bool ReadInts(const OrtApi& api, const OrtKernelInfo* info, const char* name, std::vector<int64_t>* out) {
  size_t size = 0;
  if (Succeeds(api, api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size))) {
    out->assign(size, 0);
    if (size > 0) ThrowOnError(api, api.KernelInfoGetAttributeArray_int64(info, name, out->data(), &size));
    return true;
  }
  const Stored stored = Probe(api, info, name);
  if (stored != Stored::kAbsent) WrongType(name, "a list of ints", stored);
  return false;
}

std::string Join(const std::vector<int64_t>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out + "]";
}

void CheckAtLeast(const char* name, const std::vector<int64_t>& values, int64_t minimum) {
  for (int64_t v : values) {
    if (v < minimum) {
      throw InvalidArgument(std::string("attribute '") + name + "' must hold values >= " + std::to_string(minimum) +
                            ", got " + Join(values));
    }
  }
}

}  // namespace

const char* AutoPadName(AutoPad auto_pad) {
  switch (auto_pad) {
    case AutoPad::kSameUpper: return "SAME_UPPER";
    case AutoPad::kSameLower: return "SAME_LOWER";
    case AutoPad::kValid: return "VALID";
    default: return "NOTSET";
  }
}

void ValidateConvAttributes(const ConvAttributes& a) {
  CheckAtLeast("dilations", a.dilations, 1);
  CheckAtLeast("kernel_shape", a.kernel_shape, 1);
  CheckAtLeast("pads", a.pads, 0);
  CheckAtLeast("strides", a.strides, 1);
  if (a.group < 1) throw InvalidArgument("attribute 'group' must be >= 1, got " + std::to_string(a.group));
  if (!std::isfinite(a.epsilon) || a.epsilon <= 0.0f) {
    throw InvalidArgument("attribute 'epsilon' must be a finite float > 0, got " + std::to_string(a.epsilon));
  }
  if (!a.pads.empty() && a.auto_pad != AutoPad::kNotSet) {
    throw InvalidArgument(std::string("attributes 'pads' and 'auto_pad'=") + AutoPadName(a.auto_pad) +
                          " cannot be used together (ONNX Conv)");
  }
  if (a.pads.size() % 2 != 0) {
    throw InvalidArgument("attribute 'pads' must hold 2 values per spatial dim (begins, then ends), got " + Join(a.pads));
  }
}

ConvAttributes ReadConvAttributes(const OrtApi& api, const OrtKernelInfo* info) {
  ConvAttributes a;
  std::string auto_pad;
  if (ReadString(api, info, "auto_pad", &auto_pad)) {
    if (auto_pad == "NOTSET") {
      a.auto_pad = AutoPad::kNotSet;
    } else if (auto_pad == "SAME_UPPER") {
      a.auto_pad = AutoPad::kSameUpper;
    } else if (auto_pad == "SAME_LOWER") {
      a.auto_pad = AutoPad::kSameLower;
    } else if (auto_pad == "VALID") {
      a.auto_pad = AutoPad::kValid;
    } else {
      throw InvalidArgument("attribute 'auto_pad' must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got '" + auto_pad +
                            "'");
    }
  }
  ReadInts(api, info, "dilations", &a.dilations);
  ReadInts(api, info, "kernel_shape", &a.kernel_shape);
  ReadInts(api, info, "pads", &a.pads);
  ReadInts(api, info, "strides", &a.strides);
  ReadInt(api, info, "group", &a.group);
  ReadFloat(api, info, "epsilon", &a.epsilon);
  int64_t flag = 1;
  if (ReadInt(api, info, "center", &flag)) {
    if (flag != 0 && flag != 1) throw InvalidArgument("attribute 'center' must be 0 or 1, got " + std::to_string(flag));
    a.center = flag == 1;
  }
  if (ReadInt(api, info, "scale", &flag)) {
    if (flag != 0 && flag != 1) throw InvalidArgument("attribute 'scale' must be 0 or 1, got " + std::to_string(flag));
    a.scale = flag == 1;
  }
  ValidateConvAttributes(a);
  return a;
}

}  // namespace ncnn_onnx
