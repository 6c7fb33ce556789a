// edgecnn-trt-run: classify with an edgecnn TensorRT build (model.engine + manifest.json) from a C++ app.
//
//   edgecnn-trt-run BUILD_DIR --image photo.pgm|photo.ppm   one 8-bit binary PGM (1 channel) / PPM (3)
//   edgecnn-trt-run BUILD_DIR --idx t10k-images-idx3-ubyte [--index N] [--count K]   MNIST-format samples
//   edgecnn-trt-run BUILD_DIR --raw input.f32 [--count K]   float32 N x C x H x W, already normalized
//   options: --top K (5), --dump logits.f32 (write every output row as float32, for parity checks)
//
// Preprocessing is the manifest's: x / 255, then (x - mean[c]) / std[c], NCHW. The engine comes from
// `edgecnn build` on this device (or trtexec with the command in trt_settings.json): the app refuses an
// engine the manifest says was built by another TensorRT version. Runs with IRuntime -> deserializeCudaEngine -> IExecutionContext ->
// setTensorAddress + enqueueV3 on its own CUDA stream (TensorRT 8.5+; bindings + enqueueV2 on 8.2).
#include <NvInfer.h>
#include <NvInferVersion.h>
#include <cuda_runtime_api.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "edgecnn_app.h"  // examples/cpp/common: inputs, chunks, the top classes, the command line

#if NV_TENSORRT_MAJOR > 8 || (NV_TENSORRT_MAJOR == 8 && NV_TENSORRT_MINOR >= 5)
#define EDGECNN_TRT_TENSOR_API 1  // named I/O tensors + enqueueV3
#else
#define EDGECNN_TRT_TENSOR_API 0  // TensorRT 8.2 (JetPack 4.6): bindings + enqueueV2
#endif

using json = nlohmann::json;

using edgecnn::fail;
using edgecnn::read_file;

void cuda_check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) fail(std::string(what) + ": " + cudaGetErrorString(rc));
}

std::string header_version() {
  return std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
         std::to_string(NV_TENSORRT_PATCH);
}

// ---- manifest.json: the engine record, the input spec and the labels ----

struct Spec : edgecnn::ImageSpec {
  std::string engine_path;
  int dla_core = -1;
  int64_t max_batch = 1;
  bool fixed_batch = true;
};

Spec read_manifest(const std::string& build_dir) {
  json man = json::parse(read_file(build_dir + "/manifest.json"));
  const json& art = man.at("artifact");
  if (man.value("backend", "") != "tensorrt") fail(build_dir + " is not a TensorRT build");
  bool recorded = art.contains("engine") && !art["engine"].is_null();
  // edgecnn build records who built the engine; trtexec (JetPack 4.6/5, whose Python is too old for
  // edgecnn) does not, and then the target's TensorRT version is what the engine must have been built with
  std::string built = recorded ? art["engine"].at("tensorrt").get<std::string>()
                               : man.at("target").at("tensorrt").at("version").get<std::string>();
  std::string ours = recorded ? header_version() : std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR);
  if (built != "local" && built.rfind(ours, 0) != 0) {
    fail(std::string(recorded ? "model.engine was built with TensorRT " : "the target is TensorRT ") + built +
         ", this app is built with TensorRT " + header_version() + ": engines are not portable across versions; "
         "rebuild the engine here (edgecnn build --force, or the trtexec command in trt_settings.json)");
  }
  Spec s;
  s.engine_path = build_dir + "/" + art.at("file").get<std::string>();
  if (!std::ifstream(s.engine_path)) {
    fail(s.engine_path + " does not exist: run `edgecnn build " + build_dir + "` on this device, or the trtexec "
         "command in " + build_dir + "/trt_settings.json from " + build_dir);
  }
  const json& core = recorded ? art["engine"].value("dla_core", json()) : art.value("dla_core", json());
  if (!core.is_null()) s.dla_core = core.get<int>();
  s.max_batch = art.at("profile").at("max").at(0).get<int64_t>();
  s.fixed_batch = art["profile"]["min"][0] == art["profile"]["max"][0];
  const json& input = man.at("input");
  for (size_t i = 1; i < input["shape"].size(); ++i) s.chw.push_back(input["shape"][i].get<int64_t>());
  if (s.chw.size() != 3) fail("manifest.json: input.shape is not N x C x H x W");
  s.mean = input.at("mean").get<std::vector<float>>();
  s.std = input.at("std").get<std::vector<float>>();
  const json scale = input.value("scale", json("x / 255"));
  if (scale.is_number()) s.scale = scale.get<double>() == 1.0 / 255.0 ? 0.0f : scale.get<float>();
  else if (scale != "x / 255") fail("manifest.json: input.scale must be a number or 'x / 255'");
  s.bgr = input.value("channel_order", "rgb") == "bgr";
  using Want = std::pair<const char*, const char*>;
  for (auto [key, ours] : {Want{"layout", "NCHW"}, Want{"dtype", "float32"}}) {
    std::string value = input.value(key, ours);
    if (value != ours) fail("manifest.json: input." + std::string(key) + " is " + value + "; this app takes " + ours +
                            " models (use edgecnn.runtime)");
  }
  if (man.contains("labels") && man["labels"].is_array()) s.labels = man["labels"].get<std::vector<std::string>>();
  return s;
}

