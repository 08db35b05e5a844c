// Who may call what: bearer tokens from a tokens file, each naming a caller,
// a role and a tenant; per-tenant quotas from the same file; and the audit
// log of every mutating call.
//
// The tokens file holds SHA-256 digests of the tokens, never the tokens:
//
//   # role  name     tenant  digest of the token
//   user    alice    team-a  sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
//   admin   ops      ops     sha256:...
//   worker  gpu-pool -       sha256:...
//   # quota tenant   limits (0 or absent: the server's --quota-* default)
//   quota   team-a   stored_bytes=10GiB datasets=100 queued_jobs=20 running_jobs=2
//   quota   team-b   uploads=4 priority=-100..10
//
// `uploads`: open upload streams plus resumable uploads awaiting a resume;
// `priority`: the band of job priorities the tenant's users may set.
// Users see their own tenant's datasets, models and jobs; admins see every
// tenant's; workers call only the worker API. `tuneforge-server token`
// prints a new token and its line.
//
// Thread-safe: the policy is swapped whole on reload.
#ifndef TUNEFORGE_SERVER_AUTH_H_
#define TUNEFORGE_SERVER_AUTH_H_

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <grpcpp/server_context.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "server/page_token.h"
#include "server/tenancy.h"

namespace tuneforge {

enum class Role { kUser, kAdmin, kWorker };
absl::string_view RoleName(Role role);  // "user", "admin", "worker"

// Which of the server's APIs an RPC belongs to.
enum class Api { kPublic, kWorker };

struct Caller {
  std::string name = "anonymous";  // the token's name, for the audit log
  Role role = Role::kAdmin;
  Scope scope;
};

// The parsed tokens file.
struct AccessPolicy {
  struct Token {
    std::string digest;  // SHA-256 of the token, 64 lowercase hex characters
    Caller caller;
  };
  std::vector<Token> tokens;
  std::map<std::string, Quota> quotas;  // per tenant; zero fields: the default
  std::map<std::string, PriorityBand> priority_bands;  // per tenant, where given
};
// INVALID_ARGUMENT naming `source` and the line for anything malformed.
absl::StatusOr<AccessPolicy> ParseAccessPolicy(absl::string_view text, absl::string_view source);
// "-100..10": a band within kMinPriority..kMaxPriority.
absl::StatusOr<PriorityBand> ParsePriorityBand(absl::string_view text);
// "10GiB", "512MiB", "4096" (bytes); K, M, G, T alone also mean powers of 1024.
absl::StatusOr<int64_t> ParseByteSize(absl::string_view text);
// A tenant name: 1-63 characters of [a-z0-9-], starting with a letter or digit.
bool IsTenantName(absl::string_view name);
// A new random token ("tf_" and 43 base64url characters) and the digest
// line the tokens file takes for it.
std::string NewToken();
std::string TokenDigestHex(absl::string_view token);

class AccessControl {
 public:
  struct Options {
    // "": no authentication. Every caller is an admin of the default tenant
    // and may call both APIs (loopback development, tests, the demo).
    std::string tokens_file;
    Quota default_quota;  // for tenants the file gives no quota line
    // Workers must present a client certificate the TLS layer verified
    // (mutual TLS); callers over the local Unix socket are exempt.
    bool workers_need_client_certificate = false;
  };
  static absl::StatusOr<std::unique_ptr<AccessControl>> Create(Options options);

  bool enabled() const { return !options_.tokens_file.empty(); }
  // Counts the tokens file's changes: a stream compares it with the one
  // its caller was authenticated under to know when to check again.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  // The caller of an RPC of `api`, from its "authorization: Bearer <token>"
  // metadata. UNAUTHENTICATED without a token or with an unknown one (or,
  // for workers under mutual TLS, without a client certificate);
  // PERMISSION_DENIED when the token's role may not call `api`.
  // `identified`, when given, is set to the token's holder even when the
  // call is refused for its role (for the audit line).
  absl::StatusOr<Caller> Authenticate(const grpc::ServerContextBase& ctx, Api api,
                                      std::optional<Caller>* identified = nullptr) const;

