#include "data/prepare.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <queue>
#include <regex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/philox.h"
#include "core/status.h"
#include "core/timer.h"
#include "data/documents.h"
#include "data/shard.h"

namespace lamina {
namespace {

// Documents are handed to the tokenizer threads in chunks of about this much text.
constexpr size_t kChunkTextBytes = 1 << 20;

struct Chunk {
  int64_t index = 0;
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;  // filled by a worker
  size_t text_bytes = 0;
};

uint64_t HoldoutKey(int64_t n) {
  const uint64_t i = 2 * static_cast<uint64_t>(n);
  return static_cast<uint64_t>(PhiloxAt(kHoldoutSeed, kHoldoutStream, i)) << 32 | PhiloxAt(kHoldoutSeed, kHoldoutStream, i + 1);
}

// Progress on stderr: a redrawn bar on a terminal, otherwise a plain line every 10 seconds.
class Progress {
 public:
  Progress(bool enabled, uint64_t total) : enabled_(enabled), tty_(::isatty(STDERR_FILENO) == 1), total_(total) {}

  void Update(uint64_t done, uint64_t text_bytes, bool final = false) {
    if (!enabled_) return;
    const double now = timer_.Seconds();
    if (!final && now - last_ < (tty_ ? 0.25 : 10.0)) return;
    last_ = now;
    const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total_)) : 0.0;
    const double mbps = now > 0 ? static_cast<double>(text_bytes) / 1e6 / now : 0.0;
    const double eta = frac > 0 ? now * (1.0 - frac) / frac : 0.0;
    const int width = 30, filled = static_cast<int>(frac * width);
    const std::string bar = std::string(filled, '=') + std::string(width - filled, ' ');
    const std::string line = absl::StrFormat("prepare [%s] %5.1f%%  %.1f MB text  %.1f MB/s  %s %d:%02d", bar, 100 * frac,
                                             static_cast<double>(text_bytes) / 1e6, mbps, final ? "took" : "ETA",
                                             static_cast<int>(final ? now : eta) / 60, static_cast<int>(final ? now : eta) % 60);
    // On a terminal: back to column 0, then clear the rest of the previous bar (ESC [K).
    std::fprintf(stderr, tty_ ? "\r%s\033[K%s" : "%s%s", line.c_str(), tty_ && !final ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  bool enabled_, tty_;
  uint64_t total_;
  Timer timer_;
  double last_ = 0;  // the first line comes after one interval, when the rate means something
};

// Cuts documents into rows and writes them; decides the validation hold-out.
class Packer {
 public:
  Packer(const std::string& dir, const WordPieceTokenizer& tok, const PrepareOptions& options, ShardHeader header)
      : tok_(tok),
        options_(options),
        train_(dir, "train", header, options.sequences_per_shard),
        val_(dir, "val", header, options.sequences_per_shard),
        row_(static_cast<size_t>(options.seq_len)) {}

  absl::Status Add(std::vector<int32_t> ids) {
    if (ids.empty()) return absl::OkStatus();
    const int64_t n = documents_++;
    if (options_.val_docs == 0) return Write(ids, &train_, &train_info_);
    Held doc{HoldoutKey(n), n, std::move(ids)};
    if (static_cast<int64_t>(held_.size()) < options_.val_docs) {
      held_.push(std::move(doc));
      return absl::OkStatus();
    }
    if (held_.top() < doc) return Write(doc.ids, &train_, &train_info_);
    Held out = std::move(const_cast<Held&>(held_.top()));
    held_.pop();
    held_.push(std::move(doc));
    return Write(out.ids, &train_, &train_info_);
  }

  absl::StatusOr<std::pair<SplitInfo, SplitInfo>> Finish() {
    std::vector<Held> val;
    while (!held_.empty()) {
      val.push_back(std::move(const_cast<Held&>(held_.top())));
      held_.pop();
    }
    std::sort(val.begin(), val.end(), [](const Held& a, const Held& b) { return a.number < b.number; });
    for (const Held& h : val) RETURN_IF_ERROR(Write(h.ids, &val_, &val_info_));
    ASSIGN_OR_RETURN(train_info_.shards, train_.Finish());
    ASSIGN_OR_RETURN(val_info_.shards, val_.Finish());
    return std::pair{train_info_, val_info_};
  }

  int64_t documents() const { return documents_; }

 private:
  struct Held {
    uint64_t key;
    int64_t number;
    std::vector<int32_t> ids;
    bool operator<(const Held& o) const { return key != o.key ? key < o.key : number < o.number; }
  };

  absl::Status Write(const std::vector<int32_t>& ids, ShardWriter* writer, SplitInfo* info) {
    const size_t piece = static_cast<size_t>(options_.seq_len) - 2;
    ++info->documents;
    info->tokens += static_cast<int64_t>(ids.size());
    for (size_t begin = 0; begin < ids.size(); begin += piece) {
      const size_t len = std::min(piece, ids.size() - begin);
      row_[0] = tok_.cls_id();
      std::copy(ids.begin() + begin, ids.begin() + begin + len, row_.begin() + 1);
      row_[len + 1] = tok_.sep_id();
      std::fill(row_.begin() + len + 2, row_.end(), tok_.pad_id());
      info->padding += static_cast<int64_t>(row_.size() - len - 2);
      ++info->sequences;
      RETURN_IF_ERROR(writer->Append(row_.data()));
    }
    return absl::OkStatus();
  }

