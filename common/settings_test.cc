#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/settings_docs.h"
#include "common/settings_flags.h"
#include "common/settings_proto.h"
#include "common/training_settings.h"

namespace tuneforge {
namespace {

namespace pb = google::protobuf;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The table and the API agree: every setting is a Hyperparameters field of
// the declared number, type and presence, and every field is a setting.
TEST(SettingsTest, EverySettingIsAnApiFieldAndEveryFieldASetting) {
  const pb::Descriptor& d = *v1::Hyperparameters::descriptor();
  ASSERT_EQ(static_cast<size_t>(d.field_count()), TrainingSettingInfos().size());
  for (const SettingInfo& info : TrainingSettingInfos()) {
    SCOPED_TRACE(std::string(info.name));
    const pb::FieldDescriptor* f = d.FindFieldByName(std::string(info.name));
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->number(), info.proto_number);
    const std::string type = f->type() == pb::FieldDescriptor::TYPE_ENUM
                                 ? f->enum_type()->name()
                                 : std::string(f->type_name());
    const bool optional = f->has_presence();
    EXPECT_EQ((optional ? "optional " : "") + type, info.proto);
    EXPECT_TRUE(info.Check(TrainingSettings()).empty()) << "the default is out of bounds";
  }
}

TEST(SettingsTest, GeneratedProtoAndReadmeBlocksAreCurrent) {
  for (const GeneratedBlock& block : SettingsDocBlocks()) {
    const std::string text = ReadFile(std::string(TUNEFORGE_SOURCE_DIR) + "/" + block.path);
    absl::StatusOr<std::string> expected = ReplaceBlock(text, block);
    ASSERT_TRUE(expected.ok()) << expected.status();
    EXPECT_EQ(text, *expected) << block.path << " is stale: run `make settings`";
  }
}

TEST(SettingsTest, UnsetFieldsTakeTheTableDefaults) {
  absl::StatusOr<TrainingSettings> s = SettingsFromProto(v1::Hyperparameters());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->epochs, 3);
  EXPECT_EQ(s->learning_rate, 1e-4);
  EXPECT_EQ(s->schedule, "cosine");
  EXPECT_EQ(s->weight_decay, 0.01);
  EXPECT_TRUE(s->group_by_length);
  EXPECT_EQ(s->seed, 42u);
  EXPECT_EQ(s->divergence_factor, 4.0);
  EXPECT_EQ(s->sample_count, 2);
  // Where the field has presence, 0 is a value of its own.
  v1::Hyperparameters h;
  h.set_weight_decay(0);
  h.set_seed(0);
  h.set_group_by_length(false);
  h.set_sample_count(0);
  s = SettingsFromProto(h);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->weight_decay, 0);
  EXPECT_EQ(s->seed, 0u);
  EXPECT_FALSE(s->group_by_length);
  EXPECT_EQ(s->sample_count, 0);
}

TEST(SettingsTest, ProtoAndJsonRoundTripEveryValue) {
  TrainingSettings s;
  s.epochs = 7;
  s.learning_rate = 3e-3;
  s.schedule = "linear";
  s.seed = 0;
  s.group_by_length = false;
  s.chat_template = "chatml";
  s.precision = "bf16";
  s.warmup_steps = 0;
  v1::Hyperparameters h;
  SettingsToProto(s, &h);
  EXPECT_EQ(h.schedule(), v1::LEARNING_RATE_SCHEDULE_LINEAR);
  absl::StatusOr<TrainingSettings> back = SettingsFromProto(h);
  ASSERT_TRUE(back.ok()) << back.status();
  const TrainingSettings from_json = nlohmann::json(s).get<TrainingSettings>();
  for (const SettingInfo& info : TrainingSettingInfos()) {
    EXPECT_EQ(info.get(*back), info.get(s)) << info.name;
    EXPECT_EQ(info.get(from_json), info.get(s)) << info.name;
  }
  // A stored record without a newer setting reads its default.
  const TrainingSettings old = nlohmann::json{{"epochs", 5}}.get<TrainingSettings>();
  EXPECT_EQ(old.epochs, 5);
  EXPECT_EQ(old.sample_count, 2);
  // Only the named settings are written.
  v1::Hyperparameters partial;
  const std::vector<std::string> only = {"epochs"};
  SettingsToProto(s, &partial, &only);
  EXPECT_EQ(partial.epochs(), 7);
  EXPECT_EQ(partial.learning_rate(), 0);
  EXPECT_FALSE(partial.has_seed());
}

