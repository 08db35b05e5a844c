// libFuzzer target for the dataset validator, the parser every upload goes
// through. The first input byte picks the options (declared format,
// separator) and a chunk size; the rest is the file. Besides crashes and
// sanitizer reports, it checks that feeding in chunks gives the same report as
// feeding the whole file at once, and that every problem's message and field
// are valid UTF-8. Run with `make fuzz`.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/dataset_validator.h"
#include "common/utf8.h"

namespace {

tuneforge::ValidatorOptions OptionsFrom(uint8_t b) {
  tuneforge::ValidatorOptions o;
  o.declared = static_cast<tuneforge::DatasetFormat>(b & 3);
  if (b & 4) o.separator = "\n---\n";
  o.max_seq_len = (b & 8) ? 64 : 0;
  o.max_record_bytes = (b & 16) ? 256 : 1 << 20;
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const tuneforge::ValidatorOptions options = OptionsFrom(data[0]);
  const size_t chunk = 1 + (data[0] >> 5);  // 1..8 bytes
  std::string_view file(reinterpret_cast<const char*>(data) + 1, size - 1);

  tuneforge::ParsedDataset whole = tuneforge::ParseDataset(file, options);
  tuneforge::DatasetValidator v(options);
  for (size_t i = 0; i < file.size(); i += chunk) v.Feed(file.substr(i, chunk));
  tuneforge::ParsedDataset pieces = v.Finish();

  const auto& a = whole.report;
  const auto& b = pieces.report;
  if (a.error_count != b.error_count || a.warning_count != b.warning_count ||
      a.example_count != b.example_count || a.problems.size() != b.problems.size() ||
      whole.examples.size() != pieces.examples.size()) {
    std::abort();  // chunk boundaries changed the result
  }
  // Problems travel in protobuf strings and JSON: they must be valid UTF-8
  // whatever bytes the file held.
  for (const auto& p : a.problems) {
    if (tuneforge::InvalidUtf8At(p.message) != std::string_view::npos ||
        tuneforge::InvalidUtf8At(p.field) != std::string_view::npos) {
      std::abort();
    }
  }
  for (size_t i = 0; i < a.problems.size(); ++i) {
    if (a.problems[i].code != b.problems[i].code || a.problems[i].line != b.problems[i].line ||
        a.problems[i].column != b.problems[i].column) {
      std::abort();
    }
  }
  return 0;
}
