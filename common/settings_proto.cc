#include "common/settings_proto.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tuneforge {
namespace {

namespace pb = google::protobuf;

// "LearningRateSchedule" -> "LEARNING_RATE_SCHEDULE_", its values' prefix.
std::string EnumPrefix(const pb::EnumDescriptor& e) {
  std::string out;
  for (char c : e.name()) {
    if (absl::ascii_isupper(c) && !out.empty()) out += '_';
    out += absl::ascii_toupper(c);
  }
  return out + "_";
}

const pb::FieldDescriptor& Field(const SettingInfo& info) {
  const pb::FieldDescriptor* f =
      v1::Hyperparameters::descriptor()->FindFieldByName(std::string(info.name));
  // settings_test checks every setting against the descriptor.
  if (f == nullptr) std::abort();
  return *f;
}

}  // namespace

absl::StatusOr<TrainingSettings> SettingsFromProto(const v1::Hyperparameters& h) {
  TrainingSettings s;
  const pb::Reflection& r = *h.GetReflection();
  for (const SettingInfo& info : TrainingSettingInfos()) {
    const pb::FieldDescriptor& f = Field(info);
    if (f.has_presence() && !r.HasField(h, &f)) continue;
    SettingValue v;
    switch (f.cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32: v = r.GetInt32(h, &f); break;
      case pb::FieldDescriptor::CPPTYPE_UINT64: v = r.GetUInt64(h, &f); break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: v = r.GetDouble(h, &f); break;
      case pb::FieldDescriptor::CPPTYPE_BOOL: v = r.GetBool(h, &f); break;
      case pb::FieldDescriptor::CPPTYPE_STRING: v = r.GetString(h, &f); break;
      case pb::FieldDescriptor::CPPTYPE_ENUM: {
        const int number = r.GetEnumValue(h, &f);
        if (number == 0 && !f.has_presence()) continue;
        const pb::EnumValueDescriptor* e = f.enum_type()->FindValueByNumber(number);
        const std::string prefix = EnumPrefix(*f.enum_type());
        if (e == nullptr || !absl::StartsWith(e->name(), prefix)) {
          return absl::InvalidArgumentError(absl::StrCat(
              std::string(info.name), ": ", number, " is not a ", f.enum_type()->name(), " value"));
        }
        v = absl::AsciiStrToLower(e->name().substr(prefix.size()));
        break;
      }
      default: std::abort();  // settings_test: only the types above
    }
    // Without presence, the zero value means "unset".
    if (!f.has_presence() && v == SettingValue(std::visit(
                                      [](const auto& d) {
                                        return SettingValue(std::decay_t<decltype(d)>());
                                      },
                                      info.default_value))) {
      continue;
    }
    info.set(s, v);
  }
  return s;
}

void SettingsToProto(const TrainingSettings& s, v1::Hyperparameters* h,
                     const std::vector<std::string>* only) {
  const pb::Reflection& r = *h->GetReflection();
  for (const SettingInfo& info : TrainingSettingInfos()) {
    if (only != nullptr && std::find(only->begin(), only->end(), info.name) == only->end()) {
      continue;
    }
    const pb::FieldDescriptor& f = Field(info);
    const SettingValue v = info.get(s);
    switch (f.cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32: r.SetInt32(h, &f, std::get<int>(v)); break;
      case pb::FieldDescriptor::CPPTYPE_UINT64: r.SetUInt64(h, &f, std::get<uint64_t>(v)); break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: r.SetDouble(h, &f, std::get<double>(v)); break;
      case pb::FieldDescriptor::CPPTYPE_BOOL: r.SetBool(h, &f, std::get<bool>(v)); break;
      case pb::FieldDescriptor::CPPTYPE_STRING: r.SetString(h, &f, std::get<std::string>(v)); break;
      case pb::FieldDescriptor::CPPTYPE_ENUM: {
        const std::string name =
            EnumPrefix(*f.enum_type()) + absl::AsciiStrToUpper(std::get<std::string>(v));
        const pb::EnumValueDescriptor* e = f.enum_type()->FindValueByName(name);
        r.SetEnumValue(h, &f, e == nullptr ? 0 : e->number());
        break;
      }
      default: std::abort();
    }
  }
}

}  // namespace tuneforge
