#include "server/blob_reclaimer.h"

#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

namespace tuneforge {
namespace {

class BlobReclaimerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/reclaimer-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    store_ = *Store::Open(dir_ + ".db");
    blobs_ = *BlobStore::Open(dir_);
  }
  void TearDown() override {
    std::filesystem::remove_all(dir_);
    std::filesystem::remove(dir_ + ".db");
  }
  std::string Put(const std::string& bytes) {
    std::unique_ptr<BlobWriter> w = *blobs_->NewWriter();
    EXPECT_TRUE(w->Append(bytes).ok());
    return *w->Commit();
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<BlobStore> blobs_;
};

// Release() may be called with the blob lock held (an artifact upload that
// supersedes a checkpoint does): it only queues. The removal itself waits
// for the lock, and removes only what nothing references.
TEST_F(BlobReclaimerTest, ReleaseUnderTheBlobLockQueuesAndRemovesOnlyUnreferenced) {
  const std::string unused = Put("superseded checkpoint");
  const std::string used = Put("a dataset");
  DatasetRecord d;
  d.id = "d1";
  d.sha256 = used;
  ASSERT_TRUE(store_->PutDataset(d).ok());
  BlobReclaimer reclaimer(store_.get(), blobs_.get());
  {
    MutexLock refs(&store_->blob_refs_mu());
    reclaimer.Release({unused, used});  // would deadlock if it removed inline
  }
  reclaimer.Flush();
  EXPECT_FALSE(blobs_->Contains(unused));
  EXPECT_TRUE(blobs_->Contains(used));
  EXPECT_EQ(reclaimer.removed(), 1);
}

// At start the server hands every blob to the reclaimer: what a crash left
// unreferenced goes.
TEST_F(BlobReclaimerTest, ASweepOfEveryBlobKeepsTheReferencedOnes) {
  const std::string orphan = Put("published, then the process died");
  const std::string kept = Put("kept");
  DatasetRecord d;
  d.id = "d2";
  d.sha256 = kept;
  ASSERT_TRUE(store_->PutDataset(d).ok());
  {
    BlobReclaimer reclaimer(store_.get(), blobs_.get());
    reclaimer.Release(blobs_->List());
  }  // the destructor finishes what was queued
  EXPECT_EQ(blobs_->List(), std::vector<std::string>{kept});
  EXPECT_FALSE(blobs_->Contains(orphan));
}

}  // namespace
}  // namespace tuneforge
