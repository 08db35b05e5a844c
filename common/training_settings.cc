#include "common/training_settings.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace tuneforge {
namespace {

// The shortest text that reads back as the same double: 0.0001, 1048576.
std::string Number(double v) {
  char text[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(text, sizeof(text), "%.0f", v);
    return text;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(text, sizeof(text), "%.*g", precision, v);
    if (std::strtod(text, nullptr) == v) break;
  }
  return text;
}

std::string ValueText(const SettingValue& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return x;
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          return Number(x);
        } else {
          return std::to_string(x);
        }
      },
      v);
}

// A space that Wrap does not break at.
constexpr char kKeep = '\x01';

std::string Unbroken(std::string text) {
  std::replace(text.begin(), text.end(), ' ', kKeep);
  return text;
}

// Wraps `text` into lines of at most `width` characters, each after `prefix`.
std::string Wrap(const std::string& text, const std::string& prefix, size_t width) {
  std::string out, line;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(start, end - start);
    if (!line.empty() && prefix.size() + line.size() + 1 + word.size() > width) {
      out += prefix + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
    start = end + 1;
  }
  if (!line.empty()) out += prefix + line + "\n";
  std::replace(out.begin(), out.end(), kKeep, ' ');
  return out;
}

}  // namespace

bool Bounds::Allows(double v) const {
  if (std::isnan(v)) return false;
  if (zero_is_off && v == 0) return true;
  const bool above = min_open ? v > min : v >= min;
  const bool below = max_open ? v < max : v <= max;
  return above && below;
}

bool Bounds::Allows(const std::string& v) const {
  if (choices.empty()) return true;
  for (const std::string& c : choices) {
    if (c == v) return true;
  }
  return false;
}

std::string Bounds::Describe() const {
  std::string text;
  if (!choices.empty()) {
    text = "one of ";
    for (size_t i = 0; i < choices.size(); ++i) text += (i ? ", " : "") + choices[i];
  } else if (std::isinf(min) && std::isinf(max)) {
    text = "any value";
  } else if (std::isinf(max)) {
    text = (min_open ? "> " : ">= ") + Number(min);
  } else {
    text = std::string(zero_is_off ? "0 (off) or in " : "in ") + (min_open ? "(" : "[") +
           Number(min) + ", " + Number(max) + (max_open ? ")" : "]");
  }
  if (!note.empty()) text += " (" + note + ")";
  return text;
}

Bounds Any() { return Bounds{}; }

Bounds Closed(double lo, double hi) {
  Bounds b;
  b.min = lo;
  b.max = hi;
  return b;
}

Bounds OpenClosed(double lo, double hi) {
  Bounds b = Closed(lo, hi);
  b.min_open = true;
  return b;
}

Bounds ClosedOpen(double lo, double hi) {
  Bounds b = Closed(lo, hi);
  b.max_open = true;
  return b;
}

Bounds AtLeast(double lo) {
  Bounds b;
  b.min = lo;
  return b;
}

Bounds OffOr(double lo, double hi) {
  Bounds b = Closed(lo, hi);
  b.zero_is_off = true;
  return b;
}

Bounds OneOf(std::vector<std::string> choices) {
  Bounds b;
  b.choices = std::move(choices);
  return b;
}

std::string SettingInfo::Allowed() const {
  return IsBool() ? "true or false" : bounds.Describe();
}

std::string SettingInfo::Text(const TrainingSettings& s) const { return ValueText(get(s)); }

std::string SettingInfo::DefaultText() const { return ValueText(default_value); }

std::string SettingInfo::Check(const TrainingSettings& s) const {
  const SettingValue v = get(s);
  const bool ok = std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return bounds.Allows(x);
        } else {
          return bounds.Allows(static_cast<double>(x));
        }
      },
      v);
  if (ok) return "";
  return "must be " + bounds.Describe() + ", got " + ValueText(v);
}