TEST(SettingsTest, AnUnknownEnumNumberIsNamed) {
  v1::Hyperparameters h;
  h.set_schedule(static_cast<v1::LearningRateSchedule>(9));
  absl::StatusOr<TrainingSettings> s = SettingsFromProto(h);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "schedule: 9 is not a LearningRateSchedule value");
}

TEST(SettingsTest, BoundsSayWhatIsAllowedAndWhatCame) {
  TrainingSettings s;
  EXPECT_TRUE(CheckSettings(s).ok());
  s.learning_rate = 0;
  EXPECT_EQ(CheckSettings(s).message(), "learning_rate: must be in (0, 1], got 0");
  s = TrainingSettings();
  s.max_seq_len = -1;
  EXPECT_EQ(CheckSettings(s).message(),
            "max_seq_len: must be in [0, 1048576] (0: the model's context length), got -1");
  s = TrainingSettings();
  s.divergence_factor = 1.2;
  EXPECT_EQ(CheckSettings(s).message(),
            "divergence_factor: must be 0 (off) or in [1.5, 1000], got 1.2");
  s.divergence_factor = 0;
  EXPECT_TRUE(CheckSettings(s).ok());
  s.precision = "fp16";
  EXPECT_EQ(CheckSettings(s).message(), "precision: must be one of auto, fp32, bf16, got fp16");
  s = TrainingSettings();
  s.warmup_ratio = 1;
  EXPECT_EQ(CheckSettings(s).message(), "warmup_ratio: must be in [0, 1), got 1");
  s.warmup_ratio = std::nan("");
  EXPECT_EQ(CheckSettings(s).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SettingsTest, FlagsParseIntoTheSettingsAndReportWhichWereGiven) {
  CLI::App app;
  TrainingSettings s;
  std::vector<SettingFlag> flags = AddSettingFlags(app, s);
  ASSERT_EQ(flags.size(), TrainingSettingInfos().size());
  std::vector<std::string> args = {"--no-group-by-length", "--seed", "7", "--schedule", "linear",
                                   "--grad-accum", "4", "--learning-rate", "3e-4", "--packing"};
  std::reverse(args.begin(), args.end());
  app.parse(args);
  EXPECT_FALSE(s.group_by_length);
  EXPECT_TRUE(s.packing);
  EXPECT_EQ(s.seed, 7u);
  EXPECT_EQ(s.schedule, "linear");
  EXPECT_EQ(s.gradient_accumulation_steps, 4);
  EXPECT_EQ(s.learning_rate, 3e-4);
  std::vector<std::string> given;
  for (const SettingFlag& f : flags) {
    if (f.Given()) given.emplace_back(f.info->name);
  }
  EXPECT_EQ(given, (std::vector<std::string>{"learning_rate", "schedule",
                                             "gradient_accumulation_steps", "seed", "packing",
                                             "group_by_length"}));

  CLI::App bad;
  TrainingSettings t;
  AddSettingFlags(bad, t);
  std::vector<std::string> wrong = {"x3", "--epochs"};
  EXPECT_THROW(bad.parse(wrong), CLI::ValidationError);
  std::vector<std::string> negative = {"-1", "--seed"};
  EXPECT_THROW(bad.parse(negative), CLI::ParseError);
}

TEST(SettingsTest, TheFingerprintTextHoldsExactlyTheMustMatchSettings) {
  TrainingSettings s;
  const std::string base = MustMatchText(s);
  EXPECT_NE(base.find("learning_rate=0.0001"), std::string::npos) << base;
  EXPECT_NE(base.find("schedule=cosine"), std::string::npos) << base;
  s.learning_rate = 2e-4;
  EXPECT_NE(MustMatchText(s), base);
  s = TrainingSettings();
  s.log_every_steps = 1;  // may change on resume
  EXPECT_EQ(MustMatchText(s), base);
}

}  // namespace
}  // namespace tuneforge
