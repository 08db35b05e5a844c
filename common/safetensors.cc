#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

#include "common/file_util.h"

namespace tuneforge {
namespace {

using json = nlohmann::json;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},     {DType::kI8, "I8", 1},
    {DType::kI16, "I16", 2},   {DType::kU16, "U16", 2},   {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI32, "I32", 4},   {DType::kU32, "U32", 4},
    {DType::kF32, "F32", 4},   {DType::kF64, "F64", 8},   {DType::kI64, "I64", 8},
    {DType::kU64, "U64", 8},
};

const DTypeEntry& EntryOf(DType d) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == d) return e;
  }
  return kDTypes[0];
}

// prod(shape) * element size, or nullopt on a negative dimension or overflow.
std::optional<uint64_t> ByteSize(const std::vector<int64_t>& shape, size_t element) {
  uint64_t n = element;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  }
  return n;
}

std::string Check(const json& header, uint64_t data_size, SafetensorsHeader* out) {
  if (!header.is_object()) return "the header is not a JSON object";
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return "__metadata__ is not an object";
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) return "__metadata__[\"" + k + "\"] is not a string";
        out->metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor \"" + name + "\": ";
    if (name.empty()) return "a tensor has an empty name";
    if (!value.is_object()) return where + "not an object";
    auto dtype = value.find("dtype");
    auto shape = value.find("shape");
    auto offsets = value.find("data_offsets");
    if (dtype == value.end() || shape == value.end() || offsets == value.end()) {
      return where + "needs dtype, shape and data_offsets";
    }
    TensorInfo t;
    t.name = name;
    std::optional<DType> d = dtype->is_string() ? ParseDType(dtype->get<std::string>())
                                                : std::nullopt;
    if (!d) return where + "unknown dtype " + dtype->dump();
    t.dtype = *d;
    if (!shape->is_array()) return where + "shape is not an array";
    for (const json& dim : *shape) {
      if (!dim.is_number_integer() || dim.get<int64_t>() < 0) {
        return where + "shape has a dimension that is not a non-negative integer";
      }
      t.shape.push_back(dim.get<int64_t>());
    }
    if (!offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned()) {
      return where + "data_offsets is not [begin, end]";
    }
    t.begin = (*offsets)[0].get<uint64_t>();
    t.end = (*offsets)[1].get<uint64_t>();
    if (t.begin > t.end || t.end > data_size) {
      return where + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
             "] fall outside the " + std::to_string(data_size) + " data bytes";
    }
    std::optional<uint64_t> bytes = ByteSize(t.shape, DTypeSize(t.dtype));
    if (!bytes || *bytes != t.end - t.begin) {
      return where + "shape and dtype need " +
             (bytes ? std::to_string(*bytes) : std::string("too many")) + " bytes but the offsets give " +
             std::to_string(t.end - t.begin);
    }
    out->tensors.push_back(std::move(t));
  }
  std::sort(out->tensors.begin(), out->tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
            });
  uint64_t next = 0;
  for (const TensorInfo& t : out->tensors) {
    if (t.begin != next) {
      return "tensor \"" + t.name + "\" starts at " + std::to_string(t.begin) + " where " +
             std::to_string(next) + " was expected: tensors overlap or leave a hole";
    }
    next = t.end;
  }
  if (next != data_size) {
    return "the tensors cover " + std::to_string(next) + " of the " + std::to_string(data_size) +
           " data bytes";
  }
  return "";
}

}  // namespace

size_t DTypeSize(DType d) { return EntryOf(d).size; }
std::string_view DTypeName(DType d) { return EntryOf(d).name; }

std::optional<DType> ParseDType(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) return e.dtype;
  }
  return std::nullopt;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view prefix,
                                                         uint64_t file_size) {
  auto invalid = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  if (prefix.size() < 8 || file_size < 8) return invalid("the file is shorter than 8 bytes");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(prefix[i]);
  if (n > kMaxSafetensorsHeader) {
    return invalid("the header claims " + std::to_string(n) + " bytes, more than the limit of " +
                   std::to_string(kMaxSafetensorsHeader));
  }
  if (n > file_size - 8) {
    return invalid("the header claims " + std::to_string(n) + " bytes but the file holds only " +
                   std::to_string(file_size - 8) + " after the length");
  }
  if (prefix.size() < 8 + n) return invalid("the header was not read in full");
  std::string_view text = prefix.substr(8, n);
  if (text.empty() || text.front() != '{') return invalid("the header does not start with '{'");
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    return invalid(std::string("the header is not valid JSON: ") + e.what());
  }
  SafetensorsHeader out;
  out.data_start = 8 + n;
  if (std::string error = Check(header, file_size - out.data_start, &out); !error.empty()) {
    return invalid(error);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || ::fstat(fd, &st) != 0) {
    absl::Status error = absl::ErrnoToStatus(errno, path);
    if (fd >= 0) ::close(fd);
    return error;
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* map = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      absl::Status error = absl::ErrnoToStatus(errno, path + ": mmap");
      ::close(fd);
      return error;
    }
    file->map_ = static_cast<const char*>(map);
  }
  ::close(fd);
  absl::StatusOr<SafetensorsHeader> header =
      ParseSafetensorsHeader(std::string_view(file->map_, file->size_), file->size_);
  if (!header.ok()) {
    return absl::InvalidArgumentError(path + ": " + std::string(header.status().message()));
  }
  file->header_ = *std::move(header);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<char*>(map_), size_);
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  for (const TensorInfo& t : header_.tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string_view SafetensorsFile::Data(const TensorInfo& t) const {
  return std::string_view(map_ + header_.data_start + t.begin, t.end - t.begin);
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    std::optional<uint64_t> bytes = ByteSize(t.shape, DTypeSize(t.dtype));
    if (!bytes || *bytes != t.data.size()) {
      return absl::InvalidArgumentError("tensor \"" + t.name + "\": " +
                                        std::to_string(t.data.size()) +
                                        " bytes do not match its shape and dtype");
    }
    if (header.contains(t.name)) {
      return absl::InvalidArgumentError("tensor \"" + t.name + "\" is given twice");
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + *bytes}}};
    offset += *bytes;
  }
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // data starts 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    char length[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    out.write(length, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const TensorToWrite& t : tensors) {
      out.write(t.data.data(), static_cast<std::streamsize>(t.data.size()));
    }
    out.close();
    if (!out) {
      absl::Status error = absl::ErrnoToStatus(errno, "cannot write " + tmp);
      std::remove(tmp.c_str());
      return error;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, "cannot rename " + tmp + " to " + path);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, std::string>> ReadSafetensorsIndex(const std::string& path) {
  std::string text;
  if (!ReadWholeFile(path, &text)) return absl::ErrnoToStatus(errno, path);
  auto invalid = [&](const std::string& what) {
    return absl::InvalidArgumentError(path + ": " + what);
  };
  if (text.size() > kMaxSafetensorsHeader) return invalid("larger than any real index");
  std::map<std::string, std::string> weight_map;
  try {
    json index = json::parse(text);
    const json& map = index.at("weight_map");
    if (!map.is_object()) return invalid("weight_map is not an object");
    for (const auto& [name, file] : map.items()) {
      if (!file.is_string()) return invalid("weight_map[\"" + name + "\"] is not a string");
      const std::string f = file.get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") {
        return invalid("weight_map[\"" + name + "\"] is not a plain file name: " + f);
      }
      weight_map[name] = f;
    }
  } catch (const json::exception& e) {
    return invalid(e.what());
  }
  return weight_map;
}

}  // namespace tuneforge
