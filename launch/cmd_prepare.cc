// `lamina prepare`: tokenizes a text corpus into MLM token shards (see data/prepare.h, docs/data.md).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/timer.h"
#include "data/prepare.h"
#include "data/wordpiece.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"

ABSL_FLAG(std::vector<std::string>, input, {},
          "prepare: comma-separated text files (plain, .xz or .gz, recognised by content; WikiExtractor <doc> "
          "markup or blank-line-separated documents). Positional arguments are added after these, so "
          "`lamina prepare --vocab V --out D wiki_*.xz` works too.");
ABSL_FLAG(int64_t, val_docs, 500,
          "prepare: documents held out for validation: a fixed pseudo-random sample (by a hash of the document number) "
          "spread over all inputs. 0 = no validation split.");
ABSL_FLAG(int64_t, max_docs, 0, "prepare: stop after this many documents (0 = no limit); for quick runs.");
ABSL_FLAG(int64_t, max_bytes, 0,
          "prepare: stop after the document during which this many bytes of decompressed text have been read, summed over "
          "inputs (0 = no limit); e.g. 2000000 for a quick 2 MB slice.");
ABSL_FLAG(int64_t, shard_sequences, 65536, "prepare: sequences (rows) per shard file.");
ABSL_FLAG(bool, progress, true, "prepare: show progress on stderr (a bar on a terminal, a line every 10 s otherwise).");

namespace lamina {
namespace {

int RunPrepare(const std::vector<std::string>& positional) {
  PrepareOptions options;
  options.inputs = absl::GetFlag(FLAGS_input);
  options.inputs.insert(options.inputs.end(), positional.begin(), positional.end());
  options.out_dir = absl::GetFlag(FLAGS_out);
  const int64_t seq_len = absl::GetFlag(FLAGS_seq_len);
  if (seq_len < 3 || seq_len > kMaxSeqLen) {
    return ReportError("prepare", absl::StrCat("--seq_len ", seq_len, " is outside [3, ", kMaxSeqLen, "]"));
  }
  options.seq_len = static_cast<int>(seq_len);
  options.val_docs = absl::GetFlag(FLAGS_val_docs);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.max_docs = absl::GetFlag(FLAGS_max_docs);
  options.max_bytes = absl::GetFlag(FLAGS_max_bytes);
  options.sequences_per_shard = absl::GetFlag(FLAGS_shard_sequences);
  options.progress = absl::GetFlag(FLAGS_progress);
  const std::string vocab = absl::GetFlag(FLAGS_vocab);
  if (vocab.empty()) return ReportError("prepare", "--vocab is required (a BERT vocab.txt)");
  if (options.out_dir.empty()) return ReportError("prepare", "--out is required (the output directory)");
  if (options.inputs.empty()) return ReportError("prepare", "no input files: pass them with --input=A,B or as arguments");

  absl::StatusOr<WordPieceTokenizer> tokenizer = WordPieceTokenizer::Load(vocab);
  if (!tokenizer.ok()) return ReportError("prepare", std::string(tokenizer.status().message()));
  Timer timer;
  absl::StatusOr<Manifest> m = PrepareCorpus(*tokenizer, options);
  if (!m.ok()) return ReportError("prepare", std::string(m.status().message()));
  uint64_t text_bytes = 0;
  for (const SourceInfo& s : m->sources) text_bytes += s.text_bytes;
  const double seconds = timer.Seconds();
  std::fprintf(stderr,
               "prepare: %s text in %.1f s (%.1f MB/s): train %lld docs, %lld sequences, %lld tokens; "
               "val %lld docs, %lld sequences, %lld tokens -> %s\n",
               absl::StrFormat("%.1f MB", static_cast<double>(text_bytes) / 1e6).c_str(), seconds,
               static_cast<double>(text_bytes) / 1e6 / seconds, static_cast<long long>(m->train.documents),
               static_cast<long long>(m->train.sequences), static_cast<long long>(m->train.tokens),
               static_cast<long long>(m->val.documents), static_cast<long long>(m->val.sequences),
               static_cast<long long>(m->val.tokens), options.out_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("prepare", "tokenize text (plain/.xz/.gz) into MLM token shards + manifest.json", lamina::RunPrepare,
                  lamina::FlagNames({{"input", "vocab", "out", "seq_len", "max_bytes", "max_docs", "val_docs", "shard_sequences", "threads", "progress"}}));
