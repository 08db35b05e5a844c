#include "client/watch_view.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/format.h"
#include "client/output.h"

namespace tuneforge::cli {

// Reconnects after a dropped stream from the last sequence seen, so nothing
// is lost or repeated.
int WatchJob(ApiClient& api, const std::string& output, const std::string& name,
             int64_t after) {
  // On a terminal (and without NO_COLOR) a view redrawn in place; piped,
  // one line per event.
  const bool live = output == "text" && isatty(1) && std::getenv("NO_COLOR") == nullptr;
  LiveState view;
  view.job = name;
  size_t drawn = 0;  // lines of the last frame, to move back over
  auto redraw = [&] {
    const int columns = TerminalWidth();
    const int width = columns > 20 ? columns : 80;
    std::string out;
    if (drawn > 0) out += absl::StrCat("\x1b[", drawn, "F");  // to the frame's first line
    const std::vector<std::string> frame = LiveFrame(view, width);
    for (const std::string& line : frame) out += "\x1b[2K" + line + "\n";
    for (size_t i = frame.size(); i < drawn; ++i) out += "\x1b[2K\n";  // a shorter frame
    drawn = std::max(drawn, frame.size());
    std::cout << out << std::flush;
  };
  int retries = 0;
  while (true) {
    auto ctx = CallContext(std::chrono::hours(24 * 7));
    v1::WatchJobRequest req;
    req.set_name(name);
    req.set_after_sequence(after);
    auto reader = api.WatchJob(ctx.get(), req);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      retries = 0;
      after = event.sequence();
      if (output == "json") {
        std::cout << ToJson(event) << "\n" << std::flush;
      } else if (output == "yaml") {  // a stream of YAML documents
        std::cout << "---\n" << ToYaml(event) << std::flush;
      } else if (live) {
        view.Apply(event);
        redraw();
      } else {
        std::cout << EventLine(event) << "\n" << std::flush;
      }
    }
    grpc::Status s = reader->Finish();
    if (s.ok()) break;
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE || ++retries > 30) {
      return ReportFailure(s);
    }
    std::fprintf(stderr, "tuneforge: stream dropped (%s); reconnecting after #%lld\n",
                 s.error_message().c_str(), static_cast<long long>(after));
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  v1::GetJobRequest req;
  req.set_name(name);
  v1::Job job;
  if (int code = api.GetJob(req, &job); code != 0) return code;
  if (output == "text") std::cout << JobSummary(job) << std::flush;
  return job.state() == v1::JOB_STATE_SUCCEEDED ? 0 : 1;
}

}  // namespace tuneforge::cli
