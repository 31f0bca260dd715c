// metrics.jsonl writing, resume truncation, torn lines, and the progress line.
#include "pretrain/metrics.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace lamina {
namespace {

namespace fs = std::filesystem;

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("metrics_", ::getpid(), "_", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "metrics.jsonl").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<int64_t> Steps() {
    std::vector<int64_t> steps;
    const auto records = ReadMetrics(path_);
    EXPECT_TRUE(records.ok()) << records.status();
    for (const auto& r : records.value_or(std::vector<nlohmann::json>{})) steps.push_back(r["step"].get<int64_t>());
    return steps;
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(MetricsTest, WritesOneFlushedLinePerRecord) {
  auto w = MetricsWriter::Open(path_, std::nullopt);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(w->Write({{"kind", "train"}, {"step", 1}, {"loss", 10.5}}).ok());
  // Visible before the writer is closed: nothing is buffered in the process.
  EXPECT_EQ(*ReadFile(path_), "{\"kind\":\"train\",\"loss\":10.5,\"step\":1}\n");
  ASSERT_TRUE(w->Write({{"kind", "eval"}, {"step", 2}, {"mlm_loss", 9.0}}).ok());
  EXPECT_EQ(Steps(), (std::vector<int64_t>{1, 2}));
  EXPECT_FALSE(w->Write(nlohmann::json::array({1, 2})).ok());
}

TEST_F(MetricsTest, FreshRunStartsAnEmptyFile) {
  ASSERT_TRUE(WriteFileAtomic(path_, "{\"step\":5}\n").ok());
  auto w = MetricsWriter::Open(path_, std::nullopt);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->Write({{"step", 1}}).ok());
  EXPECT_EQ(Steps(), (std::vector<int64_t>{1}));
}

TEST_F(MetricsTest, ResumeDropsRecordsAfterTheCheckpointAndATornLine) {
  {
    auto w = MetricsWriter::Open(path_, std::nullopt);
    ASSERT_TRUE(w.ok());
    for (int64_t step : {10, 20, 30, 40, 50}) ASSERT_TRUE(w->Write({{"kind", "train"}, {"step", step}}).ok());
    ASSERT_TRUE(w->Write({{"note", "no step: kept"}}).ok());
  }
  std::ofstream(path_, std::ios::app) << "{\"kind\":\"train\",\"st";  // killed mid-write
  auto w = MetricsWriter::Open(path_, 30);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(w->Write({{"kind", "train"}, {"step", 40}}).ok());
  auto records = ReadMetrics(path_);
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 5u);
  EXPECT_EQ((*records)[2]["step"], 30);
  EXPECT_EQ((*records)[3]["note"], "no step: kept");
  EXPECT_EQ((*records)[4]["step"], 40);
  // Resuming where the file already ends changes nothing.
  const std::string before = *ReadFile(path_);
  ASSERT_TRUE(MetricsWriter::Open(path_, 40).ok());
  EXPECT_EQ(*ReadFile(path_), before);
}

TEST_F(MetricsTest, ResumeWithoutAFileCreatesIt) {
  auto w = MetricsWriter::Open(path_, 100);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->Write({{"step", 101}}).ok());
  EXPECT_EQ(Steps(), (std::vector<int64_t>{101}));
}

TEST_F(MetricsTest, MalformedLinesAreErrorsNamingTheLine) {
  ASSERT_TRUE(WriteFileAtomic(path_, "{\"step\":1}\nnot json\n{\"step\":2}\n").ok());
  auto r = ReadMetrics(path_);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), path_ + ":2: not a JSON object")) << r.status();
  auto w = MetricsWriter::Open(path_, 1);
  ASSERT_FALSE(w.ok());
  EXPECT_TRUE(absl::StrContains(w.status().message(), ":2: not a JSON object")) << w.status();
}

TEST(Progress, FormatsEveryField) {
  ProgressInfo p;
  p.step = 1200;
  p.total_steps = 100000;
  p.loss = 6.12345;
  p.lr = 1e-4;
  p.grad_norm = 1.2345;
  p.tokens_per_s = 123456;
  p.flops_per_s = 412e12;
  p.peak_flops = 1000e12;
  p.seconds_per_step = 0.5;  // 98800 steps left: 49400 s
  EXPECT_EQ(FormatProgress(p),
            "step 1200/100000 (1.2%) | loss 6.1235 | lr 1.00e-04 | gnorm 1.234 | 123.5k tok/s | MFU 41.2% | ETA 13:43:20");
  p.peak_flops = 0;        // unknown peak: no MFU
  p.seconds_per_step = 0;  // no timing yet: no ETA
  p.tokens_per_s = 0;
  p.loss = NAN;
  EXPECT_EQ(FormatProgress(p), "step 1200/100000 (1.2%) | loss nan | lr 1.00e-04 | gnorm 1.234");
}

TEST(Progress, DurationsAndCounts) {
  EXPECT_EQ(FormatDuration(0), "0:00:00");
  EXPECT_EQ(FormatDuration(59.6), "0:01:00");
  EXPECT_EQ(FormatDuration(3600 * 30 + 61), "30:01:01");
  EXPECT_EQ(FormatDuration(-1), "-");
  EXPECT_EQ(FormatDuration(INFINITY), "-");
  EXPECT_EQ(FormatCount(950), "950");
  EXPECT_EQ(FormatCount(12345), "12.3k");
  EXPECT_EQ(FormatCount(4.561e6), "4.56M");
  EXPECT_EQ(FormatCount(7.891e9), "7.89G");
}

}  // namespace
}  // namespace lamina
