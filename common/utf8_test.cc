#include "common/utf8.h"

#include <gtest/gtest.h>

namespace tuneforge {
namespace {

TEST(Utf8Test, FindsAndReplacesInvalidSequences) {
  EXPECT_EQ(InvalidUtf8At("plain ascii, é, 中, 👍"), std::string_view::npos);
  EXPECT_EQ(InvalidUtf8At("ab\xC3"), 2u);            // cut mid-character
  EXPECT_EQ(InvalidUtf8At("\xC0\xAF"), 0u);          // overlong
  EXPECT_EQ(InvalidUtf8At("x\xED\xA0\x80"), 1u);     // a surrogate
  EXPECT_EQ(InvalidUtf8At("\xF4\x90\x80\x80"), 0u);  // past U+10FFFF
  EXPECT_EQ(ToValidUtf8("ok é"), "ok é");
  EXPECT_EQ(ToValidUtf8("a\xC3" "b\xFF"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_EQ(InvalidUtf8At(ToValidUtf8("\xE4\xB8\xAD\xE4\xB8")), std::string_view::npos);
}

}  // namespace
}  // namespace tuneforge
