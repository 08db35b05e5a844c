#include "common/dataset.h"

#include <set>

#include <gtest/gtest.h>

namespace tuneforge {
namespace {

Example PromptCompletion(std::string prompt, std::string completion) {
  Example e;
  e.prompt = std::move(prompt);
  e.completion = std::move(completion);
  return e;
}

TEST(RenderTest, PromptCompletionGetsOneSeparatingSpace) {
  std::vector<Segment> s = Render(PromptCompletion("How much leave?", "25 days."));
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].text, "How much leave? ");
  EXPECT_FALSE(s[0].trained);
  EXPECT_EQ(s[1].text, "25 days.");
  EXPECT_TRUE(s[1].trained);
  EXPECT_EQ(Render(PromptCompletion("Q:\n", "A"))[0].text, "Q:\n");
  EXPECT_EQ(Render(PromptCompletion("Q:", " A"))[0].text, "Q:");
  EXPECT_TRUE(Render(PromptCompletion("Q", "A"), /*train_on_prompt=*/true)[0].trained);
  EXPECT_EQ(JoinText(GenerationPrompt(PromptCompletion("How much leave?", "25 days."))),
            "How much leave? ");
  EXPECT_EQ(ByteTokenCount(PromptCompletion("ab", "cd")), 6);  // "ab cd" + end-of-text
}

TEST(RenderTest, ChatTrainsAssistantTurnsWithWeight) {
  Example e;
  e.format = DatasetFormat::kChat;
  e.messages = {{"system", "Be brief.", true},
                {"user", "Leave?", true},
                {"assistant", "25 days.", false},
                {"user", "Sick pay?", true},
                {"assistant", "20 days.", true}};
  std::vector<Segment> s = Render(e);
  ASSERT_EQ(s.size(), 10u);
  EXPECT_EQ(s[0].text, "system: ");
  EXPECT_EQ(s[1].text, "Be brief.\n");
  EXPECT_FALSE(s[5].trained);  // weight 0
  EXPECT_EQ(s[9].text, "20 days.\n");
  EXPECT_TRUE(s[9].trained);
  EXPECT_FALSE(s[8].trained);  // the header
  EXPECT_EQ(JoinText(GenerationPrompt(e)),
            "system: Be brief.\nuser: Leave?\nassistant: 25 days.\nuser: Sick pay?\n"
            "assistant: ");
  EXPECT_TRUE(NeedsEndOfText(e, ChatTemplate::kPlain));
}

Example Conversation() {
  Example e;
  e.format = DatasetFormat::kChat;
  e.messages = {{"system", "Be brief.", true},
                {"user", "Leave?", true},
                {"assistant", " 25 days. ", false},
                {"user", "Sick pay?", true},
                {"assistant", "20 days.", true}};
  return e;
}

// The trained text of the segments, and all of it.
std::string TrainedText(const std::vector<Segment>& segments) {
  std::string out;
  for (const Segment& s : segments) {
    if (s.trained) out += s.text;
  }
  return out;
}

TEST(RenderTest, ChatMlAsQwenWritesIt) {
  Example e = Conversation();
  std::vector<Segment> s = Render(e, false, ChatTemplate::kChatMl);
  EXPECT_EQ(JoinText(s),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nLeave?<|im_end|>\n"
            "<|im_start|>assistant\n 25 days. <|im_end|>\n<|im_start|>user\nSick pay?<|im_end|>\n"
            "<|im_start|>assistant\n20 days.<|im_end|>\n");
  // Loss on the trained assistant turn's content and its end-of-turn token.
  EXPECT_EQ(TrainedText(s), "20 days.<|im_end|>");
  for (const Segment& seg : s) EXPECT_EQ(seg.special, seg.text.rfind("<|im_", 0) == 0) << seg.text;
  EXPECT_FALSE(NeedsEndOfText(e, ChatTemplate::kChatMl));
  EXPECT_EQ(JoinText(GenerationPrompt(e, ChatTemplate::kChatMl)),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nLeave?<|im_end|>\n"
            "<|im_start|>assistant\n 25 days. <|im_end|>\n<|im_start|>user\nSick pay?<|im_end|>\n"
            "<|im_start|>assistant\n");
  // train_on_prompt trains everything but the weight-0 turn.
  std::vector<Segment> all = Render(e, true, ChatTemplate::kChatMl);
  EXPECT_EQ(TrainedText(all),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nLeave?<|im_end|>\n"
            "<|im_start|>user\nSick pay?<|im_end|>\n<|im_start|>assistant\n20 days.<|im_end|>\n");
}

