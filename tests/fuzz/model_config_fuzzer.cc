// libFuzzer target for config.json: imported models' configs come from
// users, so any bytes must give a clean error or a config whose sizes are
// within the parser's bounds. Run with `make fuzz`.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<tuneforge::ModelConfig> config =
      tuneforge::ParseHfConfig(std::string(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) {
    if (config.status().message().empty()) std::abort();  // a refusal always says why
    return 0;
  }
  // Accepted sizes stay bounded: a config cannot ask for absurd tensors.
  if (config->vocab_size <= 0 || config->d_model <= 0 || config->n_layer <= 0 ||
      config->n_head <= 0 || config->n_kv_head <= 0 || config->n_head % config->n_kv_head != 0 ||
      tuneforge::ParameterCount(*config) <= 0) {
    std::abort();
  }
  return 0;
}