  const WordPieceTokenizer& tok_;
  const PrepareOptions& options_;
  ShardWriter train_, val_;
  SplitInfo train_info_, val_info_;
  std::priority_queue<Held> held_;  // the val_docs smallest keys so far; top() = the largest of them
  std::vector<int32_t> row_;
  int64_t documents_ = 0;
};

// Tokenizes chunks on worker threads and hands them back in submission order.
class TokenizerPool {
 public:
  TokenizerPool(const WordPieceTokenizer& tok, int threads) : tok_(tok), max_in_flight_(2 * threads + 2) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~TokenizerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  // Blocks while too many chunks are queued or waiting to be taken back.
  void Submit(Chunk chunk) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return in_flight_ < max_in_flight_; });
    ++in_flight_;
    todo_.push_back(std::move(chunk));
    lock.unlock();
    cv_.notify_all();
  }

  // The tokenized chunk `index`, waiting for it.
  Chunk Take(int64_t index) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_.count(index) > 0; });
    Chunk c = std::move(done_[index]);
    done_.erase(index);
    --in_flight_;
    lock.unlock();
    cv_.notify_all();
    return c;
  }

 private:
  void Work() {
    while (true) {
      Chunk c;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !todo_.empty(); });
        if (stop_) return;
        c = std::move(todo_.front());
        todo_.pop_front();
      }
      c.ids.resize(c.texts.size());
      for (size_t i = 0; i < c.texts.size(); ++i) {
        tok_.Encode(c.texts[i], &c.ids[i]);
        for (int32_t& id : c.ids[i]) {
          if (id != tok_.unk_id() && tok_.IsSpecial(id)) id = tok_.unk_id();
        }
      }
      c.texts.clear();
      {
        std::lock_guard<std::mutex> lock(mu_);
        done_.emplace(c.index, std::move(c));
      }
      cv_.notify_all();
    }
  }

  const WordPieceTokenizer& tok_;
  const int max_in_flight_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk> todo_;
  std::map<int64_t, Chunk> done_;
  int in_flight_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// Removes shard files of an earlier run that the new manifest does not list.
void RemoveStaleShards(const std::string& dir, const Manifest& m) {
  std::set<std::string> keep;
  for (const SplitInfo* s : {&m.train, &m.val})
    for (const ShardInfo& sh : s->shards) keep.insert(sh.file);
  static const std::regex kOurs(R"((train|val)-[0-9]{5}\.bin(\.tmp)?)");
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, kOurs) && !keep.count(name)) std::filesystem::remove(entry.path(), ec);
  }
}

