// What the edgecnn C++ apps (examples/cpp/tvm, examples/cpp/tensorrt) share: the image input a manifest
// describes, reading images (PGM/PPM, IDX) or raw float32 samples, normalizing them as edgecnn.data.preprocess
// does, running them in chunks, printing the top classes, and the command line. Header-only, standard C++17.
#pragma once

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
#include <vector>

namespace edgecnn {

[[noreturn]] inline void fail(const std::string& msg) { throw std::runtime_error(msg); }

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// The manifest's input section and labels, as the apps need them (each app adds its artifact's fields).
struct ImageSpec {
  std::vector<int64_t> chw;  // C, H, W
  std::vector<float> mean, std;
  float scale = 0.0f;  // pixel * scale; 0: pixel / 255
  bool bgr = false;    // the model takes its channels in BGR order
  std::vector<std::string> labels;
  int64_t sample() const { return chw[0] * chw[1] * chw[2]; }
};

inline std::string dims_text(int64_t c, int64_t h, int64_t w) {
  return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

// ---- inputs: uint8 images (PGM/PPM, IDX) normalized per the manifest, or raw float32 ----

inline std::vector<float> normalize(const std::vector<uint8_t>& chw_u8, const ImageSpec& s) {
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

inline std::vector<uint8_t> read_pnm(const std::string& path, const ImageSpec& s) {
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

inline std::vector<uint8_t> read_idx(const std::string& path, int64_t index, int64_t count, const ImageSpec& s) {
  std::string raw = read_file(path);
  auto byte = [&](size_t i) { return uint8_t(raw[i]); };
  if (raw.size() >= 2 && byte(0) == 0x1f && byte(1) == 0x8b) fail(path + " is gzip-compressed: gunzip it first");
  if (raw.size() < 16 || byte(0) || byte(1) || byte(2) != 0x08 || byte(3) != 3) {
    fail(path + ": not an N x H x W uint8 IDX file");
  }
  std::vector<int64_t> dims;
  for (size_t d = 0; d < 3; ++d)
    dims.push_back(int64_t(byte(4 + 4 * d)) << 24 | byte(5 + 4 * d) << 16 | byte(6 + 4 * d) << 8 | byte(7 + 4 * d));
  if (s.chw[0] != 1 || dims[1] != s.chw[1] || dims[2] != s.chw[2]) {
    fail(path + ": IDX images are " + dims_text(1, dims[1], dims[2]) + ", the model takes " +
         dims_text(s.chw[0], s.chw[1], s.chw[2]));
  }
  if (raw.size() != 16 + size_t(dims[0] * s.sample())) fail(path + ": truncated IDX file");
  if (index < 0 || index + count > dims[0]) {
    fail(path + " has " + std::to_string(dims[0]) + " samples: --index " + std::to_string(index) + " --count " +
         std::to_string(count) + " goes past the end");
  }
  auto first = raw.begin() + 16 + index * s.sample();
  return std::vector<uint8_t>(first, first + count * s.sample());
}

inline std::vector<float> read_raw(const std::string& path, int64_t count, const ImageSpec& s) {
  std::string raw = read_file(path);
  size_t sample = size_t(s.sample()) * sizeof(float);
  if (raw.empty() || raw.size() % sample) fail(path + ": size is not a multiple of one C x H x W float32 sample");
  size_t n = count ? std::min(size_t(count), raw.size() / sample) : raw.size() / sample;
  std::vector<float> out(n * sample / sizeof(float));
  std::copy_n(raw.data(), n * sample, reinterpret_cast<char*>(out.data()));
  return out;
}

// ---- running and printing ----

// Runs every sample of `x` through `run(ptr, n, &width)` in chunks of at most `chunk` samples; a `fixed`
// chunk is zero-padded to its full size (an artifact with a fixed batch).
template <class Run>
std::vector<float> run_chunks(Run run, const std::vector<float>& x, const ImageSpec& s, int64_t chunk, bool fixed,
                              int64_t* width) {
  int64_t sample = s.sample(), n = int64_t(x.size()) / sample;
  chunk = chunk > 0 ? chunk : n;
  std::vector<float> logits;
  for (int64_t i = 0; i < n; i += chunk) {
    int64_t take = std::min(chunk, n - i), size = fixed ? chunk : take;
    std::vector<float> part(size_t(size * sample), 0.0f);
    std::copy_n(x.begin() + i * sample, take * sample, part.begin());
    std::vector<float> out = run(part.data(), size, width);
    logits.insert(logits.end(), out.begin(), out.begin() + take * *width);
  }
  return logits;
}

inline void print_top(const float* row, int64_t width, int top, const ImageSpec& s, int64_t sample) {
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

// ---- the command line: BUILD_DIR then --name value pairs ----

using Options = std::map<std::string, std::string>;

inline int usage(const char* app) {
  std::fprintf(stderr, "usage: %s BUILD_DIR (--image F.pgm|F.ppm | --idx F [--index N] "
                       "[--count K] | --raw F.f32 [--count K]) [--top K] [--dump LOGITS.f32]\n", app);
  return 2;
}

// An unknown name or a missing value is a usage error; exactly one input is given.
inline bool parse_options(int argc, char** argv, Options* opt) {
  const std::vector<std::string> known = {"--image", "--idx", "--raw", "--index", "--count", "--top", "--dump"};
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc || std::find(known.begin(), known.end(), argv[i]) == known.end()) return false;
    (*opt)[argv[i]] = argv[i + 1];
  }
  return opt->count("--image") + opt->count("--idx") + opt->count("--raw") == 1;
}

inline int64_t integer(const Options& opt, const std::string& name, int64_t fallback) {
  auto it = opt.find(name);
  if (it == opt.end()) return fallback;
  char* end = nullptr;
  long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (*end || v < 0) fail(name + " needs a non-negative integer, got '" + it->second + "'");
  return v;
}

inline std::vector<float> load_inputs(Options& opt, const ImageSpec& s) {
  int64_t count = integer(opt, "--count", 0);
  if (opt.count("--image")) return normalize(read_pnm(opt["--image"], s), s);
  if (opt.count("--idx")) return normalize(read_idx(opt["--idx"], integer(opt, "--index", 0), count ? count : 1, s), s);
  return read_raw(opt["--raw"], count, s);
}

// --dump LOGITS.f32 and the top classes of every sample.
inline void report(Options& opt, const std::vector<float>& logits, int64_t width, const ImageSpec& s) {
  if (opt.count("--dump")) {
    std::ofstream f(opt["--dump"], std::ios::binary);
    f.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
    if (!f) fail("cannot write " + opt["--dump"]);
  }
  int top = int(integer(opt, "--top", 5));
  int64_t first = opt.count("--idx") ? integer(opt, "--index", 0) : 0;
  for (size_t r = 0; r * width < logits.size(); ++r) print_top(&logits[r * width], width, top, s, first + int64_t(r));
}

}  // namespace edgecnn
