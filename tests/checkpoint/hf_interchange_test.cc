// Import of Hugging Face models against outputs transformers computed (tests/fixtures/hf, made by
// tests/fixtures/make_hf_fixture.py), bit-exact round trips, and the refusals.
#include "checkpoint/hf_interchange.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "gtest/gtest.h"
#include "model/optimizer.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/load_model.h"
#include "tests/testing/tiny_config.h"

namespace lamina {
namespace {

namespace fs = std::filesystem;

std::string FixtureDir() {
  const char* src = std::getenv("LAMINA_SOURCE_DIR");
  return std::string(src != nullptr ? src : ".") + "/tests/fixtures/hf";
}

nlohmann::json Reference() {
  auto text = ReadFile(FixtureDir() + "/reference.json");
  EXPECT_TRUE(text.ok()) << text.status();
  return nlohmann::json::parse(*text);
}

std::string Temp(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/hfx_" + name;
  fs::remove_all(dir);
  return dir;
}

std::string Import(const std::string& model, const std::string& name, HfImportResult* result = nullptr) {
  const std::string out = Temp(name);
  auto r = ImportHf(FixtureDir() + "/" + model, out, HfImportOptions{});
  EXPECT_TRUE(r.ok()) << r.status();
  if (result != nullptr && r.ok()) *result = *r;
  return out;
}

// Runs the reference's padded pair batch through ForwardMlm and compares the log-probabilities at
// the masked positions and the mean loss with what transformers computed.
void ExpectPairBatchMatches(const std::string& checkpoint, const nlohmann::json& ref) {
  auto loaded = LoadModel(checkpoint, "cpu", HeadOptions{true, 0});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EncoderBatch batch;
  batch.batch = ref["batch"];
  batch.seq = ref["seq"];
  batch.input_ids = ref["input_ids"].get<std::vector<int32_t>>();
  batch.token_types = ref["token_type_ids"].get<std::vector<int32_t>>();
  batch.attention_mask = ref["attention_mask"].get<std::vector<int32_t>>();
  batch.mlm_positions = ref["mlm_positions"].get<std::vector<int32_t>>();
  batch.mlm_labels = ref["mlm_labels"].get<std::vector<int32_t>>();
  auto stats = loaded->model->ForwardMlm(batch, ForwardOptions{});
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_NEAR(stats->loss_sum / stats->count, ref["loss"].get<double>(), 1e-4);
  const std::vector<float> logits = loaded->model->LogitsToHost();
  const int64_t V = loaded->model->config().vocab_size;
  const auto& want = ref["logprobs"];
  ASSERT_EQ(static_cast<int64_t>(logits.size()), static_cast<int64_t>(want.size()) * V);
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double mx = -1e300, sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(logits[i * V + v]));
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[i * V + v] - mx);
    for (int64_t v = 0; v < V; ++v) {
      const double lp = logits[i * V + v] - mx - std::log(sum);
      worst = std::max(worst, std::abs(lp - want[i][v].get<double>()));
    }
  }
  EXPECT_LT(worst, 1e-4);
  std::printf("%s: max |log-probability difference| %.3g, loss %.6f vs %.6f\n", checkpoint.c_str(), worst,
              stats->loss_sum / stats->count, ref["loss"].get<double>());
}

TEST(ImportHf, BertForMaskedLMMatchesTransformers) {
  HfImportResult result;
  const std::string ckpt = Import("bert_mlm", "bert_mlm", &result);
  EXPECT_EQ(result.config.norm, NormPlacement::kPost);
  EXPECT_EQ(result.config.hidden, 64);
  EXPECT_EQ(result.config.layers, 2);
  EXPECT_EQ(result.config.vocab_size, 256);
  EXPECT_EQ(result.config.max_positions, 64);
  ExpectPairBatchMatches(ckpt, Reference()["bert_mlm"]["pair_batch"]);
}

TEST(ImportHf, BertForPreTrainingDropsTheNextSentenceHead) {
  HfImportResult result;
  const std::string ckpt = Import("bert_pretraining", "bert_pretraining", &result);
  const std::string notes = absl::StrJoin(result.notes, "\n");
  EXPECT_NE(notes.find("dropped cls.seq_relationship.weight"), std::string::npos) << notes;
  EXPECT_NE(notes.find("kept the pooler"), std::string::npos) << notes;
  ExpectPairBatchMatches(ckpt, Reference()["bert_pretraining"]["pair_batch"]);
  auto st = SafetensorsFile::Open(ckpt + "/model.safetensors");
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->Find("bert.pooler.dense.weight").ok());
}

