#include "launch/common_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, vocab, "",
          "BERT WordPiece vocab.txt (one token a line; id = line number), e.g. "
          "../shared/data/vocab/bert-base-uncased-vocab.txt");
