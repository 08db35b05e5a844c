#include "server/datasets.h"

#include <filesystem>

#include <gtest/gtest.h>

#include "common/sha256.h"
#include "server/scheduler.h"

namespace tuneforge {
namespace {

namespace fs = std::filesystem;

class DatasetCatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/datasets-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    store_ = *Store::Open(dir_ + "/tuneforge.db");
    blobs_ = *BlobStore::Open(dir_);
    catalog_ = std::make_unique<DatasetCatalog>(store_.get(), blobs_.get(), 1000);
  }

  absl::StatusOr<DatasetRecord> Upload(const std::string& bytes, std::string sha = "") {
    auto upload = catalog_->StartUpload(
        {"d.jsonl", DatasetFormat::kUnspecified, static_cast<int64_t>(bytes.size()), sha});
    if (!upload.ok()) return upload.status();
    for (size_t i = 0; i < bytes.size(); i += 7) {  // several small chunks
      absl::Status s = (*upload)->Append(std::string_view(bytes).substr(i, 7));
      if (!s.ok()) return s;
    }
    return (*upload)->Finish();
  }

  size_t Files(const std::string& sub) const {
    size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_ + "/" + sub)) {
      n += e.is_regular_file();
    }
    return n;
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<DatasetCatalog> catalog_;
};

constexpr char kGood[] = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";

TEST_F(DatasetCatalogTest, IdenticalUploadsShareOneBlob) {
  auto a = Upload(kGood);
  auto b = Upload(kGood);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(a->sha256, b->sha256);
  EXPECT_EQ(a->state, DatasetState::kReady);
  EXPECT_EQ(a->report.example_count, 1);
  EXPECT_EQ(Files("blobs"), 1u);
  EXPECT_EQ(Files("tmp"), 0u);
  // Deleting one keeps the blob for the other; deleting both removes it.
  ASSERT_TRUE(catalog_->Delete(a->id, Scope{}).ok());
  EXPECT_EQ(Files("blobs"), 1u);
  ASSERT_TRUE(catalog_->Delete(b->id, Scope{}).ok());
  EXPECT_EQ(Files("blobs"), 0u);
  EXPECT_EQ(catalog_->Get(b->id, Scope{}).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DatasetCatalogTest, BrokenDatasetIsStoredInvalidWithItsReport) {
  auto d = Upload("{\"prompt\": \"a\"}\n");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->state, DatasetState::kInvalid);
  ASSERT_EQ(d->report.problems.size(), 1u);
  EXPECT_EQ(d->report.problems[0].code, "missing_field");
  EXPECT_EQ(catalog_->Get(d->id, Scope{})->report.problems[0].field, "/completion");
}

TEST_F(DatasetCatalogTest, OversizedOrCorruptUploadsLeaveNothing) {
  auto big = Upload(std::string(2000, 'x'));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  auto corrupt = Upload(kGood, std::string(64, 'a'));
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(corrupt.status().message().find("sha256 mismatch"), std::string::npos);
  auto cut = catalog_->StartUpload({"d", DatasetFormat::kUnspecified, 500, ""});
  ASSERT_TRUE((*cut)->Append(kGood).ok());
  EXPECT_EQ((*cut)->Finish().status().code(), absl::StatusCode::kInvalidArgument);
  cut->reset();
  EXPECT_EQ(Files("blobs"), 0u);
  EXPECT_EQ(Files("tmp"), 0u);
  EXPECT_TRUE(store_->ListDatasets("", "", 10)->empty());
}

TEST_F(DatasetCatalogTest, ValidateStoresNothing) {
  auto v = catalog_->StartUpload({"d", DatasetFormat::kUnspecified, 0, ""});
  ASSERT_TRUE((*v)->Append("not json\n").ok());
  auto report = (*v)->Validate();
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->error_count, 1);
  v->reset();
  EXPECT_EQ(Files("blobs"), 0u);
  EXPECT_EQ(Files("tmp"), 0u);
  EXPECT_TRUE(store_->ListDatasets("", "", 10)->empty());
}

TEST_F(DatasetCatalogTest, DeleteRefusedWhileAJobUsesIt) {
  auto d = Upload(kGood);
  auto scheduler = *Scheduler::Create(store_.get(), SchedulerOptions());
  JobSpec spec;
  spec.base_model = "tiny-gpt2";
  spec.training_dataset = d->id;
  auto job = scheduler->CreateJob(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  absl::Status refused = catalog_->Delete(d->id, Scope{});
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Files("blobs"), 1u);
  ASSERT_TRUE(scheduler->CancelJob(job->id).ok());
  EXPECT_TRUE(catalog_->Delete(d->id, Scope{}).ok());
}

TEST_F(DatasetCatalogTest, ResumableUploadContinuesWhereItBroke) {
  const std::string bytes = std::string(kGood) + "{\"prompt\": \"c\", \"completion\": \"d\"}\n";
  const UploadMetadata m{"d.jsonl", DatasetFormat::kUnspecified,
                         static_cast<int64_t>(bytes.size()), Sha256::Of(bytes), "", 0};
  auto first = catalog_->Resume("up-1", m, 0);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE((*first)->Append(bytes.substr(0, 30)).ok());
  // A second stream cannot take it while the first holds it.
  EXPECT_EQ(catalog_->Resume("up-1", m, 0).status().code(), absl::StatusCode::kAborted);
  catalog_->Suspend(kDefaultTenant, "up-1", std::move(*first));  // the connection dropped
  EXPECT_EQ(catalog_->Query(kDefaultTenant, "up-1")->first, 30);
  EXPECT_EQ(catalog_->Query(kDefaultTenant, "up-1")->second, static_cast<int64_t>(bytes.size()));
  EXPECT_EQ(Files("tmp"), 1u);
  // Upload ids are per tenant: another's "up-1" is not this one.
  UploadMetadata theirs = m;
  theirs.tenant = "team-b";
  EXPECT_EQ(catalog_->Query("team-b", "up-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(catalog_->Resume("up-1", theirs, 30).status().code(), absl::StatusCode::kNotFound);

  EXPECT_EQ(catalog_->Resume("up-1", m, 10).status().code(),
            absl::StatusCode::kFailedPrecondition);
  UploadMetadata other = m;
  other.display_name = "other.jsonl";
  EXPECT_EQ(catalog_->Resume("up-1", other, 30).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto second = catalog_->Resume("up-1", m, 30);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE((*second)->Append(bytes.substr(30)).ok());
  auto d = (*second)->Finish();
  ASSERT_TRUE(d.ok()) << d.status();
  catalog_->Suspend(kDefaultTenant, "up-1", nullptr);  // finished: forget it
  EXPECT_EQ(d->sha256, Sha256::Of(bytes));
  EXPECT_EQ(d->report.example_count, 2);
  EXPECT_EQ(catalog_->Query(kDefaultTenant, "up-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(catalog_->Resume("up-1", m, 30).status().code(), absl::StatusCode::kNotFound);
  second->reset();
  EXPECT_EQ(Files("tmp"), 0u);
}

}  // namespace
}  // namespace tuneforge
