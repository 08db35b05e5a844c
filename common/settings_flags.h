// Command-line flags for the training settings (training_settings.def), for
// tuneforge-train and `tuneforge jobs create`: one flag per setting, with its
// help, default and bounds, parsed into a TrainingSettings.
#ifndef TUNEFORGE_COMMON_SETTINGS_FLAGS_H_
#define TUNEFORGE_COMMON_SETTINGS_FLAGS_H_

#include <vector>

#include <CLI/CLI.hpp>

#include "common/training_settings.h"

namespace tuneforge {

struct SettingFlag {
  const SettingInfo* info;
  CLI::Option* option;
  bool Given() const { return option->count() > 0; }
};

// Adds a flag per setting to `app` that parses into `settings` (which must
// outlive the parse). A bool's flag sets the opposite of its default
// (--packing, --no-group-by-length). A value of the wrong type is a parse
// error naming the flag; bounds are checked by CheckSettings.
std::vector<SettingFlag> AddSettingFlags(CLI::App& app, TrainingSettings& settings);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_SETTINGS_FLAGS_H_
