// The worker and dataset services in this process, behind a real gRPC server
// on a loopback port, with the blob reclaimer the server runs: artifact
// uploads that supersede checkpoints (the sequence that once deadlocked the
// server), uploads of bytes the server already holds, dataset uploads and
// blob removals, all at once from several threads. `make tsan` runs this
// under ThreadSanitizer with the scheduler core's tests.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/blob_store.h"
#include "common/sha256.h"
#include "server/blob_reclaimer.h"
#include "server/datasets.h"
#include "server/models.h"
#include "server/page_token.h"
#include "server/scheduler.h"
#include "server/services.h"
#include "server/store.h"

namespace tuneforge {
namespace {

std::chrono::system_clock::time_point In(int seconds) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

class ServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/services-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    store_ = *Store::Open(dir_ + "/tuneforge.db");
    blobs_ = *BlobStore::Open(dir_);
    reclaimer_ = std::make_unique<BlobReclaimer>(store_.get(), blobs_.get());
    SchedulerOptions options;
    options.release_blobs = [this](const std::vector<std::string>& d) { reclaimer_->Release(d); };
    scheduler_ = *Scheduler::Create(store_.get(), options);
    access_ = *AccessControl::Create({});
    audit_ = *AuditLog::Open("");
    guards_ = Guards{access_.get(), audit_.get(), &pages_};
    datasets_ = std::make_unique<DatasetCatalog>(store_.get(), blobs_.get(), 1 << 30);
    models_ = std::make_unique<ModelCatalog>(store_.get(), blobs_.get(), int64_t{1} << 30);
    dataset_service_ = std::make_unique<DatasetServiceImpl>(guards_, datasets_.get(), models_.get());
    worker_service_ = std::make_unique<WorkerServiceImpl>(
        guards_, scheduler_.get(), store_.get(), blobs_.get(), models_.get(), options, 1 << 30);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(dataset_service_.get());
    builder.RegisterService(worker_service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_GT(port, 0);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::InsecureChannelCredentials());
    datasets_stub_ = v1::DatasetService::NewStub(channel);
    workers_stub_ = v1::WorkerService::NewStub(channel);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(In(5));
  }

  // The dataset's id.
  std::string UploadDataset(const std::string& bytes) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(20));
    v1::Dataset stored;
    auto writer = datasets_stub_->UploadDataset(&ctx, &stored);
    v1::UploadDatasetRequest req;
    req.mutable_metadata()->set_display_name("d.jsonl");
    req.mutable_metadata()->set_size_bytes(static_cast<int64_t>(bytes.size()));
    EXPECT_TRUE(writer->Write(req));
    req.set_chunk(bytes);
    EXPECT_TRUE(writer->Write(req));
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return stored.name().substr(stored.name().find('/') + 1);
  }

  grpc::Status UploadArtifact(const v1::Assignment& a, const std::string& path,
                              const std::string& bytes) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(20));
    v1::UploadArtifactResponse resp;
    auto writer = workers_stub_->UploadArtifact(&ctx, &resp);
    v1::UploadArtifactRequest req;
    req.mutable_header()->set_job(a.job().name());
    req.mutable_header()->set_lease(a.lease());
    req.mutable_header()->set_artifact(path);
    req.mutable_header()->set_size_bytes(static_cast<int64_t>(bytes.size()));
    req.mutable_header()->set_sha256(Sha256::Of(bytes));
    if (writer->Write(req)) {
      req.set_chunk(bytes);
      writer->Write(req);
    }
    writer->WritesDone();
    return writer->Finish();
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<BlobReclaimer> reclaimer_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<AccessControl> access_;
  std::unique_ptr<AuditLog> audit_;
  PageTokens pages_{std::string(32, 'k')};
  Guards guards_{};
  std::unique_ptr<DatasetCatalog> datasets_;
  std::unique_ptr<ModelCatalog> models_;
  std::unique_ptr<DatasetServiceImpl> dataset_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::DatasetService::Stub> datasets_stub_;
  std::unique_ptr<v1::WorkerService::Stub> workers_stub_;
};

TEST_F(ServicesTest, CheckpointsSupersedingEachOtherBesideUploadsAndRemovals) {
  const std::string data =
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\", \"completion\": \"d\"}\n";
  JobSpec spec;
  spec.base_model = "tiny-gpt2";
  spec.training_dataset = UploadDataset(data);
  spec.validation_split = 0;
  ASSERT_TRUE(scheduler_->CreateJob(spec).ok());
  v1::RegisterWorkerResponse registered;
  {
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest req;
    req.set_display_name("w");
    ASSERT_TRUE(workers_stub_->RegisterWorker(&ctx, req, &registered).ok());
  }
  v1::AcquireJobResponse acquired;
  {
    grpc::ClientContext ctx;
    v1::AcquireJobRequest req;
    req.set_worker(registered.worker());
    req.set_wait_ms(5000);
    ASSERT_TRUE(workers_stub_->AcquireJob(&ctx, req, &acquired).ok());
  }
  const v1::Assignment& a = acquired.assignment();
  ASSERT_FALSE(a.lease().empty());

  // Three uploaders of checkpoints, each starting newer steps and so
  // superseding the others' half-sent ones; one re-sends bytes the server
  // holds (recorded without a copy). Beside them, dataset uploads.
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int step = 1; step <= 12; ++step) {
        char name[64];
        std::snprintf(name, sizeof name, "checkpoint/step-%08d/", step * 3 + t);
        const std::string bytes = t == 2 ? data : std::string(4096 + step * 7 + t, 'a' + t);
        if (!UploadArtifact(a, std::string(name) + "optimizer.safetensors", bytes).ok()) ++failed;
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
}

}  // namespace
}  // namespace tuneforge
