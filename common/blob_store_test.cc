#include "common/blob_store.h"

#include <filesystem>

#include <gtest/gtest.h>

namespace tuneforge {
namespace {

namespace fs = std::filesystem;

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("blobs-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    auto store = BlobStore::Open(root_.string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  size_t TmpFiles() const {
    return std::distance(fs::directory_iterator(root_ / "tmp"), fs::directory_iterator());
  }
  fs::path root_;
  std::unique_ptr<BlobStore> store_;
};

TEST_F(BlobStoreTest, WritesContentAddressedBlob) {
  auto w = store_->NewWriter();
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append("hello ").ok());
  ASSERT_TRUE((*w)->Append("world").ok());
  auto sha = (*w)->Commit();
  ASSERT_TRUE(sha.ok()) << sha.status();
  EXPECT_EQ(*sha, Sha256::Of("hello world"));
  EXPECT_EQ(*sha, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
  EXPECT_TRUE(store_->Contains(*sha));
  EXPECT_EQ(*store_->ReadAll(*sha), "hello world");
  EXPECT_EQ(*store_->SizeOf(*sha), 11);
  EXPECT_EQ(TmpFiles(), 0u);
}

TEST_F(BlobStoreTest, DigestMismatchKeepsNothing) {
  auto w = store_->NewWriter();
  ASSERT_TRUE((*w)->Append("abc").ok());
  auto sha = (*w)->Commit(std::string(64, '0'));
  EXPECT_EQ(sha.status().code(), absl::StatusCode::kInvalidArgument);
  w->reset();
  EXPECT_FALSE(store_->Contains(Sha256::Of("abc")));
  EXPECT_EQ(TmpFiles(), 0u);
}

TEST_F(BlobStoreTest, AbandonedWriterLeavesNothing) {
  {
    auto w = store_->NewWriter();
    ASSERT_TRUE((*w)->Append("partial").ok());
    EXPECT_EQ(TmpFiles(), 1u);
  }
  EXPECT_EQ(TmpFiles(), 0u);
}

TEST_F(BlobStoreTest, RefusesNonDigestNames) {
  EXPECT_FALSE(store_->Contains("../../etc/passwd"));
  EXPECT_EQ(store_->ReadAll("../x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Remove("ABC").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tuneforge
