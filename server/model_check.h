// Checks a Hugging Face model folder without loading it: the files a model
// import or a job's output brings are checked against each other before the
// scheduler stores them, so a broken folder fails at import with the file
// and tensor named, not hours later on a worker.
//
//   std::map<std::string, std::string> files = {{"config.json", "/blobs/tmp/1"}, ...};
//   absl::StatusOr<ModelRecord> m = CheckModelFolder(files);
//
// What is checked: the file names (a fixed set, so nothing else is stored);
// config.json (a supported model_type, sizes in range); the weights
// (model.safetensors, or every shard of model.safetensors.index.json): their
// headers, that every expected tensor is there with its shape and a float
// dtype, and nothing unexpected; the tokenizer (tokenizer.json, or vocab.json
// + merges.txt) loads and fits the vocabulary; an end-of-text token exists.
//
// Thread-safe: a pure function of the files.
#ifndef TUNEFORGE_SERVER_MODEL_CHECK_H_
#define TUNEFORGE_SERVER_MODEL_CHECK_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "server/records.h"

namespace tuneforge {

// `files`: file name in the folder -> where its bytes are on disk. On success
// the record's model fields are filled (model_type, architecture,
// parameter_count, context_length, vocab_size, dtype, tokenizer); id, files
// and the rest are the caller's. INVALID_ARGUMENT says what is wrong, where.
absl::StatusOr<ModelRecord> CheckModelFolder(const std::map<std::string, std::string>& files);

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_MODEL_CHECK_H_
