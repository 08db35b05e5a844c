#include "server/auth.h"

#include <openssl/rand.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/read_file.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace tuneforge {
namespace {

// Equal strings of equal length, in time that depends on the length only.
bool ConstantTimeEqual(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

absl::StatusOr<Role> ParseRole(absl::string_view word) {
  if (word == "user") return Role::kUser;
  if (word == "admin") return Role::kAdmin;
  if (word == "worker") return Role::kWorker;
  return absl::InvalidArgumentError(absl::StrCat("unknown role '", word, "'"));
}

absl::Status ParseQuotaField(absl::string_view field, Quota* quota,
                             std::optional<PriorityBand>* band) {
  std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(field, absl::MaxSplits('=', 1));
  int64_t value = 0;
  if (kv.first == "priority") {
    ASSIGN_OR_RETURN(*band, ParsePriorityBand(kv.second));
    return absl::OkStatus();
  }
  if (kv.first == "stored_bytes") {
    ASSIGN_OR_RETURN(value, ParseByteSize(kv.second));
    quota->stored_bytes = value;
    return absl::OkStatus();
  }
  if (!absl::SimpleAtoi(kv.second, &value) || value < 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", field, "': expected a count >= 0"));
  }
  if (kv.first == "datasets") {
    quota->datasets = value;
  } else if (kv.first == "queued_jobs") {
    quota->queued_jobs = value;
  } else if (kv.first == "running_jobs") {
    quota->running_jobs = value;
  } else if (kv.first == "uploads") {
    quota->uploads = value;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown quota '", kv.first,
                     "' (stored_bytes, datasets, queued_jobs, running_jobs, uploads, priority)"));
  }
  return absl::OkStatus();
}

std::string Base64Url(const unsigned char* bytes, size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    acc = (acc << 8) | bytes[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return out;
}

}  // namespace

absl::StatusOr<PriorityBand> ParsePriorityBand(absl::string_view text) {
  std::pair<absl::string_view, absl::string_view> ends =
      absl::StrSplit(text, absl::MaxSplits("..", 1));
  PriorityBand band;
  if (!absl::SimpleAtoi(ends.first, &band.min) || !absl::SimpleAtoi(ends.second, &band.max) ||
      band.min > band.max || band.min < kMinPriority || band.max > kMaxPriority) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority '", text, "': expected MIN..MAX within ", kMinPriority, "..",
                     kMaxPriority, ", e.g. -100..10"));
  }
  return band;
}

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kUser: return "user";
    case Role::kAdmin: return "admin";
    case Role::kWorker: return "worker";
  }
  return "unknown";
}

bool IsTenantName(absl::string_view name) {
  if (name.empty() || name.size() > 63 || name[0] == '-') return false;
  for (char c : name) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) return false;
  }
  return true;
}

absl::StatusOr<int64_t> ParseByteSize(absl::string_view text) {
  static constexpr std::pair<const char*, int> kUnits[] = {
      {"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10},
      {"T", 40},   {"G", 30},   {"M", 20},   {"K", 10}};
  int shift = 0;
  for (const auto& [suffix, bits] : kUnits) {
    if (absl::EndsWith(text, suffix)) {
      text.remove_suffix(std::strlen(suffix));
      shift = bits;
      break;
    }
  }
  int64_t n = 0;
  if (!absl::SimpleAtoi(text, &n) || n < 0 || n > (int64_t{1} << (62 - shift))) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': expected bytes, e.g. 1048576, 512MiB or 10GiB"));
  }
  return n << shift;
}

absl::StatusOr<AccessPolicy> ParseAccessPolicy(absl::string_view text, absl::string_view source) {
  AccessPolicy policy;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    auto fail = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(source, " line ", line_number, ": ", why));
    };
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> words = absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (words.empty()) continue;
    if (words[0] == "quota") {
      if (words.size() < 3) return fail("expected: quota TENANT key=value...");
      if (!IsTenantName(words[1])) return fail(absl::StrCat("'", words[1], "' is not a tenant name"));
      Quota& quota = policy.quotas[std::string(words[1])];
      std::optional<PriorityBand> band;
      for (size_t i = 2; i < words.size(); ++i) {
        if (absl::Status s = ParseQuotaField(words[i], &quota, &band); !s.ok()) {
          return fail(s.message());
        }
      }
      if (band) policy.priority_bands[std::string(words[1])] = *band;
      continue;
    }
    if (words.size() != 4) return fail("expected: ROLE NAME TENANT sha256:DIGEST");
    absl::StatusOr<Role> role = ParseRole(words[0]);
    if (!role.ok()) return fail(role.status().message());
    AccessPolicy::Token token;
    token.caller.role = *role;
    token.caller.name = std::string(words[1]);
    if (token.caller.name.size() > 63) return fail("the name is longer than 63 characters");
    if (*role == Role::kWorker) {
      token.caller.scope = Scope{"-", false};
    } else if (!IsTenantName(words[2])) {
      return fail(absl::StrCat("'", words[2], "' is not a tenant name (1-63 of [a-z0-9-])"));
    } else {
      token.caller.scope = Scope{std::string(words[2]), *role == Role::kAdmin};
    }
    if (!absl::StartsWith(words[3], "sha256:") || !IsSha256Hex(std::string(words[3].substr(7)))) {
      return fail("the token must be given as sha256: and its 64 lowercase hex digest "
                  "(tuneforge-server token prints one), never the token itself");
    }
    token.digest = std::string(words[3].substr(7));
    for (const AccessPolicy::Token& other : policy.tokens) {
      if (other.digest == token.digest) return fail("the same token is listed twice");
    }
    policy.tokens.push_back(std::move(token));
  }
  return policy;
}

