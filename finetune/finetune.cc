#include "finetune/finetune.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/status.h"
#include "core/timer.h"

namespace lamina {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, bound) (Lemire's multiply-shift with rejection, so exactly uniform).
uint64_t Below(uint64_t bound, uint64_t* state) {
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    const unsigned __int128 m = static_cast<unsigned __int128>(SplitMix64(state)) * bound;
    if (static_cast<uint64_t>(m) >= threshold) return static_cast<uint64_t>(m >> 64);
  }
}

// The dropout seed of a run, decorrelated from the seed the head's initialisation uses.
uint64_t DropoutSeed(uint64_t seed) {
  uint64_t s = seed ^ 0xD80F0D80F0D80Full;
  return SplitMix64(&s);
}

// Padded length of a batch: its longest [CLS] a [SEP] b [SEP], at most max_seq.
int64_t BatchSeq(const std::vector<TokenizedPair>& pairs, std::span<const int64_t> rows, int64_t max_seq) {
  int64_t longest = 3;
  for (int64_t r : rows) {
    longest = std::max<int64_t>(longest, static_cast<int64_t>(pairs[r].a.size() + pairs[r].b.size()) + 3);
  }
  return std::min(longest, max_seq);
}

struct EvalResult {
  std::vector<int32_t> predictions;
  double loss_sum = 0;
};

absl::StatusOr<EvalResult> Predict(BertModel& model, const WordPieceTokenizer& tokenizer,
                                   const std::vector<TokenizedPair>& pairs, const FinetuneConfig& config) {
  EvalResult r;
  r.predictions.reserve(pairs.size());
  std::vector<int64_t> rows;
  for (size_t begin = 0; begin < pairs.size(); begin += config.eval_batch) {
    const size_t end = std::min(pairs.size(), begin + static_cast<size_t>(config.eval_batch));
    rows.clear();
    for (size_t i = begin; i < end; ++i) rows.push_back(static_cast<int64_t>(i));
    const EncoderBatch batch = MakePairBatch(tokenizer, pairs, rows, BatchSeq(pairs, rows, config.max_seq));
    ASSIGN_OR_RETURN(LossStats stats, model.ForwardClassify(batch, ForwardOptions{}));
    r.predictions.insert(r.predictions.end(), stats.predictions.begin(), stats.predictions.end());
    r.loss_sum += stats.loss_sum;
  }
  return r;
}

std::vector<int32_t> Labels(const std::vector<TokenizedPair>& pairs) {
  std::vector<int32_t> y;
  y.reserve(pairs.size());
  for (const TokenizedPair& p : pairs) y.push_back(p.label);
  return y;
}

absl::Status CheckLabelled(const std::vector<GlueExample>& examples, const std::string& path) {
  for (const GlueExample& e : examples) {
    if (e.label < 0) return absl::InvalidArgumentError(absl::StrCat(path, ":", e.line, ": no label (an unlabelled file?)"));
  }
  if (examples.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no examples"));
  return absl::OkStatus();
}

std::string FormatLr(double lr) { return absl::StrFormat("%g", lr); }

}  // namespace

absl::Status FinetuneConfig::Validate() const {
  auto err = [](auto&&... p) { return absl::InvalidArgumentError(absl::StrCat(p...)); };
  if (learning_rates.empty()) return err("--lr: at least one learning rate is needed");
  for (double lr : learning_rates)
    if (!(lr > 0 && std::isfinite(lr))) return err("--lr: learning rates must be positive, got ", lr);
  if (epochs <= 0) return err("--epochs must be positive, got ", epochs);
  if (batch <= 0) return err("--batch must be positive, got ", batch);
  if (max_seq < 3) return err("--max_seq must be at least 3 ([CLS] [SEP] [SEP]), got ", max_seq);
  if (seeds <= 0) return err("--seeds must be positive, got ", seeds);
  if (!(warmup_ratio >= 0 && warmup_ratio <= 1)) return err("--warmup_ratio must be in [0, 1], got ", warmup_ratio);
  if (eval_batch <= 0) return err("eval batch must be positive, got ", eval_batch);
  return optimizer.Validate();
}

nlohmann::json FinetuneConfig::ToJson() const {
  return {{"task", GlueTaskName(task)},
          {"learning_rates", learning_rates},
          {"epochs", epochs},
          {"batch", batch},
          {"max_seq", max_seq},
          {"seeds", seeds},
          {"first_seed", first_seed},
          {"warmup_ratio", warmup_ratio},
          {"schedule", "linear warmup then linear decay to 0"},
          {"eval_batch", eval_batch},
          {"optimizer", optimizer.ToJson()},
          {"dropout_classifier", "the model's hidden_dropout"}};
}

