// tuneforge-settings-docs [--write] ROOT: prints, or with --write rewrites,
// the generated settings blocks of ROOT's job.proto and README.md.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "common/settings_docs.h"

int main(int argc, char** argv) {
  const bool write = argc == 3 && std::string(argv[1]) == "--write";
  if (argc != 2 && !write) {
    std::cerr << "usage: tuneforge-settings-docs [--write] SOURCE_ROOT\n";
    return 2;
  }
  const std::string root = argv[argc - 1];
  for (const tuneforge::GeneratedBlock& block : tuneforge::SettingsDocBlocks()) {
    if (!write) {
      std::cout << "== " << block.path << "\n" << block.body;
      continue;
    }
    const std::string path = root + "/" + block.path;
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<std::string> updated = tuneforge::ReplaceBlock(text.str(), block);
    if (!updated.ok()) {
      std::cerr << updated.status().message() << "\n";
      return 1;
    }
    std::ofstream(path) << *updated;
  }
  return 0;
}
