// edgecnn-tvm-run: classify with an edgecnn TVM build (model.so + manifest.json) from a C++ app.
//
//   edgecnn-tvm-run BUILD_DIR --image photo.pgm|photo.ppm   one 8-bit binary PGM (1 channel) / PPM (3)
//   edgecnn-tvm-run BUILD_DIR --idx t10k-images-idx3-ubyte [--index N] [--count K]   MNIST-format samples
//   edgecnn-tvm-run BUILD_DIR --raw input.f32 [--count K]   float32 N x C x H x W, already normalized
//   options: --top K (5), --dump logits.f32 (write every output row as float32, for parity checks)
//
// Preprocessing is the manifest's: x / 255 (or x * scale), then (x - mean[c]) / std[c], RGB or BGR, NCHW
// float32 (an NHWC or uint8 model: use edgecnn.runtime). Images must already have the model's size. Only the TVM runtime is needed: libtvm_runtime.so, libtvm_ffi.so and the tvm-ffi
// headers (manifest.json is read with tvm-ffi's JSON parser).
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "edgecnn_app.h"  // examples/cpp/common: inputs, chunks, the top classes, the command line

namespace ffi = tvm::ffi;
namespace json = tvm::ffi::json;

using edgecnn::fail;
using edgecnn::read_file;

// ---- manifest.json: the artifact, the input spec and the labels ----

struct Spec : edgecnn::ImageSpec {
  std::string so_path;
  int64_t batch = 0;  // fixed batch of the artifact, 0 when dynamic
};

ffi::Any field(const json::Object& obj, const char* key, const std::string& where) {
  auto it = obj.find(ffi::String(key));
  if (it == obj.end()) fail("manifest.json: " + where + " has no '" + key + "'");
  return (*it).second;
}

json::Object object(const ffi::Any& v, const std::string& where) {
  auto obj = v.try_cast<json::Object>();
  if (!obj) fail("manifest.json: " + where + " is not an object");
  return *obj;
}

std::vector<double> numbers(const ffi::Any& v, const std::string& where) {
  auto arr = v.try_cast<json::Array>();
  if (!arr) fail("manifest.json: " + where + " is not a list");
  std::vector<double> out;
  for (const ffi::Any& x : *arr) {
    auto d = x.try_cast<double>();
    if (!d) fail("manifest.json: " + where + " holds a non-number");
    out.push_back(*d);
  }
  return out;
}

#if defined(__aarch64__)
constexpr const char* kArch = "aarch64";
#elif defined(__x86_64__)
constexpr const char* kArch = "x86_64";
#else
constexpr const char* kArch = "";
#endif

// obj[key] as a string, "" when absent or not a string.
std::string text(const json::Object& obj, const char* key) {
  auto it = obj.find(ffi::String(key));
  return it == obj.end() ? "" : std::string((*it).second.try_cast<ffi::String>().value_or(""));
}

// The machine the .so is for: a cross-compiled build's artifact.tvm_target.mtriple, else the compiling host.
std::string artifact_machine(const json::Object& man, const json::Object& artifact) {
  auto as_object = [](const json::Object& obj, const char* key) {
    auto it = obj.find(ffi::String(key));
    return it == obj.end() ? json::Object() : (*it).second.try_cast<json::Object>().value_or(json::Object());
  };
  std::string triple = text(as_object(artifact, "tvm_target"), "mtriple");
  return triple.empty() ? text(as_object(man, "host"), "machine") : triple.substr(0, triple.find('-'));
}

