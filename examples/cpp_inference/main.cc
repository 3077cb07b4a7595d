// nc_infer: runs an exported NC model with onnxruntime's C++ API and the ncnn_onnx custom-op library.
//
//   nc_infer MODEL.onnx LIBRARY.so INPUT.f32 --shape 1,1,16,16 [--output OUT.f32] [--show 8]
//
// INPUT.f32 is raw little-endian float32 values in row-major order, as numpy's tofile() writes them.
// Prints each output's name, shape and first values; --output writes every output's values, raw float32,
// one after the other in the model's output order. Exit status: 0 on success, 1 when loading or running
// fails, 2 on a usage error.

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

const char kUsage[] =
    "usage: nc_infer MODEL.onnx LIBRARY.so INPUT.f32 --shape D0,D1,... [--output OUT.f32] [--show K]\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string model;
  std::string library;
  std::string input;
  std::string shape_text;
  std::vector<int64_t> shape;
  std::string output;
  size_t show = 8;
};

std::vector<int64_t> ParseShape(const std::string& text) {
  const std::string bad = "--shape '" + text + "': expected positive integers separated by commas, e.g. 1,1,16,16";
  std::vector<int64_t> dims;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 12) {
      throw UsageError(bad);
    }
    const int64_t dim = std::stoll(item);
    if (dim <= 0) throw UsageError(bad);
    dims.push_back(dim);
    start = end + 1;
  }
  return dims;
}

Args ParseArgs(int argc, char** argv) {
  Args args;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) throw UsageError(std::string(flag) + " needs a value");
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--shape") {
      args.shape_text = value("--shape");
      args.shape = ParseShape(args.shape_text);
    } else if (arg == "--output") {
      args.output = value("--output");
    } else if (arg == "--show") {
      const std::string text = value("--show");
      if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos) {
        throw UsageError("--show '" + text + "': expected a count of values to print");
      }
      args.show = std::stoul(text);
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError("unknown option " + arg);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 3) {
    throw UsageError("expected MODEL, LIBRARY and INPUT, got " + std::to_string(positional.size()) + " paths");
  }
  if (args.shape.empty()) throw UsageError("--shape is required (the input's dimensions)");
  args.model = positional[0];
  args.library = positional[1];
  args.input = positional[2];
  return args;
}

std::string FormatShape(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ", ";
    // A negative extent in a model's declared shape is a symbolic (dynamic) dimension.
    text += shape[i] < 0 ? std::string("?") : std::to_string(shape[i]);
  }
  return text + "]";
}

std::vector<float> ReadFloats(const std::string& path, const std::vector<int64_t>& shape, const std::string& shape_text) {
  size_t count = 1;
  for (int64_t dim : shape) {
    if (static_cast<uint64_t>(dim) > std::numeric_limits<size_t>::max() / sizeof(float) / count) {
      throw UsageError("--shape " + shape_text + " is too large");
    }
    count *= static_cast<size_t>(dim);
  }
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw std::runtime_error("cannot open input '" + path + "'");
  const auto bytes = static_cast<uint64_t>(file.tellg());
  if (bytes != count * sizeof(float)) {
    throw UsageError("input '" + path + "' holds " + std::to_string(bytes) + " bytes; --shape " + shape_text +
                     " needs " + std::to_string(count * sizeof(float)) + " (float32)");
  }
  std::vector<float> values(count);
  file.seekg(0);
  file.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(bytes));
  if (!file) throw std::runtime_error("reading input '" + path + "' failed");
  return values;
}

// dlopen searches only the system's library directories for a name without a slash, so a library in the
// current directory given as "libncnn_onnx_ops.so" would not be found; an existing file is passed by path.
std::string LibraryPathForDlopen(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return std::filesystem::absolute(path, ec).string();
  return path;
}

void CheckFloatTensor(const Ort::TypeInfo& info, const std::string& what) {
  if (info.GetONNXType() != ONNX_TYPE_TENSOR) {
    throw std::runtime_error(what + " is not a tensor; this program handles float32 tensors only");
  }
  if (info.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    throw std::runtime_error(what + " is not float32; this program handles float32 tensors only");
  }
}

