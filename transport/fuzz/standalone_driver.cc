// Runs the fuzz target without libFuzzer: each file named on the command
// line, then N inputs (argv: --runs N, default 200000) made by mutating
// the seed corpus and by plain random bytes, from a fixed seed so a failure
// reproduces.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<uint8_t> read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::vector<uint8_t> mutate(std::vector<uint8_t> in, std::mt19937_64& rng) {
  int edits = 1 + int(rng() % 6);
  for (int i = 0; i < edits; ++i) {
    size_t at = in.empty() ? 0 : rng() % in.size();
    switch (rng() % 4) {
      case 0: if (!in.empty()) in[at] = uint8_t(rng()); break;
      case 1: if (!in.empty()) in[at] ^= uint8_t(1u << (rng() % 8)); break;
      case 2: in.insert(in.begin() + long(at), uint8_t(rng())); break;
      default: if (!in.empty()) in.erase(in.begin() + long(at)); break;
    }
  }
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  long runs = 200000;
  std::vector<std::vector<uint8_t>> seeds;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::atol(argv[++i]);
      continue;
    }
    std::filesystem::path p(argv[i]);
    if (std::filesystem::is_directory(p)) {
      for (auto& e : std::filesystem::directory_iterator(p)) seeds.push_back(read_all(e.path()));
    } else {
      seeds.push_back(read_all(p));
    }
  }
  for (auto& s : seeds) LLVMFuzzerTestOneInput(s.data(), s.size());
  std::mt19937_64 rng(0x6d6163756c61);
  for (long i = 0; i < runs; ++i) {
    std::vector<uint8_t> in;
    if (!seeds.empty() && i % 4 != 0) {
      in = mutate(seeds[rng() % seeds.size()], rng);
    } else {
      in.resize(rng() % 128);
      for (auto& b : in) b = uint8_t(rng());
    }
    LLVMFuzzerTestOneInput(in.data(), in.size());
  }
  std::printf("%ld inputs, %zu seeds: no failure\n", runs, seeds.size());
  return 0;
}
