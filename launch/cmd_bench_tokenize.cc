// `lamina bench tokenize --vocab FILE --input FILES... [--threads N] [--max_mb M]`: WordPiece
// throughput on real text, with 1 thread and with N threads (lines split into N contiguous
// parts). The text is read into memory first (plain, .xz or .gz), so only tokenization is timed.
// launch/bench/tokenizer_baseline.py prints the same figures for HF `tokenizers`.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "data/text_reader.h"
#include "data/wordpiece.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"

ABSL_DECLARE_FLAG(std::vector<std::string>, input);  // defined by `prepare`
ABSL_FLAG(double, max_mb, 50, "bench tokenize: read at most this many MB (1e6 bytes) of text, whole lines");
ABSL_FLAG(int, repeats, 3, "bench tokenize: timed passes per thread count; the fastest is reported");

namespace lamina {
namespace {

struct Pass {
  double seconds = 0;
  int64_t tokens = 0;
};

// Encodes lines [0, n) split into `threads` contiguous parts, one thread each.
Pass EncodeAll(const WordPieceTokenizer& tokenizer, const std::vector<std::string>& lines, int threads) {
  std::vector<int64_t> tokens(threads, 0);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const size_t begin = lines.size() * t / threads, end = lines.size() * (t + 1) / threads;
      std::vector<int32_t> ids;
      int64_t count = 0;
      for (size_t i = begin; i < end; ++i) {
        ids.clear();
        tokenizer.Encode(lines[i], &ids);
        count += static_cast<int64_t>(ids.size());
      }
      tokens[t] = count;
    });
  }
  for (auto& w : workers) w.join();
  Pass pass;
  pass.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int64_t n : tokens) pass.tokens += n;
  return pass;
}

int RunBenchTokenize(const std::vector<std::string>& args) {
  const std::string name = "bench tokenize";
  const std::string vocab_path = absl::GetFlag(FLAGS_vocab);
  if (vocab_path.empty()) return ReportError(name, "--vocab FILE is required");
  std::vector<std::string> inputs = absl::GetFlag(FLAGS_input);
  inputs.insert(inputs.end(), args.begin(), args.end());
  if (inputs.empty()) return ReportError(name, "give text files with --input (or as arguments)");
  const double max_mb = absl::GetFlag(FLAGS_max_mb);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  if (!(max_mb > 0)) return ReportError(name, "--max_mb must be > 0");
  if (repeats < 1) return ReportError(name, "--repeats must be >= 1");
  int threads = absl::GetFlag(FLAGS_threads);
  if (threads < 0) return ReportError(name, "--threads must be >= 0");
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  absl::StatusOr<WordPieceTokenizer> tokenizer = WordPieceTokenizer::Load(vocab_path);
  if (!tokenizer.ok()) return ReportError(name, std::string(tokenizer.status().message()));

  // Whole lines until max_mb is reached; bytes count each line and its newline.
  const int64_t max_bytes = static_cast<int64_t>(max_mb * 1e6);
  std::vector<std::string> lines;
  int64_t bytes = 0;
  for (const std::string& path : inputs) {
    if (bytes >= max_bytes) break;
    auto reader = TextReader::Open(path);
    if (!reader.ok()) return ReportError(name, std::string(reader.status().message()));
    std::string line;
    while (bytes < max_bytes) {
      absl::StatusOr<bool> more = (*reader)->ReadLine(&line);
      if (!more.ok()) return ReportError(name, std::string(more.status().message()));
      if (!*more) break;
      bytes += static_cast<int64_t>(line.size()) + 1;
      lines.push_back(line);
    }
  }
  std::printf("text: %s lines, %.1f MB from %zu file(s); vocab %s (%d tokens)\n",
              absl::StrFormat("%d", lines.size()).c_str(), bytes / 1e6, inputs.size(), vocab_path.c_str(),
              tokenizer->vocab_size());

  EncodeAll(*tokenizer, lines, 1);  // warm-up: page in the text and the tables
  std::vector<int> counts = {1};
  if (threads > 1) counts.push_back(threads);
  double single_mb_s = 0;
  int64_t single_tokens = -1;
  for (int n : counts) {
    Pass best;
    for (int r = 0; r < repeats; ++r) {
      const Pass pass = EncodeAll(*tokenizer, lines, n);
      if (r == 0 || pass.seconds < best.seconds) best = pass;
    }
    if (single_tokens >= 0 && best.tokens != single_tokens) {
      return ReportError(name, absl::StrFormat("%d threads gave %d tokens, 1 thread %d", n, best.tokens, single_tokens));
    }
    const double mb_s = bytes / 1e6 / best.seconds;
    const double tok_s = best.tokens / best.seconds;
    if (n == 1) {
      single_mb_s = mb_s;
      single_tokens = best.tokens;
    }
    std::printf("RESULT impl=lamina threads=%d seconds=%.3f tokens=%lld mb_per_s=%.2f tokens_per_s=%.0f "
                "mb_per_s_per_thread=%.2f tokens_per_s_per_thread=%.0f scaling=%.2f\n",
                n, best.seconds, static_cast<long long>(best.tokens), mb_s, tok_s, mb_s / n, tok_s / n,
                mb_s / single_mb_s);
  }
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("bench tokenize", "WordPiece tokenizer throughput, 1 and N threads", lamina::RunBenchTokenize,
                  lamina::FlagNames({{"input", "max_mb", "repeats", "threads", "vocab"}}));
