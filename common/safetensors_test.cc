#include "common/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace tuneforge {
namespace {

std::string Dir() {
  std::string dir = ::testing::TempDir() + "/safetensors-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

std::string Reference() {
  return std::string(TUNEFORGE_SOURCE_DIR) + "/tests/safetensors_reference.py";
}

template <typename T>
std::string Bytes(std::initializer_list<T> values) {
  std::string out(values.size() * sizeof(T), '\0');
  std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

uint16_t Bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>(bits >> 16);
}

// The reference tensors of safetensors_reference.py.
std::vector<TensorToWrite> ReferenceTensors(std::vector<std::string>& storage) {
  storage = {Bytes<float>({0.5f, -1.25f, 3.0f, 1e-3f, 7.0f, -0.0f}),
             Bytes<uint16_t>({0x3C00, 0xC000, 0x3800, 0x7BFF}),  // 1, -2, 0.5, 65504 in f16
             Bytes<uint16_t>({Bf16(1.5f), Bf16(-3.0f)}),
             Bytes<int64_t>({1, -2, int64_t{1} << 40})};
  return {{"a", DType::kF32, {2, 3}, storage[0]},
          {"b", DType::kF16, {4}, storage[1]},
          {"c", DType::kBF16, {2}, storage[2]},
          {"d", DType::kI64, {3}, storage[3]}};
}

TEST(SafetensorsTest, ReadsWhatAnIndependentWriterWrote) {
  const std::string path = Dir() + "/from_python.safetensors";
  ASSERT_EQ(std::system(("python3 " + Reference() + " write " + path).c_str()), 0);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const SafetensorsFile* file = opened->get();
  EXPECT_EQ(file->header().metadata.at("format"), "pt");
  std::vector<std::string> storage;
  for (const TensorToWrite& expected : ReferenceTensors(storage)) {
    const TensorInfo* t = file->Find(expected.name);
    ASSERT_NE(t, nullptr) << expected.name;
    EXPECT_EQ(t->dtype, expected.dtype);
    EXPECT_EQ(t->shape, expected.shape);
    EXPECT_EQ(file->Data(*t), expected.data) << expected.name;
  }
  EXPECT_EQ(file->Find("nope"), nullptr);
}

TEST(SafetensorsTest, WritesWhatAnIndependentReaderAccepts) {
  const std::string path = Dir() + "/from_cpp.safetensors";
  std::vector<std::string> storage;
  ASSERT_TRUE(WriteSafetensors(path, ReferenceTensors(storage), {{"format", "pt"}}).ok());
  EXPECT_EQ(std::system(("python3 " + Reference() + " check " + path).c_str()), 0);
  // And back here, bit for bit.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const SafetensorsFile* file = opened->get();
  EXPECT_EQ(file->header().data_start % 8, 0u);
  EXPECT_EQ(file->Data(*file->Find("a")), storage[0]);
  EXPECT_EQ(file->Data(*file->Find("d")), storage[3]);
}

TEST(SafetensorsTest, WriterRefusesMismatchedData) {
  std::string data = Bytes<float>({1, 2, 3});
  EXPECT_EQ(WriteSafetensors(Dir() + "/bad.safetensors", {{"w", DType::kF32, {2, 2}, data}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(Dir() + "/bad.safetensors",
                             {{"w", DType::kF32, {3}, data}, {"w", DType::kF32, {3}, data}})
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SafetensorsFile::Open(Dir() + "/missing.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

// A file of the header `json_text` and `data_bytes` bytes of data.
std::string File(const std::string& json_text, size_t data_bytes, uint64_t claimed = 0) {
  std::string out(8, '\0');
  uint64_t n = claimed ? claimed : json_text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json_text + std::string(data_bytes, '\0');
}

// "" when the header parses, else what is wrong.
std::string Parse(const std::string& file) {
  return std::string(ParseSafetensorsHeader(file, file.size()).status().message());
}

TEST(SafetensorsTest, RefusesHostileHeaders) {
  const std::string ok = R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  EXPECT_EQ(Parse(File(ok, 8)), "");
  EXPECT_NE(Parse("short"), "");
  EXPECT_NE(Parse(File(ok, 8, uint64_t{1} << 40)).find("more than the limit"), std::string::npos);
  EXPECT_NE(Parse(File(ok, 8, 1000)).find("file holds only"), std::string::npos);
  EXPECT_NE(Parse(File("[1, 2]", 0)), "");
  EXPECT_NE(Parse(File("{not json", 0)).find("not valid JSON"), std::string::npos);
  auto one = [](const std::string& tensor, size_t data) {
    return Parse(File("{\"w\": " + tensor + "}", data));
  };
  EXPECT_NE(one(R"({"dtype": "F31", "shape": [2], "data_offsets": [0, 8]})", 8)
                .find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(one(R"({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]})", 8), "");
  EXPECT_NE(one(R"({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]})", 8)
                .find("need 12 bytes"),
            std::string::npos);
  EXPECT_NE(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 16]})", 8)
                .find("fall outside"),
            std::string::npos);
  EXPECT_NE(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]})", 8), "");
  EXPECT_NE(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [0]})", 8), "");
  EXPECT_NE(one(R"({"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296],
                    "data_offsets": [0, 8]})", 8)
                .find("too many"),
            std::string::npos);
  EXPECT_NE(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})", 12)
                .find("cover 8 of the 12"),
            std::string::npos);
  const std::string overlap = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})";
  EXPECT_NE(Parse(File(overlap, 12)).find("overlap or leave a hole"), std::string::npos);
  const std::string hole = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                               "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})";
  EXPECT_NE(Parse(File(hole, 12)).find("overlap or leave a hole"), std::string::npos);
  EXPECT_NE(Parse(File(R"({"__metadata__": {"a": 1}})", 0)).find("not a string"),
            std::string::npos);
}

TEST(SafetensorsTest, ShardIndex) {
  const std::string dir = Dir();
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"metadata": {"total_size": 16}, "weight_map": {"a": "model-00001-of-00002.safetensors",
             "b": "model-00002-of-00002.safetensors"}})";
  absl::StatusOr<std::map<std::string, std::string>> map =
      ReadSafetensorsIndex(dir + "/model.safetensors.index.json");
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->at("b"), "model-00002-of-00002.safetensors");
  std::ofstream(dir + "/evil.json") << R"({"weight_map": {"a": "../../etc/passwd"}})";
  EXPECT_NE(
      ReadSafetensorsIndex(dir + "/evil.json").status().message().find("not a plain file name"),
      std::string::npos);
}

}  // namespace
}  // namespace tuneforge
