#include "server/metrics.h"

#include <chrono>

#include <grpcpp/support/status.h>

#include "common/metrics_http.h"

namespace tuneforge {
namespace {

using Clock = std::chrono::steady_clock;

const char* CodeName(int code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",         "UNKNOWN",          "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS",   "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",      "DATA_LOSS",
      "UNAUTHENTICATED"};
  return code >= 0 && code < 17 ? kNames[code] : "UNKNOWN";
}

class Interceptor : public grpc::experimental::Interceptor {
 public:
  Interceptor(RpcMetrics* metrics, const char* method)
      : metrics_(metrics), method_(method[0] == '/' ? method + 1 : method), start_(Clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
      metrics_->Record(method_, methods->GetSendStatus().error_code(), seconds);
    }
    methods->Proceed();
  }

 private:
  RpcMetrics* const metrics_;
  const std::string method_;
  const Clock::time_point start_;
};

class Factory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(RpcMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new Interceptor(metrics_, info->method());
  }

 private:
  RpcMetrics* const metrics_;
};

}  // namespace

void RpcMetrics::Record(const std::string& method, int code, double seconds) {
  MutexLock lock(&mu_);
  ++requests_[{method, code}];
  Histogram& h = durations_[method];
  for (size_t i = 0; i < kBuckets.size(); ++i) h.buckets[i] += seconds <= kBuckets[i];
  ++h.count;
  h.sum += seconds;
}

void RpcMetrics::Render(std::string* out) const {
  MutexLock lock(&mu_);
  AppendHeader(out, "tuneforge_rpc_requests_total", "counter",
               "RPCs served, by method and status code.");
  for (const auto& [key, n] : requests_) {
    AppendSample(out, "tuneforge_rpc_requests_total",
                 {{"method", key.first}, {"code", CodeName(key.second)}}, double(n));
  }
  AppendHeader(out, "tuneforge_rpc_duration_seconds", "histogram",
               "Time from an RPC's arrival to its status, by method (streams: their whole life).");
  for (const auto& [method, h] : durations_) {
    for (size_t i = 0; i < kBuckets.size(); ++i) {
      char le[32];
      std::snprintf(le, sizeof le, "%g", kBuckets[i]);
      AppendSample(out, "tuneforge_rpc_duration_seconds_bucket", {{"method", method}, {"le", le}},
                   double(h.buckets[i]));
    }
    AppendSample(out, "tuneforge_rpc_duration_seconds_bucket", {{"method", method}, {"le", "+Inf"}},
                 double(h.count));
    AppendSample(out, "tuneforge_rpc_duration_seconds_sum", {{"method", method}}, h.sum);
    AppendSample(out, "tuneforge_rpc_duration_seconds_count", {{"method", method}},
                 double(h.count));
  }
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
RpcMetrics::InterceptorFactory() {
  return std::make_unique<Factory>(this);
}

std::string RenderServerMetrics(const SchedulerStats& stats, int64_t stored_bytes,
                                const RpcMetrics& rpc) {
  std::string out;
  AppendHeader(&out, "tuneforge_jobs", "gauge", "Jobs stored, by state.");
  for (JobState s : {JobState::kQueued, JobState::kRunning, JobState::kPaused,
                     JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    auto it = stats.jobs.find(s);
    AppendSample(&out, "tuneforge_jobs", {{"state", std::string(JobStateName(s))}},
                 it == stats.jobs.end() ? 0.0 : double(it->second));
  }
  AppendHeader(&out, "tuneforge_queue_depth", "gauge", "Jobs queued, waiting for a worker.");
  AppendSample(&out, "tuneforge_queue_depth", {}, double(stats.queued));
  AppendHeader(&out, "tuneforge_queue_oldest_age_seconds", "gauge",
               "How long the oldest queued job has waited; 0 when none waits.");
  AppendSample(&out, "tuneforge_queue_oldest_age_seconds", {}, stats.oldest_queued_seconds);
  std::map<std::string, int64_t> by_state = {{"busy", 0}, {"waiting", 0}, {"away", 0}};
  for (const SchedulerStats::Worker& w : stats.workers) ++by_state[w.state];
  AppendHeader(&out, "tuneforge_workers", "gauge",
               "Registered workers: busy (training), waiting (polling for a job), away.");
  for (const auto& [state, n] : by_state) {
    AppendSample(&out, "tuneforge_workers", {{"state", state}}, double(n));
  }
  AppendHeader(&out, "tuneforge_worker_tokens_per_second", "gauge",
               "Training throughput of each busy worker's job, as it last reported.");
  for (const SchedulerStats::Worker& w : stats.workers) {
    if (w.state != "busy") continue;
    AppendSample(&out, "tuneforge_worker_tokens_per_second",
                 {{"worker", w.id}, {"name", w.name}, {"device", w.device}}, w.tokens_per_second);
  }
  AppendHeader(&out, "tuneforge_stored_bytes", "gauge",
               "Bytes in the blob store: datasets, models, artifacts and checkpoints.");
  AppendSample(&out, "tuneforge_stored_bytes", {}, double(stored_bytes));
  rpc.Render(&out);
  return out;
}

}  // namespace tuneforge
