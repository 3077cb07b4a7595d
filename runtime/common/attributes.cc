#include "attributes.h"

#include "activation.h"

#include <onnxruntime_c_api.h>

#include <cmath>
#include <cstdio>
#include <limits>
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

// A single int, float or string under `name`, else kAbsent.
Stored ProbeScalar(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  int64_t i = 0;
  float f = 0;
  size_t size = 0;
  if (Succeeds(api, api.KernelInfoGetAttribute_int64(info, name, &i))) return Stored::kInt;
  if (Succeeds(api, api.KernelInfoGetAttribute_float(info, name, &f))) return Stored::kFloat;
  if (Succeeds(api, api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) return Stored::kString;
  return Stored::kAbsent;
}

// A non-empty list of floats under `name`.
bool HoldsFloats(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  size_t size = 0;
  return Succeeds(api, api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size)) && size > 0;
}

Stored Probe(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  const Stored scalar = ProbeScalar(api, info, name);
  if (scalar != Stored::kAbsent) return scalar;
  // Floats and tensors before ints: onnxruntime reads an attribute of any kind as a (possibly empty)
  // list of ints.
  if (HoldsFloats(api, info, name)) return Stored::kFloats;
  OrtAllocator* allocator = nullptr;
  if (Succeeds(api, api.GetAllocatorWithDefaultOptions(&allocator))) {
    OrtValue* value = nullptr;
    if (Succeeds(api, api.KernelInfoGetAttribute_tensor(info, name, allocator, &value))) {
      api.ReleaseValue(value);
      return Stored::kOther;  // a tensor: present, and never what this op expects
    }
  }
  size_t size = 0;
  if (Succeeds(api, api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size))) return Stored::kInts;
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
    // onnxruntime reads an attribute of any other kind (a single value, a list of floats or strings, a
    // tensor) as an empty list of ints without error. Name the kind where the C API can tell it; a list
    // of strings it cannot tell from an empty list, and no list attribute of this op may be empty.
    if (size == 0) {
      const Stored stored = Probe(api, info, name);
      if (stored != Stored::kInts) WrongType(name, "a list of ints", stored);
      throw InvalidArgument(std::string("attribute '") + name +
                            "' holds no ints (an empty list, or a list of strings); leave it out for the default "
                            "or give one value per spatial dim");
    }
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

bool ReadFloats(const OrtApi& api, const OrtKernelInfo* info, const char* name, std::vector<float>* out) {
  size_t size = 0;
  if (Succeeds(api, api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size)) && size > 0) {
    out->assign(size, 0.0f);
    ThrowOnError(api, api.KernelInfoGetAttributeArray_float(info, name, out->data(), &size));
    return true;
  }
  const Stored stored = Probe(api, info, name);
  if (stored != Stored::kAbsent && stored != Stored::kInts) WrongType(name, "a list of floats", stored);
  return false;  // absent, or an empty list (which onnxruntime cannot tell apart)
}

}  // namespace

Activation MakeActivation(const std::string& name, const std::vector<float>& params) {
  struct Known {
    const char* name;
    ActivationKind kind;
    size_t params;
  };
  static const Known kKnown[] = {
      {"Relu", ActivationKind::kRelu, 0},         {"LeakyRelu", ActivationKind::kLeakyRelu, 1},
      {"Clip", ActivationKind::kClip, 2},         {"HardSigmoid", ActivationKind::kHardSigmoid, 2},
      {"HardSwish", ActivationKind::kHardSwish, 0}, {"Sigmoid", ActivationKind::kSigmoid, 0},
      {"SiLU", ActivationKind::kSilu, 0},
  };
  for (const Known& known : kKnown) {
    if (name != known.name) continue;
    if (params.size() != known.params) {
      throw InvalidArgument("attribute 'activation_params' must hold " + std::to_string(known.params) +
                            " value(s) for activation '" + name + "', got " + std::to_string(params.size()));
    }
    for (float p : params) {
      if (!std::isfinite(p)) throw InvalidArgument("attribute 'activation_params' must be finite for activation '" + name + "'");
    }
    Activation a;
    a.kind = known.kind;
    if (known.kind == ActivationKind::kHardSwish) {
      a.alpha = 1.0f / 6.0f;
      a.beta = 0.5f;
    }
    if (!params.empty()) a.alpha = params[0];
    if (params.size() > 1) a.beta = params[1];
    if (known.kind == ActivationKind::kClip && a.alpha > a.beta) {
      throw InvalidArgument("attribute 'activation_params' of activation 'Clip' must be [min, max] with min <= max");
    }
    return a;
  }
  throw InvalidArgument("attribute 'activation' must be one of Relu, LeakyRelu, Clip, HardSigmoid, HardSwish, Sigmoid, "
                        "SiLU, got '" + name + "'");
}

Activation ReadActivation(const OrtApi& api, const OrtKernelInfo* info) {
  std::string name;
  if (!ReadString(api, info, "activation", &name)) throw InvalidArgument("attribute 'activation' is required");
  std::vector<float> params;
  ReadFloats(api, info, "activation_params", &params);
  return MakeActivation(name, params);
}

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
  // A subnormal epsilon is refused as well: where denormals are flushed to zero (a session option) it would
  // act as 0, and 1/sqrt(0) turns the exact zero of a flat patch into NaN.
  if (!std::isfinite(a.epsilon) || !(a.epsilon >= std::numeric_limits<float>::min())) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", static_cast<double>(a.epsilon));
    throw InvalidArgument(std::string("attribute 'epsilon' must be a finite, normal float32 (>= 1.17549435e-38), got ") +
                          text);
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
  a.limits = ReadResourceLimits();
  return a;
}

}  // namespace ncnn_onnx
