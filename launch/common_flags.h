// Flags shared by several `lamina` subcommands (each is defined once, in common_flags.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "data/wordpiece.h"
#include "model/backend.h"
#include "checkpoint/load_model.h"
#include "pretrain/run_config.h"

// BERT vocab.txt: one WordPiece token a line, id = line number (tokenize, prepare, bench tokenize, ...).
ABSL_DECLARE_FLAG(std::string, vocab);
// JSON config file (info, pretrain, bench train, ...).
ABSL_DECLARE_FLAG(std::string, config);
// Output directory (prepare, pretrain, finetune, ...).
ABSL_DECLARE_FLAG(std::string, out);
// Sequence length in tokens, [CLS] and [SEP] included (prepare, info, bench, ...).
ABSL_DECLARE_FLAG(int64_t, seq_len);
// Worker threads; 0 = one per hardware thread (prepare, bench tokenize, ...).
ABSL_DECLARE_FLAG(int, threads);
// Config overrides "key=value", repeatable (pretrain, bench train, ...).
ABSL_DECLARE_FLAG(std::vector<std::string>, set);
// Compute device: cpu, cuda or auto (pretrain, evaluate, fill-mask, finetune, bench).
ABSL_DECLARE_FLAG(std::string, device);
// CUDA attention kernels: gemm or flash; empty = the config's (pretrain, bench) or gemm.
ABSL_DECLARE_FLAG(std::string, attention);
// A checkpoint directory (evaluate, fill-mask, finetune, ...).
ABSL_DECLARE_FLAG(std::string, checkpoint);
// Timed iterations and untimed warm-up iterations of a benchmark (bench allreduce, bench step, ...).
ABSL_DECLARE_FLAG(int, iters);
ABSL_DECLARE_FLAG(int, warmup);
// Input data directory: a prepared dataset (evaluate) or a GLUE directory (finetune).
ABSL_DECLARE_FLAG(std::string, data);
// Communicator between ranks: nccl, mpi or auto (pretrain, bench allreduce, bench step).
ABSL_DECLARE_FLAG(std::string, comm);
// fill-mask, grad-norms: JSON on stdout instead of text.
ABSL_DECLARE_FLAG(bool, json);

namespace lamina {

// The backend --device (default auto) and --attention ask for (subcommands that load a checkpoint).
struct BackendChoice {
  std::string device;
  BackendOptions options;
};
// The one parse of --device and --attention (both checked).
absl::StatusOr<BackendChoice> BackendFromFlags();
// --config with every --set applied, then --device and --attention when given (they override
// run.device and run.attention): the run config of pretrain, grad-norms and bench.
absl::StatusOr<RunConfig> RunConfigFromFlags();

// The --checkpoint model with its MLM head, on the backend --device and --attention ask for
// (evaluate, fill-mask).
absl::StatusOr<LoadedModel> LoadModelFromFlags();
// The tokenizer of --vocab, or else of the vocab the loaded checkpoint's run was trained with
// (evaluate, fill-mask).
absl::StatusOr<WordPieceTokenizer> TokenizerFromFlags(const LoadedModel& loaded);

}  // namespace lamina
