#include "worker/tensorboard.h"

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tuneforge {
namespace {

std::array<uint32_t, 256> Crc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}

// Protobuf's wire format, the few pieces an Event needs.
void Varint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void Tag(int field, int wire_type, std::string* out) { Varint((field << 3) | wire_type, out); }
void Bytes(int field, std::string_view bytes, std::string* out) {
  Tag(field, 2, out);
  Varint(bytes.size(), out);
  out->append(bytes);
}
template <typename T>
void Fixed(int field, T value, std::string* out) {  // little-endian, as x86 and ARM store it
  Tag(field, sizeof(T) == 8 ? 1 : 5, out);
  char raw[sizeof(T)];
  std::memcpy(raw, &value, sizeof(T));
  out->append(raw, sizeof(T));
}

// Event{wall_time=1, step=2, file_version=3 | summary=5{value=1{tag=1, simple_value=2}}}
std::string EventWithScalars(double wall_time, int64_t step,
                             const std::vector<std::pair<std::string, float>>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    Bytes(1, tag, &v);
    Fixed<float>(2, value, &v);
    Bytes(1, v, &summary);
  }
  std::string event;
  Fixed<double>(1, wall_time, &event);
  Tag(2, 0, &event);
  Varint(static_cast<uint64_t>(step), &event);
  Bytes(5, summary, &event);
  return event;
}

void Record(std::string_view data, std::string* out) {
  char length[8];
  const uint64_t n = data.size();
  std::memcpy(length, &n, 8);
  uint32_t crc = MaskedCrc32c(std::string_view(length, 8));
  out->append(length, 8);
  out->append(reinterpret_cast<const char*>(&crc), 4);
  out->append(data);
  crc = MaskedCrc32c(data);
  out->append(reinterpret_cast<const char*>(&crc), 4);
}

}  // namespace

uint32_t Crc32c(std::string_view data) {
  static const std::array<uint32_t, 256> kTable = Crc32cTable();
  uint32_t c = 0xffffffffu;
  for (unsigned char b : data) c = kTable[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t MaskedCrc32c(std::string_view data) {
  const uint32_t crc = Crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

absl::StatusOr<std::string> WriteTensorBoardEvents(const std::string& metrics_csv,
                                                   const std::string& dir,
                                                   const std::string& host) {
  std::ifstream in(metrics_csv);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", metrics_csv));
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  std::string file;
  std::string first;
  Fixed<double>(1, now, &first);
  Bytes(3, "brain.Event:2", &first);
  Record(first, &file);
  static const char* const kTags[] = {nullptr,          nullptr,
                                      "train/loss",     "train/learning_rate",
                                      "train/grad_norm", "train/tokens_per_second",
                                      "validation/loss", "validation/perplexity",
                                      "validation/token_accuracy"};
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::vector<std::string> cells = absl::StrSplit(line, ',');
    int64_t step = 0;
    if (cells.size() != 9 || !absl::SimpleAtoi(cells[0], &step)) {
      return absl::DataLossError(absl::StrCat(metrics_csv, ": not a metrics row: ", line));
    }
    std::vector<std::pair<std::string, float>> scalars;
    for (size_t i = 2; i < cells.size(); ++i) {
      double value = 0;
      if (!cells[i].empty() && absl::SimpleAtod(cells[i], &value)) {
        scalars.emplace_back(kTags[i], static_cast<float>(value));
      }
    }
    if (!scalars.empty()) Record(EventWithScalars(now, step, scalars), &file);
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  // Host names are letters, digits, dots and dashes; anything else is kept out of the name.
  std::string safe_host;
  for (char c : host) safe_host.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_');
  const std::string path =
      absl::StrCat(dir, "/events.out.tfevents.", static_cast<int64_t>(now), ".", safe_host);
  std::ofstream out(path, std::ios::binary);
  out.write(file.data(), static_cast<std::streamsize>(file.size()));
  if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", path));
  return path;
}

}  // namespace tuneforge
