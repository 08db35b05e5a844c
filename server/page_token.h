// Page tokens (AIP-158) that a client can only hand back, never make: each
// one carries where the next page starts and an HMAC-SHA256 over that
// position, the caller's tenant and the query that made it, under a key
// only the server knows. A token from another tenant, another query
// (other filters, another job) or altered in any byte is refused with
// INVALID_ARGUMENT, exactly as garbage is: a token is no way to learn
// whether another tenant's id exists.
//
// The key lives in the data directory (`page_token.key`, created on first
// start), so tokens stay valid across restarts of the server.
//
//   PageTokens pages(key);
//   response->set_next_page_token(pages.Make(tenant, query, last_id));
//   ASSIGN_OR_RETURN(std::string after, pages.Read(request->page_token(), tenant, query));
//
// Thread-safe: const after construction.
#ifndef TUNEFORGE_SERVER_PAGE_TOKEN_H_
#define TUNEFORGE_SERVER_PAGE_TOKEN_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tuneforge {

class PageTokens {
 public:
  // Reads the key at `path`, or makes a new random one there (mode 0600).
  static absl::StatusOr<PageTokens> LoadOrCreate(const std::string& path);
  explicit PageTokens(std::string key) : key_(std::move(key)) {}

  // The token for the page after `position` (an id, a sequence number).
  std::string Make(std::string_view tenant, std::string_view query,
                   std::string_view position) const;
  // The position a token made by Make() with the same tenant and query holds;
  // "" for an empty token (the first page). INVALID_ARGUMENT otherwise.
  absl::StatusOr<std::string> Read(std::string_view token, std::string_view tenant,
                                   std::string_view query) const;

 private:
  std::string Mac(std::string_view tenant, std::string_view query,
                  std::string_view position) const;
  std::string key_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_SERVER_PAGE_TOKEN_H_
