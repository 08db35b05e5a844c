// Security end to end, who may call: real tuneforge-server processes with a
// tokens file, TLS certificates made by openssl here, real workers and the
// real CLI. Every RPC of every tuneforge.v1 service is called raw (with the
// generic stub, an empty request) to prove each one checks its caller; the
// tokens file is reloaded, a revoked token ends its open streams, TLS and
// mutual TLS guard the worker API, non-loopback addresses need both, and
// /metrics and reflection are closed to who may not see them.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <regex>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include "tests/cluster.h"
#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/job.grpc.pb.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace tuneforge::testing {
namespace {

TEST_F(SecurityTest, EveryRpcChecksItsCaller) {
  StartServer(0);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  const auto methods = AllMethods();
  ASSERT_GE(methods.size(), 25u);
  for (const auto& [method, is_public] : methods) {
    SCOPED_TRACE(method);
    EXPECT_EQ(RawCall(channel, method, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(RawCall(channel, method, "tf_not-a-token").error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    // Each role only where it belongs.
    for (const NewToken* t : {&alice_, &ops_}) {
      grpc::Status s = RawCall(channel, method, t->token);
      if (is_public) {
        EXPECT_NE(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
        EXPECT_NE(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
      } else {
        EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
      }
    }
    grpc::Status worker = RawCall(channel, method, pool_.token);
    if (is_public) {
      EXPECT_EQ(worker.error_code(), grpc::StatusCode::PERMISSION_DENIED) << worker.error_message();
    } else {
      EXPECT_NE(worker.error_code(), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_NE(worker.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    }
  }
  // The CLI says so with exit code 4.
  RunResult none = server_->Cli({"datasets", "list"});
  EXPECT_EQ(none.exit_code, 4) << none.err;
  EXPECT_NE(none.err.find("no token"), std::string::npos) << none.err;
  RunResult worker = As(pool_, {"jobs", "list"});
  EXPECT_EQ(worker.exit_code, 4);
  EXPECT_NE(worker.err.find("worker tokens call only the worker API"), std::string::npos);
}

TEST_F(SecurityTest, TokensFileIsReloadedOnChangeAndOnHangup) {
  StartServer(0);
  const NewToken carol = MakeToken("user", "carol", "team-c");
  EXPECT_EQ(As(carol, {"datasets", "list"}).exit_code, 4);
  WriteTokens(carol.line + "\n");
  bool admitted = false;
  for (int i = 0; i < 100 && !admitted; ++i) {
    admitted = As(carol, {"datasets", "list"}).exit_code == 0;
    if (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(admitted) << "a changed tokens file is read within seconds";
  // A broken file keeps the one in force, and says why.
  WriteTokens(carol.line + "\nuser dave team-d the-token-itself\n");
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(As(carol, {"datasets", "list"}).exit_code, 0);
  const std::string log = ReadAll(dir_ + "/server.out");
  EXPECT_NE(log.find("tokens file not reloaded"), std::string::npos) << log;
  EXPECT_NE(log.find("never the token itself"), std::string::npos) << log;
  // SIGHUP reads it at once: carol is gone.
  WriteTokens("");
  server_->Signal(SIGHUP);
  bool refused = false;
  for (int i = 0; i < 20 && !refused; ++i) {
    refused = As(carol, {"datasets", "list"}).exit_code == 4;
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(refused);
  EXPECT_EQ(As(alice_, {"datasets", "list"}).exit_code, 0);
}

// Certificates made here with openssl: a CA, the server's (for 127.0.0.1)
// and a worker's client certificate.
class TlsTest : public SecurityTest {
 protected:
  void SetUp() override {
    SecurityTest::SetUp();
    const std::string d = dir_;
    const std::string script =
        "set -e; cd " + d + "; "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=tuneforge-test-ca "
        "  -keyout ca.key -out ca.pem 2>/dev/null; "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca "
        "  -keyout other.key -out other.pem 2>/dev/null; "
        "for who in server worker; do "
        "  openssl req -newkey rsa:2048 -nodes -subj /CN=$who -keyout $who.key -out $who.csr "
        "    2>/dev/null; done; "
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext; "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "  -extfile server.ext -out server.pem 2>/dev/null; "
        "openssl x509 -req -in worker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "  -out worker.pem 2>/dev/null";
    WriteFile(d + "/certs.sh", script);
    ASSERT_EQ(std::system(("bash " + d + "/certs.sh").c_str()), 0);
    StartServer(0, {"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server.key",
                    "--tls-client-ca=" + d + "/ca.pem", "--health-listen=127.0.0.1:0"});
  }
};

TEST_F(TlsTest, ClientsNeedTheCaAndWorkersACertificate) {
  const std::string ca = "--ca-file=" + dir_ + "/ca.pem";
  // Plaintext, or TLS trusting the wrong CA: no connection.
  EXPECT_EQ(As(alice_, {"datasets", "list"}).exit_code, 3);
  RunResult wrong = As(alice_, {"--ca-file=" + dir_ + "/other.pem", "datasets", "list"});
  EXPECT_EQ(wrong.exit_code, 3) << wrong.err;
  RunResult right = As(alice_, {ca, "datasets", "list"});
  EXPECT_EQ(right.exit_code, 0) << right.err;
  RunResult from_env = testing::Run("tuneforge", {"--addr=" + server_->addr(), "datasets", "list"},
                           {"TUNEFORGE_CA=" + dir_ + "/ca.pem", "TUNEFORGE_TOKEN=" + alice_.token});
  EXPECT_EQ(from_env.exit_code, 0) << from_env.err;

  // Probes that speak neither TLS nor tokens get the health service alone,
  // on a plaintext port of its own.
  std::smatch port;
  const std::string log = ReadAll(dir_ + "/server.out");
  ASSERT_TRUE(std::regex_search(log, port, std::regex("in plaintext, on 127.0.0.1:([0-9]+)")))
      << log;
  auto probe =
      grpc::CreateChannel("127.0.0.1:" + port[1].str(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(RawCall(probe, "/grpc.health.v1.Health/Check", "").error_code(),
            grpc::StatusCode::OK);
  EXPECT_EQ(RawCall(probe, "/tuneforge.v1.JobService/ListJobs", alice_.token).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);

  // The worker API over TLS: a worker token is not enough without a client
  // certificate the CA signed.
  auto channel_with = [&](bool certificate) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadAll(dir_ + "/ca.pem");
    if (certificate) {
      ssl.pem_cert_chain = ReadAll(dir_ + "/worker.pem");
      ssl.pem_private_key = ReadAll(dir_ + "/worker.key");
    }
    return grpc::CreateChannel(server_->addr(), grpc::SslCredentials(ssl));
  };
  grpc::Status bare = RawCall(channel_with(false), "/tuneforge.v1.WorkerService/RegisterWorker",
                              pool_.token);
  EXPECT_EQ(bare.error_code(), grpc::StatusCode::UNAUTHENTICATED) << bare.error_message();
  EXPECT_NE(bare.error_message().find("client certificate"), std::string::npos);
  grpc::Status with_certificate = RawCall(
      channel_with(true), "/tuneforge.v1.WorkerService/RegisterWorker", pool_.token);
  EXPECT_TRUE(with_certificate.ok()) << with_certificate.error_message();

  // A real worker with its certificate trains a job to the end.
  const std::string dataset = Upload(alice_, ca);
  RunResult created = As(alice_, {ca, "-o", "name", "jobs", "create", "--model", "tiny-gpt2",
                                  "--training-dataset", dataset, "--epochs", "1",
                                  "--max-seq-len", "64"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string job = created.out.substr(0, created.out.find('\n'));
  BackgroundProcess worker("tuneforge-worker",
                           {"--server=" + server_->addr(), ca,
                            "--cert-file=" + dir_ + "/worker.pem",
                            "--key-file=" + dir_ + "/worker.key", "--token=" + pool_.token,
                            "--threads=1", "--cache-dir=" + dir_ + "/cache", "--name=tls-worker"},
                           dir_ + "/worker");
  RunResult watched = As(alice_, {ca, "jobs", "watch", job});
  EXPECT_EQ(watched.exit_code, 0) << watched.out << watched.err << worker.Err();
  worker.Signal(SIGTERM);
  EXPECT_EQ(worker.Wait(30), 0);
}

TEST_F(SecurityTest, NonLoopbackAddressesNeedTlsAndTokensOrInsecure) {
  RunResult refused =
      testing::Run("tuneforge-server", {"--listen=0.0.0.0:0", "--data-dir=" + dir_ + "/d"});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE((refused.out + refused.err).find("--insecure"), std::string::npos) << refused.out;
  RunResult no_tokens = testing::Run("tuneforge-server",
                            {"--listen=0.0.0.0:0", "--data-dir=" + dir_ + "/d",
                             "--tls-cert=x.pem", "--tls-key=x.key"});
  EXPECT_EQ(no_tokens.exit_code, 2);
  EXPECT_NE((no_tokens.out + no_tokens.err).find("without authentication"), std::string::npos)
      << no_tokens.out;
  // A host name is no loopback address, whatever it starts with.
  RunResult named = testing::Run("tuneforge-server",
                                 {"--listen=127.evil.example:0", "--data-dir=" + dir_ + "/d"});
  EXPECT_EQ(named.exit_code, 2);
  EXPECT_NE((named.out + named.err).find("--insecure"), std::string::npos) << named.out;
  ServerProcess insecure(dir_, 0, {"--listen=0.0.0.0:0", "--insecure"});
  EXPECT_EQ(insecure.Cli({"datasets", "list"}).exit_code, 0);
}

// Removing a token from the tokens file ends what its holder has open:
// a WatchJob stream at once (with no event to send), an upload, a download
// and a worker's event stream at their next message, neither storing nor
// sending anything more.
TEST_F(SecurityTest, ARevokedTokenEndsItsOpenStreams) {
  const NewToken carol = MakeToken("user", "carol", "team-c");
  const NewToken pool2 = MakeToken("worker", "pool2", "-");
  WriteTokens(carol.line + "\n" + pool2.line + "\n");
  StartServer(0);  // no worker but this test: the job's watch stays quiet
  const std::string dataset = Upload(carol);
  const std::string job = CreateJob(carol, dataset);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());

  // A worker holds the job: it has uploaded a 32 MB artifact (more than
  // any flow-control window, so a download is still streaming when the
  // token goes) and keeps its event stream open.
  auto worker_api = v1::WorkerService::NewStub(channel);
  const v1::Assignment a = AcquireAsWorker(*worker_api, pool2.token);
  ASSERT_EQ(a.job().name(), job);
  const std::string big(32 << 20, 'x');
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + pool2.token);
    v1::UploadArtifactResponse resp;
    auto writer = worker_api->UploadArtifact(&ctx, &resp);
    v1::UploadArtifactRequest req;
    req.mutable_header()->set_job(job);
    req.mutable_header()->set_lease(a.lease());
    req.mutable_header()->set_artifact("metrics.csv");
    req.mutable_header()->set_size_bytes(static_cast<int64_t>(big.size()));
    writer->Write(req);
    for (size_t at = 0; at < big.size(); at += 1 << 20) {
      req.set_chunk(big.substr(at, 1 << 20));
      writer->Write(req);
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
  }
  grpc::ClientContext report_ctx;
  report_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  report_ctx.AddMetadata("authorization", "Bearer " + pool2.token);
  v1::ReportEventsResponse reported;
  auto report = worker_api->ReportEvents(&report_ctx, &reported);
  v1::ReportEventsRequest line;
  line.set_job(job);
  line.set_lease(a.lease());
  line.mutable_event()->mutable_log()->set_message("still here");
  ASSERT_TRUE(report->Write(line));
  auto jobs_api = v1::JobService::NewStub(channel);
  grpc::ClientContext download_ctx;
  download_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  download_ctx.AddMetadata("authorization", "Bearer " + carol.token);
  v1::DownloadArtifactRequest which;
  which.set_name(job);
  which.set_artifact("metrics.csv");
  auto download = jobs_api->DownloadArtifact(&download_ctx, which);
  v1::ArtifactChunk piece;
  ASSERT_TRUE(download->Read(&piece));
  int64_t downloaded = static_cast<int64_t>(piece.data().size());
  auto& jobs = jobs_api;
  grpc::ClientContext watch_ctx;
  watch_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  watch_ctx.AddMetadata("authorization", "Bearer " + carol.token);
  v1::WatchJobRequest request;
  request.set_name(job);
  auto watch = jobs->WatchJob(&watch_ctx, request);
  v1::JobEvent event;
  ASSERT_TRUE(watch->Read(&event));  // "created"

  auto datasets = v1::DatasetService::NewStub(channel);
  grpc::ClientContext upload_ctx;
  upload_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  upload_ctx.AddMetadata("authorization", "Bearer " + carol.token);
  v1::Dataset stored;
  auto upload = datasets->UploadDataset(&upload_ctx, &stored);
  const std::string bytes = ReadAll(dir_ + "/data.json");
  v1::UploadDatasetRequest first;
  first.mutable_metadata()->set_display_name("late.json");
  first.mutable_metadata()->set_size_bytes(static_cast<int64_t>(bytes.size()));
  ASSERT_TRUE(upload->Write(first));
  v1::UploadDatasetRequest chunk;
  chunk.set_chunk(bytes.substr(0, bytes.size() / 2));
  ASSERT_TRUE(upload->Write(chunk));

  WriteTokens("");  // carol's and pool2's lines are gone
  while (watch->Read(&event)) {
  }
  grpc::Status watched = watch->Finish();
  EXPECT_EQ(watched.error_code(), grpc::StatusCode::UNAUTHENTICATED) << watched.error_message();
  EXPECT_NE(watched.error_message().find("no longer accepted"), std::string::npos);
  while (download->Read(&piece)) downloaded += static_cast<int64_t>(piece.data().size());
  grpc::Status fetched = download->Finish();
  EXPECT_EQ(fetched.error_code(), grpc::StatusCode::UNAUTHENTICATED) << fetched.error_message();
  EXPECT_LT(downloaded, static_cast<int64_t>(big.size()));
  line.mutable_event()->mutable_log()->set_message("after revocation");
  report->Write(line);
  report->WritesDone();
  grpc::Status events = report->Finish();
  EXPECT_EQ(events.error_code(), grpc::StatusCode::UNAUTHENTICATED) << events.error_message();
  chunk.set_chunk(bytes.substr(bytes.size() / 2));
  upload->Write(chunk);
  upload->WritesDone();
  grpc::Status uploaded = upload->Finish();
  EXPECT_EQ(uploaded.error_code(), grpc::StatusCode::UNAUTHENTICATED) << uploaded.error_message();
  const std::string listed = As(ops_, {"-o", "name", "datasets", "list"}).out;
  EXPECT_EQ(listed, dataset + "\n") << "the cut-off upload stored nothing";
  EXPECT_EQ(As(ops_, {"jobs", "events", job}).out.find("after revocation"), std::string::npos);
}

// With tokens, /metrics is an admin's and reflection (which cannot ask for
// a token) is off; --metrics-open serves a scraper that sends none.
TEST_F(SecurityTest, MetricsNeedAnAdminAndReflectionIsOffWithTokens) {
  const int port = FreeTcpPort();
  const std::string listen = "--metrics-listen=127.0.0.1:" + std::to_string(port);
  StartServer(0, {listen});
  httplib::Client http("127.0.0.1", port);
  auto scrape = [&](const std::string& token) {
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    httplib::Result r = http.Get("/metrics", headers);
    return r ? r->status : -1;
  };
  EXPECT_EQ(scrape(""), 401);
  EXPECT_EQ(scrape(alice_.token), 401);
  EXPECT_EQ(scrape(pool_.token), 401);
  EXPECT_EQ(scrape(ops_.token), 200);
  auto channel = grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(RawCall(channel, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                    ops_.token)
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  server_.reset();
  StartServer(0, {listen, "--metrics-open"});
  EXPECT_EQ(scrape(""), 200);
}

}  // namespace
}  // namespace tuneforge::testing