TEST(RenderTest, Llama3AsItsTemplateWritesIt) {
  Example e = Conversation();
  std::vector<Segment> s = Render(e, false, ChatTemplate::kLlama3);
  EXPECT_EQ(JoinText(s),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nLeave?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n25 days.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nSick pay?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n20 days.<|eot_id|>");
  EXPECT_EQ(TrainedText(s), "20 days.<|eot_id|>");
  EXPECT_EQ(JoinText(GenerationPrompt(e, ChatTemplate::kLlama3)).substr(247),
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(ChatTemplateTokens(ChatTemplate::kLlama3)[0], "<|eot_id|>");
  EXPECT_EQ(ChatTemplateTokens(ChatTemplate::kChatMl)[0], "<|im_end|>");
  EXPECT_TRUE(ChatTemplateTokens(ChatTemplate::kPlain).empty());
  EXPECT_EQ(ParseChatTemplate("llama3"), ChatTemplate::kLlama3);
  EXPECT_EQ(ParseChatTemplate("chatml"), ChatTemplate::kChatMl);
  EXPECT_EQ(ParseChatTemplate("plain"), ChatTemplate::kPlain);
  EXPECT_EQ(ParseChatTemplate("ChatML"), std::nullopt);
}

TEST(RenderTest, TemplatesLeavePromptCompletionAndTextAlone) {
  Example pc = PromptCompletion("Q", "A");
  EXPECT_EQ(JoinText(Render(pc, false, ChatTemplate::kChatMl)), "Q A");
  EXPECT_TRUE(NeedsEndOfText(pc, ChatTemplate::kLlama3));
}

TEST(RenderTest, TextIsAllTrained) {
  Example e;
  e.format = DatasetFormat::kText;
  e.text = "Policy.";
  ASSERT_EQ(Render(e).size(), 1u);
  EXPECT_TRUE(Render(e)[0].trained);
  EXPECT_TRUE(GenerationPrompt(e).empty());
}

TEST(ExampleKeyTest, EqualContentEqualKey) {
  EXPECT_EQ(ExampleKey(PromptCompletion("a", "b")), ExampleKey(PromptCompletion("a", "b")));
  EXPECT_NE(ExampleKey(PromptCompletion("a", "b")), ExampleKey(PromptCompletion("ab", "")));
  EXPECT_NE(ExampleKey(PromptCompletion("a", "b")), ExampleKey(PromptCompletion("b", "a")));
}

TEST(SplitTest, DeterministicDisjointAndComplete) {
  std::vector<uint64_t> keys;
  for (uint64_t i = 0; i < 100; ++i) keys.push_back(i);
  Split a = SplitExamples(keys, 0.1, 7);
  Split b = SplitExamples(keys, 0.1, 7);
  Split c = SplitExamples(keys, 0.1, 8);
  EXPECT_EQ(a.validation, b.validation);
  EXPECT_NE(a.validation, c.validation);
  EXPECT_EQ(a.validation.size(), 10u);
  EXPECT_EQ(a.train.size(), 90u);
  std::set<int64_t> all(a.train.begin(), a.train.end());
  all.insert(a.validation.begin(), a.validation.end());
  EXPECT_EQ(all.size(), 100u);
  EXPECT_EQ(ValidationCount(1, 0.5), 0);
  EXPECT_EQ(ValidationCount(2, 0.01), 1);
  EXPECT_EQ(ValidationCount(10, 0.99), 9);
}

TEST(SplitTest, DuplicatesStayOnOneSide) {
  // 20 distinct examples, each present three times.
  std::vector<Example> examples;
  for (int copy = 0; copy < 3; ++copy) {
    for (int i = 0; i < 20; ++i) examples.push_back(PromptCompletion("q" + std::to_string(i), "a"));
  }
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Split s = SplitExamples(examples, 0.25, seed);
    EXPECT_EQ(s.validation.size(), 15u);  // 60 * 0.25, in whole groups of 3
    std::set<std::string> validation_prompts;
    for (int64_t i : s.validation) validation_prompts.insert(examples[i].prompt);
    for (int64_t i : s.train) {
      EXPECT_EQ(validation_prompts.count(examples[i].prompt), 0u) << "seed " << seed;
    }
  }
}

}  // namespace
}  // namespace tuneforge