absl::Status CheckOptions(const PrepareOptions& o) {
  if (o.inputs.empty()) return absl::InvalidArgumentError("no input files");
  if (o.out_dir.empty()) return absl::InvalidArgumentError("no output directory");
  if (o.seq_len < 3 || o.seq_len > kMaxSeqLen) {
    return absl::InvalidArgumentError(absl::StrCat("seq-len ", o.seq_len, " is outside [3, ", kMaxSeqLen,
                                                   "] (at least [CLS], one token and [SEP])"));
  }
  if (o.val_docs < 0 || o.max_docs < 0 || o.max_bytes < 0) return absl::InvalidArgumentError("val-docs, max-docs and max-bytes must be >= 0");
  if (o.threads < 0) return absl::InvalidArgumentError("threads must be >= 0");
  if (o.sequences_per_shard <= 0) return absl::InvalidArgumentError("sequences per shard must be > 0");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Manifest> PrepareCorpus(const WordPieceTokenizer& tokenizer, const PrepareOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  Manifest m;
  m.vocab_hash = tokenizer.vocab_hash();
  m.vocab_size = tokenizer.vocab_size();
  m.special = tokenizer.special_ids();
  m.seq_len = options.seq_len;
  m.dtype = DtypeForVocab(m.vocab_size);
  m.val_docs = options.val_docs;
  m.max_docs = options.max_docs;
  m.max_bytes = options.max_bytes;
  m.sequences_per_shard = options.sequences_per_shard;

  // Open every input first, so that a missing file fails before any work.
  std::vector<std::unique_ptr<DocumentReader>> readers;
  uint64_t total_file_bytes = 0;
  for (const std::string& path : options.inputs) {
    ASSIGN_OR_RETURN(auto reader, DocumentReader::Open(path));
    total_file_bytes += reader->text_reader().file_size();
    readers.push_back(std::move(reader));
  }

  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", options.out_dir, ": ", ec.message()));
  // Without a manifest the directory reads as "no dataset" until the new one is complete.
  const std::string manifest_path = absl::StrCat(options.out_dir, "/", kManifestFile);
  std::filesystem::remove(manifest_path, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot remove the old ", manifest_path, ": ", ec.message()));

  ShardHeader header;
  header.dtype = m.dtype;
  header.seq_len = static_cast<uint32_t>(options.seq_len);
  header.vocab_size = static_cast<uint32_t>(m.vocab_size);
  header.vocab_hash = m.vocab_hash;
  Packer packer(options.out_dir, tokenizer, options, header);

  const int threads = options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  Progress progress(options.progress, options.max_bytes > 0 ? static_cast<uint64_t>(options.max_bytes) : total_file_bytes);

  // The packer runs on its own thread, taking chunks back in order while this thread reads.
  TokenizerPool pool(tokenizer, threads);
  std::mutex packer_mu;
  absl::Status packer_status;
  int64_t chunks_submitted = 0;
  bool reading_done = false;
  std::condition_variable packer_cv;
  std::thread packer_thread([&] {
    for (int64_t next = 0;; ++next) {
      {
        std::unique_lock<std::mutex> lock(packer_mu);
        packer_cv.wait(lock, [&] { return next < chunks_submitted || reading_done; });
        if (next >= chunks_submitted) return;
      }
      Chunk c = pool.Take(next);
      for (std::vector<int32_t>& ids : c.ids) {
        absl::Status s = packer.Add(std::move(ids));
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(packer_mu);
          if (packer_status.ok()) packer_status = s;
        }
      }
    }
  });

  auto submit = [&](Chunk* chunk) {
    if (chunk->texts.empty()) return;
    chunk->index = chunks_submitted;
    pool.Submit(std::move(*chunk));
    *chunk = Chunk();
    {
      std::lock_guard<std::mutex> lock(packer_mu);
      ++chunks_submitted;
    }
    packer_cv.notify_all();
  };

  absl::Status read_status;
  uint64_t text_bytes = 0, file_bytes_before = 0;
  int64_t documents_read = 0;
  bool limit_reached = false;
  Chunk chunk;
  Document doc;
  for (size_t f = 0; f < readers.size() && !limit_reached && read_status.ok(); ++f) {
    DocumentReader& reader = *readers[f];
    SourceInfo source;
    source.path = options.inputs[f];
    source.bytes = reader.text_reader().file_size();
    source.compression = CompressionName(reader.text_reader().compression());
    source.layout = reader.wikiextractor() ? "wikiextractor" : "plain";
    while (true) {
      absl::StatusOr<bool> got = reader.Next(&doc);
      if (!got.ok()) {
        read_status = got.status();
        break;
      }
      if (!*got) break;
      ++source.documents;
      ++documents_read;
      chunk.text_bytes += doc.text.size();
      chunk.texts.push_back(std::move(doc.text));
      if (chunk.text_bytes >= kChunkTextBytes) submit(&chunk);
      const uint64_t bytes_now = text_bytes + reader.text_reader().text_bytes_read();
      progress.Update(options.max_bytes > 0 ? bytes_now : file_bytes_before + reader.text_reader().file_bytes_read(), bytes_now);
      if ((options.max_docs > 0 && documents_read >= options.max_docs) ||
          (options.max_bytes > 0 && bytes_now >= static_cast<uint64_t>(options.max_bytes))) {
        limit_reached = true;
        break;
      }
      std::lock_guard<std::mutex> lock(packer_mu);
      if (!packer_status.ok()) break;
    }
    source.text_bytes = reader.text_reader().text_bytes_read();
    text_bytes += source.text_bytes;
    file_bytes_before += source.bytes;
    m.sources.push_back(std::move(source));
    readers[f].reset();  // frees its buffers and closes the file
  }
  submit(&chunk);
  {
    std::lock_guard<std::mutex> lock(packer_mu);
    reading_done = true;
  }
  packer_cv.notify_all();
  packer_thread.join();
  RETURN_IF_ERROR(read_status);
  RETURN_IF_ERROR(packer_status);
  progress.Update(options.max_bytes > 0 ? text_bytes : total_file_bytes, text_bytes, /*final=*/true);

  if (packer.documents() == 0)
    return absl::InvalidArgumentError(absl::StrCat(absl::StrJoin(options.inputs, ", "),
                                                   ": no non-empty documents (an empty input makes an empty dataset)"));
  if (options.val_docs > 0 && packer.documents() <= options.val_docs) {
    return absl::InvalidArgumentError(absl::StrCat("the input has ", packer.documents(), " non-empty documents; holding out --val-docs ",
                                                   options.val_docs, " would leave none for training"));
  }
  ASSIGN_OR_RETURN(auto splits, packer.Finish());
  m.train = std::move(splits.first);
  m.val = std::move(splits.second);
  RETURN_IF_ERROR(WriteFileAtomic(manifest_path, m.ToJson()));
  RemoveStaleShards(options.out_dir, m);
  return m;
}

}  // namespace lamina
