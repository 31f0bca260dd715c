// libFuzzer target for the safetensors reader. Any input must either be rejected with an error or
// parse into tensors whose bytes can all be read; an accepted file must survive a write/read round
// trip unchanged (names, dtypes, shapes, bytes, metadata). Run:
//   fuzz_safetensors -max_total_time=180 CORPUS_DIR tests/fuzz/safetensors_corpus
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/safetensors.h"

namespace {

void Require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using lamina::SafetensorsFile;
  auto file = SafetensorsFile::FromBytes(std::vector<uint8_t>(data, data + size), "fuzz");
  if (!file.ok()) {
    Require(!file.status().message().empty());
    return 0;
  }
  std::vector<lamina::SafetensorsEntry> entries;
  uint8_t checksum = 0;
  for (const lamina::SafetensorsTensorInfo& t : file->tensors()) {
    const auto bytes = file->Data(t);
    for (uint8_t b : bytes) checksum ^= b;  // every byte of every tensor is readable
    if (t.dtype != lamina::DType::kI32 && t.numel() < (1u << 20)) Require(file->ReadFloats(t.name).ok());
    entries.push_back({t.name, t.dtype, t.shape, bytes.data()});
  }
  auto again = lamina::SerializeSafetensors(entries, file->metadata());
  Require(again.ok());
  auto reread = SafetensorsFile::FromBytes(std::vector<uint8_t>(again->begin(), again->end()), "fuzz-again");
  Require(reread.ok());
  Require(reread->metadata() == file->metadata());
  Require(reread->tensors().size() == file->tensors().size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const lamina::SafetensorsTensorInfo& a = file->tensors()[i];
    const lamina::SafetensorsTensorInfo& b = reread->tensors()[i];
    Require(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.bytes() == b.bytes());
    Require(a.bytes() == 0 || std::memcmp(file->Data(a).data(), reread->Data(b).data(), a.bytes()) == 0);
  }
  static volatile uint8_t sink;
  sink = checksum;  // keeps the reads from being optimised away
  return 0;
}
