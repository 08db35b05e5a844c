// Security end to end, tenants apart: real tuneforge-server processes with a
// tokens file of two user tenants, an admin and a worker, real workers and
// the real CLI. One tenant's datasets, jobs, models and uploads are to
// another as things that do not exist, through the CLI and through every
// public RPC called raw; a worker token reaches only the blobs of the job it
// holds a lease on; what is refused is audited.
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <thread>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "tests/cluster.h"
#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/job.grpc.pb.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace tuneforge::testing {
namespace {

namespace fs = std::filesystem;

std::string Sha256Hex(const std::string& bytes) { return Sha256::Of(bytes); }

TEST_F(SecurityTest, ATenantSeesNothingOfAnother) {
  StartServer(1);
  const std::string dataset = Upload(alice_);
  const std::string job = CreateJob(alice_, dataset);
  RunResult watched = As(alice_, {"jobs", "watch", job});
  ASSERT_EQ(watched.exit_code, 0) << watched.out << watched.err;  // trained by the local worker
  json done = json::parse(As(alice_, {"-o", "json", "jobs", "get", job}).out);
  ASSERT_EQ(done["state"], "JOB_STATE_SUCCEEDED") << done.dump();
  const std::string model = done["resultModel"];
  const std::string id = job.substr(job.find('/') + 1);

  // Bob's view of Alice's things is that of things that do not exist: the
  // same exit code and the same words as for a made-up id.
  auto same_as_missing = [&](std::vector<std::string> args, const std::string& real,
                             const std::string& fake) {
    SCOPED_TRACE(::testing::PrintToString(args));
    RunResult theirs = As(bob_, args);
    for (std::string& a : args) {
      if (a == real) a = fake;
    }
    RunResult missing = As(bob_, args);
    EXPECT_EQ(theirs.exit_code, 4) << theirs.err;
    EXPECT_EQ(missing.exit_code, 4) << missing.err;
    std::string message = theirs.err;
    size_t at;
    while ((at = message.find(real.substr(real.find('/') + 1))) != std::string::npos) {
      message.replace(at, real.size() - real.find('/') - 1, fake.substr(fake.find('/') + 1));
    }
    EXPECT_EQ(message, missing.err);
  };
  const std::string fake_dataset = "datasets/d000000000000";
  const std::string fake_job = "jobs/j000000000000";
  same_as_missing({"datasets", "get", dataset}, dataset, fake_dataset);
  same_as_missing({"datasets", "delete", dataset}, dataset, fake_dataset);
  for (const char* verb : {"get", "cancel", "pause", "resume", "watch", "checkpoints"}) {
    same_as_missing({"jobs", verb, job}, job, fake_job);
  }
  {
    auto stub = v1::JobService::NewStub(
        grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + bob_.token);
    v1::ListJobEventsRequest request;
    request.set_name(job);
    v1::ListJobEventsResponse events;
    grpc::Status s = stub->ListJobEvents(&ctx, request, &events);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(s.error_message(), "job " + id + " not found");
    EXPECT_EQ(events.events_size(), 0);
  }
  same_as_missing({"jobs", "download", job, "--artifact", "metrics", "--dir", dir_ + "/dl"}, job,
                  fake_job);
  same_as_missing({"models", "get", model}, model, "models/ft-j000000000000");
  same_as_missing({"models", "delete", model}, model, "models/ft-j000000000000");
  EXPECT_FALSE(fs::exists(dir_ + "/dl/metrics.csv"));

  // Nor does it list, or build on, any of them.
  EXPECT_EQ(As(bob_, {"-o", "name", "datasets", "list"}).out, "");
  EXPECT_EQ(As(bob_, {"-o", "name", "jobs", "list"}).out, "");
  EXPECT_EQ(As(bob_, {"-o", "name", "models", "list"}).out.find(model), std::string::npos);
  RunResult on_theirs = As(bob_, {"jobs", "create", "--model", "tiny-gpt2",
                                  "--training-dataset", dataset});
  EXPECT_EQ(on_theirs.exit_code, 2);
  EXPECT_NE(on_theirs.err.find("does not exist"), std::string::npos) << on_theirs.err;
  const std::string bobs = Upload(bob_);
  for (const auto& [base, words] : {std::pair{model, "no model"}, {job, "does not exist"}}) {
    RunResult continued = As(bob_, {"jobs", "create", "--model", base, "--training-dataset", bobs});
    EXPECT_EQ(continued.exit_code, 2) << base;
    EXPECT_NE(continued.err.find(words), std::string::npos) << continued.err;
  }
  // Request ids are per tenant: Bob's retry key does not find Alice's job.
  // Alice and the admin still see hers; the admin sees Bob's too.
  EXPECT_EQ(As(alice_, {"datasets", "get", dataset}).exit_code, 0);
  std::string listed = As(ops_, {"-o", "name", "datasets", "list"}).out;
  EXPECT_NE(listed.find(dataset), std::string::npos);
  EXPECT_NE(listed.find(bobs), std::string::npos);
  EXPECT_NE(As(ops_, {"-o", "name", "jobs", "list"}).out.find(job), std::string::npos);

  // The worker list names the job a worker trains only to its tenant.
  const std::string running = CreateJob(alice_, dataset, 200);
  bool busy = false;
  for (int i = 0; i < 200 && !busy; ++i) {
    busy = As(alice_, {"-o", "json", "workers", "list"}).out.find(running) != std::string::npos;
    if (!busy) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(busy);
  // Nor that the worker is busy: to Bob it is unavailable, as one away is.
  RunResult bobs_view = As(bob_, {"-o", "json", "workers", "list"});
  EXPECT_NE(bobs_view.out.find("\"unavailable\""), std::string::npos) << bobs_view.out;
  EXPECT_EQ(bobs_view.out.find("\"busy\""), std::string::npos) << bobs_view.out;
  EXPECT_EQ(bobs_view.out.find(running), std::string::npos) << bobs_view.out;
  EXPECT_EQ(bobs_view.out.find("tokensPerSecond"), std::string::npos) << bobs_view.out;
  EXPECT_EQ(As(alice_, {"jobs", "cancel", running}).exit_code, 0);

  // Every change was audited, the refused ones too.
  bool created = false, refused = false;
  for (const json& line : AuditLines()) {
    created = created || (line["method"] == "CreateJob" && line["caller"] == "alice" &&
                          line["tenant"] == "team-a" && line["code"] == "OK" &&
                          line["resource"] == job);
    refused = refused || (line["method"] == "DeleteDataset" && line["caller"] == "bob" &&
                          line["code"] == "NOT_FOUND" && line["resource"] == dataset);
    EXPECT_TRUE(line.contains("time") && line.contains("peer")) << line.dump();
  }
  EXPECT_TRUE(created);
  EXPECT_TRUE(refused);
}

// A worker token reaches only what the job it holds a lease on may read: no
// other tenant's dataset by its digest, neither fetched nor passed off as
// an upload ("bytes already held") into this job's output. Every worker call
// that is refused is audited, and a token of the wrong role is audited with
// its holder's name and tenant.
TEST_F(SecurityTest, AWorkerTokenReachesOnlyTheBlobsOfItsLeasedJob) {
  StartServer(0);
  const std::string bytes_a = ReadAll(dir_ + "/data.json");
  const std::string bytes_b = LeaveDataset(17);
  WriteFile(dir_ + "/bob.json", bytes_b);
  const std::string dataset = Upload(alice_);
  RunResult up = As(bob_, {"-o", "name", "datasets", "upload", dir_ + "/bob.json"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  const std::string job = CreateJob(alice_, dataset);

  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  auto stub = v1::WorkerService::NewStub(channel);
  auto context = [&](grpc::ClientContext& ctx, const NewToken& who) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("authorization", "Bearer " + who.token);
  };
  const v1::Assignment a = AcquireAsWorker(*stub, pool_.token);
  ASSERT_EQ(a.job().name(), job);
  auto fetch = [&](const std::string& sha256, const std::string& job_name) {
    grpc::ClientContext ctx;
    context(ctx, pool_);
    v1::FetchBlobRequest req;
    req.set_sha256(sha256);
    req.set_job(job_name);
    req.set_lease(a.lease());
    auto reader = stub->FetchBlob(&ctx, req);
    std::string got;
    v1::BlobChunk chunk;
    while (reader->Read(&chunk)) got += chunk.data();
    grpc::Status s = reader->Finish();
    return std::make_pair(s, got);
  };
  auto [mine, bytes] = fetch(Sha256Hex(bytes_a), job);
  EXPECT_TRUE(mine.ok()) << mine.error_message();
  EXPECT_EQ(bytes, bytes_a);
  const std::string made_up(64, 'e');
  auto [theirs, leaked] = fetch(Sha256Hex(bytes_b), job);
  auto [missing, nothing] = fetch(made_up, job);
  EXPECT_EQ(theirs.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(leaked.empty());
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  std::string message = theirs.error_message();
  message.replace(message.find(Sha256Hex(bytes_b)), 64, made_up);
  EXPECT_EQ(message, missing.error_message()) << "an existence oracle";
  EXPECT_EQ(fetch(Sha256Hex(bytes_a), "").first.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  {  // Bob's dataset named by digest and size as this job's output, no bytes sent.
    grpc::ClientContext ctx;
    context(ctx, pool_);
    v1::UploadArtifactResponse resp;
    auto writer = stub->UploadArtifact(&ctx, &resp);
    v1::UploadArtifactRequest req;
    req.mutable_header()->set_job(job);
    req.mutable_header()->set_lease(a.lease());
    req.mutable_header()->set_artifact("metrics.csv");
    req.mutable_header()->set_sha256(Sha256Hex(bytes_b));
    req.mutable_header()->set_size_bytes(static_cast<int64_t>(bytes_b.size()));
    writer->Write(req);
    writer->WritesDone();
    EXPECT_FALSE(writer->Finish().ok()) << "another tenant's bytes were recorded";
  }
  {  // A user token on the worker API.
    grpc::ClientContext ctx;
    context(ctx, alice_);
    v1::HeartbeatRequest req;
    req.set_job(job);
    v1::HeartbeatResponse resp;
    EXPECT_EQ(stub->Heartbeat(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  bool fetch_refused = false, upload_refused = false, wrong_role = false;
  for (const json& line : AuditLines()) {
    fetch_refused |= line["method"] == "FetchBlob" && line["code"] == "NOT_FOUND" &&
                     line["caller"] == "pool" && line["role"] == "worker";
    upload_refused |= line["method"] == "UploadArtifact" && line["code"] != "OK";
    wrong_role |= line["method"] == "Heartbeat" && line["code"] == "PERMISSION_DENIED" &&
                  line["caller"] == "alice" && line["tenant"] == "team-a";
  }
  EXPECT_TRUE(fetch_refused);
  EXPECT_TRUE(upload_refused);
  EXPECT_TRUE(wrong_role) << ReadAll(dir_ + "/data/audit.log");
}

// Sets the field at `path` ("job.training_dataset") of `m` from text.
void SetField(google::protobuf::Message* m, const std::string& path, const std::string& value) {
  const size_t dot = path.find('.');
  const google::protobuf::FieldDescriptor* f =
      m->GetDescriptor()->FindFieldByName(path.substr(0, dot));
  ASSERT_NE(f, nullptr) << m->GetDescriptor()->full_name() << " has no field " << path;
  const google::protobuf::Reflection* r = m->GetReflection();
  if (dot != std::string::npos) {
    SetField(r->MutableMessage(m, f), path.substr(dot + 1), value);
    return;
  }
  using F = google::protobuf::FieldDescriptor;
  switch (f->cpp_type()) {
    case F::CPPTYPE_STRING: r->SetString(m, f, value); break;
    case F::CPPTYPE_INT64: r->SetInt64(m, f, std::stoll(value)); break;
    case F::CPPTYPE_INT32: r->SetInt32(m, f, std::stoi(value)); break;
    default: FAIL() << path << ": a type this helper does not set";
  }
}

// Every public RPC, enumerated from the service descriptors, with every
// kind of object its request can name: another tenant's object gets the
// code and the words a missing one does. A new RPC fails this test until
// it is listed below with the objects it names (or none).
TEST_F(SecurityTest, AnotherTenantsObjectIsAnsweredAsAMissingOneByEveryRpc) {
  StartServer(1);
  // Alice's objects: a dataset, an ended job and its model, a running job
  // and a pending upload.
  const std::string dataset = Upload(alice_);
  const std::string ended = CreateJob(alice_, dataset);
  ASSERT_EQ(As(alice_, {"jobs", "watch", ended}).exit_code, 0);
  const std::string model =
      json::parse(As(alice_, {"-o", "json", "jobs", "get", ended}).out)["resultModel"];
  const std::string running = CreateJob(alice_, dataset, 200);
  bool started = false;
  for (int i = 0; i < 400 && !started; ++i) {
    started = As(alice_, {"-o", "json", "jobs", "get", running}).out.find("JOB_STATE_RUNNING") !=
              std::string::npos;
    if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(started);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  auto datasets = v1::DatasetService::NewStub(channel);
  StreamUpload(*datasets, alice_, "", 1000, "alice-upload", false, [&] {
    return RawCall(channel, "/tuneforge.v1.DatasetService/QueryUpload", alice_.token,
                   [] {
                     v1::QueryUploadRequest q;
                     q.set_upload_id("alice-upload");
                     return q.SerializeAsString();
                   }())
        .ok();
  });
  const std::string bobs = Upload(bob_);

  // Each kind: Alice's object and a made-up one of the same shape.
  const std::map<std::string, std::pair<std::string, std::string>> kinds = {
      {"dataset", {dataset, "datasets/d000000000000"}},
      {"ended job", {ended, "jobs/j000000000000"}},
      {"running job", {running, "jobs/j000000000001"}},
      {"model", {model, "models/ft-j000000000000"}},
      {"upload", {"alice-upload", "nobody-upload"}}};
  struct Probe {
    std::string field;  // where the object is named
    std::string kind;
    std::map<std::string, std::string> fixed;  // the rest of a valid request
  };
  const std::map<std::string, std::string> upload = {{"metadata.display_name", "x.json"},
                                                     {"metadata.size_bytes", "100"}};
  const std::map<std::string, std::string> on_bobs = {{"job.training_dataset", bobs}};
  const std::vector<Probe> any_job = {{"name", "ended job", {}}, {"name", "running job", {}}};
  const std::map<std::string, std::vector<Probe>> probes = {
      {"DatasetService/UploadDataset",
       {{"metadata.model", "model", upload},
        {"metadata.upload_id", "upload",
         {{"metadata.display_name", "x.json"}, {"metadata.size_bytes", "1000"},
          {"metadata.offset", "10"}}}}},
      {"DatasetService/ValidateDataset", {{"metadata.model", "model", upload}}},
      {"DatasetService/QueryUpload", {{"upload_id", "upload", {}}}},
      {"DatasetService/GetDataset", {{"name", "dataset", {}}}},
      {"DatasetService/DeleteDataset", {{"name", "dataset", {}}}},
      {"DatasetService/ListDatasets", {}},  // names none: lists the caller's own
      {"ModelService/ListModels", {}},
      {"ModelService/GetModel", {{"name", "model", {}}}},
      {"ModelService/ImportModel", {}},  // names none: makes a new one
      {"ModelService/DeleteModel", {{"name", "model", {}}}},
      {"JobService/CreateJob",
       {{"job.training_dataset", "dataset", {{"job.base_model", "tiny-gpt2"}}},
        {"job.validation_dataset", "dataset", on_bobs},
        {"job.base_model", "model", on_bobs},
        {"job.base_model", "ended job", on_bobs},
        {"job.base_model", "running job", on_bobs}}},
      {"JobService/GetJob", any_job},
      {"JobService/ListJobs", {}},
      {"JobService/CancelJob", any_job},
      {"JobService/PauseJob", any_job},
      {"JobService/ResumeJob", any_job},
      {"JobService/WatchJob", any_job},
      {"JobService/ListJobEvents", any_job},
      {"JobService/ListCheckpoints", any_job},
      {"JobService/DownloadArtifact",
       {{"name", "ended job", {{"artifact", "metrics.csv"}}},
        {"name", "running job", {{"artifact", "metrics.csv"}}}}},
      {"JobService/ListWorkers", {}},  // names no job of another tenant (ATenantSeesNothing...)
  };

  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  int checked = 0;
  for (const auto& [method, is_public] : AllMethods()) {
    if (!is_public) continue;
    const std::string short_name = method.substr(method.find('.', 1) + 4);  // "JobService/GetJob"
    SCOPED_TRACE(short_name);
    auto listed = probes.find(short_name);
    if (listed == probes.end()) {
      ADD_FAILURE() << "a new RPC: list the objects its request names";
      continue;
    }
    const std::string service = method.substr(1, method.rfind('/') - 1);
    const google::protobuf::MethodDescriptor* descriptor =
        pool->FindServiceByName(service)->FindMethodByName(method.substr(method.rfind('/') + 1));
    const google::protobuf::Message* prototype =
        google::protobuf::MessageFactory::generated_factory()->GetPrototype(
            descriptor->input_type());
    for (const Probe& probe : listed->second) {
      SCOPED_TRACE(probe.field + " = " + probe.kind);
      const auto& [real, fake] = kinds.at(probe.kind);
      auto request = [&](const std::string& value) {
        std::unique_ptr<google::protobuf::Message> m(prototype->New());
        for (const auto& [field, fixed] : probe.fixed) SetField(m.get(), field, fixed);
        SetField(m.get(), probe.field, value);
        return m->SerializeAsString();
      };
      const grpc::Status theirs = RawCall(channel, method, bob_.token, request(real));
      const grpc::Status missing = RawCall(channel, method, bob_.token, request(fake));
      EXPECT_FALSE(theirs.ok());
      EXPECT_EQ(theirs.error_code(), missing.error_code()) << theirs.error_message();
      std::string message = theirs.error_message();
      const std::string real_id = real.substr(real.find('/') + 1);
      const std::string fake_id = fake.substr(fake.find('/') + 1);
      for (size_t at; (at = message.find(real_id)) != std::string::npos;) {
        message.replace(at, real_id.size(), fake_id);
      }
      EXPECT_EQ(message, missing.error_message());
      ++checked;
    }
  }
  EXPECT_EQ(checked, 29);
  // The probes reached Alice's things and changed none of them.
  EXPECT_EQ(As(alice_, {"datasets", "get", dataset}).exit_code, 0);
  EXPECT_EQ(As(alice_, {"models", "get", model}).exit_code, 0);
  EXPECT_NE(As(alice_, {"-o", "json", "jobs", "get", running}).out.find("JOB_STATE_RUNNING"),
            std::string::npos);
  EXPECT_EQ(As(alice_, {"jobs", "cancel", running}).exit_code, 0);
}

}  // namespace
}  // namespace tuneforge::testing