std::string NewToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    spdlog::critical("the system's random number generator failed");
    std::abort();
  }
  return "tf_" + Base64Url(bytes, sizeof bytes);
}

std::string TokenDigestHex(absl::string_view token) {
  return Sha256::Of(std::string_view(token.data(), token.size()));
}

absl::StatusOr<std::unique_ptr<AccessControl>> AccessControl::Create(Options options) {
  std::unique_ptr<AccessControl> access(new AccessControl(std::move(options)));
  if (access->enabled()) RETURN_IF_ERROR(access->Reload());
  return access;
}

absl::Status AccessControl::Load(bool only_if_changed, bool* changed) {
  *changed = false;
  ASSIGN_OR_RETURN(const std::string text, ReadFileOr(options_.tokens_file, "--tokens-file"));
  {
    MutexLock lock(&mu_);
    if (only_if_changed && text == file_bytes_) return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(AccessPolicy policy, ParseAccessPolicy(text, options_.tokens_file));
  MutexLock lock(&mu_);
  policy_ = std::move(policy);
  file_bytes_ = text;
  generation_.fetch_add(1, std::memory_order_acq_rel);
  *changed = true;
  return absl::OkStatus();
}

absl::Status AccessControl::Reload() {
  bool changed = false;
  return Load(false, &changed);
}

absl::StatusOr<bool> AccessControl::ReloadIfChanged() {
  bool changed = false;
  RETURN_IF_ERROR(Load(true, &changed));
  return changed;
}

std::string AccessControl::AddEphemeralWorkerToken(const std::string& name) {
  const std::string token = NewToken();
  AccessPolicy::Token entry;
  entry.digest = TokenDigestHex(token);
  entry.caller = Caller{name, Role::kWorker, Scope{"-", false}};
  MutexLock lock(&mu_);
  ephemeral_.push_back(std::move(entry));
  return token;
}

absl::StatusOr<Caller> AccessControl::Authenticate(const grpc::ServerContextBase& ctx, Api api,
                                                   std::optional<Caller>* identified) const {
  // Mutual TLS for workers holds with or without tokens.
  if (api == Api::kWorker && options_.workers_need_client_certificate &&
      !absl::StartsWith(ctx.peer(), "unix:")) {
    std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
    if (!auth || !auth->IsPeerAuthenticated()) {
      return absl::UnauthenticatedError(
          "workers must present a client certificate signed by the server's --tls-client-ca");
    }
  }
  if (!enabled()) return Caller{"anonymous", Role::kAdmin, Scope{kDefaultTenant, true}};
  const auto& metadata = ctx.client_metadata();
  auto it = metadata.find("authorization");
  ASSIGN_OR_RETURN(
      Caller found,
      CallerOf(it == metadata.end() ? absl::string_view()
                                    : absl::string_view(it->second.data(), it->second.size())));
  if (identified != nullptr) *identified = found;
  const bool worker = found.role == Role::kWorker;
  if (api == Api::kWorker && !worker) {
    return absl::PermissionDeniedError(absl::StrCat(
        "'", found.name, "' is a ", RoleName(found.role), "; the worker API takes worker tokens"));
  }
  if (api == Api::kPublic && worker) {
    return absl::PermissionDeniedError(
        absl::StrCat("'", found.name, "' is a worker; worker tokens call only the worker API"));
  }
  return found;
}

absl::StatusOr<Caller> AccessControl::CallerOf(absl::string_view value) const {
  if (value.empty()) {
    return absl::UnauthenticatedError(
        "no token: send \"authorization: Bearer <token>\" (tuneforge --token or TUNEFORGE_TOKEN)");
  }
  constexpr absl::string_view kBearer = "bearer ";
  if (value.size() <= kBearer.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kBearer.size()), kBearer)) {
    return absl::UnauthenticatedError("the authorization metadata must be \"Bearer <token>\"");
  }
  const std::string digest = TokenDigestHex(value.substr(kBearer.size()));
  std::optional<Caller> found;
  {
    // Every entry is compared, whichever matches.
    MutexLock lock(&mu_);
    for (const auto* list : {&policy_.tokens, &ephemeral_}) {
      for (const AccessPolicy::Token& t : *list) {
        if (ConstantTimeEqual(digest, t.digest)) found = t.caller;
      }
    }
  }
  if (!found) return absl::UnauthenticatedError("the token is not valid");
  return *found;
}