absl::StatusOr<TaskData> LoadTaskData(GlueTask task, const std::string& glue_dir, const WordPieceTokenizer& tokenizer) {
  TaskData data;
  data.task = task;
  for (const char* split : {"train", "dev"}) {
    ASSIGN_OR_RETURN(std::vector<GlueExample> examples, ReadGlueSplit(task, glue_dir, split));
    RETURN_IF_ERROR(CheckLabelled(examples, absl::StrCat(glue_dir, "/", GlueTaskName(task), "/", split, ".tsv")));
    (std::string(split) == "train" ? data.train : data.dev) = TokenizePairs(tokenizer, examples);
  }
  const std::string test_path = absl::StrCat(glue_dir, "/", GlueTaskName(task), "/test.tsv");
  if (std::filesystem::exists(test_path)) {
    ASSIGN_OR_RETURN(std::vector<GlueExample> examples, ReadGlueSplit(task, glue_dir, "test"));
    data.test = TokenizePairs(tokenizer, examples);
  }
  return data;
}

double WarmupLinearDecay(double peak, int64_t k, int64_t total, int64_t warmup) {
  if (k < warmup) return peak * static_cast<double>(k + 1) / static_cast<double>(warmup);
  return peak * static_cast<double>(std::max<int64_t>(0, total - k)) / static_cast<double>(std::max<int64_t>(1, total - warmup));
}

int64_t WarmupSteps(double ratio, int64_t total) {
  return static_cast<int64_t>(std::ceil(ratio * static_cast<double>(total) - 1e-9));
}

std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = seed * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(epoch) + 1) * 0xC2B2AE3D27D4EB4Full;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(Below(static_cast<uint64_t>(i) + 1, &state));
    std::swap(order[i], order[j]);
  }
  return order;
}

absl::StatusOr<RunResult> FinetuneRun(const FinetuneConfig& config, double lr, uint64_t seed, const ModelFactory& factory,
                                      const WordPieceTokenizer& tokenizer, const TaskData& data, const FinetuneLog& log) {
  RETURN_IF_ERROR(config.Validate());
  if (data.train.empty() || data.dev.empty()) return absl::InvalidArgumentError("finetuning needs train and dev examples");
  ASSIGN_OR_RETURN(LoadedModel loaded, factory(seed));
  BertModel& model = *loaded.model;
  if (model.heads().num_labels != NumGlueLabels(config.task))
    return absl::InvalidArgumentError(absl::StrCat("the model has ", model.heads().num_labels, " labels, ",
                                                   GlueTaskName(config.task), " has ", NumGlueLabels(config.task)));
  if (config.max_seq > model.config().max_positions)
    return absl::InvalidArgumentError(absl::StrCat("--max_seq ", config.max_seq, " exceeds the model's ",
                                                   model.config().max_positions, " positions"));
  ASSIGN_OR_RETURN(std::unique_ptr<Optimizer> optimizer, Optimizer::Create(config.optimizer, &model));

  const int64_t n = static_cast<int64_t>(data.train.size());
  const int64_t steps_per_epoch = (n + config.batch - 1) / config.batch;
  const int64_t total = steps_per_epoch * config.epochs;
  const int64_t warmup = WarmupSteps(config.warmup_ratio, total);
  const uint64_t dropout_seed = DropoutSeed(seed);
  const std::vector<int32_t> dev_labels = Labels(data.dev);

  RunResult run;
  run.lr = lr;
  run.seed = seed;
  Timer run_timer;
  int64_t step = 0;
  for (int64_t epoch = 1; epoch <= config.epochs; ++epoch) {
    Timer epoch_timer;
    const std::vector<int64_t> order = EpochOrder(n, seed, epoch);
    double loss_sum = 0;
    for (int64_t begin = 0; begin < n; begin += config.batch, ++step) {
      const std::span<const int64_t> rows(order.data() + begin, std::min(config.batch, n - begin));
      const EncoderBatch batch = MakePairBatch(tokenizer, data.train, rows, BatchSeq(data.train, rows, config.max_seq));
      ForwardOptions options;
      options.training = true;
      options.seed = dropout_seed;
      options.step = step;
      options.compute_grad = true;
      options.grad_scale = 1.0f / static_cast<float>(rows.size());  // the batch's mean loss
      model.ZeroGrads();
      ASSIGN_OR_RETURN(LossStats stats, model.ForwardClassify(batch, options));
      if (!std::isfinite(stats.loss_sum))
        return absl::InternalError(absl::StrCat("lr ", FormatLr(lr), " seed ", seed, ": loss is not finite at step ", step));
      model.Backward();
      RETURN_IF_ERROR(optimizer->Step(static_cast<float>(WarmupLinearDecay(lr, step, total, warmup))).status());
      loss_sum += stats.loss_sum;
    }
    ASSIGN_OR_RETURN(EvalResult dev, Predict(model, tokenizer, data.dev, config));
    EpochResult e;
    e.epoch = epoch;
    e.train_loss = loss_sum / static_cast<double>(n);
    e.dev_loss = dev.loss_sum / static_cast<double>(data.dev.size());
    e.dev = ComputeGlueMetrics(config.task, dev.predictions, dev_labels);
    e.seconds = epoch_timer.Seconds();
    run.epochs.push_back(e);
    if (log) {
      std::string line = absl::StrFormat("%s lr %s seed %d epoch %d/%d: train loss %.4f, dev loss %.4f, dev acc %.4f",
                                         GlueTaskName(config.task), FormatLr(lr), seed, epoch, config.epochs,
                                         e.train_loss, e.dev_loss, e.dev.accuracy);
      if (config.task == GlueTask::kMrpc) absl::StrAppend(&line, absl::StrFormat(", f1 %.4f", e.dev.f1));
      absl::StrAppend(&line, absl::StrFormat(" (%.1f s)", e.seconds));
      log(line);
    }
  }
  if (config.predict_test && !data.test.empty()) {
    ASSIGN_OR_RETURN(EvalResult test, Predict(model, tokenizer, data.test, config));
    run.test_predictions = std::move(test.predictions);
  }
  run.steps = step;
  run.seconds = run_timer.Seconds();
  return run;
}