std::string SettingInfo::Parse(std::string_view text, TrainingSettings& s) const {
  const std::string t(text);
  const char* begin = t.c_str();
  char* end = nullptr;
  errno = 0;
  SettingValue v = default_value;
  if (std::holds_alternative<std::string>(v)) {
    v = t;
  } else if (std::holds_alternative<bool>(v)) {
    if (t == "true" || t == "1") {
      v = true;
    } else if (t == "false" || t == "0") {
      v = false;
    } else {
      return "'" + t + "' is not true or false";
    }
  } else if (std::holds_alternative<double>(v)) {
    const double d = std::strtod(begin, &end);
    if (t.empty() || *end != '\0' || errno != 0) return "'" + t + "' is not a number";
    v = d;
  } else if (std::holds_alternative<int>(v)) {
    const long long i = std::strtoll(begin, &end, 10);
    if (t.empty() || *end != '\0' || errno != 0 || i < std::numeric_limits<int>::min() ||
        i > std::numeric_limits<int>::max()) {
      return "'" + t + "' is not a whole number";
    }
    v = static_cast<int>(i);
  } else {
    const unsigned long long u = std::strtoull(begin, &end, 10);
    if (t.empty() || t[0] == '-' || *end != '\0' || errno != 0) {
      return "'" + t + "' is not a whole number >= 0";
    }
    v = static_cast<uint64_t>(u);
  }
  set(s, v);
  return "";
}

const std::vector<SettingInfo>& TrainingSettingInfos() {
  static const std::vector<SettingInfo> infos = {
#define TF_SETTING(Type, name, default_value, proto, number, flag, bounds, resume, help)  \
  SettingInfo{#name,                                                                      \
              proto,                                                                      \
              number,                                                                     \
              flag,                                                                       \
              bounds,                                                                     \
              Resume::resume,                                                             \
              help,                                                                       \
              SettingValue(Type(default_value)),                                          \
              [](const TrainingSettings& s) { return SettingValue(s.name); },             \
              [](TrainingSettings& s, const SettingValue& v) { s.name = std::get<Type>(v); }},
#include "common/training_settings.def"
#undef TF_SETTING
  };
  return infos;
}

absl::Status CheckSettings(const TrainingSettings& s) {
  for (const SettingInfo& info : TrainingSettingInfos()) {
    std::string problem = info.Check(s);
    if (!problem.empty()) {
      return absl::InvalidArgumentError(std::string(info.name) + ": " + problem);
    }
  }
  return absl::OkStatus();
}

std::string MustMatchText(const TrainingSettings& s) {
  std::string text;
  for (const SettingInfo& info : TrainingSettingInfos()) {
    if (info.resume != Resume::kMustMatch) continue;
    text += (text.empty() ? "" : " ") + std::string(info.name) + "=" + info.Text(s);
  }
  return text;
}

void to_json(nlohmann::json& j, const TrainingSettings& s) {
  j = nlohmann::json::object();
  for (const SettingInfo& info : TrainingSettingInfos()) {
    std::visit([&](const auto& x) { j[std::string(info.name)] = x; }, info.get(s));
  }
}

void from_json(const nlohmann::json& j, TrainingSettings& s) {
  s = TrainingSettings();
  for (const SettingInfo& info : TrainingSettingInfos()) {
    auto it = j.find(std::string(info.name));
    if (it == j.end()) continue;
    std::visit(
        [&](const auto& d) {
          using T = std::decay_t<decltype(d)>;
          info.set(s, SettingValue(it->get<T>()));
        },
        info.default_value);
  }
}

std::string SettingsProtoFields() {
  std::string out;
  for (const SettingInfo& info : TrainingSettingInfos()) {
    std::string comment = std::string(info.help) + " Default " + Unbroken(info.DefaultText());
    if (!info.IsBool()) comment += "; " + Unbroken(info.bounds.Describe());
    out += Wrap(comment + ".", "  // ", 80);
    out += "  " + std::string(info.proto) + " " + std::string(info.name) + " = " +
           std::to_string(info.proto_number) + ";\n";
  }
  return out;
}

std::string SettingsMarkdownTable() {
  std::string out =
      "| Setting | Flag | Default | Allowed | What it does |\n"
      "|---|---|---|---|---|\n";
  for (const SettingInfo& info : TrainingSettingInfos()) {
    out += "| `" + std::string(info.name) + "` | `--" + std::string(info.flag) + "` | " +
           info.DefaultText() + " | " + info.Allowed() + " | " + std::string(info.help) +
           (info.resume == Resume::kMustMatch ? " A checkpoint resumes only with the same value."
                                              : "") +
           " |\n";
  }
  return out;
}

}  // namespace tuneforge
