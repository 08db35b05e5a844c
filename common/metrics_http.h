// Prometheus text exposition over HTTP (cpp-httplib): `GET /metrics` answers
// with what `render` returns at that moment. Used by the server and the
// worker, each with its own metrics.
//
//   MetricsHttpServer http;
//   RETURN_IF_ERROR(http.Start("0.0.0.0:9090", [&] { return Render(); }));
//
// Thread-safe: render is called on the HTTP server's threads.
#ifndef TUNEFORGE_COMMON_METRICS_HTTP_H_
#define TUNEFORGE_COMMON_METRICS_HTTP_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace tuneforge {

class MetricsHttpServer {
 public:
  MetricsHttpServer();
  ~MetricsHttpServer();
  // Serves on "host:port" (port 0: a free one); the port served on.
  // `authorize`, when set, is given each request's Authorization header
  // ("" when absent); a request it refuses is answered 401.
  absl::StatusOr<int> Start(const std::string& listen, std::function<std::string()> render,
                            std::function<bool(const std::string&)> authorize = {});
  void Stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

// Appends one sample line, `name{labels} value`, escaping label values as
// the text format asks. `labels` are name/value pairs.
void AppendSample(std::string* out, const std::string& name,
                  const std::vector<std::pair<std::string, std::string>>& labels, double value);
// Appends "# HELP name help" and "# TYPE name type".
void AppendHeader(std::string* out, const std::string& name, const std::string& type,
                  const std::string& help);

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_METRICS_HTTP_H_
