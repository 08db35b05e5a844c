// Hugging Face safetensors files: read (memory-mapped, no copy) and written.
//
// The format: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [2, 3],
//    "data_offsets": [begin, end]}, ...}
// (padded with spaces), then the data: each tensor's bytes, little-endian,
// row-major, at [begin, end) of the data section.
//
// The header comes from files users bring, so it is treated as hostile:
// lengths, dtypes, shapes (with overflow checks) and offsets are all checked
// against each other and the file's size before any byte is read through
// them. Offsets must tile the data section exactly: no holes, no overlaps.
//
//   absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
//       SafetensorsFile::Open("model.safetensors");
//   const TensorInfo* w = (*file)->Find("wte.weight");
//   std::string_view bytes = (*file)->Data(*w);  // in the mapping
//
// Depends on the standard library, nlohmann/json and Abseil's Status (the
// engine links it). A broken file is INVALID_ARGUMENT saying what is wrong
// and where; one that cannot be opened carries its errno's code. Thread-safe: an
// opened file is immutable.
#ifndef TUNEFORGE_COMMON_SAFETENSORS_H_
#define TUNEFORGE_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tuneforge {

enum class DType { kBool, kU8, kI8, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64, kU64 };

size_t DTypeSize(DType d);
std::string_view DTypeName(DType d);  // "F32", "BF16", ...
std::optional<DType> ParseDType(std::string_view name);

struct TensorInfo {
  std::string name;            // e.g. "h.0.attn.c_attn.weight"
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // e.g. {768, 2304}
  uint64_t begin = 0;          // byte range in the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // ordered by offset
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;          // 8 + N: where the data section starts in the file
};

// Larger headers are refused (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeader = 100 << 20;

// Parses the header of a file of `file_size` bytes whose first bytes are
// `prefix` (at least 8 + N of them); INVALID_ARGUMENT says what is wrong.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view prefix,
                                                         uint64_t file_size);

class SafetensorsFile {
 public:
  // Maps `path` read-only and checks its header.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const SafetensorsHeader& header() const { return header_; }
  const TensorInfo* Find(std::string_view name) const;
  // The tensor's bytes, inside the mapping (valid while this file lives).
  std::string_view Data(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  SafetensorsHeader header_;
  const char* map_ = nullptr;
  size_t size_ = 0;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string_view data;  // prod(shape) * DTypeSize(dtype) bytes
};

// Writes the tensors in the given order, the header padded to a multiple of
// 8 bytes, through a temp file renamed into place.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Reads a sharded checkpoint's `model.safetensors.index.json`: tensor name ->
// shard file name (a plain file name, never a path).
absl::StatusOr<std::map<std::string, std::string>> ReadSafetensorsIndex(const std::string& path);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_SAFETENSORS_H_
