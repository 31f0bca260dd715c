// `lamina tokenize --vocab FILE [--ids|--tokens]`: BERT WordPiece of each stdin line, one output
// line per input line (an empty line for an empty or all-whitespace line), in order.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "data/text_check.h"
#include "data/wordpiece.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"

ABSL_FLAG(bool, ids, false, "tokenize: print token ids, space-separated (the default)");
ABSL_FLAG(bool, tokens, false, "tokenize: print the wordpiece strings, space-separated, instead of ids");

namespace lamina {
namespace {

int RunTokenize(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("tokenize", "takes no positional arguments; text comes on stdin");
  const std::string vocab_path = absl::GetFlag(FLAGS_vocab);
  if (vocab_path.empty()) return ReportError("tokenize", "--vocab FILE is required");
  if (absl::GetFlag(FLAGS_ids) && absl::GetFlag(FLAGS_tokens)) {
    return ReportError("tokenize", "--ids and --tokens are exclusive");
  }
  const bool print_tokens = absl::GetFlag(FLAGS_tokens);
  absl::StatusOr<WordPieceTokenizer> tokenizer = WordPieceTokenizer::Load(vocab_path);
  if (!tokenizer.ok()) return ReportError("tokenize", std::string(tokenizer.status().message()));

  char* line = nullptr;
  size_t capacity = 0;
  std::vector<int32_t> ids;
  std::string out;
  ssize_t n;
  TextCheck check("stdin");
  while ((n = getline(&line, &capacity, stdin)) >= 0) {
    absl::string_view text(line, static_cast<size_t>(n));
    if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    check.Add(text);
    if (absl::Status s = check.Check(/*at_end=*/false); !s.ok()) {
      std::free(line);
      return ReportError("tokenize", std::string(s.message()));
    }
    ids.clear();
    tokenizer->Encode(text, &ids);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) out.push_back(' ');
      if (print_tokens) {
        out += tokenizer->token(ids[i]);
      } else {
        absl::StrAppend(&out, ids[i]);
      }
    }
    out.push_back('\n');
    if (out.size() >= (1 << 16)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::free(line);
  if (absl::Status s = check.Check(/*at_end=*/true); !s.ok()) return ReportError("tokenize", std::string(s.message()));
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (std::ferror(stdin)) return ReportError("tokenize", "error reading stdin");
  if (std::fflush(stdout) != 0) return ReportError("tokenize", "error writing stdout");
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("tokenize", "BERT WordPiece ids (or tokens) of each stdin line", lamina::RunTokenize,
                  lamina::FlagNames({{"vocab", "ids", "tokens"}}));
