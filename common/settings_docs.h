// The generated parts of job.proto and README.md that describe the training
// settings: each file holds a block between a BEGIN and an END line that
// `tuneforge-settings-docs --write` (make settings) rewrites from
// training_settings.def, and settings_test compares.
#ifndef TUNEFORGE_COMMON_SETTINGS_DOCS_H_
#define TUNEFORGE_COMMON_SETTINGS_DOCS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tuneforge {

struct GeneratedBlock {
  std::string path;   // relative to the source root: "README.md"
  std::string begin;  // the line the block follows
  std::string end;    // the line after it
  std::string body;   // what belongs between them
};

std::vector<GeneratedBlock> SettingsDocBlocks();

// `text` with the block's body replaced; INVALID_ARGUMENT if a marker is missing.
absl::StatusOr<std::string> ReplaceBlock(const std::string& text, const GeneratedBlock& block);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_SETTINGS_DOCS_H_
