// Training metrics: RUN_DIR/metrics.jsonl (one JSON object per line) and the progress line.
//
// Records are JSON objects with an integer "step" (optimizer steps completed) and a "kind":
//   {"kind": "train", "step": 100, "loss": 7.12, "lr": 1e-4, "grad_norm": 1.3, "tokens_per_s": 1.2e5, ...}
//   {"kind": "eval",  "step": 1000, "mlm_loss": 6.8, "mlm_accuracy": 0.14, ...}
//   {"kind": "layers", "step": 1, "grad_norm": {...}, "update_norm": {...}, "hidden_norm": [...]}
//     (with run.log_layer_norms; docs/pretraining.md)
// (launch/plot.py reads "loss" of train records and "mlm_loss" of eval records). Each record is
// written with one write() call and so reaches the file whole or, after a crash, as a torn last
// line without its newline.
//
// Resuming from the checkpoint of step S drops the records with step > S, written after that
// checkpoint by the run that crashed: they would otherwise appear twice in the curves, once from
// the lost segment and once from the resumed one. A torn last line is dropped too.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lamina {

class MetricsWriter {
 public:
  // A fresh run (no resume_step) starts an empty file; a resumed run keeps the records up to and
  // including `resume_step` and appends after them.
  static absl::StatusOr<MetricsWriter> Open(const std::string& path, std::optional<int64_t> resume_step);

  MetricsWriter(MetricsWriter&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_) { o.fd_ = -1; }
  MetricsWriter& operator=(MetricsWriter&& o) noexcept;
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  ~MetricsWriter();

  // Appends one record (a JSON object) as one line.
  absl::Status Write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  MetricsWriter(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
};

// Every record of a metrics file; a line that is not a JSON object is an error naming its line
// number, except a torn last line (no newline), which is skipped.
absl::StatusOr<std::vector<nlohmann::json>> ReadMetrics(const std::string& path);

// What the progress line shows; fields <= 0 (rates, peak, time per step) are left out.
struct ProgressInfo {
  int64_t step = 0;         // steps completed
  int64_t total_steps = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double flops_per_s = 0;   // achieved model FLOP/s (model/flops.h counts)
  double peak_flops = 0;    // the hardware's peak FLOP/s in the training dtype; 0 = unknown (no MFU)
  double seconds_per_step = 0;  // recent average, for the ETA
};

// "step 1200/100000 (1.2%) | loss 6.1234 | lr 1.00e-04 | gnorm 1.234 | 123.4k tok/s | MFU 41.2% | ETA 12:34:56"
std::string FormatProgress(const ProgressInfo& p);
// h:mm:ss (hours unbounded); "-" for negative or non-finite durations.
std::string FormatDuration(double seconds);
// 950, 12.3k, 4.56M, 7.89G.
std::string FormatCount(double x);

}  // namespace lamina
