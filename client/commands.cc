#include "client/commands.h"

#include <cstdio>
#include <memory>
#include <utility>

namespace tuneforge::cli {

std::string Name(const std::string& collection, const std::string& id) {
  return id.rfind(collection + "/", 0) == 0 ? id : collection + "/" + id;
}

int WithClient(const Globals& g, const std::function<int(ApiClient&)>& fn) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(g.channel);
  if (!channel.ok()) {
    std::fprintf(stderr, "tuneforge: %s\n", std::string(channel.status().message()).c_str());
    return 2;
  }
  ApiClient client(*std::move(channel));
  return fn(client);
}

std::function<void()> RunWithClient(const Globals& g, int& code,
                                    std::function<int(ApiClient&)> fn) {
  return [&g, &code, fn = std::move(fn)] { code = WithClient(g, fn); };
}

}  // namespace tuneforge::cli
