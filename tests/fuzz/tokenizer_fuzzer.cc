// libFuzzer target for tokenizer.json: imported models' tokenizers come
// from users, so any bytes must give a clean error, or a tokenizer that
// encodes text into ids of its own vocabulary. Run with `make fuzz`.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "text/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<tuneforge::text::BpeTokenizer>> loaded =
      tuneforge::text::BpeTokenizer::FromTokenizerJsonText(
          std::string(reinterpret_cast<const char*>(data), size), "tokenizer.json");
  if (!loaded.ok()) {
    if (loaded.status().message().empty()) std::abort();  // a refusal always says why
    return 0;
  }
  const std::unique_ptr<tuneforge::text::BpeTokenizer>& tokenizer = *loaded;
  for (int64_t id : tokenizer->Encode("Hello world, 2026! \xc3\xa9t\xc3\xa9 <|endoftext|>")) {
    if (id < 0 || id >= tokenizer->vocab_size()) std::abort();
  }
  return 0;
}
