#include "common/logging.h"

#include <memory>

#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace tuneforge {
namespace {

class JsonFormatter : public spdlog::formatter {
 public:
  explicit JsonFormatter(std::map<std::string, std::string> fields) : fields_(std::move(fields)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string message(msg.payload.data(), msg.payload.size());
    nlohmann::json line = {
        {"time", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromChrono(msg.time),
                                  absl::UTCTimeZone())},
        {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                              spdlog::level::to_string_view(msg.level).size())},
        {"message", message}};
    for (const auto& [key, value] : fields_) line[key] = value;
    // The job a message is about: "jobs/ID" anywhere in it.
    if (size_t at = message.find("jobs/"); at != std::string::npos) {
      size_t end = at + 5;
      while (end < message.size() &&
             (std::isalnum(static_cast<unsigned char>(message[end])) || message[end] == '-')) {
        ++end;
      }
      if (end > at + 5) line["job"] = message.substr(at + 5, end - at - 5);
    }
    // Messages quote what clients and files hold: replace what is not UTF-8.
    const std::string text =
        line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    dest.append(text.data(), text.data() + text.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>(fields_);
  }

 private:
  const std::map<std::string, std::string> fields_;
};

}  // namespace

absl::Status SetLogFormat(const std::string& format, const std::string& text_pattern,
                          const std::map<std::string, std::string>& fields) {
  if (format == "json") {
    spdlog::set_formatter(std::make_unique<JsonFormatter>(fields));
  } else if (format == "text") {
    if (!text_pattern.empty()) spdlog::set_pattern(text_pattern);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format: '", format, "' is neither text nor json"));
  }
  return absl::OkStatus();
}

}  // namespace tuneforge
