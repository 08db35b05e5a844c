#include "server/models.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/safetensors.h"
#include "common/sha256.h"
#include "server/scheduler.h"
#include "text/bpe_tokenizer.h"

namespace tuneforge {
namespace {

namespace fs = std::filesystem;

// A model folder's files, made without the engine: the config of a small
// GPT-2 or Llama, zero weights of the shapes it expects, a byte tokenizer.
std::map<std::string, std::string> Folder(ModelConfig c) {
  std::map<std::string, std::string> files;
  files["config.json"] = HfConfigJson(c);
  std::vector<TensorToWrite> tensors;
  std::vector<std::string> keep;
  for (const auto& [name, shape] : ExpectedTensors(c)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    keep.emplace_back(static_cast<size_t>(n) * 2, '\0');
    tensors.push_back({name, DType::kBF16, shape, keep.back()});
  }
  // Per process: ctest runs these tests in parallel processes.
  const std::string path =
      ::testing::TempDir() + "/models-test-weights-" + std::to_string(::getpid());
  EXPECT_EQ(WriteSafetensors(path, tensors), absl::OkStatus());
  std::ifstream in(path, std::ios::binary);
  files["model.safetensors"].assign(std::istreambuf_iterator<char>(in), {});
  files["tokenizer.json"] =
      text::ByteLevelTokenizerJson(text::BpeTokenizer::kGpt2Pattern, {"<|endoftext|>"});
  return files;
}

ModelConfig Llama() {
  ModelConfig c = FindPreset("tiny-llama")->config;
  c.n_layer = 1;
  return c;
}

class ModelCatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/models-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    store_ = *Store::Open(dir_ + "/tuneforge.db");
    blobs_ = *BlobStore::Open(dir_);
    catalog_ = std::make_unique<ModelCatalog>(store_.get(), blobs_.get(), 1 << 20);
  }

  absl::StatusOr<ModelRecord> Import(const std::map<std::string, std::string>& files,
                                     bool with_digests = true) {
    auto import = catalog_->StartImport("test model");
    if (!import.ok()) return import.status();
    for (const auto& [path, bytes] : files) {
      Sha256 h;
      h.Update(bytes);
      absl::Status s = (*import)->BeginFile(path, static_cast<int64_t>(bytes.size()),
                                            with_digests ? h.HexDigest() : "");
      for (size_t i = 0; s.ok() && i < bytes.size(); i += 4096) {
        s = (*import)->Append(std::string_view(bytes).substr(i, 4096));
      }
      if (!s.ok()) return s;
    }
    return (*import)->Finish();
  }

  size_t Blobs() const {
    size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_ + "/blobs")) n += e.is_regular_file();
    for (const auto& e : fs::recursive_directory_iterator(dir_ + "/tmp")) n += e.is_regular_file();
    return n;
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<ModelCatalog> catalog_;
};

TEST_F(ModelCatalogTest, ImportDescribesTheModel) {
  auto m = Import(Folder(Llama()));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->source, ModelSource::kImported);
  EXPECT_EQ(m->model_type, "llama");
  EXPECT_EQ(m->parameter_count, ParameterCount(Llama()));
  EXPECT_EQ(m->dtype, "BF16");
  EXPECT_EQ(m->tokenizer, "byte-level BPE, 257 tokens, 0 merges");
  EXPECT_EQ(m->files.size(), 3u);
  EXPECT_EQ(Blobs(), 3u);
  auto got = catalog_->Get(m->id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->files.size(), 3u);
  EXPECT_EQ(got->display_name, "test model");
}

TEST_F(ModelCatalogTest, ListsPresetsThenStoredModelsInPages) {
  auto a = Import(Folder(Llama()));
  ModelConfig gpt2 = FindPreset("tiny-gpt2")->config;
  gpt2.n_layer = 1;
  auto b = Import(Folder(gpt2));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<std::string> ids;
  std::string after;
  for (int page = 0; page < 10; ++page) {
    auto p = catalog_->List(Scope{}, after, 3);
    ASSERT_TRUE(p.ok());
    for (const ModelRecord& m : *p) ids.push_back(m.id);
    if (p->size() < 3) break;
    after = p->back().id;
  }
  std::vector<std::string> expected;
  for (const Preset& p : Presets()) expected.push_back(p.name);
  expected.push_back(a->id);
  expected.push_back(b->id);
  EXPECT_EQ(ids, expected);
}

