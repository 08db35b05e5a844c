// The artifact path (publish and record under the blob lock, records of
// bytes already held, checkpoints superseding each other) beside dataset
// uploads and the reclaimer's removals, from several threads at once. `make
// tsan` runs it under ThreadSanitizer with the scheduler core's tests (the
// gRPC layer above it cannot be: Debian's gRPC is not instrumented).
#include "server/artifacts.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "common/sha256.h"
#include "server/blob_reclaimer.h"
#include "server/datasets.h"

namespace tuneforge {
namespace {

class JobArtifactsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/artifacts-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    store_ = *Store::Open(dir_ + "/tuneforge.db");
    blobs_ = *BlobStore::Open(dir_);
    reclaimer_ = std::make_unique<BlobReclaimer>(store_.get(), blobs_.get());
    SchedulerOptions options;
    options.release_blobs = [this](const std::vector<std::string>& d) { reclaimer_->Release(d); };
    scheduler_ = *Scheduler::Create(store_.get(), options);
    datasets_ = std::make_unique<DatasetCatalog>(store_.get(), blobs_.get(), 1 << 30);
  }
  void TearDown() override {
    scheduler_.reset();
    reclaimer_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string UploadDataset(const std::string& bytes) {
    UploadMetadata metadata;
    metadata.display_name = "d.jsonl";
    std::unique_ptr<DatasetUpload> upload = *datasets_->StartUpload(metadata);
    EXPECT_TRUE(upload->Append(bytes).ok());
    absl::StatusOr<DatasetRecord> d = upload->Finish();
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? d->id : "";
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<BlobReclaimer> reclaimer_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<DatasetCatalog> datasets_;
};

TEST_F(JobArtifactsTest, CheckpointsSupersedingEachOtherBesideUploadsAndRemovals) {
  const std::string data =
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\", \"completion\": \"d\"}\n";
  JobSpec spec;
  spec.base_model = "tiny-gpt2";
  spec.training_dataset = UploadDataset(data);
  spec.validation_split = 0;
  ASSERT_TRUE(scheduler_->CreateJob(spec).ok());
  const std::string worker = scheduler_->RegisterWorker({"w", "cpu", 0, ""});
  std::promise<Assignment> given;
  scheduler_->AcquireJob(worker, absl::Seconds(5),
                         [&](absl::StatusOr<std::optional<Assignment>> a) {
                           given.set_value(a.ok() && a->has_value() ? **a : Assignment{});
                         });
  const Assignment a = given.get_future().get();
  ASSERT_FALSE(a.job.lease.empty());

  // Three uploaders of checkpoints, each starting newer steps and so
  // superseding the others' half-sent ones; one sends bytes the server holds
  // (recorded without a copy). Beside them, dataset uploads.
  JobArtifacts artifacts(scheduler_.get(), store_.get(), blobs_.get());
  const FileRecord held{"", Sha256::Of(data), static_cast<int64_t>(data.size())};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int step = 1; step <= 12; ++step) {
        char name[64];
        std::snprintf(name, sizeof name, "checkpoint/step-%08d/optimizer.safetensors",
                      step * 3 + t);
        if (t == 2) {
          FileRecord file = held;
          file.path = name;
          absl::StatusOr<bool> recorded = artifacts.RecordHeld(a.job.id, a.job.lease, file);
          if (!recorded.ok() || !*recorded) ++failed;
          continue;
        }
        std::unique_ptr<BlobWriter> writer = *blobs_->NewWriter();
        const std::string bytes(4096 + step * 7 + t, static_cast<char>('a' + t));
        if (!writer->Append(bytes).ok() ||
            !artifacts.Publish(a.job.id, a.job.lease, name, *writer, Sha256::Of(bytes)).ok()) {
          ++failed;
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 6; ++i) UploadDataset(data + std::string(i + 1, '\n'));
  });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);

  // What nothing references any more goes; what something references stays.
  reclaimer_->Flush();
  EXPECT_GT(reclaimer_->removed(), 0);
  for (const std::string& sha : blobs_->List()) {
    absl::StatusOr<int64_t> users = store_->CountBlobReferences(sha);
    ASSERT_TRUE(users.ok());
    EXPECT_GT(*users, 0) << "orphaned blob " << sha;
  }
  EXPECT_TRUE(blobs_->Contains(Sha256::Of(data)));
}

}  // namespace
}  // namespace tuneforge