Quota AccessControl::QuotaOf(const std::string& tenant) const {
  Quota quota = options_.default_quota;
  MutexLock lock(&mu_);
  if (auto band = policy_.priority_bands.find(tenant); band != policy_.priority_bands.end()) {
    quota.priority = band->second;
  }
  auto it = policy_.quotas.find(tenant);
  if (it == policy_.quotas.end()) return quota;
  const Quota& own = it->second;
  if (own.stored_bytes > 0) quota.stored_bytes = own.stored_bytes;
  if (own.datasets > 0) quota.datasets = own.datasets;
  if (own.queued_jobs > 0) quota.queued_jobs = own.queued_jobs;
  if (own.running_jobs > 0) quota.running_jobs = own.running_jobs;
  if (own.uploads > 0) quota.uploads = own.uploads;
  return quota;
}

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path) {
  std::FILE* file = nullptr;
  if (!path.empty()) {
    file = std::fopen(path.c_str(), "ae");
    if (file == nullptr) {
      return absl::UnavailableError(absl::StrCat("cannot open the audit log ", path, ": ",
                                                 std::strerror(errno)));
    }
  }
  return std::unique_ptr<AuditLog>(new AuditLog(file));
}

AuditLog::~AuditLog() {
  MutexLock lock(&mu_);
  if (file_ != nullptr) std::fclose(file_);
}

void AuditLog::Record(const Caller* caller, absl::string_view peer, absl::string_view method,
                      absl::string_view resource, const absl::Status& result) {
  nlohmann::json line = {
      {"time", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone())},
      {"caller", caller ? caller->name : ""},
      {"role", caller ? std::string(RoleName(caller->role)) : ""},
      {"tenant", caller ? caller->scope.tenant : ""},
      {"peer", peer},
      {"method", method},
      {"resource", resource},
      {"code", absl::StatusCodeToString(result.code())},
      {"message", result.message()}};
  // Client strings may hold anything; replace what is not UTF-8.
  const std::string text =
      line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  MutexLock lock(&mu_);
  if (file_ == nullptr) {
    spdlog::debug("audit {}", text);
    return;
  }
  std::fwrite(text.data(), 1, text.size(), file_);
  std::fflush(file_);
}

Guard::Guard(const Guards& guards, const grpc::CallbackServerContext* ctx, Api api,
             absl::string_view mutating_method, Audit audit)
    : access_(guards.access),
      ctx_(ctx),
      api_(api),
      generation_(guards.access->generation()),
      audit_(mutating_method.empty() ? nullptr : guards.audit),
      when_(audit),
      peer_(ctx->peer()),
      method_(mutating_method),
      caller_(guards.access->Authenticate(*ctx, api, &identified_)) {}

absl::Status Guard::Recheck() {
  if (!caller_.ok()) return caller_.status();
  const uint64_t now = access_->generation();
  if (now == generation_) return absl::OkStatus();
  absl::StatusOr<Caller> again = access_->Authenticate(*ctx_, api_);
  if (!again.ok()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the caller's token is no longer accepted (", again.status().message(), ")"));
  }
  if (again->name != caller_->name || again->role != caller_->role ||
      again->scope.tenant != caller_->scope.tenant ||
      again->scope.all_tenants != caller_->scope.all_tenants) {
    return absl::UnauthenticatedError(
        "the caller's token now has another role or tenant; call again");
  }
  generation_ = now;
  return absl::OkStatus();
}

absl::Status Guard::Done(absl::string_view resource, const absl::Status& result) {
  const absl::Status status = caller_.ok() ? result : caller_.status();
  if (audit_ != nullptr && !audited_ && (when_ == Audit::kAlways || !status.ok())) {
    audited_ = true;
    audit_->Record(identified_ ? &*identified_ : nullptr, peer_, method_, resource, status);
  }
  return status;
}

}  // namespace tuneforge
