// Flags shared by several `lamina` subcommands (each is defined once, in common_flags.cc).
#pragma once

#include <string>

#include "absl/flags/declare.h"

// BERT vocab.txt: one WordPiece token a line, id = line number (tokenize, prepare, bench tokenize, ...).
ABSL_DECLARE_FLAG(std::string, vocab);