Spec read_manifest(const std::string& build_dir) {
  std::string path = build_dir + "/manifest.json";
  if (!std::ifstream(path)) fail(build_dir + " is not an edgecnn build or unpacked bundle (no manifest.json)");
  ffi::String error;
  json::Value root = json::Parse(read_file(path), &error);
  if (!error.empty()) fail(path + ": " + std::string(error));
  json::Object man = object(root, "the file");
  json::Object artifact = object(field(man, "artifact", "the manifest"), "artifact");
  json::Object input = object(field(man, "input", "the manifest"), "input");
  std::string machine = artifact_machine(man, artifact);
  if (!machine.empty() && *kArch && machine != kArch) {
    fail(build_dir + " is compiled for " + machine + ", this app runs on " + kArch + ": use the app built for it");
  }
  Spec s;
  s.so_path = build_dir + "/" + std::string(field(artifact, "file", "artifact").cast<ffi::String>());
  s.batch = field(artifact, "batch", "artifact").try_cast<int64_t>().value_or(0);
  std::vector<double> shape = numbers(field(input, "shape", "input"), "input.shape");
  if (shape.size() != 4) fail("manifest.json: input.shape is not N x C x H x W");
  s.chw = {int64_t(shape[1]), int64_t(shape[2]), int64_t(shape[3])};
  for (double m : numbers(field(input, "mean", "input"), "input.mean")) s.mean.push_back(float(m));
  for (double d : numbers(field(input, "std", "input"), "input.std")) s.std.push_back(float(d));
  for (const auto* v : {&s.mean, &s.std}) {
    if (v->size() != 1 && int64_t(v->size()) != s.chw[0]) fail("manifest.json: input.mean/std need 1 or C values");
  }
  ffi::Any scale = field(input, "scale", "input");
  if (auto number = scale.try_cast<double>()) {
    s.scale = *number == 1.0 / 255.0 ? 0.0f : float(*number);
  } else if (scale.try_cast<ffi::String>().value_or("") != "x / 255") {
    fail("manifest.json: input.scale must be a number or 'x / 255'");
  }
  using Want = std::pair<const char*, const char*>;
  for (auto [key, ours] : {Want{"layout", "NCHW"}, Want{"dtype", "float32"}, Want{"channel_order", "rgb"}}) {
    std::string value = text(input, key);
    if (key == std::string("channel_order") && value == "bgr") s.bgr = true;
    else if (!value.empty() && value != ours) fail("manifest.json: input." + std::string(key) + " is " + value +
                                                   "; this app takes " + ours + " models (use edgecnn.runtime)");
  }
  if (auto labels = field(man, "labels", "the manifest").try_cast<json::Array>()) {
    for (const ffi::Any& l : *labels) s.labels.push_back(std::string(l.cast<ffi::String>()));
  }
  return s;
}

// ---- the model: load the Relax VM executable and run `main` ----

struct AlignedAlloc {  // host memory for input tensors, aligned as TVM's kernels prefer
  void AllocData(DLTensor* t) { t->data = std::aligned_alloc(64, (ffi::GetDataSize(*t) + 63) / 64 * 64); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

ffi::Module load_vm(const std::string& so_path) {
  ffi::Module lib = ffi::Module::LoadFromFile(so_path);
  ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
  constexpr int kPooled = 2;  // the VM's pooled allocator
  vm->GetFunction("vm_initialization").value()(int(kDLCPU), 0, kPooled, int(kDLCPU), 0, kPooled);
  return vm;
}

class Model {
 public:
  explicit Model(const std::string& so_path) : vm_(load_vm(so_path)), main_(vm_->GetFunction("main").value()) {}

  // Runs n samples as one batch; returns the first output, row-major, and its row width.
  std::vector<float> run(const float* x, int64_t n, const std::vector<int64_t>& chw, int64_t* width) {
    ffi::Tensor in = ffi::Tensor::FromNDAlloc(AlignedAlloc(), {n, chw[0], chw[1], chw[2]},
                                              DLDataType{kDLFloat, 32, 1}, DLDevice{kDLCPU, 0});
    std::copy_n(x, in.numel(), static_cast<float*>(in.data_ptr()));
    ffi::Any ret = main_(in);
    auto out = ret.try_cast<ffi::Tensor>();
    if (!out) out = ret.cast<ffi::Array<ffi::Any>>()[0].cast<ffi::Tensor>();  // several outputs: the first
    if (out->dtype().code != kDLFloat || out->dtype().bits != 32) fail("the model's output is not float32");
    *width = out->numel() / n;
    const float* p = reinterpret_cast<const float*>(static_cast<const char*>(out->data_ptr()) +
                                                    out->byte_offset());
    return std::vector<float>(p, p + out->numel());
  }

 private:
  ffi::Module vm_;
  ffi::Function main_;
};

int main(int argc, char** argv) {
  edgecnn::Options opt;
  if (argc < 4 || !edgecnn::parse_options(argc, argv, &opt)) return edgecnn::usage("edgecnn-tvm-run");
  try {
    Spec s = read_manifest(argv[1]);
    std::vector<float> x = edgecnn::load_inputs(opt, s);
    Model model(s.so_path);
    int64_t width = 0;
    auto run = [&](const float* p, int64_t n, int64_t* w) { return model.run(p, n, s.chw, w); };
    std::vector<float> logits = edgecnn::run_chunks(run, x, s, s.batch, s.batch > 0, &width);
    edgecnn::report(opt, logits, width, s);
  } catch (const std::exception& e) {  // tvm::ffi::Error is a std::exception too
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
