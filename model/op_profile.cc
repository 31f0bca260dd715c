#include "model/op_profile.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"

namespace lamina {
namespace {

std::string D(const TensorView& t) { return t.shape.ToString(); }

std::string Act(Activation a) {
  switch (a) {
    case Activation::kNone:
      return "";
    case Activation::kGelu:
      return ", gelu";
    case Activation::kGeluTanh:
      return ", gelu_tanh";
  }
  return ", ?";
}

std::string DropoutNote(float p) { return p > 0.0f ? absl::StrFormat(", dropout %g", p) : ""; }

std::string AttentionShape(const TensorView& key_mask, int64_t heads, const TensorView& out, float p) {
  return absl::StrCat("mask ", D(key_mask), ", ", heads, " heads of ", heads > 0 ? out.cols() / heads : 0,
                      DropoutNote(p));
}

}  // namespace

ProfilingBackend::ProfilingBackend(std::unique_ptr<Backend> inner)
    : inner_(std::move(inner)), clock_(inner_->NewStreamClock()) {}

void ProfilingBackend::StartRecording() {
  clock_->Clear();
  keys_.clear();
  names_.clear();
  calls_.clear();
  start_ = clock_->Mark();
  recording_ = true;
}

template <typename OpFn, typename ShapeFn>
void ProfilingBackend::Run(const char* op, OpFn call, ShapeFn shape) {
  if (!recording_) {
    call();
    return;
  }
  const int start = clock_->Mark();
  call();
  const int end = clock_->Mark();
  auto [it, added] = keys_.try_emplace({op, shape()}, static_cast<int>(names_.size()));
  if (added) names_.push_back(it->first);
  calls_.push_back({it->second, start, end});
}

std::vector<OpTime> ProfilingBackend::StopRecording() {
  LAMINA_CHECK(recording_, "StopRecording without StartRecording");
  recording_ = false;
  // The last row: the device's time between one op's end and the next one's start.
  std::vector<OpTime> times(names_.size() + 1);
  for (size_t k = 0; k < names_.size(); ++k) {
    times[k].op = names_[k].first;
    times[k].shape = names_[k].second;
  }
  OpTime& between = times.back();
  between.op = kBetweenOps;
  between.shape = "the device idle: launch gaps, host work and waits";
  int previous = start_;
  for (const Recorded& c : calls_) {
    times[c.key].calls += 1;
    times[c.key].ms += clock_->ElapsedMs(c.start, c.end);
    between.calls += 1;
    between.ms += clock_->ElapsedMs(previous, c.start);
    previous = c.end;
  }
  std::stable_sort(times.begin(), times.end(), [](const OpTime& a, const OpTime& b) { return a.ms > b.ms; });
  return times;
}

std::string FormatOpTimes(const std::vector<OpTime>& times, int steps) {
  LAMINA_CHECK(steps > 0, "steps ", steps);
  double total = 0;
  for (const OpTime& t : times) total += t.ms;
  std::string out = absl::StrFormat("%-30s %-58s %10s %10s %7s\n", "op", "operands", "calls/step", "ms/step", "share");
  int folded = 0;
  double folded_ms = 0;
  for (const OpTime& t : times) {
    if (total > 0 && t.ms < 1e-3 * total) {
      ++folded;
      folded_ms += t.ms;
      continue;
    }
    absl::StrAppendFormat(&out, "%-30s %-58s %10.1f %10.3f %6.1f%%\n", t.op, t.shape,
                          static_cast<double>(t.calls) / steps, t.ms / steps, total > 0 ? 100.0 * t.ms / total : 0.0);
  }
  if (folded > 0)
    absl::StrAppendFormat(&out, "%-30s %-58s %10s %10.3f %6.1f%%\n", absl::StrCat("(", folded, " more)"),
                          "each under 0.1%", "", folded_ms / steps, 100.0 * folded_ms / total);
  absl::StrAppendFormat(&out, "%-30s %-58s %10s %10.3f\n", "total", "", "", total / steps);
  return out;
}

void ProfilingBackend::Zero(TensorView t) {
  Run("Zero", [&] { inner_->Zero(t); }, [&] { return D(t); });
}
void ProfilingBackend::CopyFromHost(const float* src, TensorView dst) {
  Run("CopyFromHost", [&] { inner_->CopyFromHost(src, dst); }, [&] { return D(dst); });
}
void ProfilingBackend::CopyToHost(TensorView src, float* dst) {
  Run("CopyToHost", [&] { inner_->CopyToHost(src, dst); }, [&] { return D(src); });
}
void ProfilingBackend::CopyFromHostI32(const int32_t* src, TensorView dst) {
  Run("CopyFromHostI32", [&] { inner_->CopyFromHostI32(src, dst); }, [&] { return D(dst); });
}
void ProfilingBackend::Convert(TensorView src, TensorView dst) {
  Run("Convert", [&] { inner_->Convert(src, dst); },
      [&] { return absl::StrCat(D(src), " ", DTypeName(src.dtype), " -> ", DTypeName(dst.dtype)); });
}

void ProfilingBackend::EmbeddingForward(TensorView ids, TensorView type_ids, TensorView word, TensorView pos,
                                        TensorView type, float scale, TensorView out) {
  Run("EmbeddingForward", [&] { inner_->EmbeddingForward(ids, type_ids, word, pos, type, scale, out); },
      [&] { return absl::StrCat(D(out), " from ", D(word)); });
}
void ProfilingBackend::EmbeddingBackward(TensorView ids, TensorView type_ids, TensorView dout, float scale,
                                         TensorView dword, TensorView dpos, TensorView dtype) {
  Run("EmbeddingBackward", [&] { inner_->EmbeddingBackward(ids, type_ids, dout, scale, dword, dpos, dtype); },
      [&] { return absl::StrCat(D(dout), " into ", D(dword)); });
}

void ProfilingBackend::LayerNormForward(TensorView x, TensorView gamma, TensorView beta, float eps, TensorView out,
                                        TensorView mean, TensorView rstd) {
  Run("LayerNormForward", [&] { inner_->LayerNormForward(x, gamma, beta, eps, out, mean, rstd); },
      [&] { return D(x); });
}
void ProfilingBackend::AddLayerNormForward(TensorView a, TensorView b, float p, RngContext rng, TensorView gamma,
                                           TensorView beta, float eps, TensorView sum, TensorView out, TensorView mean,
                                           TensorView rstd) {
  Run("AddLayerNormForward", [&] { inner_->AddLayerNormForward(a, b, p, rng, gamma, beta, eps, sum, out, mean, rstd); },
      [&] { return absl::StrCat(D(a), DropoutNote(p)); });
}
void ProfilingBackend::LayerNormBackward(TensorView dout, TensorView x, TensorView gamma, TensorView mean,
                                         TensorView rstd, TensorView dx, bool accumulate, TensorView dgamma,
                                         TensorView dbeta, float p, RngContext rng, TensorView dropped) {
  Run(
      "LayerNormBackward",
      [&] { inner_->LayerNormBackward(dout, x, gamma, mean, rstd, dx, accumulate, dgamma, dbeta, p, rng, dropped); },
      [&] { return absl::StrCat(D(x), dropped.empty() ? "" : DropoutNote(p)); });
}

void ProfilingBackend::LinearForward(TensorView x, TensorView w, TensorView b, Activation act, TensorView pre_act,
                                     TensorView out) {
  Run("LinearForward", [&] { inner_->LinearForward(x, w, b, act, pre_act, out); },
      [&] { return absl::StrCat(D(x), " x ", D(w), "^T", b.empty() ? "" : " + b", Act(act)); });
}
void ProfilingBackend::LinearBackward(TensorView dout, TensorView x, TensorView w, Activation act, TensorView pre_act,
                                      TensorView dx, bool accumulate, TensorView dw, TensorView db) {
  Run("LinearBackward", [&] { inner_->LinearBackward(dout, x, w, act, pre_act, dx, accumulate, dw, db); }, [&] {
    return absl::StrCat(D(x), " x ", D(w), "^T", Act(act), dx.empty() ? "" : ", dx", ", dW", db.empty() ? "" : ", db");
  });
}
void ProfilingBackend::LinearBackwardToPreActivation(TensorView dout, TensorView x, TensorView w, Activation input_act,
                                                     TensorView pre, TensorView dpre, TensorView dw, TensorView db) {
  Run(
      "LinearBackwardToPreActivation",
      [&] { inner_->LinearBackwardToPreActivation(dout, x, w, input_act, pre, dpre, dw, db); },
      [&] { return absl::StrCat(D(x), " x ", D(w), "^T", Act(input_act), ", dW", db.empty() ? "" : ", db"); });
}

void ProfilingBackend::Gelu(TensorView x, TensorView out) {
  Run("Gelu", [&] { inner_->Gelu(x, out); }, [&] { return D(x); });
}
void ProfilingBackend::GeluBackward(TensorView dout, TensorView x, TensorView dx) {
  Run("GeluBackward", [&] { inner_->GeluBackward(dout, x, dx); }, [&] { return D(x); });
}
void ProfilingBackend::Tanh(TensorView x, TensorView out) {
  Run("Tanh", [&] { inner_->Tanh(x, out); }, [&] { return D(x); });
}
void ProfilingBackend::TanhBackward(TensorView dout, TensorView out, TensorView dx) {
  Run("TanhBackward", [&] { inner_->TanhBackward(dout, out, dx); }, [&] { return D(out); });
}
void ProfilingBackend::Dropout(TensorView x, float p, RngContext rng, TensorView out) {
  Run("Dropout", [&] { inner_->Dropout(x, p, rng, out); }, [&] { return absl::StrCat(D(x), DropoutNote(p)); });
}
void ProfilingBackend::DropoutBackward(TensorView dout, float p, RngContext rng, TensorView dx) {
  Run("DropoutBackward", [&] { inner_->DropoutBackward(dout, p, rng, dx); },
      [&] { return absl::StrCat(D(dout), DropoutNote(p)); });
}
void ProfilingBackend::AddDropout(TensorView a, TensorView b, float p, RngContext rng, TensorView out) {
  Run("AddDropout", [&] { inner_->AddDropout(a, b, p, rng, out); }, [&] { return absl::StrCat(D(a), DropoutNote(p)); });
}

void ProfilingBackend::AttentionForward(TensorView qkv, TensorView key_mask, int64_t heads, float dropout_p,
                                        RngContext rng, TensorView saved, TensorView out) {
  Run("AttentionForward", [&] { inner_->AttentionForward(qkv, key_mask, heads, dropout_p, rng, saved, out); },
      [&] { return AttentionShape(key_mask, heads, out, dropout_p); });
}
void ProfilingBackend::AttentionBackward(TensorView dout, TensorView qkv, TensorView key_mask, TensorView out,
                                         TensorView saved, int64_t heads, float dropout_p, RngContext rng,
                                         TensorView dqkv) {
  Run(
      "AttentionBackward",
      [&] { inner_->AttentionBackward(dout, qkv, key_mask, out, saved, heads, dropout_p, rng, dqkv); },
      [&] { return AttentionShape(key_mask, heads, out, dropout_p); });
}

void ProfilingBackend::GatherRows(TensorView x, TensorView index, TensorView out) {
  Run("GatherRows", [&] { inner_->GatherRows(x, index, out); }, [&] { return absl::StrCat(D(out), " of ", D(x)); });
}
void ProfilingBackend::ScatterAddRows(TensorView dout, TensorView index, TensorView dx) {
  Run("ScatterAddRows", [&] { inner_->ScatterAddRows(dout, index, dx); },
      [&] { return absl::StrCat(D(dout), " into ", D(dx)); });
}
void ProfilingBackend::CrossEntropy(TensorView logits, int64_t classes, TensorView targets, float grad_scale,
                                    TensorView losses, TensorView dlogits) {
  Run("CrossEntropy", [&] { inner_->CrossEntropy(logits, classes, targets, grad_scale, losses, dlogits); },
      [&] { return absl::StrCat(D(logits), ", ", classes, " classes", dlogits.empty() ? "" : ", dlogits"); });
}
void ProfilingBackend::ArgMax(TensorView logits, int64_t classes, TensorView out) {
  Run("ArgMax", [&] { inner_->ArgMax(logits, classes, out); },
      [&] { return absl::StrCat(D(logits), ", ", classes, " classes"); });
}

double ProfilingBackend::SumSquares(TensorView x) {
  double sum = 0;
  Run("SumSquares", [&] { sum = inner_->SumSquares(x); }, [&] { return D(x); });
  return sum;
}
void ProfilingBackend::Scale(TensorView x, float s) {
  Run("Scale", [&] { inner_->Scale(x, s); }, [&] { return D(x); });
}
void ProfilingBackend::AdamWStep(TensorView params, TensorView grads, TensorView m, TensorView v, TensorView compute,
                                 std::span<const ParamSegment> segments, const AdamWHyper& hyper) {
  Run("AdamWStep", [&] { inner_->AdamWStep(params, grads, m, v, compute, segments, hyper); },
      [&] { return absl::StrCat(D(params), ", ", segments.size(), " segments"); });
}
void ProfilingBackend::LambMoments(TensorView params, TensorView grads, TensorView m, TensorView v,
                                   std::span<const ParamSegment> segments, const AdamWHyper& hyper,
                                   TensorView norms) {
  Run("LambMoments", [&] { inner_->LambMoments(params, grads, m, v, segments, hyper, norms); },
      [&] { return absl::StrCat(D(params), ", ", segments.size(), " segments"); });
}
void ProfilingBackend::LambUpdate(TensorView params, TensorView m, TensorView v, TensorView compute,
                                  std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) {
  Run("LambUpdate", [&] { inner_->LambUpdate(params, m, v, compute, segments, hyper, norms); },
      [&] { return absl::StrCat(D(params), ", ", segments.size(), " segments"); });
}

}  // namespace lamina