int Run(const Args& args) {
  std::string stage;  // what was being done, prefixed to onnxruntime's errors
  try {
    const std::vector<float> input = ReadFloats(args.input, args.shape, args.shape_text);

    stage = "starting onnxruntime";
    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "nc_infer");
    Ort::SessionOptions options;

    const std::string library = LibraryPathForDlopen(args.library);
    stage = "loading the custom-op library '" + args.library + "'";
    // onnxruntime keeps the library loaded as long as the sessions made from these options.
    options.RegisterCustomOpsLibrary(library.c_str());

    stage = "loading the model '" + args.model + "'";
    Ort::Session session(env, args.model.c_str(), options);

    stage = "checking the model's inputs and outputs";
    Ort::AllocatorWithDefaultOptions allocator;
    if (session.GetInputCount() != 1) {
      throw std::runtime_error("the model has " + std::to_string(session.GetInputCount()) +
                               " inputs; this program feeds exactly one");
    }
    const Ort::AllocatedStringPtr input_name = session.GetInputNameAllocated(0, allocator);
    const Ort::TypeInfo input_info = session.GetInputTypeInfo(0);
    CheckFloatTensor(input_info, std::string("input '") + input_name.get() + "'");
    const std::vector<int64_t> declared = input_info.GetTensorTypeAndShapeInfo().GetShape();
    bool fits = declared.size() == args.shape.size();
    for (size_t i = 0; fits && i < declared.size(); ++i) fits = declared[i] < 0 || declared[i] == args.shape[i];
    if (!fits) {
      throw UsageError(std::string("input '") + input_name.get() + "' has shape " + FormatShape(declared) +
                       "; --shape " + args.shape_text + " does not fit it");
    }
    std::vector<Ort::AllocatedStringPtr> output_names;
    std::vector<const char*> output_name_ptrs;
    for (size_t i = 0; i < session.GetOutputCount(); ++i) {
      output_names.push_back(session.GetOutputNameAllocated(i, allocator));
      output_name_ptrs.push_back(output_names.back().get());
      CheckFloatTensor(session.GetOutputTypeInfo(i), std::string("output '") + output_names.back().get() + "'");
    }

    std::ofstream out;
    if (!args.output.empty()) {
      stage = "opening the output file";
      out.open(args.output, std::ios::binary | std::ios::trunc);
      if (!out) throw std::runtime_error("cannot write '" + args.output + "'");
    }

    stage = "running the model";
    const Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
    // onnxruntime reads the input in place; it never writes to it.
    Ort::Value x = Ort::Value::CreateTensor<float>(cpu, const_cast<float*>(input.data()), input.size(),
                                                   args.shape.data(), args.shape.size());
    const char* input_names[] = {input_name.get()};
    std::vector<Ort::Value> outputs = session.Run(Ort::RunOptions{nullptr}, input_names, &x, 1,
                                                  output_name_ptrs.data(), output_name_ptrs.size());

    std::printf("onnxruntime %s, custom ops from %s\n", Ort::GetVersionString().c_str(), library.c_str());
    std::printf("input '%s' shape %s\n", input_name.get(), FormatShape(args.shape).c_str());
    stage = "writing the outputs";
    for (size_t i = 0; i < outputs.size(); ++i) {
      const Ort::TensorTypeAndShapeInfo info = outputs[i].GetTensorTypeAndShapeInfo();
      const size_t count = info.GetElementCount();
      const float* y = outputs[i].GetTensorData<float>();
      std::printf("output '%s' shape %s:", output_name_ptrs[i], FormatShape(info.GetShape()).c_str());
      // %.9g round-trips a float32, so printed values can be compared exactly.
      for (size_t k = 0; k < count && k < args.show; ++k) std::printf(" %.9g", y[k]);
      if (count > args.show) std::printf(" ... (%zu values)", count);
      std::printf("\n");
      if (out.is_open()) out.write(reinterpret_cast<const char*>(y), static_cast<std::streamsize>(count * sizeof(float)));
    }
    if (out.is_open()) {
      out.close();
      if (!out) throw std::runtime_error("writing '" + args.output + "' failed");
    }
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {  // Ort::Exception included
    std::fprintf(stderr, "error: %s%s%s\n", stage.c_str(), stage.empty() ? "" : ": ", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = ParseArgs(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n%s", e.what(), kUsage);
    return 2;
  }
  const uint32_t probe = 1;
  unsigned char first_byte = 0;
  std::memcpy(&first_byte, &probe, 1);
  if (first_byte != 1) {
    std::fprintf(stderr, "error: this program reads little-endian float32 files and this host is big-endian\n");
    return 1;
  }
  // The headers' C API version must be one the loaded onnxruntime provides; GetApi answers null otherwise,
  // and every Ort:: call would then crash instead of reporting it.
  const OrtApi* api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    std::fprintf(stderr, "error: onnxruntime %s does not provide C API version %d, which nc_infer was compiled against\n",
                 OrtGetApiBase()->GetVersionString(), ORT_API_VERSION);
    return 1;
  }
  Ort::InitApi(api);
  return Run(args);
}