TEST_F(ModelCatalogTest, BrokenImportsLeaveNothing) {
  auto folder = Folder(Llama());
  // A wrong digest.
  {
    auto import = catalog_->StartImport("x");
    ASSERT_TRUE((*import)->BeginFile("config.json", 0, std::string(64, 'a')).ok());
    ASSERT_TRUE((*import)->Append(folder["config.json"]).ok());
    EXPECT_EQ((*import)->Finish().status().code(), absl::StatusCode::kInvalidArgument);
  }
  // A name that is not a model file, or a path.
  for (const char* name : {"../config.json", "pytorch_model.bin"}) {
    auto import = catalog_->StartImport("x");
    absl::Status s = (*import)->BeginFile(name, 1, "");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
  }
  // Weights that do not fit the config.
  auto wrong = folder;
  ModelConfig wider = Llama();
  wider.d_ff += 8;
  wrong["config.json"] = HfConfigJson(wider);
  auto m = Import(wrong);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("model.layers.0.mlp.down_proj.weight has shape [128, 344], "
                                      "config.json says [128, 352]"),
            std::string::npos)
      << m.status();
  // Too large for the server's limit.
  auto big = folder;
  big["model.safetensors"] += std::string(1 << 20, 'x');
  EXPECT_EQ(Import(big).status().code(), absl::StatusCode::kResourceExhausted);
  // A config.json its parser would have to hold whole: refused as it comes,
  // whatever its header announced.
  {
    auto import = catalog_->StartImport("x");
    EXPECT_EQ((*import)->BeginFile("config.json", 2 << 20, "").code(),
              absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE((*import)->BeginFile("config.json", 0, "").ok());
    absl::Status s;
    for (int i = 0; i < 64 && s.ok(); ++i) s = (*import)->Append(std::string(64 << 10, ' '));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("config.json may be at most 1048576 bytes"), std::string::npos) << s;
  }
  EXPECT_EQ(Blobs(), 0u);
  auto listed = store_->ListModels("", "", 10);
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
}

TEST_F(ModelCatalogTest, DeleteRemovesBlobsNothingElseUses) {
  auto folder = Folder(Llama());
  auto a = Import(folder);
  auto other = folder;
  other["config.json"] = HfConfigJson(Llama()) + " ";  // same weights and tokenizer
  auto b = Import(other);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(Blobs(), 4u);  // two configs, shared weights and tokenizer
  ASSERT_TRUE(catalog_->Delete(a->id).ok());
  EXPECT_EQ(Blobs(), 3u);
  EXPECT_EQ(catalog_->Get(a->id).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(catalog_->Delete(b->id).ok());
  EXPECT_EQ(Blobs(), 0u);
  EXPECT_EQ(catalog_->Delete("tiny-llama").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ModelCatalogTest, AJobsArtifactsBecomeAModel) {
  Job job;
  job.id = "j1";
  job.spec.base_model = "tiny-llama";
  for (const auto& [path, bytes] : Folder(Llama())) {
    auto w = blobs_->NewWriter();
    ASSERT_TRUE((*w)->Append(bytes).ok());
    auto sha = (*w)->Commit();
    ASSERT_TRUE(sha.ok());
    job.artifacts.push_back({"model/" + path, *sha, static_cast<int64_t>(bytes.size())});
  }
  job.artifacts.push_back({"metrics.csv", std::string(64, 'b'), 3});  // not part of the model
  auto m = catalog_->CreateFromJob(job);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->id, "ft-j1");
  EXPECT_EQ(m->source, ModelSource::kJob);
  EXPECT_EQ(m->base_model, "tiny-llama");
  EXPECT_EQ(m->files.size(), 3u);
  EXPECT_EQ(m->files[0].path, "config.json");
  // Stored again (a retried FinishJob): replaced, not duplicated.
  ASSERT_TRUE(catalog_->CreateFromJob(job).ok());
  auto listed = store_->ListModels("", "", 10);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 1u);
}

}  // namespace
}  // namespace tuneforge
