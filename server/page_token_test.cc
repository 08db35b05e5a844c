#include "server/page_token.h"

#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

namespace tuneforge {
namespace {

TEST(PageTokensTest, ATokenOpensOnlyItsOwnQueryForItsOwnTenant) {
  const PageTokens pages(std::string(32, 'k'));
  const std::string token = pages.Make("team-a", "jobs|state=1", "j0123456789a");
  EXPECT_EQ(*pages.Read(token, "team-a", "jobs|state=1"), "j0123456789a");
  EXPECT_EQ(*pages.Read("", "team-a", "jobs|state=1"), "");  // the first page
  for (const auto& [tenant, query] :
       std::vector<std::pair<std::string, std::string>>{{"team-b", "jobs|state=1"},
                                                        {"team-a", "jobs|state=2"},
                                                        {"team-a", "datasets|"}}) {
    EXPECT_EQ(pages.Read(token, tenant, query).status().code(),
              absl::StatusCode::kInvalidArgument)
        << tenant << " " << query;
  }
  // Altered anywhere, truncated, or not a token: refused alike.
  for (size_t i = 0; i < token.size(); ++i) {
    std::string altered = token;
    altered[i] = altered[i] == '0' ? '1' : '0';
    EXPECT_FALSE(pages.Read(altered, "team-a", "jobs|state=1").ok()) << i;
  }
  for (const std::string& bad : {token.substr(1), std::string("j0123456789a"),
                                 std::string("."), std::string(2000, 'a')}) {
    EXPECT_EQ(pages.Read(bad, "team-a", "jobs|state=1").status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  // Another server's key: refused.
  EXPECT_FALSE(PageTokens(std::string(32, 'x')).Read(token, "team-a", "jobs|state=1").ok());
}

TEST(PageTokensTest, TheKeyIsMadeOnceAndKeptAcrossRestarts) {
  const std::string path = ::testing::TempDir() + "/page-key-" + std::to_string(::getpid());
  std::filesystem::remove(path);
  absl::StatusOr<PageTokens> first = PageTokens::LoadOrCreate(path);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(std::filesystem::file_size(path), 32u);
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::group_read,
            std::filesystem::perms::none);
  const std::string token = first->Make("t", "q", "p");
  absl::StatusOr<PageTokens> again = PageTokens::LoadOrCreate(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again->Read(token, "t", "q"), "p");
}

}  // namespace
}  // namespace tuneforge