TEST(ImportHf, BertModelWithoutPrefixGetsAnInitialisedHead) {
  HfImportResult result;
  const std::string ckpt = Import("bert_model", "bert_model", &result);
  EXPECT_NE(absl::StrJoin(result.notes, "\n").find("MLM head is initialised"), std::string::npos);
  auto hf = SafetensorsFile::Open(FixtureDir() + "/bert_model/model.safetensors");
  auto ours = SafetensorsFile::Open(ckpt + "/model.safetensors");
  ASSERT_TRUE(hf.ok() && ours.ok());
  // Every tensor of the HF file is in the checkpoint under "bert." + its name, byte for byte.
  for (const SafetensorsTensorInfo& t : hf->tensors()) {
    auto mine = ours->Find("bert." + t.name);
    ASSERT_TRUE(mine.ok()) << t.name;
    const auto a = hf->Data(t), b = ours->Data(**mine);
    ASSERT_EQ(a.size(), b.size()) << t.name;
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size())) << t.name;
  }
  auto gain = ours->ReadFloats("cls.predictions.transform.LayerNorm.weight");
  ASSERT_TRUE(gain.ok());
  EXPECT_EQ((*gain)[0], 1.0f);  // BERT init of the head's LayerNorm
  // The imported model runs (its MLM head is random, so only the encoder is meaningful).
  auto loaded = LoadModel(ckpt, "cpu", HeadOptions{false, 2});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
}

TEST(ImportHf, RobertaPreLayerNormIsLaminaPreLN) {
  // transformers' RoBERTa-PreLayerNorm computes lamina's Pre-LN encoder once positions are shifted:
  // this is what makes the Pre-LN export exact.
  HfImportResult result;
  const std::string ckpt = Import("roberta_prelayernorm", "roberta", &result);
  EXPECT_EQ(result.config.norm, NormPlacement::kPre);
  EXPECT_EQ(result.config.max_positions, 64);  // 65 - (pad_token_id 0 + 1)
  ExpectPairBatchMatches(ckpt, Reference()["roberta_prelayernorm"]["pair_batch"]);
}

// Tensor by tensor, the files hold the same names, shapes and bytes.
void ExpectSameTensors(const std::string& a_path, const std::string& b_path) {
  auto a = SafetensorsFile::Open(a_path), b = SafetensorsFile::Open(b_path);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const SafetensorsTensorInfo& t : a->tensors()) {
    auto u = b->Find(t.name);
    ASSERT_TRUE(u.ok()) << t.name << " missing in " << b_path;
    EXPECT_EQ(t.shape, (*u)->shape) << t.name;
    EXPECT_EQ(t.dtype, (*u)->dtype) << t.name;
    const auto x = a->Data(t), y = b->Data(**u);
    ASSERT_EQ(x.size(), y.size());
    EXPECT_EQ(0, std::memcmp(x.data(), y.data(), x.size())) << t.name;
  }
}

nlohmann::json ReadJsonFile(const std::string& path) {
  auto text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return nlohmann::json::parse(*text);
}

// Every key transformers wrote is in our config.json with the same value (its version aside).
void ExpectConfigMatches(const std::string& theirs, const std::string& ours) {
  const nlohmann::json a = ReadJsonFile(theirs), b = ReadJsonFile(ours);
  for (const auto& [k, v] : a.items()) {
    if (k == "transformers_version") continue;
    ASSERT_TRUE(b.contains(k)) << k;
    EXPECT_EQ(b[k], v) << k << ": ours " << b[k].dump() << ", transformers " << v.dump();
  }
}

