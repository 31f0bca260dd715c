#include "pretrain/metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/status.h"

namespace lamina {
namespace {

struct Line {
  std::string text;
  int number;
};

// The complete lines of `text` (a final line without a newline is torn and left out).
std::vector<Line> CompleteLines(const std::string& text) {
  std::vector<Line> lines;
  size_t start = 0;
  int number = 1;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1, ++number)
    lines.push_back({text.substr(start, nl - start), number});
  return lines;
}

absl::StatusOr<nlohmann::json> ParseRecord(const std::string& path, const Line& line) {
  nlohmann::json j = nlohmann::json::parse(line.text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::DataLossError(absl::StrCat(path, ":", line.number, ": not a JSON object"));
  return j;
}

}  // namespace

MetricsWriter& MetricsWriter::operator=(MetricsWriter&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

MetricsWriter::~MetricsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<MetricsWriter> MetricsWriter::Open(const std::string& path, std::optional<int64_t> resume_step) {
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;
  if (!resume_step.has_value()) {
    flags |= O_TRUNC;
  } else if (std::filesystem::exists(path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    std::string kept;
    for (const Line& line : CompleteLines(text)) {
      ASSIGN_OR_RETURN(nlohmann::json record, ParseRecord(path, line));
      if (record.contains("step") && record["step"].is_number_integer() && record["step"].get<int64_t>() > *resume_step)
        continue;
      absl::StrAppend(&kept, line.text, "\n");
    }
    if (kept != text) RETURN_IF_ERROR(WriteFileAtomic(path, kept));
  }
  const int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  return MetricsWriter(path, fd);
}

absl::Status MetricsWriter::Write(const nlohmann::json& record) {
  if (!record.is_object()) return absl::InvalidArgumentError(absl::StrCat("a metrics record must be an object: ", record.dump()));
  const std::string line =
      record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  // O_APPEND and one write(): the line lands whole at the end, or (crash) torn but last.
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::DataLossError(absl::StrCat("writing ", path_, ": ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<nlohmann::json>> ReadMetrics(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<nlohmann::json> records;
  for (const Line& line : CompleteLines(text)) {
    ASSIGN_OR_RETURN(nlohmann::json record, ParseRecord(path, line));
    records.push_back(std::move(record));
  }
  return records;
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
}

std::string FormatCount(double x) {
  const double a = std::fabs(x);
  if (a >= 1e9) return absl::StrFormat("%.2fG", x / 1e9);
  if (a >= 1e6) return absl::StrFormat("%.2fM", x / 1e6);
  if (a >= 1e3) return absl::StrFormat("%.1fk", x / 1e3);
  return absl::StrFormat("%.0f", x);
}

std::string FormatProgress(const ProgressInfo& p) {
  std::string s = absl::StrFormat("step %d/%d", p.step, p.total_steps);
  if (p.total_steps > 0) absl::StrAppend(&s, absl::StrFormat(" (%.1f%%)", 100.0 * p.step / p.total_steps));
  absl::StrAppend(&s, absl::StrFormat(" | loss %.4f | lr %.2e | gnorm %.3f", p.loss, p.lr, p.grad_norm));
  if (p.tokens_per_s > 0) absl::StrAppend(&s, " | ", FormatCount(p.tokens_per_s), " tok/s");
  if (p.peak_flops > 0 && p.flops_per_s > 0) absl::StrAppend(&s, absl::StrFormat(" | MFU %.1f%%", 100.0 * p.flops_per_s / p.peak_flops));
  if (p.seconds_per_step > 0 && p.total_steps >= p.step)
    absl::StrAppend(&s, " | ETA ", FormatDuration(p.seconds_per_step * static_cast<double>(p.total_steps - p.step)));
  return s;
}

}  // namespace lamina
