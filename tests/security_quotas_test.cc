// Security end to end, each tenant within its share: real tuneforge-server
// processes with a tokens file that sets quotas, and the real CLI. Storage,
// dataset, queued-job and upload quotas and the server's size limit refuse
// mid-stream and leave nothing behind; uploads in progress count against
// their own tenant only; priorities stay in their tenant's band, and tenants
// take turns at equal priority.
#include <filesystem>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/cluster.h"
#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace tuneforge::testing {
namespace {

namespace fs = std::filesystem;

TEST_F(SecurityTest, QuotasAndSizeLimitsRefuseMidStreamAndLeaveNothing) {
  WriteTokens("quota team-b stored_bytes=3000 datasets=1 queued_jobs=1\n");
  StartServer(0, {"--max-upload-bytes=20000"});
  auto count_blobs = [&] {
    int n = 0;
    for (const char* sub : {"/data/blobs", "/data/tmp"}) {
      for (const auto& e : fs::recursive_directory_iterator(dir_ + sub)) n += e.is_regular_file();
    }
    return n;
  };
  // A stream that claims 1,000 bytes and keeps sending: refused once it
  // passes the limit, not at its end.
  auto upload_raw = [&](const NewToken& who, int chunks) {
    auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
    auto stub = v1::DatasetService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + who.token);
    v1::Dataset response;
    auto stream = stub->UploadDataset(&ctx, &response);
    v1::UploadDatasetRequest first;
    first.mutable_metadata()->set_display_name("big.jsonl");
    first.mutable_metadata()->set_size_bytes(1000);
    stream->Write(first);
    int sent = 0;
    v1::UploadDatasetRequest chunk;
    chunk.set_chunk(std::string(1000, ' '));
    while (sent < chunks && stream->Write(chunk)) ++sent;
    stream->WritesDone();
    return std::make_pair(stream->Finish(), sent);
  };
  const int before = count_blobs();
  constexpr int kChunks = 20000;  // 20 MB, if the server read it all
  auto [over_quota, sent_b] = upload_raw(bob_, kChunks);
  EXPECT_EQ(over_quota.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over_quota.error_message().find("tenant team-b's storage quota of 3000 bytes"),
            std::string::npos)
      << over_quota.error_message();
  EXPECT_LT(sent_b, kChunks) << "the server should stop the stream, not read it to the end";
  auto [over_limit, sent_a] = upload_raw(alice_, kChunks);
  EXPECT_LT(sent_a, kChunks);
  EXPECT_EQ(over_limit.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over_limit.error_message().find("the server's limit of 20000 bytes"),
            std::string::npos)
      << over_limit.error_message();
  EXPECT_EQ(count_blobs(), before);
  // The CLI's announced size is refused before any byte is sent.
  WriteFile(dir_ + "/big.json", LeaveDataset(200));
  RunResult big = As(bob_, {"datasets", "upload", dir_ + "/big.json"});
  EXPECT_EQ(big.exit_code, 1);
  EXPECT_NE(big.err.find("storage quota"), std::string::npos) << big.err;
  EXPECT_EQ(count_blobs(), before);

  // One dataset, then no more; one queued job, then no more.
  WriteFile(dir_ + "/small.json", LeaveDataset(8));
  RunResult small = As(bob_, {"-o", "name", "datasets", "upload", dir_ + "/small.json"});
  ASSERT_EQ(small.exit_code, 0) << small.err;
  const std::string dataset = small.out.substr(0, small.out.find('\n'));
  RunResult second = As(bob_, {"datasets", "upload", dir_ + "/small.json"});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("holds 1 datasets, its quota is 1"), std::string::npos) << second.err;
  CreateJob(bob_, dataset);
  RunResult queued = As(bob_, {"jobs", "create", "--model", "tiny-gpt2", "--training-dataset",
                               dataset});
  EXPECT_EQ(queued.exit_code, 1);
  EXPECT_NE(queued.err.find("1 queued or paused jobs, its quota is 1"), std::string::npos)
      << queued.err;
  // Other tenants are not held by team-b's quota.
  EXPECT_EQ(As(alice_, {"datasets", "upload", dir_ + "/small.json"}).exit_code, 0);
}

// The bytes under the server's temp folder: uploads in progress.
int64_t TempBytes(const std::string& data_dir) {
  int64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(data_dir + "/tmp")) {
    if (e.is_regular_file()) n += static_cast<int64_t>(e.file_size());
  }
  return n;
}