nlohmann::json RunResult::ToJson(GlueTask task) const {
  nlohmann::json epochs_json = nlohmann::json::array();
  for (const EpochResult& e : epochs) {
    nlohmann::json j = {{"epoch", e.epoch}, {"train_loss", e.train_loss}, {"dev_loss", e.dev_loss}, {"seconds", e.seconds}};
    for (const std::string& m : GlueMetricNames(task)) j[m] = MetricByName(e.dev, m);
    epochs_json.push_back(j);
  }
  nlohmann::json final_json;
  for (const std::string& m : GlueMetricNames(task)) final_json[m] = MetricByName(final_dev(), m);
  return {{"lr", lr}, {"seed", seed}, {"steps", steps}, {"seconds", seconds}, {"final", final_json}, {"epochs", epochs_json}};
}

FinetuneReport SummarizeRuns(const FinetuneConfig& config, std::vector<RunResult> runs) {
  FinetuneReport report;
  report.config = config;
  report.runs = std::move(runs);
  const std::vector<std::string> names = GlueMetricNames(config.task);
  for (double lr : config.learning_rates) {
    LrSummary s;
    s.lr = lr;
    std::vector<const RunResult*> at_lr;
    for (const RunResult& r : report.runs)
      if (r.lr == lr) at_lr.push_back(&r);
    LAMINA_CHECK(!at_lr.empty(), "no run at lr ", lr);
    const size_t epochs = at_lr.front()->epochs.size();
    s.epoch_stats.resize(epochs);
    for (const std::string& m : names) {
      for (size_t e = 0; e < epochs; ++e) {
        std::vector<double> v;
        for (const RunResult* r : at_lr) v.push_back(MetricByName(r->epochs[e].dev, m));
        s.epoch_stats[e][m] = Summarize(v);
      }
      s.final_stats[m] = s.epoch_stats.back()[m];
    }
    report.by_lr.push_back(std::move(s));
  }
  const std::string key = "score";
  auto score_median = [&](const LrSummary& s) {
    return s.final_stats.count(key) ? s.final_stats.at(key).median : s.final_stats.at("accuracy").median;
  };
  for (size_t i = 1; i < report.by_lr.size(); ++i) {
    if (score_median(report.by_lr[i]) > score_median(report.by_lr[report.best_lr])) report.best_lr = i;
  }
  bool found = false;
  for (size_t i = 0; i < report.runs.size(); ++i) {
    const RunResult& r = report.runs[i];
    if (r.lr != report.by_lr[report.best_lr].lr) continue;
    if (!found || r.final_dev().score > report.runs[report.best_run].final_dev().score) {
      report.best_run = i;
      found = true;
    }
  }
  return report;
}

absl::StatusOr<FinetuneReport> FinetuneAll(const FinetuneConfig& config, const ModelFactory& factory,
                                           const WordPieceTokenizer& tokenizer, const TaskData& data,
                                           const FinetuneLog& log) {
  RETURN_IF_ERROR(config.Validate());
  std::vector<RunResult> runs;
  for (double lr : config.learning_rates) {
    for (int64_t s = 0; s < config.seeds; ++s) {
      ASSIGN_OR_RETURN(RunResult r, FinetuneRun(config, lr, config.first_seed + s, factory, tokenizer, data, log));
      runs.push_back(std::move(r));
    }
  }
  return SummarizeRuns(config, std::move(runs));
}

