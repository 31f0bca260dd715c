#include "launch/common_flags.h"

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "core/status.h"
#include "checkpoint/checkpoint.h"

ABSL_FLAG(std::string, vocab, "",
          "BERT WordPiece vocab.txt (one token a line; id = line number), e.g. "
          "../shared/data/vocab/bert-base-uncased-vocab.txt; evaluate, fill-mask, finetune and export-hf default to "
          "the vocab of the run that wrote the checkpoint (its run_config.data.vocab)");
ABSL_FLAG(std::string, config, "",
          "JSON config file: pretrain, grad-norms, bench and info take a run config (sections model, optimizer, "
          "schedule, data, batch, eval, checkpoint, run) or a bare model object; finetune and finetune-sweep take "
          "{\"finetune\": {FLAG NAME: VALUE, ...}} (see launch/configs/ and launch/configs/finetune/)");
ABSL_FLAG(std::string, out, "", "Output directory (created if missing)");
ABSL_FLAG(int64_t, seq_len, 128,
          "Sequence length in tokens, [CLS] and [SEP] included (prepare: rows are [CLS] up to seq_len-2 tokens of one "
          "document [SEP], padded with [PAD]; info: the length FLOPs are counted at)");
ABSL_FLAG(int, threads, 0, "Worker threads (0 = one per hardware thread); results never depend on it");
ABSL_FLAG(std::vector<std::string>, set, {},
          "Override a config key, repeatable: --set optimizer.weight_decay=0 --set model.norm=pre, or for finetune "
          "--set finetune.seeds=5 (the value is read as JSON when it parses, else as a string)");
ABSL_FLAG(std::string, device, "",
          "Compute device: cpu, cuda, or auto (a GPU when there is one); empty = the config's run.device");
ABSL_FLAG(std::string, attention, "",
          "CUDA attention kernels: flash (fused tiled kernels, scores in f32 registers; head dims that are multiples "
          "of 8 up to 128, others take gemm), gemm (per-head cuBLASLt products around a softmax kernel; scores stored "
          "in bf16), or auto (flash on a GPU, the reference on the CPU); gemm and flash are an error on the CPU; "
          "empty = the config's run.attention (pretrain, bench) or auto (finetune, evaluate, fill-mask)");
ABSL_FLAG(std::string, checkpoint, "", "Checkpoint directory (RUN_DIR/checkpoints/step_N) or a run directory (its newest)");
ABSL_FLAG(int, iters, 20, "bench: timed iterations per measurement");
ABSL_FLAG(int, warmup, 5, "bench: untimed warm-up iterations before the timed ones");
ABSL_FLAG(std::string, data, "",
          "Input data: evaluate: a dataset directory from `lamina prepare` (its validation split is read); finetune: "
          "a GLUE directory holding MRPC/ and RTE/ (train.tsv, dev.tsv, test.tsv), e.g. ../shared/data/glue");
ABSL_FLAG(bool, json, false,
          "fill-mask, grad-norms: print JSON instead of text (fill-mask: tokens, ids, probabilities and "
          "log-probabilities; grad-norms: every norm of every depth)");
ABSL_FLAG(std::string, comm, "auto",
          "Communicator between ranks: nccl (collectives on the GPUs; one GPU per rank), mpi (host memory; device "
          "buffers are staged through it, and ranks may share a GPU), or auto: nccl when this build has CUDA and "
          "every rank computes on a GPU of its own, else mpi (rank 0 prints which and why)");

namespace lamina {

absl::StatusOr<BackendChoice> BackendFromFlags() {
  BackendChoice c;
  c.device = absl::GetFlag(FLAGS_device).empty() ? "auto" : absl::GetFlag(FLAGS_device);
  if (c.device != "cpu" && c.device != "cuda" && c.device != "auto")
    return absl::InvalidArgumentError(absl::StrCat("--device: expected cpu, cuda or auto, got \"", c.device, "\""));
  if (!absl::GetFlag(FLAGS_attention).empty()) {
    ASSIGN_OR_RETURN(c.options.attention, ParseAttentionKernel(absl::GetFlag(FLAGS_attention), "--attention"));
  }
  return c;
}

absl::StatusOr<RunConfig> RunConfigFromFlags() {
  if (absl::GetFlag(FLAGS_config).empty())
    return absl::InvalidArgumentError("--config FILE is required (a run config; see launch/configs/)");
  ASSIGN_OR_RETURN(RunConfig config, LoadRunConfig(absl::GetFlag(FLAGS_config), absl::GetFlag(FLAGS_set)));
  ASSIGN_OR_RETURN(const BackendChoice backend, BackendFromFlags());
  if (!absl::GetFlag(FLAGS_device).empty()) config.run.device = backend.device;
  if (!absl::GetFlag(FLAGS_attention).empty()) config.run.attention = backend.options.attention;
  return config;
}

absl::StatusOr<LoadedModel> LoadModelFromFlags() {
  ASSIGN_OR_RETURN(const BackendChoice backend, BackendFromFlags());
  return LoadModel(absl::GetFlag(FLAGS_checkpoint), backend.device, HeadOptions{}, 1, backend.options);
}

absl::StatusOr<WordPieceTokenizer> TokenizerFromFlags(const LoadedModel& loaded) {
  std::string vocab_path = absl::GetFlag(FLAGS_vocab);
  if (vocab_path.empty()) {
    ASSIGN_OR_RETURN(vocab_path, RunConfigVocab(loaded.run_config, loaded.checkpoint + "/state.json"));
  }
  return WordPieceTokenizer::Load(vocab_path);
}

}  // namespace lamina
