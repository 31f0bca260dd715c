#include "core/buffer.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include "core/bf16.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace lamina {
namespace {

TEST(Arena, HandsOutAlignedDisjointSlicesAndReportsFull) {
  auto arena = Arena::Create(Device::kCpu, 4096);
  ASSERT_TRUE(arena.ok());
  auto a = arena->Take(DType::kF32, {3, 5});
  auto b = arena->Take(DType::kBF16, {7});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data) % 256, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data) % 256, 0u);
  EXPECT_GE(static_cast<char*>(b->data), static_cast<char*>(a->data) + a->bytes());
  auto too_big = arena->Take(DType::kF32, {2000});
  ASSERT_FALSE(too_big.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(too_big.status()));
  arena->Reset();
  EXPECT_EQ(arena->used(), 0u);
  EXPECT_GE(arena->peak(), 512u);
}

TEST(TensorView, RowSliceAndReshape) {
  float data[12];
  TensorView t = CpuF32(data, {4, 3});
  EXPECT_EQ(t.rows(), 4);
  EXPECT_EQ(t.cols(), 3);
  TensorView s = t.RowSlice(1, 3);
  EXPECT_EQ(s.as<float>(), data + 3);
  EXPECT_EQ(s.numel(), 6);
  EXPECT_EQ(t.Reshaped({2, 6}).cols(), 6);
  EXPECT_EQ(t.ToString(), "f32[4, 3]@cpu");
}

TEST(Bf16, RoundsToNearestEvenAndKeepsSpecials) {
  EXPECT_EQ(FloatToBf16Bits(1.0f), 0x3f80);
  EXPECT_EQ(Bf16BitsToFloat(0x3f80), 1.0f);
  // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(FloatToBf16Bits(1.0f + 1.0f / 256), 0x3f80);
  // 1 + 3 * 2^-8 is halfway too and rounds up to the even 1 + 2^-6.
  EXPECT_EQ(FloatToBf16Bits(1.0f + 3.0f / 256), 0x3f82);
  EXPECT_TRUE(std::isnan(Bf16BitsToFloat(FloatToBf16Bits(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(Bf16BitsToFloat(FloatToBf16Bits(std::numeric_limits<float>::infinity())),
            std::numeric_limits<float>::infinity());
  for (float x : {0.1f, -3.7f, 1e-20f, 6.5e4f}) EXPECT_NEAR(Bf16BitsToFloat(FloatToBf16Bits(x)), x, std::fabs(x) / 128);
}

TEST(FileUtil, AtomicWriteReplacesWholeFileAndLeavesNoTemporaries) {
  const std::string dir = ::testing::TempDir() + "/lamina_file_util";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/out.txt";
  ASSERT_TRUE(WriteFileAtomic(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "second").ok());
  EXPECT_EQ(*ReadFile(path), "second");
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  auto missing = ReadFile(dir + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  EXPECT_FALSE(WriteFileAtomic(dir + "/no/such/dir/x", "y").ok());
}

TEST(Buffer, AllocatedBytesFollowLiveBuffersAndKeepTheirPeak) {
  const AllocatedBytes before = Allocated(Device::kCpu);
  ResetPeakAllocated(Device::kCpu);
  EXPECT_EQ(Allocated(Device::kCpu).peak, before.current);
  {
    auto a = Buffer::Allocate(Device::kCpu, 1000);
    auto b = Buffer::Allocate(Device::kCpu, 3000);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(Allocated(Device::kCpu).current, before.current + 4000);
    Buffer moved = *std::move(a);  // a move hands the bytes over: counted once, released once
    *b = Buffer();                 // assigning over a buffer releases it
    EXPECT_EQ(Allocated(Device::kCpu).current, before.current + 1000);
    auto arena = Arena::Create(Device::kCpu, 5000);
    ASSERT_TRUE(arena.ok());
    EXPECT_EQ(Allocated(Device::kCpu).current, before.current + 6000);
  }
  const AllocatedBytes after = Allocated(Device::kCpu);
  EXPECT_EQ(after.current, before.current);
  EXPECT_EQ(after.peak, before.current + 6000);
  ResetPeakAllocated(Device::kCpu);
  EXPECT_EQ(Allocated(Device::kCpu).peak, before.current);
  EXPECT_EQ(DeviceBytesInUse().ok(), CudaAvailable());
}

TEST(Buffer, CudaIsReportedAbsentOrUsable) {
  auto b = Buffer::Allocate(Device::kCuda, 1024);
  EXPECT_EQ(b.ok(), CudaAvailable()) << b.status();
}

}  // namespace
}  // namespace lamina
