// libFuzzer target for the safetensors header parser: model files come from
// users (ImportModel), so any bytes must give a clean error or a header whose
// every tensor lies inside the file. Run with `make fuzz`.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view file(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<tuneforge::SafetensorsHeader> parsed =
      tuneforge::ParseSafetensorsHeader(file, size);
  if (!parsed.ok()) return 0;
  const tuneforge::SafetensorsHeader& header = *parsed;
  uint64_t next = 0;
  for (const tuneforge::TensorInfo& t : header.tensors) {
    if (t.begin != next || t.end < t.begin || header.data_start + t.end > size) std::abort();
    next = t.end;
  }
  if (header.data_start + next != size) std::abort();
  return 0;
}