  // The caller an "authorization" value ("Bearer <token>") names; as
  // Authenticate() without the role check. For the plain-HTTP /metrics.
  absl::StatusOr<Caller> CallerOf(absl::string_view authorization) const;

  // The tenant's quota: its line in the file over the default.
  Quota QuotaOf(const std::string& tenant) const;
  QuotaFn quota_fn() const {
    return [this](const std::string& tenant) { return QuotaOf(tenant); };
  }

  // Re-reads the tokens file; on an error keeps the policy in force and
  // says why. ReloadIfChanged() does so only when the bytes changed (a
  // Kubernetes Secret is updated by swapping a symlink, not in place).
  absl::Status Reload();
  absl::StatusOr<bool> ReloadIfChanged();

  // Adds a worker token that lives only in memory, for the server's own
  // local workers; returns it.
  std::string AddEphemeralWorkerToken(const std::string& name);

 private:
  explicit AccessControl(Options options) : options_(std::move(options)) {}
  absl::Status Load(bool only_if_changed, bool* changed);

  const Options options_;
  std::atomic<uint64_t> generation_{0};
  mutable Mutex mu_;
  AccessPolicy policy_ ABSL_GUARDED_BY(mu_);
  std::string file_bytes_ ABSL_GUARDED_BY(mu_);
  std::vector<AccessPolicy::Token> ephemeral_ ABSL_GUARDED_BY(mu_);
};

// One JSON line per mutating call: time, caller, role, tenant, peer,
// method, resource, result code and message. Flushed line by line.
class AuditLog {
 public:
  // "": lines go to no file (the server then logs them at debug level).
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& path);
  ~AuditLog();
  void Record(const Caller* caller, absl::string_view peer, absl::string_view method,
              absl::string_view resource, const absl::Status& result);

 private:
  explicit AuditLog(std::FILE* file) : file_(file) {}
  Mutex mu_;
  std::FILE* file_ ABSL_GUARDED_BY(mu_);
};

// What each service needs to check its callers and record their changes.
struct Guards {
  AccessControl* access;
  AuditLog* audit;
  const PageTokens* pages;  // the list calls' page tokens (server/page_token.h)
};

// The caller of one RPC. Construct it first in every handler; a mutating
// handler names its method and ends with Done(), which writes the audit
// line (refused calls are audited too, with the token's holder when the
// token was valid but its role wrong).
//
//   Guard guard(guards_, ctx, Api::kPublic, "CancelJob");
//   if (!guard.ok()) return FinishNow(ctx, guard.Done(request->name()));
//   ...
//   return FinishNow(ctx, guard.Done(request->name(), status));
//
// Calls made every few seconds by every worker (Heartbeat, ReportEvents,
// AcquireJob, FetchBlob) are audited only when they fail
// (Audit::kRefusals): a line a heartbeat would drown the log.
class Guard {
 public:
  enum class Audit { kAlways, kRefusals };
  Guard(const Guards& guards, const grpc::CallbackServerContext* ctx, Api api,
        absl::string_view mutating_method = {}, Audit audit = Audit::kAlways);
  bool ok() const { return caller_.ok(); }
  const Caller& caller() const { return *caller_; }
  const Scope& scope() const { return caller_->scope; }
  // Audits a mutating call (once) and returns `result`, or the
  // authentication error when the caller was refused.
  absl::Status Done(absl::string_view resource, const absl::Status& result = absl::OkStatus());
  // For long streams, on each message: UNAUTHENTICATED once the tokens file
  // no longer admits the caller as it did when the stream began (its token
  // revoked, or given another role or tenant). Cheap while the file has not
  // changed. Needs the stream's context alive.
  absl::Status Recheck();

 private:
  AccessControl* access_;
  const grpc::CallbackServerContext* ctx_;
  Api api_;
  uint64_t generation_;  // of the tokens file the caller was admitted under
  AuditLog* audit_;
  Audit when_;
  std::string peer_;
  std::string method_;
  std::optional<Caller> identified_;  // the token's holder, refused or not
  absl::StatusOr<Caller> caller_;
  bool audited_ = false;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_AUTH_H_