// ---- the engine ----

class Logger : public nvinfer1::ILogger {
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::fprintf(stderr, "TensorRT: %s\n", msg);
  }
};

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  void reserve(size_t n) {
    if (n <= bytes) return;
    if (ptr) cudaFree(ptr);
    cuda_check(cudaMalloc(&ptr, n), "cudaMalloc");
    bytes = n;
  }
  ~DeviceBuffer() { if (ptr) cudaFree(ptr); }
};

int64_t volume(const nvinfer1::Dims& d) {
  int64_t v = 1;
  for (int i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}

class Engine {
 public:
  explicit Engine(const Spec& s) : runtime_(nvinfer1::createInferRuntime(logger_)) {
    if (!runtime_) fail("createInferRuntime failed");
    if (getInferLibVersion() != int32_t(NV_TENSORRT_VERSION)) {  // headers and libnvinfer must agree too
      fail("libnvinfer is version " + std::to_string(getInferLibVersion()) + ", the headers this app was built "
           "with are " + std::to_string(int32_t(NV_TENSORRT_VERSION)) + ": rebuild the app");
    }
    if (s.dla_core >= 0) runtime_->setDLACore(s.dla_core);
    std::string plan = read_file(s.engine_path);
    engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine_) fail(s.engine_path + ": TensorRT could not deserialize it (see its log above)");
    context_.reset(engine_->createExecutionContext());
    if (!context_) fail("createExecutionContext failed");
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");  // not the default stream
    find_io();
  }
  ~Engine() { cudaStreamDestroy(stream_); }

  // Runs n samples as one batch; returns the first output, row-major, and its row width.
  std::vector<float> run(const float* x, int64_t n, const std::vector<int64_t>& chw, int64_t* width) {
    nvinfer1::Dims4 shape{int32_t(n), int32_t(chw[0]), int32_t(chw[1]), int32_t(chw[2])};
    size_t in_bytes = size_t(volume(shape)) * sizeof(float);
    in_.reserve(in_bytes);
    cuda_check(cudaMemcpyAsync(in_.ptr, x, in_bytes, cudaMemcpyHostToDevice, stream_), "copy input");
#if EDGECNN_TRT_TENSOR_API
    if (!context_->setInputShape(input_.c_str(), shape)) fail("TensorRT refused input shape, batch " + std::to_string(n));
    nvinfer1::Dims out_shape = context_->getTensorShape(output_.c_str());
    out_.reserve(size_t(volume(out_shape)) * sizeof(float));
    context_->setTensorAddress(input_.c_str(), in_.ptr);
    context_->setTensorAddress(output_.c_str(), out_.ptr);
    for (const std::string& other : other_outputs_) context_->setTensorAddress(other.c_str(), scratch(other, n));
    if (!context_->enqueueV3(stream_)) fail("enqueueV3 failed (see TensorRT's log above)");
#else
    int in_index = engine_->getBindingIndex(input_.c_str()), out_index = engine_->getBindingIndex(output_.c_str());
    if (!context_->setBindingDimensions(in_index, shape)) fail("TensorRT refused input shape, batch " + std::to_string(n));
    nvinfer1::Dims out_shape = context_->getBindingDimensions(out_index);
    out_.reserve(size_t(volume(out_shape)) * sizeof(float));
    std::vector<void*> bindings(engine_->getNbBindings(), nullptr);
    bindings[in_index] = in_.ptr;
    bindings[out_index] = out_.ptr;
    for (const std::string& other : other_outputs_) bindings[engine_->getBindingIndex(other.c_str())] = scratch(other, n);
    if (!context_->enqueueV2(bindings.data(), stream_, nullptr)) fail("enqueueV2 failed (see TensorRT's log above)");
#endif
    std::vector<float> out(size_t(volume(out_shape)));
    cuda_check(cudaMemcpyAsync(out.data(), out_.ptr, out.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_),
               "copy output");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    *width = int64_t(out.size()) / n;
    return out;
  }

 private:
  void find_io() {
#if EDGECNN_TRT_TENSOR_API
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      bool is_input = engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
      if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT) fail(std::string(name) + " is not float32");
      add_io(name, is_input);
    }
