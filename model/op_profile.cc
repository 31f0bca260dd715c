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
  ends_.clear();
  start_ = clock_->Mark();
  recording_ = true;
}

template <typename ShapeFn>
void ProfilingBackend::Done(const char* op, ShapeFn shape) {
  if (!recording_) return;
  const int mark = clock_->Mark();
  auto [it, added] = keys_.try_emplace({op, shape()}, static_cast<int>(names_.size()));
  if (added) names_.push_back(it->first);
  ends_.emplace_back(it->second, mark);
}

std::vector<OpTime> ProfilingBackend::StopRecording() {
  LAMINA_CHECK(recording_, "StopRecording without StartRecording");
  recording_ = false;
  std::vector<OpTime> times(names_.size());
  for (size_t k = 0; k < names_.size(); ++k) {
    times[k].op = names_[k].first;
    times[k].shape = names_[k].second;
  }
  int previous = start_;
  for (const auto& [key, mark] : ends_) {
    times[key].calls += 1;
    times[key].ms += clock_->ElapsedMs(previous, mark);
    previous = mark;
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
  inner_->Zero(t);
  Done("Zero", [&] { return D(t); });
}
void ProfilingBackend::CopyFromHost(const float* src, TensorView dst) {
  inner_->CopyFromHost(src, dst);
  Done("CopyFromHost", [&] { return D(dst); });
}
void ProfilingBackend::CopyToHost(TensorView src, float* dst) {
  inner_->CopyToHost(src, dst);
  Done("CopyToHost", [&] { return D(src); });
}
void ProfilingBackend::CopyFromHostI32(const int32_t* src, TensorView dst) {
  inner_->CopyFromHostI32(src, dst);
  Done("CopyFromHostI32", [&] { return D(dst); });
}
void ProfilingBackend::Convert(TensorView src, TensorView dst) {
  inner_->Convert(src, dst);
  Done("Convert", [&] { return absl::StrCat(D(src), " ", DTypeName(src.dtype), " -> ", DTypeName(dst.dtype)); });
}

void ProfilingBackend::EmbeddingForward(TensorView ids, TensorView type_ids, TensorView word, TensorView pos,
                                        TensorView type, float scale, TensorView out) {
  inner_->EmbeddingForward(ids, type_ids, word, pos, type, scale, out);
  Done("EmbeddingForward", [&] { return absl::StrCat(D(out), " from ", D(word)); });
}
void ProfilingBackend::EmbeddingBackward(TensorView ids, TensorView type_ids, TensorView dout, float scale,
                                         TensorView dword, TensorView dpos, TensorView dtype) {
  inner_->EmbeddingBackward(ids, type_ids, dout, scale, dword, dpos, dtype);
  Done("EmbeddingBackward", [&] { return absl::StrCat(D(dout), " into ", D(dword)); });
}

void ProfilingBackend::LayerNormForward(TensorView x, TensorView gamma, TensorView beta, float eps, TensorView out,
                                        TensorView mean, TensorView rstd) {
  inner_->LayerNormForward(x, gamma, beta, eps, out, mean, rstd);
  Done("LayerNormForward", [&] { return D(x); });
}
void ProfilingBackend::AddLayerNormForward(TensorView a, TensorView b, float p, RngContext rng, TensorView gamma,
                                           TensorView beta, float eps, TensorView sum, TensorView out, TensorView mean,
                                           TensorView rstd) {
  inner_->AddLayerNormForward(a, b, p, rng, gamma, beta, eps, sum, out, mean, rstd);
  Done("AddLayerNormForward", [&] { return absl::StrCat(D(a), DropoutNote(p)); });
}
void ProfilingBackend::LayerNormBackward(TensorView dout, TensorView x, TensorView gamma, TensorView mean,
                                         TensorView rstd, TensorView dx, bool accumulate, TensorView dgamma,
                                         TensorView dbeta, float p, RngContext rng, TensorView dropped) {
  inner_->LayerNormBackward(dout, x, gamma, mean, rstd, dx, accumulate, dgamma, dbeta, p, rng, dropped);
  Done("LayerNormBackward", [&] { return absl::StrCat(D(x), dropped.empty() ? "" : DropoutNote(p)); });
}

void ProfilingBackend::LinearForward(TensorView x, TensorView w, TensorView b, Activation act, TensorView pre_act,
                                     TensorView out) {
  inner_->LinearForward(x, w, b, act, pre_act, out);
  Done("LinearForward", [&] { return absl::StrCat(D(x), " x ", D(w), "^T", b.empty() ? "" : " + b", Act(act)); });
}
void ProfilingBackend::LinearBackward(TensorView dout, TensorView x, TensorView w, Activation act, TensorView pre_act,
                                      TensorView dx, bool accumulate, TensorView dw, TensorView db) {
  inner_->LinearBackward(dout, x, w, act, pre_act, dx, accumulate, dw, db);
  Done("LinearBackward", [&] {
    return absl::StrCat(D(x), " x ", D(w), "^T", Act(act), dx.empty() ? "" : ", dx", ", dW", db.empty() ? "" : ", db");
  });
}
void ProfilingBackend::LinearBackwardToPreActivation(TensorView dout, TensorView x, TensorView w, Activation input_act,
                                                     TensorView pre, TensorView dpre, TensorView dw, TensorView db) {
  inner_->LinearBackwardToPreActivation(dout, x, w, input_act, pre, dpre, dw, db);
  Done("LinearBackwardToPreActivation",
       [&] { return absl::StrCat(D(x), " x ", D(w), "^T", Act(input_act), ", dW", db.empty() ? "" : ", db"); });
}

void ProfilingBackend::Gelu(TensorView x, TensorView out) {
  inner_->Gelu(x, out);
  Done("Gelu", [&] { return D(x); });
}
void ProfilingBackend::GeluBackward(TensorView dout, TensorView x, TensorView dx) {
  inner_->GeluBackward(dout, x, dx);
  Done("GeluBackward", [&] { return D(x); });
}
void ProfilingBackend::Tanh(TensorView x, TensorView out) {
  inner_->Tanh(x, out);
  Done("Tanh", [&] { return D(x); });
}
void ProfilingBackend::TanhBackward(TensorView dout, TensorView out, TensorView dx) {
  inner_->TanhBackward(dout, out, dx);
  Done("TanhBackward", [&] { return D(out); });
}
void ProfilingBackend::Dropout(TensorView x, float p, RngContext rng, TensorView out) {
  inner_->Dropout(x, p, rng, out);
  Done("Dropout", [&] { return absl::StrCat(D(x), DropoutNote(p)); });
}
void ProfilingBackend::DropoutBackward(TensorView dout, float p, RngContext rng, TensorView dx) {
  inner_->DropoutBackward(dout, p, rng, dx);
  Done("DropoutBackward", [&] { return absl::StrCat(D(dout), DropoutNote(p)); });
}
void ProfilingBackend::AddDropout(TensorView a, TensorView b, float p, RngContext rng, TensorView out) {
  inner_->AddDropout(a, b, p, rng, out);
  Done("AddDropout", [&] { return absl::StrCat(D(a), DropoutNote(p)); });
}

void ProfilingBackend::AttentionForward(TensorView qkv, TensorView key_mask, int64_t heads, float dropout_p,
                                        RngContext rng, TensorView saved, TensorView out) {
  inner_->AttentionForward(qkv, key_mask, heads, dropout_p, rng, saved, out);
  Done("AttentionForward", [&] { return AttentionShape(key_mask, heads, out, dropout_p); });
}
void ProfilingBackend::AttentionBackward(TensorView dout, TensorView qkv, TensorView key_mask, TensorView out,
                                         TensorView saved, int64_t heads, float dropout_p, RngContext rng,
                                         TensorView dqkv) {
  inner_->AttentionBackward(dout, qkv, key_mask, out, saved, heads, dropout_p, rng, dqkv);
  Done("AttentionBackward", [&] { return AttentionShape(key_mask, heads, out, dropout_p); });
}

void ProfilingBackend::GatherRows(TensorView x, TensorView index, TensorView out) {
  inner_->GatherRows(x, index, out);
  Done("GatherRows", [&] { return absl::StrCat(D(out), " of ", D(x)); });
}
void ProfilingBackend::ScatterAddRows(TensorView dout, TensorView index, TensorView dx) {
  inner_->ScatterAddRows(dout, index, dx);
  Done("ScatterAddRows", [&] { return absl::StrCat(D(dout), " into ", D(dx)); });
}
void ProfilingBackend::CrossEntropy(TensorView logits, int64_t classes, TensorView targets, float grad_scale,
                                    TensorView losses, TensorView dlogits) {
  inner_->CrossEntropy(logits, classes, targets, grad_scale, losses, dlogits);
  Done("CrossEntropy",
       [&] { return absl::StrCat(D(logits), ", ", classes, " classes", dlogits.empty() ? "" : ", dlogits"); });
}
void ProfilingBackend::ArgMax(TensorView logits, int64_t classes, TensorView out) {
  inner_->ArgMax(logits, classes, out);
  Done("ArgMax", [&] { return absl::StrCat(D(logits), ", ", classes, " classes"); });
}

double ProfilingBackend::SumSquares(TensorView x) {
  const double sum = inner_->SumSquares(x);
  Done("SumSquares", [&] { return D(x); });
  return sum;
}
void ProfilingBackend::Scale(TensorView x, float s) {
  inner_->Scale(x, s);
  Done("Scale", [&] { return D(x); });
}
void ProfilingBackend::AdamWStep(TensorView params, TensorView grads, TensorView m, TensorView v, TensorView compute,
                                 std::span<const ParamSegment> segments, const AdamWHyper& hyper) {
  inner_->AdamWStep(params, grads, m, v, compute, segments, hyper);
  Done("AdamWStep", [&] { return absl::StrCat(D(params), ", ", segments.size(), " segments"); });
}
void ProfilingBackend::LambMoments(TensorView params, TensorView grads, TensorView m, TensorView v,
                                   std::span<const ParamSegment> segments, const AdamWHyper& hyper,
                                   TensorView norms) {
  inner_->LambMoments(params, grads, m, v, segments, hyper, norms);
  Done("LambMoments", [&] { return absl::StrCat(D(params), ", ", segments.size(), " segments"); });
}
void ProfilingBackend::LambUpdate(TensorView params, TensorView m, TensorView v, TensorView compute,
                                  std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) {
  inner_->LambUpdate(params, m, v, compute, segments, hyper, norms);
  Done("LambUpdate", [&] { return absl::StrCat(D(params), ", ", segments.size(), " segments"); });
}

}  // namespace lamina
