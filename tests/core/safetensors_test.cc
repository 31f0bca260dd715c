// safetensors reading and writing: round trips of every supported dtype, the exact byte layout
// of the header, and one clear error for each way a file can be malformed or hostile.
#include "core/safetensors.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/bf16.h"
#include "core/f16.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace lamina {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("safetensors_", ::getpid(), "_", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes a file with the given header text (length prefix `header_len`, default its size) and data.
  std::string WriteRaw(const std::string& name, const std::string& header, const std::string& data,
                       std::optional<uint64_t> header_len = std::nullopt) {
    const uint64_t n = header_len.value_or(header.size());
    std::string bytes(8, '\0');
    std::memcpy(bytes.data(), &n, 8);
    bytes += header + data;
    const std::string path = Path(name);
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  // Opens `path` and expects an error that names the file and contains `expected`.
  void ExpectRejected(const std::string& path, const std::string& expected) {
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << "accepted " << path;
    EXPECT_TRUE(absl::StrContains(f.status().message(), path)) << f.status();
    EXPECT_TRUE(absl::StrContains(f.status().message(), expected)) << f.status() << "\nexpected: " << expected;
  }

  fs::path dir_;
};

TEST(F16, ConvertsKnownValuesBothWays) {
  struct Case {
    float f;
    uint16_t bits;
  };
  for (const Case& c : {Case{1.0f, 0x3C00}, Case{-2.0f, 0xC000}, Case{65504.0f, 0x7BFF}, Case{0.0f, 0x0000},
                        Case{-0.0f, 0x8000}, Case{std::ldexp(1.0f, -24), 0x0001}, Case{std::ldexp(1.0f, -14), 0x0400},
                        Case{std::ldexp(1023.0f, -24), 0x03FF}, Case{INFINITY, 0x7C00}, Case{-INFINITY, 0xFC00}}) {
    EXPECT_EQ(FloatToF16Bits(c.f), c.bits) << c.f;
    EXPECT_EQ(F16BitsToFloat(c.bits), c.f) << c.bits;
  }
  EXPECT_EQ(FloatToF16Bits(1.0f / 3.0f), 0x3555);     // 0.333251953125, nearest half
  EXPECT_EQ(FloatToF16Bits(65520.0f), 0x7C00);        // halfway to the next binade rounds to infinity
  EXPECT_EQ(FloatToF16Bits(65519.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16Bits(std::ldexp(1.0f, -25)), 0x0000);  // a tie with zero rounds to even (zero)
  EXPECT_EQ(FloatToF16Bits(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToF16Bits(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie rounds to even
  EXPECT_EQ(FloatToF16Bits(1.0f + std::ldexp(3.0f, -11)), 0x3C02);
  EXPECT_TRUE(std::isnan(F16BitsToFloat(FloatToF16Bits(NAN))));
  // Every finite half survives half -> float -> half.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    if ((b & 0x7C00) == 0x7C00 && (b & 0x3FF) != 0) continue;  // NaN payloads
    EXPECT_EQ(FloatToF16Bits(F16BitsToFloat(static_cast<uint16_t>(b))), b);
  }
}

TEST_F(SafetensorsTest, RoundTripsEveryDTypeWithMetadata) {
  const std::vector<float> f32 = {1.5f, -2.25f, 3e-8f, 1e30f, -0.0f, 7.0f};
  std::vector<uint16_t> f16, bf16;
  const std::vector<float> halves = {0.5f, -1.0f, 65504.0f, std::ldexp(1.0f, -24)};
  for (float x : halves) f16.push_back(FloatToF16Bits(x));
  const std::vector<float> brains = {0.5f, -1.0f, 65536.0f, std::ldexp(1.0f, -100)};
  for (float x : brains) bf16.push_back(FloatToBf16Bits(x));
  const std::vector<int32_t> i32 = {-7, 0, 2147483647};
  const float scalar = 42.0f;
  const std::vector<SafetensorsEntry> entries = {
      {"b.weight", DType::kF32, {2, 3}, f32.data()},
      {"a.half", DType::kF16, {4}, f16.data()},
      {"a.brain", DType::kBF16, {2, 2}, bf16.data()},
      {"ids", DType::kI32, {3}, i32.data()},
      {"empty", DType::kF32, {0, 5}, nullptr},
      {"scalar", DType::kF32, {}, &scalar},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "ünïcode"}};
  const std::string path = Path("all.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, entries, metadata).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata(), metadata);
  ASSERT_EQ(file->tensors().size(), entries.size());
  // Data order is the order written.
  for (size_t i = 0; i < entries.size(); ++i) {
    const SafetensorsTensorInfo& t = file->tensors()[i];
    EXPECT_EQ(t.name, entries[i].name);
    EXPECT_EQ(t.dtype, entries[i].dtype);
    EXPECT_EQ(t.shape, entries[i].shape);
    const auto data = file->Data(t);
    ASSERT_EQ(data.size(), t.numel() * DTypeSize(t.dtype));
    if (!data.empty()) {
      EXPECT_EQ(std::memcmp(data.data(), entries[i].data, data.size()), 0) << t.name;
    }
  }
  EXPECT_EQ(*file->ReadFloats("b.weight"), f32);
  EXPECT_EQ(*file->ReadFloats("a.half"), halves);
  EXPECT_EQ(*file->ReadFloats("a.brain"), brains);
  EXPECT_EQ(*file->ReadFloats("scalar"), std::vector<float>{42.0f});
  EXPECT_TRUE(file->ReadFloats("empty")->empty());
  auto ints = file->ReadFloats("ids");
  ASSERT_FALSE(ints.ok());
  EXPECT_TRUE(absl::StrContains(ints.status().message(), "\"ids\" is i32, not a floating-point type")) << ints.status();
  auto missing = file->Find("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "no tensor \"nope\""));

  // In-memory serialisation produces the same bytes, and FromBytes reads them.
  auto bytes = SerializeSafetensors(entries, metadata);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, *ReadFile(path));
  auto mem = SafetensorsFile::FromBytes(std::vector<uint8_t>(bytes->begin(), bytes->end()), "mem");
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_EQ(*mem->ReadFloats("b.weight"), f32);
}

TEST_F(SafetensorsTest, HeaderIsSpacePaddedToEightBytesInTheReferenceLayout) {
  const float x[3] = {1, 2, 3};
  const std::vector<SafetensorsEntry> entries = {{"x", DType::kF32, {3}, x}};
  auto bytes = SerializeSafetensors(entries);
  ASSERT_TRUE(bytes.ok());
  uint64_t n;
  std::memcpy(&n, bytes->data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes->size(), 8 + n + 12);
  const std::string header = bytes->substr(8, n);
  EXPECT_EQ(header.substr(0, header.find_last_not_of(' ') + 1),
            R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})");
}

