#include "common/channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/read_file.h"
#include "common/status_macros.h"

namespace tuneforge {
namespace {

// Puts the bearer token into every call's metadata. Works on plaintext
// channels too (loopback), which gRPC's call credentials refuse.
class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* value_;
};

class TokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string token) : value_("Bearer " + std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&value_);
  }

 private:
  const std::string value_;  // lives as long as the channel, which owns the factory
};

}  // namespace

void AddChannelOptions(CLI::App& app, ChannelOptions* options) {
  app.add_option("--token", options->token, "bearer token")->envname("TUNEFORGE_TOKEN");
  app.add_option_function<std::string>(
      "--token-file",
      [options](const std::string& path) {
        absl::StatusOr<std::string> text = ReadFileOr(path, "--token-file");
        if (!text.ok()) throw CLI::ValidationError(std::string(text.status().message()));
        options->token = std::string(absl::StripAsciiWhitespace(*text));
      },
      "read the bearer token from this file");
  app.add_flag("--tls", options->tls, "use TLS with the system's root certificates");
  app.add_option("--ca-file", options->ca_file, "PEM CA of the server's certificate (implies --tls)")
      ->envname("TUNEFORGE_CA");
  app.add_option("--cert-file", options->cert_file, "PEM client certificate (mutual TLS)");
  app.add_option("--key-file", options->key_file, "PEM key of --cert-file");
  app.add_option("--tls-server-name", options->server_name,
                 "the name the server's certificate must carry, if not the address's host");
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options,
                                                           grpc::ChannelArguments args) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError("--cert-file and --key-file go together");
  }
  const bool tls = options.tls || !options.ca_file.empty() || !options.cert_file.empty();
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.ca_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFileOr(options.ca_file, "--ca-file"));
    }
    if (!options.cert_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFileOr(options.cert_file, "--cert-file"));
      ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFileOr(options.key_file, "--key-file"));
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.server_name.empty()) {
      args.SetSslTargetNameOverride(options.server_name);
    }
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!options.token.empty()) {
    interceptors.push_back(std::make_unique<TokenInterceptorFactory>(options.token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      options.address, credentials, args, std::move(interceptors));
}

}  // namespace tuneforge
