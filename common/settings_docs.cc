#include "common/settings_docs.h"

#include "common/training_settings.h"

namespace tuneforge {

std::vector<GeneratedBlock> SettingsDocBlocks() {
  return {
      {"proto/tuneforge/v1/job.proto",
       "  // BEGIN GENERATED from common/training_settings.def by `make settings`",
       "  // END GENERATED", SettingsProtoFields()},
      {"README.md", "<!-- BEGIN GENERATED from common/training_settings.def by `make settings` -->",
       "<!-- END GENERATED -->", SettingsMarkdownTable()},
  };
}

absl::StatusOr<std::string> ReplaceBlock(const std::string& text, const GeneratedBlock& block) {
  const size_t begin = text.find(block.begin + "\n");
  const size_t end = begin == std::string::npos ? begin : text.find(block.end + "\n", begin);
  if (end == std::string::npos) {
    return absl::InvalidArgumentError(block.path + ": no lines '" + block.begin + "' ... '" +
                                      block.end + "'");
  }
  const size_t body = begin + block.begin.size() + 1;
  return text.substr(0, body) + block.body + text.substr(end);
}

}  // namespace tuneforge