#else
    for (int i = 0; i < engine_->getNbBindings(); ++i) {
      if (engine_->getBindingDataType(i) != nvinfer1::DataType::kFLOAT) fail(std::string(engine_->getBindingName(i)) + " is not float32");
      add_io(engine_->getBindingName(i), engine_->bindingIsInput(i));
    }
#endif
    if (input_.empty() || output_.empty()) fail("the engine needs one input and at least one output");
  }

  void add_io(const std::string& name, bool is_input) {
    if (is_input && !input_.empty()) fail("the engine has several inputs: edgecnn models have one");
    if (is_input) input_ = name;
    else if (output_.empty()) output_ = name;  // the first output is the one printed
    else other_outputs_.push_back(name);
  }

  void* scratch(const std::string& name, int64_t n) {  // outputs after the first: computed, not read
#if EDGECNN_TRT_TENSOR_API
    size_t bytes = size_t(volume(context_->getTensorShape(name.c_str()))) * sizeof(float);
#else
    size_t bytes = size_t(volume(context_->getBindingDimensions(engine_->getBindingIndex(name.c_str())))) * sizeof(float);
#endif
    scratch_[name].reserve(std::max<size_t>(bytes, 4 * size_t(n)));
    return scratch_[name].ptr;
  }

  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  cudaStream_t stream_ = nullptr;
  std::string input_, output_;
  std::vector<std::string> other_outputs_;
  DeviceBuffer in_, out_;
  std::map<std::string, DeviceBuffer> scratch_;
};

int main(int argc, char** argv) {
  edgecnn::Options opt;
  if (argc < 4 || !edgecnn::parse_options(argc, argv, &opt)) return edgecnn::usage("edgecnn-trt-run");
  try {
    Spec s = read_manifest(argv[1]);
    std::vector<float> x = edgecnn::load_inputs(opt, s);
    Engine engine(s);
    int64_t width = 0;
    // chunks the engine's profile takes (a fixed batch: the last chunk zero-padded)
    auto run = [&](const float* p, int64_t n, int64_t* w) { return engine.run(p, n, s.chw, w); };
    std::vector<float> logits = edgecnn::run_chunks(run, x, s, s.max_batch, s.fixed_batch, &width);
    edgecnn::report(opt, logits, width, s);
  } catch (const std::exception& e) {  // nlohmann::json errors are std::exceptions too
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