nlohmann::json FinetuneReport::ToJson() const {
  const std::vector<std::string> names = GlueMetricNames(config.task);
  nlohmann::json by_lr_json = nlohmann::json::array();
  for (const LrSummary& s : by_lr) {
    nlohmann::json final_json, epochs_json = nlohmann::json::array();
    for (const std::string& m : names) final_json[m] = s.final_stats.at(m).ToJson();
    for (size_t e = 0; e < s.epoch_stats.size(); ++e) {
      nlohmann::json j = {{"epoch", e + 1}};
      for (const std::string& m : names) j[m] = s.epoch_stats[e].at(m).ToJson();
      epochs_json.push_back(j);
    }
    by_lr_json.push_back({{"lr", s.lr}, {"final", final_json}, {"epochs", epochs_json}});
  }
  nlohmann::json runs_json = nlohmann::json::array();
  for (const RunResult& r : runs) runs_json.push_back(r.ToJson(config.task));
  const RunResult& best = runs[best_run];
  nlohmann::json best_json = {
      {"lr", by_lr[best_lr].lr},
      {"selected_by", config.task == GlueTask::kMrpc
                          ? "median over seeds of the final-epoch dev score = (accuracy + f1) / 2"
                          : "median over seeds of the final-epoch dev accuracy"},
      {"final", nlohmann::json::object()},
      {"best_seed", best.seed},
      {"best_seed_final", best.ToJson(config.task)["final"]},
  };
  for (const std::string& m : names) best_json["final"][m] = by_lr[best_lr].final_stats.at(m).ToJson();
  return {{"task", GlueTaskName(config.task)}, {"config", config.ToJson()}, {"best", best_json},
          {"by_lr", by_lr_json}, {"runs", runs_json}};
}

std::string FinetuneReport::Table() const {
  const std::vector<std::string> names = GlueMetricNames(config.task);
  std::string s = absl::StrFormat("%s dev, final epoch (%d), %d seed(s) per learning rate: mean +- std | median | max\n",
                                  GlueTaskName(config.task), config.epochs, config.seeds);
  absl::StrAppend(&s, absl::StrFormat("%-9s", "lr"));
  for (const std::string& m : names) absl::StrAppend(&s, absl::StrFormat("  %-33s", m));
  absl::StrAppend(&s, "\n");
  for (size_t i = 0; i < by_lr.size(); ++i) {
    absl::StrAppend(&s, absl::StrFormat("%-9s", FormatLr(by_lr[i].lr)));
    for (const std::string& m : names) {
      const SeedStats& st = by_lr[i].final_stats.at(m);
      absl::StrAppend(&s, absl::StrFormat("  %.4f +- %.4f | %.4f | %.4f", st.mean, st.std, st.median, st.max));
    }
    absl::StrAppend(&s, i == best_lr ? "  <- best\n" : "\n");
  }
  const RunResult& best = runs[best_run];
  absl::StrAppend(&s, absl::StrFormat("best learning rate %s (by the median %s); its best seed %d: acc %.4f",
                                      FormatLr(by_lr[best_lr].lr),
                                      config.task == GlueTask::kMrpc ? "(acc + F1) / 2" : "accuracy", best.seed,
                                      best.final_dev().accuracy));
  if (config.task == GlueTask::kMrpc) absl::StrAppend(&s, absl::StrFormat(", F1 %.4f", best.final_dev().f1));
  absl::StrAppend(&s, "\n");
  return s;
}

absl::Status WriteFinetuneOutputs(const FinetuneReport& report, const TaskData& data, const std::string& out_dir,
                                  const nlohmann::json& context) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  nlohmann::json j = report.ToJson();
  for (const auto& [k, v] : context.items()) j[k] = v;
  const RunResult& best = report.runs[report.best_run];
  if (!best.test_predictions.empty()) {
    LAMINA_CHECK(best.test_predictions.size() == data.test.size(), "test predictions");
    const std::string name = absl::StrCat(GlueTaskName(report.config.task), ".tsv");
    const std::vector<std::string>& labels = GlueLabelNames(report.config.task);
    std::string tsv = "index\tprediction\n";
    for (size_t i = 0; i < data.test.size(); ++i)
      absl::StrAppend(&tsv, data.test[i].index, "\t", labels[best.test_predictions[i]], "\n");
    RETURN_IF_ERROR(WriteFileAtomic(out_dir + "/" + name, tsv));
    j["test_predictions"] = {{"file", name}, {"lr", best.lr}, {"seed", best.seed}};
  }
  return WriteFileAtomic(out_dir + "/results.json", j.dump(2) + "\n");
}

}  // namespace lamina