TEST_F(SafetensorsTest, WriterRejectsDuplicateAndReservedNamesAndUnsupportedDTypes) {
  const float x = 1;
  const uint16_t u = 1;
  const std::vector<SafetensorsEntry> dup = {{"x", DType::kF32, {}, &x}, {"x", DType::kF32, {}, &x}};
  EXPECT_TRUE(absl::StrContains(WriteSafetensors(Path("d"), dup).message(), "duplicate tensor name \"x\""));
  const std::vector<SafetensorsEntry> reserved = {{"__metadata__", DType::kF32, {}, &x}};
  EXPECT_FALSE(WriteSafetensors(Path("r"), reserved).ok());
  const std::vector<SafetensorsEntry> u16 = {{"u", DType::kU16, {}, &u}};
  EXPECT_TRUE(absl::StrContains(WriteSafetensors(Path("u"), u16).message(), "cannot be stored"));
  const std::vector<SafetensorsEntry> negative = {{"n", DType::kF32, {-1}, &x}};
  EXPECT_FALSE(WriteSafetensors(Path("n"), negative).ok());
  EXPECT_FALSE(fs::exists(Path("d")) || fs::exists(Path("r")) || fs::exists(Path("u")) || fs::exists(Path("n")));
}

TEST_F(SafetensorsTest, RejectsBadJson) {
  ExpectRejected(WriteRaw("bad_json", R"({"x": {"dtype": "F32", )", ""), "header is not valid JSON");
  ExpectRejected(WriteRaw("trailing_garbage", R"({}  x)", ""), "header is not valid JSON");
  ExpectRejected(WriteRaw("not_object", R"([1, 2])", ""), "header does not start with '{'");
  ExpectRejected(WriteRaw("bad_utf8", "{\"\xff\": 1}", ""), "header is not valid JSON");
  ExpectRejected(WriteRaw("empty_header", "", ""), "header does not start with '{'");
  // Deep nesting must not exhaust the stack (printing a nested value recurses).
  const std::string deep = "{\"x\":" + std::string(1000000, '[') + std::string(1000000, ']') + "}";
  ExpectRejected(WriteRaw("deep", deep, ""), "header nests deeper than 3 levels");
  ExpectRejected(WriteRaw("nested_shape", R"({"x":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}})", std::string(4, 'a')),
                 "tensor \"x\": shape [[1]] has a dimension that is not an integer");
}

TEST_F(SafetensorsTest, RejectsHeaderLengthsPastTheFileOrTheCap) {
  ExpectRejected(WriteRaw("too_long", "{}", "", 3), "runs past the end of the file");
  ExpectRejected(WriteRaw("huge", "{}", "", uint64_t{1} << 63), "exceeds the limit");
  ExpectRejected(WriteRaw("max", "{}", "", ~uint64_t{0}), "exceeds the limit");
  const std::string tiny = Path("tiny");
  std::ofstream(tiny, std::ios::binary) << "abc";
  ExpectRejected(tiny, "truncated: 3 bytes");
}

