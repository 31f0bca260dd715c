#include "pretrain/schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace lamina {
namespace {

absl::Status KeyError(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("schedule.", key, ": ", what));
}

bool Decays(ScheduleKind kind) { return kind == ScheduleKind::kLinear || kind == ScheduleKind::kPolynomial; }

}  // namespace

std::string ScheduleName(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kConstant: return "constant";
    case ScheduleKind::kLinear: return "linear";
    case ScheduleKind::kPolynomial: return "polynomial";
    case ScheduleKind::kInverseSqrt: return "inverse_sqrt";
  }
  return "?";
}

absl::Status ScheduleConfig::Validate() const {
  if (!(lr > 0) || !std::isfinite(lr)) return KeyError("lr", absl::StrCat("must be a positive number, got ", lr));
  if (warmup_steps < 0) return KeyError("warmup_steps", absl::StrCat("must be >= 0, got ", warmup_steps));
  if (total_steps < 0) return KeyError("total_steps", absl::StrCat("must be >= 0, got ", total_steps));
  if (Decays(kind)) {
    if (total_steps <= 0) return KeyError("total_steps", absl::StrCat("the ", ScheduleName(kind), " schedule needs total_steps > 0"));
    if (warmup_steps > total_steps)
      return KeyError("warmup_steps", absl::StrCat("warmup (", warmup_steps, ") is longer than training (", total_steps, ")"));
    if (!(end_lr >= 0 && end_lr <= lr))
      return KeyError("end_lr", absl::StrCat("must be in [0, lr = ", lr, "], got ", end_lr));
  }
  if (kind == ScheduleKind::kPolynomial && !(power > 0 && std::isfinite(power)))
    return KeyError("power", absl::StrCat("must be a positive number, got ", power));
  return absl::OkStatus();
}

nlohmann::json ScheduleConfig::ToJson() const {
  nlohmann::json j = {{"name", ScheduleName(kind)}, {"lr", lr}, {"warmup_steps", warmup_steps}};
  if (Decays(kind) || total_steps > 0) j["total_steps"] = total_steps;
  if (Decays(kind)) j["end_lr"] = end_lr;
  if (kind == ScheduleKind::kPolynomial) j["power"] = power;
  return j;
}

absl::StatusOr<ScheduleConfig> ScheduleConfig::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat("schedule: expected an object, got ", j.dump()));
  ScheduleConfig c;
  if (!j.contains("name")) return KeyError("name", "missing (constant, linear, polynomial or inverse_sqrt)");
  if (!j.contains("lr")) return KeyError("lr", "missing (the peak learning rate)");
  const nlohmann::json& name = j.at("name");
  if (!name.is_string()) return KeyError("name", absl::StrCat("expected a string, got ", name.dump()));
  const std::string n = name.get<std::string>();
  if (n == "constant") c.kind = ScheduleKind::kConstant;
  else if (n == "linear") c.kind = ScheduleKind::kLinear;
  else if (n == "polynomial") c.kind = ScheduleKind::kPolynomial;
  else if (n == "inverse_sqrt") c.kind = ScheduleKind::kInverseSqrt;
  else return KeyError("name", absl::StrCat("expected constant, linear, polynomial or inverse_sqrt, got \"", n, "\""));

  for (const auto& item : j.items()) {
    const std::string& key = item.key();
    const nlohmann::json& v = item.value();
    if (key == "name") continue;
    if (key == "lr" || key == "end_lr" || key == "power") {
      if (!v.is_number()) return KeyError(key, absl::StrCat("expected a number, got ", v.dump()));
      if ((key == "end_lr" && !Decays(c.kind)) || (key == "power" && c.kind != ScheduleKind::kPolynomial))
        return KeyError(key, absl::StrCat("not used by the ", n, " schedule"));
      (key == "lr" ? c.lr : key == "end_lr" ? c.end_lr : c.power) = v.get<double>();
    } else if (key == "warmup_steps" || key == "total_steps") {
      if (!v.is_number_integer()) return KeyError(key, absl::StrCat("expected an integer, got ", v.dump()));
      (key == "warmup_steps" ? c.warmup_steps : c.total_steps) = v.get<int64_t>();
    } else {
      return KeyError(key, "unknown key (expected name, lr, warmup_steps, total_steps, end_lr, power)");
    }
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

double ScheduleConfig::LearningRate(int64_t step) const {
  const double s = static_cast<double>(std::max<int64_t>(step, 0));
  const double w = static_cast<double>(warmup_steps);
  if (s < w) return lr * (s + 1) / w;
  switch (kind) {
    case ScheduleKind::kConstant: return lr;
    case ScheduleKind::kInverseSqrt: return lr * std::sqrt(std::max(w, 1.0) / (s + 1));
    case ScheduleKind::kLinear:
    case ScheduleKind::kPolynomial: {
      const double t = static_cast<double>(total_steps);
      if (s >= t) return end_lr;
      const double remaining = (t - s) / (t - w);  // in (0, 1]; t > w here since w <= s < t
      const double decay = kind == ScheduleKind::kLinear ? remaining : std::pow(remaining, power);
      return end_lr + (lr - end_lr) * decay;
    }
  }
  return lr;
}

}  // namespace lamina
