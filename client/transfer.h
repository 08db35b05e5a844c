// Moving files between this machine and the server: resumable dataset
// uploads (and remote validation, which streams a file the same way), model
// folder imports, and artifact downloads checked against their digests, with
// a progress bar on a terminal.
#ifndef TUNEFORGE_CLIENT_TRANSFER_H_
#define TUNEFORGE_CLIENT_TRANSFER_H_

#include <cstddef>
#include <string>

#include "client/api_client.h"
#include "tuneforge/v1/dataset.pb.h"

namespace tuneforge::cli {

// Files are read, and streamed, this many bytes at a time.
inline constexpr size_t kChunkBytes = 1 << 20;

// How a dataset file is to be read (`datasets upload` and `validate`).
struct UploadOptions {
  std::string model;      // count tokens with this model's tokenizer
  std::string upload_id;  // "": the first 32 hex digits of the file's sha256
  std::string format;     // "" (detect), prompt_completion, chat, text
  std::string separator;  // plain text documents
  int max_seq_len = 0;    // report examples longer than this
};

// The declared format: `format` if given, else text for .txt and .md files,
// else unspecified (the server detects it).
v1::DatasetFormat FormatFor(const std::string& path, const std::string& format);

// Each returns the command's exit code, having printed the result as
// `output` says (text, json, yaml or name).

// Uploads the dataset at `path` (display name `name`, "": the file's),
// resuming an interrupted upload of the same file; 1 if it is invalid.
int UploadDataset(ApiClient& api, const std::string& output, const std::string& path,
                  const std::string& name, const UploadOptions& o);
// `datasets validate --remote`: the server's ValidateDataset, storing
// nothing; 1 if the file has errors.
int ValidateRemotely(ApiClient& api, const std::string& output, const std::string& path,
                     const UploadOptions& o);
// Imports the Hugging Face model folder `dir`.
int ImportModel(ApiClient& api, const std::string& output, const std::string& dir,
                const std::string& display_name);
// Downloads job `job`'s artifacts of one kind ("model", "adapter",
// "metrics", "manifest", "tensorboard" or "all") into `dir`.
int DownloadArtifacts(ApiClient& api, const std::string& output, const std::string& job,
                      const std::string& which, const std::string& dir);

}  // namespace tuneforge::cli

#endif  // TUNEFORGE_CLIENT_TRANSFER_H_