TEST(ExportHf, PostLnRoundTripIsBitExact) {
  const std::string ckpt = Import("bert_mlm", "rt_bert");
  const std::string out = Temp("rt_bert_export");
  auto r = ExportHf(ckpt, out, "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model_type, "bert");
  ExpectSameTensors(FixtureDir() + "/bert_mlm/model.safetensors", out + "/model.safetensors");
  ExpectConfigMatches(FixtureDir() + "/bert_mlm/config.json", out + "/config.json");
  auto vocab_in = ReadFile(FixtureDir() + "/bert_mlm/vocab.txt"), vocab_out = ReadFile(out + "/vocab.txt");
  ASSERT_TRUE(vocab_in.ok() && vocab_out.ok());
  EXPECT_EQ(*vocab_in, *vocab_out);
  // And back: the re-imported checkpoint equals the first import.
  auto again = ImportHf(out, Temp("rt_bert_again"), HfImportOptions{});
  ASSERT_TRUE(again.ok()) << again.status();
  ExpectSameTensors(ckpt + "/model.safetensors", again->checkpoint + "/model.safetensors");
}

TEST(ExportHf, RobertaPreLayerNormExportMatchesTransformersLayout) {
  const std::string ckpt = Import("roberta_prelayernorm", "rt_roberta");
  const std::string out = Temp("rt_roberta_export");
  auto r = ExportHf(ckpt, out, "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model_type, "roberta-prelayernorm");
  ExpectConfigMatches(FixtureDir() + "/roberta_prelayernorm/config.json", out + "/config.json");
  auto theirs = SafetensorsFile::Open(FixtureDir() + "/roberta_prelayernorm/model.safetensors");
  auto ours = SafetensorsFile::Open(out + "/model.safetensors");
  ASSERT_TRUE(theirs.ok() && ours.ok());
  ASSERT_EQ(theirs->tensors().size(), ours->tensors().size());
  for (const SafetensorsTensorInfo& t : theirs->tensors()) {
    auto u = ours->Find(t.name);
    ASSERT_TRUE(u.ok()) << t.name;
    ASSERT_EQ(t.shape, (*u)->shape) << t.name;
    auto x = theirs->ReadFloats(t.name), y = ours->ReadFloats(t.name);
    ASSERT_TRUE(x.ok() && y.ok());
    // Row 0 of the position table (padding_idx) is never a real token's position: written as 0.
    const size_t skip = absl::EndsWith(t.name, "position_embeddings.weight") ? t.shape[1] : 0;
    for (size_t i = 0; i < skip; ++i) EXPECT_EQ((*y)[i], 0.0f);
    for (size_t i = skip; i < x->size(); ++i) ASSERT_EQ((*x)[i], (*y)[i]) << t.name << " element " << i;
  }
}

TEST(ExportHf, PreLnCheckpointRoundTripIsBitExact) {
  // A lamina Pre-LN checkpoint as the trainer writes it (run dir, optimizer state, run_config).
  const BertConfig config = testing::TinyBertConfig(
      {.vocab_size = 256, .hidden = 32, .heads = 4, .max_positions = 40}, NormPlacement::kPre);
  auto backend = MakeCpuBackend();
  auto model = BertModel::Create(config, HeadOptions{true, 0}, backend.get());
  ASSERT_TRUE(model.ok());
  (*model)->Initialize(11);
  auto opt = Optimizer::Create(OptimizerConfig{}, model->get());
  ASSERT_TRUE(opt.ok());
  const std::string run = Temp("preln_run");
  CheckpointState state;
  state.step = 5;
  state.run_config = {{"model", config.ToJson()}, {"data", {{"vocab", FixtureDir() + "/vocab.txt"}}}};
  auto ckpt = SaveCheckpoint(run, **model, **opt, state, 0);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const std::string out = Temp("preln_export");
  auto r = ExportHf(run, out, "");  // a run directory resolves to its newest checkpoint
  ASSERT_TRUE(r.ok()) << r.status();
  const nlohmann::json hf = ReadJsonFile(out + "/config.json");
  EXPECT_EQ(hf["model_type"], "roberta-prelayernorm");
  EXPECT_EQ(hf["max_position_embeddings"], 41);
  EXPECT_EQ(hf["pad_token_id"], 0);
  auto back = ImportHf(out, Temp("preln_back"), HfImportOptions{});
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->config.ToJson(), config.ToJson());
  ExpectSameTensors(*ckpt + "/model.safetensors", back->checkpoint + "/model.safetensors");
}

TEST(ExportHf, TFixupIsRefused) {
  BertConfig config = testing::TinyBertConfig(
      {.vocab_size = 256, .hidden = 32, .heads = 2, .max_positions = 16}, NormPlacement::kNone);
  config.layers = 1;
  auto backend = MakeCpuBackend();
  auto model = BertModel::Create(config, HeadOptions{true, 0}, backend.get());
  ASSERT_TRUE(model.ok());
  (*model)->Initialize(1);
  auto opt = Optimizer::Create(OptimizerConfig{}, model->get());
  ASSERT_TRUE(opt.ok());
  const std::string run = Temp("tfixup_run");
  CheckpointState state;
  state.run_config = {{"model", config.ToJson()}, {"data", {{"vocab", FixtureDir() + "/vocab.txt"}}}};
  ASSERT_TRUE(SaveCheckpoint(run, **model, **opt, state, 0).ok());
  auto r = ExportHf(run, Temp("tfixup_export"), "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(r.status().message().find("T-Fixup"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("LayerNorm"), std::string::npos) << r.status();
}

// A copy of a fixture model whose config.json is edited by `edit`.
std::string EditedModel(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  const std::string dir = Temp("edited_" + name);
  fs::create_directories(dir);
  for (const char* f : {"model.safetensors", "vocab.txt", "config.json"})
    fs::copy_file(FixtureDir() + "/bert_mlm/" + f, dir + "/" + f);
  nlohmann::json config = ReadJsonFile(dir + "/config.json");
  edit(config);
  std::ofstream(dir + "/config.json") << config.dump(2);
  return dir;
}

// transformers' tanh GELUs import as model.activation "gelu_tanh" and export as "gelu_new".
TEST(ImportHf, TanhGeluRoundTrips) {
  for (const char* act : {"gelu_new", "gelu_pytorch_tanh"}) {
    SCOPED_TRACE(act);
    const std::string dir = EditedModel(act, [act](nlohmann::json& c) { c["hidden_act"] = act; });
    auto imported = ImportHf(dir, Temp(std::string("imported_") + act), HfImportOptions{});
    ASSERT_TRUE(imported.ok()) << imported.status();
    const std::string out = Temp(std::string("exported_") + act);
    auto exported = ExportHf(imported->checkpoint, out, "");
    ASSERT_TRUE(exported.ok()) << exported.status();
    EXPECT_EQ(ReadJsonFile(out + "/config.json")["hidden_act"], "gelu_new");
    ExpectSameTensors(dir + "/model.safetensors", out + "/model.safetensors");
  }
}

std::string ImportError(const std::string& dir) {
  auto r = ImportHf(dir, Temp("refused"), HfImportOptions{});
  EXPECT_FALSE(r.ok()) << dir;
  return r.ok() ? "" : std::string(r.status().message());
}

TEST(ImportHf, RefusesWhatLaminaCannotCompute) {
  std::string m = ImportError(EditedModel("relu", [](nlohmann::json& c) { c["hidden_act"] = "relu"; }));
  EXPECT_NE(m.find("hidden_act \"relu\""), std::string::npos) << m;
  EXPECT_NE(m.find("gelu_pytorch_tanh"), std::string::npos) << m;
  m = ImportError(EditedModel("relpos", [](nlohmann::json& c) { c["position_embedding_type"] = "relative_key"; }));
  EXPECT_NE(m.find("absolute position embeddings only"), std::string::npos) << m;
  m = ImportError(EditedModel("gpt2", [](nlohmann::json& c) { c["model_type"] = "gpt2"; }));
  EXPECT_NE(m.find("model_type \"gpt2\" is not supported"), std::string::npos) << m;
  m = ImportError(EditedModel("decoder", [](nlohmann::json& c) { c["is_decoder"] = true; }));
  EXPECT_NE(m.find("is_decoder"), std::string::npos) << m;
  m = ImportError(EditedModel("heads", [](nlohmann::json& c) { c["num_attention_heads"] = 5; }));
  EXPECT_NE(m.find("divisible by heads"), std::string::npos) << m;
  // A config that does not match the tensors.
  m = ImportError(EditedModel("shape", [](nlohmann::json& c) { c["intermediate_size"] = 256; }));
  EXPECT_NE(m.find("intermediate.dense.weight has shape [128, 64], config.json implies [256, 64]"), std::string::npos) << m;
}

TEST(ImportHf, RefusesPickleAndUnknownOrUntiedTensors) {
  const std::string bin = Temp("bin_only");
  fs::create_directories(bin);
  fs::copy_file(FixtureDir() + "/bert_mlm/config.json", bin + "/config.json");
  std::ofstream(bin + "/pytorch_model.bin") << "PK";
  std::string m = ImportError(bin);
  EXPECT_NE(m.find("pickle"), std::string::npos) << m;
  EXPECT_NE(m.find("model.safetensors"), std::string::npos) << m;

  // Rewrites the fixture's tensors with one changed or added.
  auto rewrite = [](const std::string& name, const std::string& extra, bool untie) {
    const std::string dir = EditedModel(name, [](nlohmann::json&) {});
    auto st = SafetensorsFile::Open(FixtureDir() + "/bert_mlm/model.safetensors");
    EXPECT_TRUE(st.ok());
    std::vector<std::vector<float>> keep;
    keep.reserve(st->tensors().size());  // entries point into it
    std::vector<SafetensorsEntry> entries;
    for (const SafetensorsTensorInfo& t : st->tensors()) {
      keep.push_back(*st->ReadFloats(t.name));
      entries.push_back({t.name, DType::kF32, t.shape, keep.back().data()});
    }
    const std::vector<float> extra_values(64, 0.5f);
    if (!extra.empty()) entries.push_back({extra, DType::kF32, {64}, extra_values.data()});
    std::vector<float> decoder;
    if (untie) {
      decoder = *st->ReadFloats("bert.embeddings.word_embeddings.weight");
      decoder[5] += 1.0f;
      entries.push_back({"cls.predictions.decoder.weight", DType::kF32, {256, 64}, decoder.data()});
    }
    EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", entries).ok());
    return dir;
  };
  m = ImportError(rewrite("unknown", "bert.encoder.layer.0.attention.self.distance_embedding.weight", false));
  EXPECT_NE(m.find("no place for: bert.encoder.layer.0.attention.self.distance_embedding.weight"), std::string::npos) << m;
  m = ImportError(rewrite("untied", "", true));
  EXPECT_NE(m.find("cls.predictions.decoder.weight differs from the tensor it is tied to"), std::string::npos) << m;
}

}  // namespace
}  // namespace lamina
