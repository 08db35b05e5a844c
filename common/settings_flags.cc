#include "common/settings_flags.h"

#include <string>

namespace tuneforge {

std::vector<SettingFlag> AddSettingFlags(CLI::App& app, TrainingSettings& settings) {
  std::vector<SettingFlag> flags;
  for (const SettingInfo& info : TrainingSettingInfos()) {
    const std::string name = "--" + std::string(info.flag);
    CLI::Option* option;
    if (info.IsBool()) {
      option = app.add_flag_callback(
          name, [&settings, &info] { info.set(settings, !std::get<bool>(info.default_value)); },
          std::string(info.help));
    } else {
      option = app.add_option_function<std::string>(
          name,
          [&settings, &info, name](const std::string& text) {
            std::string problem = info.Parse(text, settings);
            if (!problem.empty()) throw CLI::ValidationError(name, problem);
          },
          std::string(info.help) + " Default " + info.DefaultText() + "; " +
              info.bounds.Describe() + ".");
    }
    flags.push_back({&info, option});
  }
  return flags;
}

}  // namespace tuneforge
