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
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if NV_TENSORRT_MAJOR > 8 || (NV_TENSORRT_MAJOR == 8 && NV_TENSORRT_MINOR >= 5)
#define EDGECNN_TRT_TENSOR_API 1  // named I/O tensors + enqueueV3
#else
#define EDGECNN_TRT_TENSOR_API 0  // TensorRT 8.2 (JetPack 4.6): bindings + enqueueV2
#endif

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

void cuda_check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) fail(std::string(what) + ": " + cudaGetErrorString(rc));
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string header_version() {
  return std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
         std::to_string(NV_TENSORRT_PATCH);
}

// ---- manifest.json: the engine record, the input spec and the labels ----

struct Spec {
  std::string engine_path;
  int dla_core = -1;
  int64_t max_batch = 1;
  bool fixed_batch = true;
  std::vector<int64_t> chw;  // C, H, W
  std::vector<float> mean, std;
  float scale = 0.0f;  // pixel * scale; 0: pixel / 255
  bool bgr = false;    // the model takes its channels in BGR order
  std::vector<std::string> labels;
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

// ---- inputs: uint8 images (PGM/PPM, IDX) normalized per the manifest, or raw float32 ----

std::vector<float> normalize(const std::vector<uint8_t>& chw_u8, const Spec& s) {
  int64_t plane = s.chw[1] * s.chw[2];
  std::vector<float> out(chw_u8.size());
  for (size_t i = 0; i < out.size(); ++i) {
    size_t c = (i / plane) % s.chw[0];
    float m = s.mean[s.mean.size() == 1 ? 0 : c], d = s.std[s.std.size() == 1 ? 0 : c];
    int64_t shift = s.bgr ? (s.chw[0] - 1 - 2 * int64_t(c)) * plane : 0;  // BGR: the image's channel C-1-c
    size_t src = size_t(int64_t(i) + shift);
    float x = s.scale ? float(chw_u8[src]) * s.scale : float(chw_u8[src]) / 255.0f;
    out[i] = (x - m) / d;
  }
  return out;
}

std::string dims_text(int64_t c, int64_t h, int64_t w) {
  return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

std::vector<uint8_t> read_pnm(const std::string& path, const Spec& s) {
  std::istringstream f(read_file(path));
  std::string magic;
  int w = 0, h = 0, maxval = 0;
  f >> magic >> w >> h >> maxval;
  int channels = magic == "P5" ? 1 : magic == "P6" ? 3 : 0;
  if (!channels || maxval != 255) fail(path + ": not an 8-bit binary PGM (P5) or PPM (P6)");
  if (channels != s.chw[0] || h != s.chw[1] || w != s.chw[2]) {
    fail(path + ": image is " + dims_text(channels, h, w) + ", the model takes " +
         dims_text(s.chw[0], s.chw[1], s.chw[2]) + " (C x H x W): convert and resize it first");
  }
  f.get();  // the single whitespace after maxval
  std::vector<uint8_t> hwc(size_t(h) * w * channels);
  if (!f.read(reinterpret_cast<char*>(hwc.data()), hwc.size())) fail(path + ": truncated image data");
  std::vector<uint8_t> chw(hwc.size());
  for (int c = 0; c < channels; ++c)
    for (int i = 0; i < h * w; ++i) chw[size_t(c) * h * w + i] = hwc[size_t(i) * channels + c];
  return chw;
}

std::vector<uint8_t> read_idx(const std::string& path, int64_t index, int64_t count, const Spec& s) {
  std::string raw = read_file(path);
  auto byte = [&](size_t i) { return uint8_t(raw[i]); };
  if (raw.size() >= 2 && byte(0) == 0x1f && byte(1) == 0x8b) fail(path + " is gzip-compressed: gunzip it first");
  if (raw.size() < 16 || byte(0) || byte(1) || byte(2) != 0x08 || byte(3) != 3) {
    fail(path + ": not an N x H x W uint8 IDX file");
  }
  std::vector<int64_t> dims;
  for (size_t d = 0; d < 3; ++d)
    dims.push_back(int64_t(byte(4 + 4 * d)) << 24 | byte(5 + 4 * d) << 16 | byte(6 + 4 * d) << 8 | byte(7 + 4 * d));
  int64_t sample = s.chw[0] * s.chw[1] * s.chw[2];
  if (s.chw[0] != 1 || dims[1] != s.chw[1] || dims[2] != s.chw[2]) {
    fail(path + ": IDX images are " + dims_text(1, dims[1], dims[2]) + ", the model takes " +
         dims_text(s.chw[0], s.chw[1], s.chw[2]));
  }
  if (raw.size() != 16 + size_t(dims[0] * sample)) fail(path + ": truncated IDX file");
  if (index < 0 || index + count > dims[0]) fail(path + " has " + std::to_string(dims[0]) + " samples");
  auto first = raw.begin() + 16 + index * sample;
  return std::vector<uint8_t>(first, first + count * sample);
}

std::vector<float> read_raw(const std::string& path, int64_t count, const Spec& s) {
  std::string raw = read_file(path);
  size_t sample = size_t(s.chw[0] * s.chw[1] * s.chw[2]) * sizeof(float);
  if (raw.empty() || raw.size() % sample) fail(path + ": size is not a multiple of one C x H x W float32 sample");
  size_t n = count ? std::min(size_t(count), raw.size() / sample) : raw.size() / sample;
  std::vector<float> out(n * sample / sizeof(float));
  std::copy_n(raw.data(), n * sample, reinterpret_cast<char*>(out.data()));
  return out;
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

// Runs every sample in chunks the engine's profile takes (a fixed batch: the last chunk zero-padded).
std::vector<float> run_all(Engine& engine, const std::vector<float>& x, const Spec& s, int64_t* width) {
  int64_t sample = s.chw[0] * s.chw[1] * s.chw[2], n = int64_t(x.size()) / sample;
  std::vector<float> logits;
  for (int64_t i = 0; i < n; i += s.max_batch) {
    int64_t take = std::min(s.max_batch, n - i), chunk = s.fixed_batch ? s.max_batch : take;
    std::vector<float> part(size_t(chunk * sample), 0.0f);
    std::copy_n(x.begin() + i * sample, take * sample, part.begin());
    std::vector<float> out = engine.run(part.data(), chunk, s.chw, width);
    logits.insert(logits.end(), out.begin(), out.begin() + take * *width);
  }
  return logits;
}

void print_top(const float* row, int64_t width, int top, const Spec& s, int64_t sample) {
  float peak = *std::max_element(row, row + width), total = 0.0f;
  for (int64_t j = 0; j < width; ++j) total += std::exp(row[j] - peak);
  std::vector<int64_t> order(width);
  std::iota(order.begin(), order.end(), 0);
  int k = int(std::min<int64_t>(top, width));
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
  std::printf("sample %lld:\n", (long long)sample);
  for (int r = 0; r < k; ++r) {
    int64_t c = order[r];
    std::string label = size_t(c) < s.labels.size() ? s.labels[c] : std::to_string(c);
    std::printf("  #%d class %lld %-16s p=%.5f logit=%.5f\n", r + 1, (long long)c, label.c_str(),
                std::exp(row[c] - peak) / total, row[c]);
  }
}

int usage() {
  std::fprintf(stderr, "usage: edgecnn-trt-run BUILD_DIR (--image F.pgm|F.ppm | --idx F [--index N] "
                       "[--count K] | --raw F.f32 [--count K]) [--top K] [--dump LOGITS.f32]\n");
  return 2;
}

bool parse_options(int argc, char** argv, std::map<std::string, std::string>* opt) {
  const std::vector<std::string> known = {"--image", "--idx", "--raw", "--index", "--count", "--top", "--dump"};
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc || std::find(known.begin(), known.end(), argv[i]) == known.end()) return false;
    (*opt)[argv[i]] = argv[i + 1];
  }
  return opt->count("--image") + opt->count("--idx") + opt->count("--raw") == 1;
}

int64_t integer(const std::map<std::string, std::string>& opt, const std::string& name, int64_t fallback) {
  auto it = opt.find(name);
  if (it == opt.end()) return fallback;
  char* end = nullptr;
  long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (*end || v < 0) fail(name + " needs a non-negative integer, got '" + it->second + "'");
  return v;
}

std::vector<float> load_inputs(std::map<std::string, std::string>& opt, const Spec& s) {
  int64_t count = integer(opt, "--count", 0);
  if (opt.count("--image")) return normalize(read_pnm(opt["--image"], s), s);
  if (opt.count("--idx")) return normalize(read_idx(opt["--idx"], integer(opt, "--index", 0), count ? count : 1, s), s);
  return read_raw(opt["--raw"], count, s);
}

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt;
  if (argc < 4 || !parse_options(argc, argv, &opt)) return usage();
  try {
    Spec s = read_manifest(argv[1]);
    std::vector<float> x = load_inputs(opt, s);
    Engine engine(s);
    int64_t width = 0;
    std::vector<float> logits = run_all(engine, x, s, &width);
    int top = int(integer(opt, "--top", 5));
    int64_t first = opt.count("--idx") ? integer(opt, "--index", 0) : 0;
    for (size_t r = 0; r * width < logits.size(); ++r) print_top(&logits[r * width], width, top, s, first + r);
    if (opt.count("--dump")) {
      std::ofstream f(opt["--dump"], std::ios::binary);
      f.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
      if (!f) fail("cannot write " + opt["--dump"]);
    }
  } catch (const std::exception& e) {  // nlohmann::json errors are std::exceptions too
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