// What one tenant leaves open counts against that tenant alone: its quota
// of uploads in progress, and byte for byte its storage quota, dry runs
// too. Another tenant uploads as before.
TEST_F(SecurityTest, UploadsInProgressCountAgainstTheirOwnTenantOnly) {
  WriteTokens("quota team-a stored_bytes=300000 uploads=4\n");
  StartServer(0);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  auto stub = v1::DatasetService::NewStub(channel);
  const std::string part(100000, ' ');
  for (const char* id : {"a", "b", "c"}) {
    const int64_t before = TempBytes(dir_ + "/data");
    StreamUpload(*stub, alice_, part, 200000, id, false,
                 [&] { return TempBytes(dir_ + "/data") == before + 100000; });
  }
  // What the server holds of a pending upload; -1 when none is pending.
  auto committed = [&](const NewToken& who, const std::string& id) -> int64_t {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + who.token);
    v1::QueryUploadRequest q;
    q.set_upload_id(id);
    v1::QueryUploadResponse r;
    return stub->QueryUpload(&ctx, q, &r).ok() ? r.committed_size() : -1;
  };
  int64_t held = 0;
  for (const char* id : {"a", "b", "c"}) held += committed(alice_, id);
  ASSERT_EQ(held, 300000) << "three pending uploads of 100,000 bytes";

  // Nothing is stored yet, but the quota's bytes are held: no more bytes,
  // neither for an upload nor a dry run.
  RunResult upload = As(alice_, {"datasets", "upload", dir_ + "/data.json"});
  EXPECT_EQ(upload.exit_code, 1) << upload.out;
  EXPECT_NE(upload.err.find("team-a's storage quota of 300000 bytes"), std::string::npos)
      << upload.err;
  EXPECT_NE(upload.err.find("300000 bytes held by the tenant's uploads in progress"),
            std::string::npos)
      << upload.err;
  const std::string data = ReadAll(dir_ + "/data.json");
  grpc::Status validated = StreamUpload(*stub, alice_, data, data.size(), "", /*validate=*/true);
  EXPECT_EQ(validated.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << validated.error_message();

  // A fourth pending upload (no bytes) is the quota's last; a fifth waits.
  StreamUpload(*stub, alice_, "", 200000, "d", false, [&] { return committed(alice_, "d") == 0; });
  ASSERT_EQ(committed(alice_, "d"), 0);
  RunResult fifth = As(alice_, {"datasets", "upload", dir_ + "/data.json"});
  EXPECT_EQ(fifth.exit_code, 1);
  EXPECT_NE(fifth.err.find("tenant team-a has 4 uploads in progress"), std::string::npos)
      << fifth.err;

  // Team-b sees none of it: 12 pending uploads of its own (of the default
  // 16) and a dataset.
  for (int i = 0; i < 12; ++i) {
    const std::string id = "b" + std::to_string(i);
    StreamUpload(*stub, bob_, "", 1000, id, false, [&] { return committed(bob_, id) == 0; });
    ASSERT_EQ(committed(bob_, id), 0) << id;
  }
  RunResult bobs = As(bob_, {"-o", "name", "datasets", "upload", dir_ + "/data.json"});
  EXPECT_EQ(bobs.exit_code, 0) << bobs.err;
  EXPECT_TRUE(StreamUpload(*stub, bob_, data, data.size(), "", /*validate=*/true).ok());
}

// Priorities stay within -100..100 and, for users, within their tenant's
// band (by default up to 0); at equal priority tenants take turns, and a
// job's place in the queue counts its own tenant's jobs only.
TEST_F(SecurityTest, PrioritiesStayInTheirBandsAndTenantsTakeTurns) {
  WriteTokens("quota team-b priority=-100..50\n");
  StartServer(0);
  const std::string a_data = Upload(alice_);
  const std::string b_data = Upload(bob_);
  auto create = [&](const NewToken& who, const std::string& data, int priority) {
    return As(who, {"-o", "name", "jobs", "create", "--model", "tiny-gpt2",
                    "--training-dataset", data, "--priority", std::to_string(priority)});
  };
  RunResult too_high = create(ops_, a_data, 101);
  EXPECT_EQ(too_high.exit_code, 2);
  EXPECT_NE(too_high.err.find("job.priority: 101 is outside -100..100"), std::string::npos)
      << too_high.err;
  RunResult above_band = create(alice_, a_data, 1);
  EXPECT_EQ(above_band.exit_code, 4);
  EXPECT_NE(above_band.err.find("tenant team-a may use priorities -100..0, not 1"),
            std::string::npos)
      << above_band.err;
  EXPECT_EQ(create(alice_, a_data, -2147483647 - 1).exit_code, 2);
  // Within the bands: a granted 50, an admin's 100, a user's own -5.
  for (const RunResult& r :
       {create(bob_, b_data, 50), create(ops_, a_data, 100), create(alice_, a_data, -5)}) {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(As(ops_, {"jobs", "cancel", r.out.substr(0, r.out.find('\n'))}).exit_code, 0);
  }

  std::vector<std::string> a;
  for (int i = 0; i < 3; ++i) {
    RunResult r = create(alice_, a_data, 0);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    a.push_back(r.out.substr(0, r.out.find('\n')));
  }
  RunResult b = create(bob_, b_data, 0);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string b1 = b.out.substr(0, b.out.find('\n'));
  json bobs = json::parse(As(bob_, {"-o", "json", "jobs", "get", b1}).out);
  EXPECT_EQ(bobs["queuePosition"], 1) << bobs.dump();
  EXPECT_EQ(bobs["waitReason"].get<std::string>().find("team-a"), std::string::npos);
  EXPECT_NE(bobs["waitReason"].get<std::string>().find("position 1 among tenant team-b's"),
            std::string::npos)
      << bobs.dump();
  auto workers = v1::WorkerService::NewStub(
      grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(AcquireAsWorker(*workers, pool_.token).job().name(), a[0]);
  EXPECT_EQ(AcquireAsWorker(*workers, pool_.token).job().name(), b1) << "team-b's turn";
  EXPECT_EQ(AcquireAsWorker(*workers, pool_.token).job().name(), a[1]);
}

}  // namespace
}  // namespace tuneforge::testing
