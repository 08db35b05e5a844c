// The training settings of a job, declared once in training_settings.def and
// expanded here into a struct, and into a table that every consumer walks:
// validation, JSON, proto conversion (settings_proto.h), command-line flags
// (settings_flags.h), the checkpoint fingerprint and the generated docs.
//
//   TrainingSettings s;                  // every default
//   s.learning_rate = 3e-4;
//   absl::Status ok = CheckSettings(s);  // "learning_rate: must be in (0, 1], ..."
//   for (const SettingInfo& info : TrainingSettingInfos()) info.Text(s);
//
// Needs only the standard library, nlohmann/json and Abseil's Status, so the
// libtorch-only engine build links it. Plain values; the table is immutable and shared.
#ifndef TUNEFORGE_COMMON_TRAINING_SETTINGS_H_
#define TUNEFORGE_COMMON_TRAINING_SETTINGS_H_

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/status.h"

namespace tuneforge {

// What a setting's value may be: a number range (ends open or closed, 0 as
// "off" besides it) or, for strings, a list of choices.
struct Bounds {
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_open = false;
  bool max_open = false;
  bool zero_is_off = false;          // 0 is allowed besides [min, max]
  std::vector<std::string> choices;  // strings: the allowed values
  std::string note;                  // e.g. "0: the model's context length"

  Bounds Note(std::string text) const {
    Bounds b = *this;
    b.note = std::move(text);
    return b;
  }
  bool Allows(double v) const;
  bool Allows(const std::string& v) const;
  // "in (0, 1]", ">= 0", "one of auto, fp32, bf16", "0 (off) or in [1.5, 1000]".
  std::string Describe() const;
};

Bounds Any();
Bounds Closed(double lo, double hi);      // [lo, hi]
Bounds OpenClosed(double lo, double hi);  // (lo, hi]
Bounds ClosedOpen(double lo, double hi);  // [lo, hi)
Bounds AtLeast(double lo);                // [lo, inf)
Bounds OffOr(double lo, double hi);       // 0 or [lo, hi]
Bounds OneOf(std::vector<std::string> choices);

// Whether a checkpoint may resume under another value of the setting.
enum class Resume { kMustMatch, kMayChange };

struct TrainingSettings {
#define TF_SETTING(Type, name, default_value, proto, number, flag, bounds, resume, help) \
  Type name = default_value;
#include "common/training_settings.def"
#undef TF_SETTING
};

using SettingValue = std::variant<int, uint64_t, double, bool, std::string>;

// One row of training_settings.def, with typed access to the struct's field.
struct SettingInfo {
  std::string_view name;   // "learning_rate"
  std::string_view proto;  // "double", "optional int32", "LearningRateSchedule"
  int proto_number = 0;
  std::string_view flag;   // "learning-rate"
  Bounds bounds;
  Resume resume = Resume::kMayChange;
  std::string_view help;
  SettingValue default_value;
  SettingValue (*get)(const TrainingSettings&) = nullptr;
  void (*set)(TrainingSettings&, const SettingValue&) = nullptr;

  // The value as text: "0.0001", "true", "cosine".
  std::string Text(const TrainingSettings& s) const;
  std::string DefaultText() const;
  // What the value may be: Bounds::Describe(), "true or false" for a bool.
  std::string Allowed() const;
  // "" when the value is within bounds, else "must be in (0, 1], got 2".
  std::string Check(const TrainingSettings& s) const;
  // Parses `text` as this setting's type into `s`; "" or what is wrong.
  std::string Parse(std::string_view text, TrainingSettings& s) const;
  bool IsBool() const { return std::holds_alternative<bool>(default_value); }
};

// Every setting, in the order of training_settings.def.
const std::vector<SettingInfo>& TrainingSettingInfos();

// OK when every setting is within its bounds, else INVALID_ARGUMENT naming
// the first that is not: "learning_rate: must be in (0, 1], got 2".
absl::Status CheckSettings(const TrainingSettings& s);

// The settings a resumed run must share with its checkpoint, as text
// ("batch_size=8 epochs=3 ..."), for the checkpoint fingerprint.
std::string MustMatchText(const TrainingSettings& s);

// JSON object of every setting by name; missing keys read as the default.
void to_json(nlohmann::json& j, const TrainingSettings& s);
void from_json(const nlohmann::json& j, TrainingSettings& s);

// Generated documentation: the Hyperparameters message's fields with their
// comments (for job.proto), and a Markdown table (for the README).
std::string SettingsProtoFields();
std::string SettingsMarkdownTable();

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_TRAINING_SETTINGS_H_
