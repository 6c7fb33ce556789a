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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ffi = tvm::ffi;
namespace json = tvm::ffi::json;

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// ---- manifest.json: the artifact, the input spec and the labels ----

struct Spec {
  std::string so_path;
  int64_t batch = 0;            // fixed batch of the artifact, 0 when dynamic
  std::vector<int64_t> chw;     // C, H, W
  std::vector<float> mean, std;
  float scale = 0.0f;           // pixel * scale; 0: pixel / 255
  bool bgr = false;             // the model takes its channels in BGR order
  std::vector<std::string> labels;
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

std::vector<uint8_t> read_pnm(const std::string& path, const Spec& s) {
  std::istringstream f(read_file(path));
  std::string magic;
  int w = 0, h = 0, maxval = 0;
  f >> magic >> w >> h >> maxval;
  int channels = magic == "P5" ? 1 : magic == "P6" ? 3 : 0;
  if (!channels || maxval != 255) fail(path + ": not an 8-bit binary PGM (P5) or PPM (P6)");
  if (channels != s.chw[0] || h != s.chw[1] || w != s.chw[2]) {
    fail(path + ": image is " + std::to_string(channels) + "x" + std::to_string(h) + "x" + std::to_string(w) +
         ", the model takes " + std::to_string(s.chw[0]) + "x" + std::to_string(s.chw[1]) + "x" +
         std::to_string(s.chw[2]) + " (C x H x W): convert and resize it first");
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
  if (raw.size() < 4 || byte(0) || byte(1) || byte(2) != 0x08) fail(path + ": not a uint8 IDX file");
  size_t ndim = byte(3), off = 4 + 4 * ndim;
  if (ndim != 3 || raw.size() < off) fail(path + ": not an N x H x W image IDX file");
  std::vector<int64_t> dims;
  for (size_t d = 0; d < ndim; ++d)
    dims.push_back(int64_t(byte(4 + 4 * d)) << 24 | byte(5 + 4 * d) << 16 | byte(6 + 4 * d) << 8 | byte(7 + 4 * d));
  int64_t sample = s.chw[0] * s.chw[1] * s.chw[2];
  if (s.chw[0] != 1 || dims[1] != s.chw[1] || dims[2] != s.chw[2]) {
    fail(path + ": IDX images are 1x" + std::to_string(dims[1]) + "x" + std::to_string(dims[2]) +
         ", the model takes " + std::to_string(s.chw[0]) + "x" + std::to_string(s.chw[1]) + "x" +
         std::to_string(s.chw[2]));
  }
  if (raw.size() != off + size_t(dims[0] * sample)) fail(path + ": truncated IDX file");
  if (index < 0 || index + count > dims[0]) {
    fail(path + " has " + std::to_string(dims[0]) + " samples: --index " + std::to_string(index) + " --count " +
         std::to_string(count) + " goes past the end");
  }
  auto first = raw.begin() + off + index * sample;
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

// Runs every sample, in chunks of the artifact's fixed batch (the last chunk zero-padded).
std::vector<float> run_all(Model& model, const std::vector<float>& x, const Spec& s, int64_t* width) {
  int64_t sample = s.chw[0] * s.chw[1] * s.chw[2], n = int64_t(x.size()) / sample;
  int64_t chunk = s.batch ? s.batch : n;
  std::vector<float> logits;
  for (int64_t i = 0; i < n; i += chunk) {
    std::vector<float> part(chunk * sample, 0.0f);
    int64_t take = std::min(chunk, n - i);
    std::copy_n(x.begin() + i * sample, take * sample, part.begin());
    std::vector<float> out = model.run(part.data(), chunk, s.chw, width);
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
  std::fprintf(stderr, "usage: edgecnn-tvm-run BUILD_DIR (--image F.pgm|F.ppm | --idx F [--index N] "
                       "[--count K] | --raw F.f32 [--count K]) [--top K] [--dump LOGITS.f32]\n");
  return 2;
}

// --name value pairs after BUILD_DIR; an unknown name or a missing value is a usage error.
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
    Model model(s.so_path);
    int64_t width = 0;
    std::vector<float> logits = run_all(model, x, s, &width);
    if (opt.count("--dump")) {
      std::ofstream f(opt["--dump"], std::ios::binary);
      f.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
      if (!f) fail("cannot write " + opt["--dump"]);
    }
    int top = int(integer(opt, "--top", 5));
    int64_t first = opt.count("--idx") ? integer(opt, "--index", 0) : 0;
    for (size_t r = 0; r * width < logits.size(); ++r) print_top(&logits[r * width], width, top, s, first + r);
  } catch (const std::exception& e) {  // tvm::ffi::Error is a std::exception too
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
