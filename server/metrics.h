// The scheduler's Prometheus metrics: every RPC counted by method and code
// with a latency histogram (a server interceptor), and the state of jobs,
// the queue, workers and storage, rendered in the text exposition format
// for `GET /metrics` (common/metrics_http.h).
//
// Thread-safe.
#ifndef TUNEFORGE_SERVER_METRICS_H_
#define TUNEFORGE_SERVER_METRICS_H_

#include <array>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include <grpcpp/support/server_interceptor.h>

#include "common/mutex.h"
#include "server/scheduler.h"

namespace tuneforge {

class RpcMetrics {
 public:
  // Upper bounds of the latency histogram's buckets, in seconds.
  static constexpr std::array<double, 14> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,   0.25,   0.5,   1,    2.5,   10,
                                                      60,    600};

  void Record(const std::string& method, int code, double seconds);
  // Appends tuneforge_rpc_requests_total and tuneforge_rpc_duration_seconds.
  void Render(std::string* out) const;
  // Installs the interceptor that records every call's method, code and time.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

 private:
  struct Histogram {
    std::array<int64_t, kBuckets.size()> buckets{};
    int64_t count = 0;
    double sum = 0;
  };
  mutable Mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Histogram> durations_ ABSL_GUARDED_BY(mu_);
};

// The whole exposition: the scheduler's state, the bytes in the blob store,
// and the RPC metrics.
std::string RenderServerMetrics(const SchedulerStats& stats, int64_t stored_bytes,
                                const RpcMetrics& rpc);

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_METRICS_H_
