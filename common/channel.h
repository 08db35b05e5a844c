// The client side of the server's transport security, shared by the CLI and
// the worker: TLS (optionally with a client certificate, for mutual TLS) and
// the bearer token sent with every call.
//
//   ChannelOptions options;
//   AddChannelOptions(app, &options);   // --addr/--server, --token, --ca-file, ...
//   ASSIGN_OR_RETURN(auto channel, MakeChannel(options));
#ifndef TUNEFORGE_COMMON_CHANNEL_H_
#define TUNEFORGE_COMMON_CHANNEL_H_

#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <grpcpp/channel.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/status/statusor.h"

namespace tuneforge {

struct ChannelOptions {
  std::string address = "127.0.0.1:50051";
  std::string token;        // "authorization: Bearer <token>" on every call; "": none
  bool tls = false;         // implied by any of the files below
  std::string ca_file;      // PEM roots the server's certificate must chain to; "": the system's
  std::string cert_file;    // PEM client certificate and key, for mutual TLS
  std::string key_file;
  std::string server_name;  // the name to expect in the server's certificate; "": the host's
};

// Adds --token, --token-file, --tls, --ca-file, --cert-file, --key-file and
// --tls-server-name (with TUNEFORGE_TOKEN and TUNEFORGE_CA from the
// environment) to `app`; the address option is the caller's.
void AddChannelOptions(CLI::App& app, ChannelOptions* options);

// INVALID_ARGUMENT / NOT_FOUND for options that do not fit or files that
// cannot be read.
// `args` for the channel itself (e.g. one connection per channel).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const ChannelOptions& options, grpc::ChannelArguments args = grpc::ChannelArguments());

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_CHANNEL_H_
