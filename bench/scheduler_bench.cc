// Load on a running tuneforge-server, side by side in one run: GetJob against
// the standard health Check of the same server (an empty call: the ceiling
// of this machine), with 1 and 64 concurrent callers; CreateJob per second;
// and how long one event takes to reach 1,000 concurrent watchers.
//
//   tuneforge-bench-scheduler --addr 127.0.0.1:50051 [--seconds 5] [--watchers 1000]
//
// The server should have no workers (jobs stay queued, except the one this
// bench leases as a stand-in worker to report events). Prints one line per
// measure.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "common/channel.h"
#include "tuneforge/v1/dataset.grpc.pb.h"
#include "tuneforge/v1/job.grpc.pb.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace {

namespace v1 = tuneforge::v1;
using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

std::string token;  // --token: sent with every call

std::shared_ptr<grpc::Channel> NewChannel(const std::string& addr, int index) {
  grpc::ChannelArguments args;
  args.SetInt("tuneforge.bench.channel", index);  // a connection of its own
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  tuneforge::ChannelOptions options;
  options.address = addr;
  options.token = token;
  return *tuneforge::MakeChannel(options, args);  // fails only on unreadable files: none here
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * double(v.size())))];
}

// Runs `call` from `callers` threads (each with a channel of its own) for
// `seconds`; prints calls/s and the latency percentiles.
void Load(const std::string& what, const std::string& addr, int callers, double seconds,
          const std::function<std::function<bool()>(std::shared_ptr<grpc::Channel>)>& make_call) {
  std::vector<std::vector<double>> latencies(callers);
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  for (int i = 0; i < callers; ++i) {
    threads.emplace_back([&, i] {
      std::function<bool()> call = make_call(NewChannel(addr, i));
      call();  // connect and warm up outside the measure
      while (Clock::now() < end) {
        const int64_t start = NowNs();
        if (!call()) failed = true;
        latencies[i].push_back(double(NowNs() - start) / 1e6);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::printf("%-24s %3d callers  %8.0f calls/s  p50 %6.2f ms  p99 %6.2f ms%s\n", what.c_str(),
              callers, double(all.size()) / seconds, Percentile(all, 0.5), Percentile(all, 0.99),
              failed ? "  (some calls failed)" : "");
  std::fflush(stdout);
}

// One watcher: a WatchJob stream; records, for every "bench <sent_ns>" log
// event, how long after it was sent it arrived.
class Watcher : public grpc::ClientReadReactor<v1::JobEvent> {
 public:
  Watcher(v1::JobService::Stub* stub, const std::string& job, int expected)
      : expected_(expected) {
    request_.set_name(job);
    stub->async()->WatchJob(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    const int64_t now = NowNs();
    if (event_.has_log() && event_.log().message().rfind("bench ", 0) == 0) {
      const int64_t sent = std::stoll(event_.log().message().substr(6));
      std::lock_guard<std::mutex> lock(mu_);
      latencies_ms_.push_back(double(now - sent) / 1e6);
      if (static_cast<int>(latencies_ms_.size()) == expected_) cv_.notify_all();
    }
    StartRead(&event_);
  }
  void OnDone(const grpc::Status&) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  // Waits until every event arrived (or the deadline); returns the latencies.
  std::vector<double> Wait(Clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_until(lock, deadline,
                   [&] { return static_cast<int>(latencies_ms_.size()) >= expected_; });
    return latencies_ms_;
  }
  void Cancel() { context_.TryCancel(); }
  void WaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }

 private:
  grpc::ClientContext context_;
  v1::WatchJobRequest request_;
  v1::JobEvent event_;
  const int expected_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<double> latencies_ms_;
  bool done_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tuneforge-bench-scheduler: load on a running tuneforge-server"};
  std::string addr = "127.0.0.1:50051";
  double seconds = 5;
  int watchers = 1000, events = 50;
  app.add_option("--addr", addr)->capture_default_str();
  app.add_option("--seconds", seconds, "per measure")->capture_default_str();
  app.add_option("--watchers", watchers)->capture_default_str();
  app.add_option("--events", events, "events sent to the watchers, 20 ms apart")
      ->capture_default_str();
  bool read_all = false, reads_only = false;
  app.add_option("--token", token, "bearer token, for a server with a tokens file");
  app.add_flag("--reads-only", reads_only, "only the health Check and GetJob measures");
  std::string other_token;
  app.add_option("--other-token", other_token,
                 "another tenant's token: also time its GetJob and CancelJob on this tenant's "
                 "job beside the same calls on a missing id (they should cost the same)");
  app.add_flag("--read-all", read_all,
               "instead: page through every job with ListJobs, then GetJob each of them");
  CLI11_PARSE(app, argc, argv);

  auto channel = NewChannel(addr, -1);
  auto datasets = v1::DatasetService::NewStub(channel);
  auto jobs = v1::JobService::NewStub(channel);
  auto workers = v1::WorkerService::NewStub(channel);

  if (read_all) {
    std::vector<std::string> names;
    const int64_t start = NowNs();
    v1::ListJobsRequest req;
    req.set_page_size(1000);
    do {
      grpc::ClientContext ctx;
      v1::ListJobsResponse resp;
      grpc::Status s = jobs->ListJobs(&ctx, req, &resp);
      if (!s.ok()) {
        std::fprintf(stderr, "ListJobs: %s\n", s.error_message().c_str());
        return 1;
      }
      for (const v1::Job& j : resp.jobs()) names.push_back(j.name());
      req.set_page_token(resp.next_page_token());
    } while (!req.page_token().empty());
    const double list_s = double(NowNs() - start) / 1e9;
    const int64_t get_start = NowNs();
    int found = 0;
    for (const std::string& name : names) {
      grpc::ClientContext ctx;
      v1::GetJobRequest get;
      get.set_name(name);
      v1::Job job;
      found += jobs->GetJob(&ctx, get, &job).ok();
    }
    const double get_s = double(NowNs() - get_start) / 1e9;
    std::printf("ListJobs paged through %zu jobs in %.1f s (%.0f jobs/s); GetJob on each: %d "
                "found, %.0f calls/s\n",
                names.size(), list_s, double(names.size()) / list_s, found,
                double(names.size()) / get_s);
    return 0;
  }

  // A dataset and a job to read.
  std::string data;
  for (int i = 0; i < 20; ++i) {
    data += "{\"prompt\": \"Question " + std::to_string(i) + "?\", \"completion\": \"Answer.\"}\n";
  }
  v1::Dataset dataset;
  {
    grpc::ClientContext ctx;
    auto writer = datasets->UploadDataset(&ctx, &dataset);
    v1::UploadDatasetRequest req;
    req.mutable_metadata()->set_display_name("bench.jsonl");
    req.mutable_metadata()->set_size_bytes(static_cast<int64_t>(data.size()));
    writer->Write(req);
    req.set_chunk(data);
    writer->Write(req);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (!s.ok()) {
      std::fprintf(stderr, "upload failed: %s\n", s.error_message().c_str());
      return 1;
    }
  }
  auto create = [&](v1::JobService::Stub* stub) {
    grpc::ClientContext ctx;
    v1::CreateJobRequest req;
    req.mutable_job()->set_base_model("models/tiny-gpt2");
    req.mutable_job()->set_training_dataset(dataset.name());
    v1::Job job;
    grpc::Status s = stub->CreateJob(&ctx, req, &job);
    return s.ok() ? job.name() : std::string();
  };
  const std::string job = create(jobs.get());
  if (job.empty()) {
    std::fprintf(stderr, "CreateJob failed\n");
    return 1;
  }

  for (int callers : {1, 64}) {
    Load("health Check (empty)", addr, callers, seconds, [](std::shared_ptr<grpc::Channel> c) {
      auto stub = std::shared_ptr<grpc::health::v1::Health::Stub>(grpc::health::v1::Health::NewStub(c));
      return [stub] {
        grpc::ClientContext ctx;
        grpc::health::v1::HealthCheckRequest req;
        grpc::health::v1::HealthCheckResponse resp;
        return stub->Check(&ctx, req, &resp).ok();
      };
    });
    Load("GetJob", addr, callers, seconds, [&](std::shared_ptr<grpc::Channel> c) {
      auto stub = std::shared_ptr<v1::JobService::Stub>(v1::JobService::NewStub(c));
      return [stub, job] {
        grpc::ClientContext ctx;
        v1::GetJobRequest req;
        req.set_name(job);
        v1::Job resp;
        return stub->GetJob(&ctx, req, &resp).ok();
      };
    });
  }
  if (!other_token.empty()) {
    // Another tenant probing this tenant's active job and a made-up id,
    // the two calls alternating on one connection so that drift and noise
    // fall on both alike: the time must not tell them apart.
    token = other_token;
    auto stub = v1::JobService::NewStub(NewChannel(addr, -2));
    auto get = [&](const std::string& name) {
      grpc::ClientContext ctx;
      v1::GetJobRequest req;
      req.set_name(name);
      v1::Job resp;
      return stub->GetJob(&ctx, req, &resp).error_code() == grpc::StatusCode::NOT_FOUND;
    };
    auto cancel = [&](const std::string& name) {
      grpc::ClientContext ctx;
      v1::CancelJobRequest req;
      req.set_name(name);
      v1::Job resp;
      return stub->CancelJob(&ctx, req, &resp).error_code() == grpc::StatusCode::NOT_FOUND;
    };
    for (const auto& [what, call] : {std::pair<std::string, std::function<bool(const std::string&)>>{
                                         "GetJob", get},
                                     {"CancelJob", cancel}}) {
      std::vector<double> theirs, missing;
      bool failed = false;
      const auto end = Clock::now() + std::chrono::duration<double>(seconds);
      while (Clock::now() < end) {
        for (auto [name, out] : {std::pair{job, &theirs}, {std::string("jobs/j000000000000"), &missing}}) {
          const int64_t start = NowNs();
          failed |= !call(name);
          out->push_back(double(NowNs() - start) / 1e6);
        }
      }
      const double p50_theirs = Percentile(theirs, 0.5), p50_missing = Percentile(missing, 0.5);
      std::printf("%-10s another tenant's job p50 %.3f ms p90 %.3f ms, a missing id p50 %.3f ms "
                  "p90 %.3f ms (%zu calls each): %.2fx%s\n",
                  what.c_str(), p50_theirs, Percentile(theirs, 0.9), p50_missing,
                  Percentile(missing, 0.9), theirs.size(), p50_theirs / p50_missing,
                  failed ? "  (some calls did not answer NOT_FOUND)" : "");
    }
  }
  if (reads_only) return 0;
  for (int callers : {1, 16}) {
    Load("CreateJob", addr, callers, seconds, [&](std::shared_ptr<grpc::Channel> c) {
      auto stub = std::shared_ptr<v1::JobService::Stub>(v1::JobService::NewStub(c));
      return [stub, &create] { return !create(stub.get()).empty(); };
    });
  }

  // Event delivery: this process leases a job as a worker would and reports
  // "bench <sent_ns>" events while `watchers` streams follow the job.
  v1::RegisterWorkerResponse registered;
  {
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest req;
    req.set_display_name("bench");
    req.set_device("cpu");
    workers->RegisterWorker(&ctx, req, &registered);
  }
  v1::AcquireJobResponse acquired;
  {
    grpc::ClientContext ctx;
    v1::AcquireJobRequest req;
    req.set_worker(registered.worker());
    req.set_wait_ms(1000);
    grpc::Status s = workers->AcquireJob(&ctx, req, &acquired);
    if (!s.ok() || !acquired.has_assignment()) {
      std::fprintf(stderr, "could not lease a job: %s\n", s.error_message().c_str());
      return 1;
    }
  }
  const v1::Assignment& a = acquired.assignment();
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::JobService::Stub>> stubs;
  for (int i = 0; i < 16; ++i) {
    channels.push_back(NewChannel(addr, 1000 + i));
    stubs.push_back(v1::JobService::NewStub(channels.back()));
  }
  std::vector<std::unique_ptr<Watcher>> watching;
  for (int i = 0; i < watchers; ++i) {
    watching.push_back(std::make_unique<Watcher>(stubs[i % stubs.size()].get(), a.job().name(), events));
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // every stream open and caught up
  {
    grpc::ClientContext ctx;
    v1::ReportEventsResponse resp;
    auto writer = workers->ReportEvents(&ctx, &resp);
    for (int i = 0; i < events; ++i) {
      v1::ReportEventsRequest req;
      req.set_job(a.job().name());
      req.set_lease(a.lease());
      const int64_t start = NowNs();
      req.mutable_event()->mutable_log()->set_level("info");
      req.mutable_event()->mutable_log()->set_message("bench " + std::to_string(start));
      writer->Write(req);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (!s.ok()) std::fprintf(stderr, "ReportEvents: %s\n", s.error_message().c_str());
  }
  std::vector<double> all;
  int complete = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  for (auto& w : watching) {
    std::vector<double> l = w->Wait(deadline);
    complete += static_cast<int>(l.size()) == events;
    all.insert(all.end(), l.begin(), l.end());
  }
  std::printf("event delivery           %d watchers  %d events  p50 %6.2f ms  p99 %6.2f ms  "
              "max %6.2f ms  (%d watchers got every event)\n",
              watchers, events, Percentile(all, 0.5), Percentile(all, 0.99), Percentile(all, 1.0),
              complete);
  for (auto& w : watching) w->Cancel();
  for (auto& w : watching) w->WaitDone();
  return 0;
}