TEST_F(SafetensorsTest, RejectsBadShapes) {
  ExpectRejected(WriteRaw("negative", R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", ""),
                 "tensor \"x\": shape [-1] has a dimension that is not an integer");
  ExpectRejected(WriteRaw("fraction", R"({"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,0]}})", ""),
                 "tensor \"x\": shape [1.5]");
  ExpectRejected(WriteRaw("elements_overflow",
                          R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,0]}})", ""),
                 "tensor \"x\": shape [4294967296,4294967296,2] overflows 64 bits");
  ExpectRejected(WriteRaw("bytes_overflow", R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})",
                          ""),
                 "overflows 64 bits");
  ExpectRejected(WriteRaw("dim_too_big", R"({"x":{"dtype":"F32","shape":[9223372036854775808,0],"data_offsets":[0,0]}})",
                          ""),
                 "not an integer in [0, 2^63)");
  ExpectRejected(WriteRaw("shape_not_array", R"({"x":{"dtype":"F32","shape":3,"data_offsets":[0,12]}})", std::string(12, 'a')),
                 "shape is not an array");
}

TEST_F(SafetensorsTest, RejectsLyingOffsets) {
  const std::string data(8, '\0');
  ExpectRejected(WriteRaw("past_end", R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data),
                 "tensor \"x\": data_offsets [0, 16] run past the end of the data (8 bytes)");
  ExpectRejected(WriteRaw("huge_offset",
                          R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551616]}})",
                          data),
                 "data_offsets must be two non-negative integers");
  ExpectRejected(WriteRaw("reversed", R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data),
                 "end before they begin");
  ExpectRejected(WriteRaw("negative_offset", R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", data),
                 "data_offsets must be two non-negative integers");
  ExpectRejected(WriteRaw("three_offsets", R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", data),
                 "data_offsets must be two non-negative integers");
  ExpectRejected(WriteRaw("size_mismatch", R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data),
                 "tensor \"x\": data_offsets [0, 8] hold 8 bytes but f32[3] needs 12");
}

TEST_F(SafetensorsTest, RejectsOverlapsGapsAndUncoveredBytes) {
  const std::string data(16, '\0');
  ExpectRejected(WriteRaw("overlap",
                          R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                          R"("b":{"dtype":"F32","shape":[3],"data_offsets":[4,16]}})",
                          data),
                 "tensor \"b\" at [4, 16) overlaps tensor \"a\" ending at 12");
  ExpectRejected(WriteRaw("same_bytes",
                          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                          R"("c":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                          data),
                 "overlaps tensor \"a\"");
  ExpectRejected(WriteRaw("gap",
                          R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                          data),
                 "tensor \"b\" starts at 8, leaving a gap after byte 4");
  ExpectRejected(WriteRaw("trailing_bytes", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data),
                 "the tensors cover 8 bytes of a 16-byte data buffer");
  ExpectRejected(WriteRaw("empty_inside",
                          R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                          R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                          data),
                 "tensor \"e\" at [4, 4) overlaps tensor \"a\"");
}

TEST_F(SafetensorsTest, RejectsUnknownDTypesKeysAndDuplicates) {
  const std::string data(8, '\0');
  ExpectRejected(WriteRaw("f64", R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", data),
                 "tensor \"x\": unsupported dtype \"F64\"");
  ExpectRejected(WriteRaw("dtype_number", R"({"x":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", data),
                 "dtype is not a string");
  ExpectRejected(WriteRaw("extra_key", R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"y":1}})", data),
                 "tensor \"x\": unknown key \"y\"");
  ExpectRejected(WriteRaw("missing_key", R"({"x":{"dtype":"F32","shape":[2]}})", data), "needs dtype, shape and data_offsets");
  ExpectRejected(WriteRaw("not_an_entry", R"({"x":[1,2]})", data), "tensor \"x\": expected an object");
  ExpectRejected(WriteRaw("duplicate",
                          R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          data),
                 "the key \"x\" more than once");
  ExpectRejected(WriteRaw("duplicate_inner", R"({"x":{"dtype":"F32","shape":[2],"shape":[2],"data_offsets":[0,8]}})", data),
                 "the key \"shape\" more than once");
  ExpectRejected(WriteRaw("metadata_number", R"({"__metadata__":{"a":1},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                          data),
                 "__metadata__.a is not a string");
}

TEST_F(SafetensorsTest, RejectsTruncatedFilesAtEveryLength) {
  const std::vector<float> x(10, 1.0f);
  const std::vector<SafetensorsEntry> entries = {{"x", DType::kF32, {10}, x.data()}};
  auto bytes = SerializeSafetensors(entries);
  ASSERT_TRUE(bytes.ok());
  for (size_t len = 0; len < bytes->size(); ++len) {
    auto f = SafetensorsFile::FromBytes(std::vector<uint8_t>(bytes->begin(), bytes->begin() + len), "cut");
    ASSERT_FALSE(f.ok()) << "a file cut to " << len << " bytes was accepted";
    EXPECT_TRUE(absl::StrContains(f.status().message(), "cut: ")) << f.status();
  }
  const std::string path = Path("truncated.safetensors");
  std::ofstream(path, std::ios::binary) << bytes->substr(0, bytes->size() - 4);
  ExpectRejected(path, "tensor \"x\": data_offsets [0, 40] run past the end of the data (36 bytes): truncated");
}

}  // namespace
}  // namespace lamina
