#include "server/auth.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace tuneforge {
namespace {

TEST(AccessPolicyTest, ParsesTokensAndQuotas) {
  const std::string digest(64, 'a');
  auto policy = ParseAccessPolicy(
      "# comment\n"
      "user alice team-a sha256:" + digest + "  # trailing comment\n"
      "\n"
      "worker pool - sha256:" + std::string(64, 'b') + "\n"
      "admin ops ops sha256:" + std::string(64, 'c') + "\n"
      "quota team-a stored_bytes=10GiB datasets=3 queued_jobs=4 running_jobs=1\n"
      "quota team-b uploads=5 priority=-20..30\n",
      "tokens");
  ASSERT_TRUE(policy.ok()) << policy.status();
  ASSERT_EQ(policy->tokens.size(), 3u);
  EXPECT_EQ(policy->tokens[0].caller.name, "alice");
  EXPECT_EQ(policy->tokens[0].caller.scope.tenant, "team-a");
  EXPECT_FALSE(policy->tokens[0].caller.scope.all_tenants);
  EXPECT_EQ(policy->tokens[1].caller.role, Role::kWorker);
  EXPECT_TRUE(policy->tokens[2].caller.scope.all_tenants);
  const Quota& q = policy->quotas.at("team-a");
  EXPECT_EQ(q.stored_bytes, int64_t{10} << 30);
  EXPECT_EQ(q.datasets, 3);
  EXPECT_EQ(q.queued_jobs, 4);
  EXPECT_EQ(q.running_jobs, 1);
  EXPECT_EQ(policy->quotas.at("team-b").uploads, 5);
  EXPECT_EQ(policy->priority_bands.at("team-b"), (PriorityBand{-20, 30}));
  EXPECT_EQ(policy->priority_bands.count("team-a"), 0u);
}

TEST(AccessPolicyTest, ErrorsNameTheLine) {
  const std::string digest = "sha256:" + std::string(64, 'a');
  struct Case {
    std::string text;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"user alice team-a tf_the-token-itself", "line 1: the token must be given as sha256"},
           {"\nroot alice team-a " + digest, "line 2: unknown role 'root'"},
           {"user alice Team_A " + digest, "'Team_A' is not a tenant name"},
           {"user alice team-a " + digest + "\nuser bob team-b " + digest,
            "line 2: the same token is listed twice"},
           {"quota team-a disks=3", "unknown quota 'disks'"},
           {"quota team-a stored_bytes=lots", "expected bytes"},
           {"quota team-a priority=10..-10", "expected MIN..MAX within -100..100"},
           {"quota team-a priority=0..1000", "expected MIN..MAX within -100..100"},
           {"quota team-a priority=5", "expected MIN..MAX"},
           {"user alice", "expected: ROLE NAME TENANT sha256:DIGEST"}}) {
    auto policy = ParseAccessPolicy(c.text, "tokens");
    ASSERT_FALSE(policy.ok()) << c.text;
    EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(policy.status().message().find(c.says), std::string::npos) << policy.status();
  }
}

TEST(AccessPolicyTest, ByteSizesAndNames) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096);
  EXPECT_EQ(*ParseByteSize("512MiB"), int64_t{512} << 20);
  EXPECT_EQ(*ParseByteSize("2T"), int64_t{2} << 40);
  EXPECT_FALSE(ParseByteSize("-1").ok());
  EXPECT_FALSE(ParseByteSize("99999999999TiB").ok());
  EXPECT_TRUE(IsTenantName("team-a"));
  EXPECT_FALSE(IsTenantName("-a"));
  EXPECT_FALSE(IsTenantName(std::string(64, 'a')));
  EXPECT_FALSE(IsTenantName("../etc"));
  const std::string token = NewToken();
  EXPECT_EQ(token.size(), 3u + 43u);
  EXPECT_NE(token, NewToken());
  EXPECT_EQ(TokenDigestHex(token).size(), 64u);
}

TEST(AccessControlTest, TenantQuotaOverridesTheDefault) {
  const std::string path = ::testing::TempDir() + "/quota-tokens";
  std::ofstream(path) << "quota team-a running_jobs=5\n";
  Quota defaults;
  defaults.running_jobs = 1;
  defaults.datasets = 10;
  auto access = AccessControl::Create({path, defaults, false});
  ASSERT_TRUE(access.ok()) << access.status();
  EXPECT_EQ((*access)->QuotaOf("team-a").running_jobs, 5);
  EXPECT_EQ((*access)->QuotaOf("team-a").datasets, 10);
  EXPECT_EQ((*access)->QuotaOf("team-b").running_jobs, 1);
  // A broken edit is refused and the policy in force stays.
  std::ofstream(path) << "quota team-a running_jobs=many\n";
  EXPECT_FALSE((*access)->ReloadIfChanged().ok());
  EXPECT_EQ((*access)->QuotaOf("team-a").running_jobs, 5);
  std::filesystem::remove(path);
  EXPECT_EQ(AccessControl::Create({path, defaults, false}).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tuneforge
