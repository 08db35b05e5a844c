// End to end, what jobs train on and with: datasets of every format
// (prompt/completion, chat, plain text) uploaded through the real CLI to a
// real scheduler with a local worker, an upload cut off and resumed, a broken
// dataset reported and refused for jobs; a Hugging Face folder imported as a
// model, fine-tuned and fine-tuned again, and broken model folders refused.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "tests/cluster.h"
#include "tuneforge/v1/dataset.grpc.pb.h"

namespace tuneforge::testing {
namespace {

// A Hugging Face folder goes in through `models import`, is fine-tuned, the
// result is a model of its own that a second job fine-tunes further, and
// models in use cannot be deleted.
TEST_F(EndToEndTest, ImportFineTuneAndContinueAModel) {
  const std::string folder = dir_ + "/tiny-llama";
  RunResult init = testing::Run("tuneforge-train", {"init", "--preset", "tiny-llama", "--output",
                                                     folder, "--seed", "7"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  WriteFile(folder + "/README.md", "not a model file\n");
  RunResult imported = server_->Cli({"-o", "json", "models", "import", folder,
                                     "--display-name", "my llama"});
  ASSERT_EQ(imported.exit_code, 0) << imported.out << imported.err;
  EXPECT_NE(imported.err.find("skipping README.md"), std::string::npos) << imported.err;
  json m = json::parse(imported.out);
  const std::string model = m["name"];
  EXPECT_EQ(model.rfind("models/m", 0), 0u) << model;
  EXPECT_EQ(m["source"], "MODEL_SOURCE_IMPORTED");
  EXPECT_EQ(m["modelType"], "llama");
  EXPECT_EQ(m["parameterCount"], "792192");
  EXPECT_EQ(m["contextLength"], 256);
  EXPECT_EQ(m["dtype"], "F32");
  EXPECT_EQ(m["tokenizer"], "byte-level BPE, 258 tokens, 0 merges");
  EXPECT_EQ(m["files"].size(), 3u);

  RunResult listed = server_->Cli({"models", "list"});
  EXPECT_NE(listed.out.find("models/tiny-gpt2"), std::string::npos);
  EXPECT_NE(listed.out.find(model), std::string::npos) << listed.out;

  const std::string dataset = UploadDataset(dir_ + "/data.json");
  auto train = [&](const std::string& base) {
    RunResult r = server_->Cli({"-o", "name", "jobs", "create", "--model", base,
                                "--training-dataset", dataset, "--epochs", "2",
                                "--learning-rate", "3e-3", "--max-seq-len", "64", "--follow"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err << server_->Log();
    return r.out.substr(0, r.out.find('\n'));
  };
  const std::string first = train(model);
  json j1 = GetJob(first);
  ASSERT_EQ(j1["state"], "JOB_STATE_SUCCEEDED") << j1.dump(2);
  const std::string result = j1["resultModel"];
  EXPECT_EQ(result, "models/ft-" + first.substr(5));
  json r1 = ParseJson(server_->Cli({"-o", "json", "models", "get", result}));
  EXPECT_EQ(r1["source"], "MODEL_SOURCE_JOB");
  EXPECT_EQ(r1["sourceJob"], first);
  EXPECT_EQ(r1["baseModel"], model);
  EXPECT_EQ(r1["parameterCount"], "792192");
  // The tokenizer came through unchanged (same bytes, same blob).
  std::map<std::string, std::string> base_files, result_files;
  for (const json& f : m["files"]) base_files[f["path"]] = f["sha256"];
  for (const json& f : r1["files"]) result_files[f["path"]] = f["sha256"];
  EXPECT_EQ(result_files["tokenizer.json"], base_files["tokenizer.json"]);
  EXPECT_NE(result_files["model.safetensors"], base_files["model.safetensors"]);

  // Continued fine-tuning, named by the job: it starts where the first ended.
  const std::string second = train(first);
  json j2 = GetJob(second);
  EXPECT_EQ(j2["baseModel"], result);
  RunResult w1 = server_->Cli({"jobs", "watch", first});
  RunResult w2 = server_->Cli({"jobs", "watch", second});
  auto first_loss = [](const std::string& out) {
    size_t at = out.find("train_loss ");
    return at == std::string::npos ? -1.0 : std::stod(out.substr(at + 11));
  };
  EXPECT_LT(first_loss(w2.out), first_loss(w1.out) - 0.5) << w1.out << w2.out;

  // A model a queued job uses cannot be deleted; a preset never.
  RunResult queued = server_->Cli({"-o", "name", "jobs", "create", "--model", result,
                                   "--training-dataset", dataset, "--epochs", "50"});
  ASSERT_EQ(queued.exit_code, 0) << queued.err;
  RunResult refused = server_->Cli({"models", "delete", result});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("cancel it first"), std::string::npos) << refused.err;
  const std::string third = queued.out.substr(0, queued.out.find('\n'));
  EXPECT_EQ(server_->Cli({"jobs", "cancel", third}).exit_code, 0);
  EXPECT_EQ(server_->Cli({"jobs", "watch", third}).exit_code, 1);  // until it is CANCELLED
  RunResult preset = server_->Cli({"models", "delete", "tiny-gpt2"});
  EXPECT_NE(preset.err.find("built in"), std::string::npos) << preset.err;
  // Once no job uses them, both go, and their blobs with them, but for bytes
  // something else still lists: the two jobs' artifacts hold the same
  // config.json and tokenizer.json as the base model.
  for (const std::string& name : {model, result, std::string(j2["resultModel"])}) {
    RunResult gone = server_->Cli({"models", "delete", name});
    EXPECT_EQ(gone.exit_code, 0) << name << gone.err;
  }
  EXPECT_EQ(server_->Cli({"models", "get", model}).exit_code, 4);
  for (const auto& [path, sha] : base_files) {
    const bool artifact = path == "config.json" || path == "tokenizer.json";
    EXPECT_EQ(std::filesystem::exists(dir_ + "/data/blobs/" + sha.substr(0, 2) + "/" + sha),
              artifact)
        << path;
  }
}

// A broken folder is refused at import, naming the file and tensor, and
// leaves nothing behind.
TEST_F(EndToEndTest, BrokenModelFoldersAreRefusedWithTheirFault) {
  const std::string folder = dir_ + "/broken";
  ASSERT_EQ(testing::Run("tuneforge-train",
                         {"init", "--preset", "tiny-gpt2", "--output", folder}).exit_code,
            0);
  std::string config;
  {
    std::ifstream in(folder + "/config.json");
    config.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto import_error = [&]() {
    RunResult r = server_->Cli({"models", "import", folder});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    return r.err;
  };
  // One layer more than the weights hold.
  WriteFile(folder + "/config.json",
            std::regex_replace(config, std::regex("\"n_layer\": 4"), "\"n_layer\": 5"));
  EXPECT_NE(import_error().find("missing tensor transformer.h.4."), std::string::npos);
  // A wider vocabulary than the embedding.
  WriteFile(folder + "/config.json",
            std::regex_replace(config, std::regex("\"vocab_size\": 258"), "\"vocab_size\": 300"));
  EXPECT_NE(import_error().find("transformer.wte.weight has shape [258, 128], config.json says "
                                "[300, 128]"),
            std::string::npos);
  // An architecture the engine does not have.
  WriteFile(folder + "/config.json",
            std::regex_replace(config, std::regex("\"gpt2\""), "\"bert\""));
  EXPECT_NE(import_error().find("unsupported model_type \"bert\""), std::string::npos);
  // No tokenizer.
  WriteFile(folder + "/config.json", config);
  std::filesystem::remove(folder + "/tokenizer.json");
  EXPECT_NE(import_error().find("no tokenizer"), std::string::npos);
  // Nothing was stored: no model, no blob.
  RunResult listed = server_->Cli({"-o", "name", "models", "list"});
  EXPECT_EQ(listed.out.find("models/m"), std::string::npos) << listed.out;
  size_t blobs = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir_ + "/data/blobs")) {
    blobs += e.is_regular_file();
  }
  EXPECT_EQ(blobs, 0u);
}

TEST_F(EndToEndTest, ChatAndPlainTextDatasetsTrain) {
  std::string chat;
  for (int i = 0; i < 12; ++i) {
    chat += R"({"messages": [{"role": "system", "content": "You answer HR questions."}, )"
            R"({"role": "user", "content": "Leave in year )" + std::to_string(2000 + i) +
            R"(?"}, {"role": "assistant", "content": ")" + std::to_string(20 + i) +
            " days.\"}]}\n";
  }
  WriteFile(dir_ + "/chat.jsonl", chat);
  std::string docs;
  for (int i = 0; i < 12; ++i) {
    docs += (i ? "\n---\n" : "") + std::string("Policy ") + std::to_string(i) +
            ": employees get " + std::to_string(20 + i) + " days of leave.";
  }
  WriteFile(dir_ + "/handbook.txt", docs);

  RunResult text_upload = server_->Cli({"-o", "json", "datasets", "upload",
                                        dir_ + "/handbook.txt", "--separator", "\n---\n"});
  ASSERT_EQ(text_upload.exit_code, 0) << text_upload.out << text_upload.err;
  json text = json::parse(text_upload.out);
  EXPECT_EQ(text["report"]["format"], "DATASET_FORMAT_TEXT");
  EXPECT_EQ(text["report"]["exampleCount"], "12");
  EXPECT_EQ(text["separator"], "\n---\n");

  for (const std::string& dataset : {text["name"].get<std::string>(),
                                     UploadDataset(dir_ + "/chat.jsonl")}) {
    const std::string job = CreateJob(dataset, 2);
    RunResult watch = server_->Cli({"jobs", "watch", job});
    EXPECT_EQ(watch.exit_code, 0) << watch.out << watch.err << server_->Log();
    EXPECT_NE(watch.out.find("validation_loss"), std::string::npos) << watch.out;
    if (dataset != text["name"]) {
      // Samples continue the conversation from the assistant's turn.
      EXPECT_NE(watch.out.find("user: Leave in year"), std::string::npos) << watch.out;
      EXPECT_NE(watch.out.find("assistant:  ->"), std::string::npos) << watch.out;
    }
  }
}

// A dropped connection keeps what arrived; running the upload again sends
// only the rest.
TEST_F(EndToEndTest, InterruptedUploadResumes) {
  std::string bytes;
  for (int i = 0; bytes.size() < 3'000'000; ++i) {
    bytes += "{\"prompt\": \"question " + std::to_string(i) + "\", \"completion\": \"answer\"}\n";
  }
  WriteFile(dir_ + "/big.jsonl", bytes);
  RunResult sha =
      testing::Run("tuneforge", {"-o", "json", "datasets", "validate", dir_ + "/big.jsonl"});
  ASSERT_EQ(sha.exit_code, 0);

  // Another client sends the first half, then its connection drops.
  auto stub = v1::DatasetService::NewStub(
      grpc::CreateChannel(server_->addr(), grpc::InsecureChannelCredentials()));
  const std::string upload_id = "resume-test";
  {
    grpc::ClientContext ctx;
    v1::Dataset ignored;
    auto writer = stub->UploadDataset(&ctx, &ignored);
    v1::UploadDatasetRequest req;
    req.mutable_metadata()->set_display_name("big.jsonl");
    req.mutable_metadata()->set_size_bytes(static_cast<int64_t>(bytes.size()));
    req.mutable_metadata()->set_upload_id(upload_id);
    req.mutable_metadata()->set_sha256(Sha256::Of(bytes));  // as the CLI sends it
    ASSERT_TRUE(writer->Write(req));
    for (size_t off = 0; off < bytes.size() / 2; off += 100'000) {
      v1::UploadDatasetRequest chunk;
      chunk.set_chunk(bytes.substr(off, 100'000));
      ASSERT_TRUE(writer->Write(chunk));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let the server read them
    ctx.TryCancel();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The server keeps what arrived once it has seen the stream end (a moment
  // after the client's cancel).
  v1::QueryUploadRequest query;
  query.set_upload_id(upload_id);
  v1::QueryUploadResponse kept;
  for (int i = 0; i < 100 && kept.committed_size() == 0; ++i) {
    grpc::ClientContext qctx;
    ASSERT_TRUE(stub->QueryUpload(&qctx, query, &kept).ok());
    if (kept.committed_size() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GT(kept.committed_size(), 0);
  EXPECT_LE(kept.committed_size(), static_cast<int64_t>(bytes.size() / 2 + 100'000));

  // The CLI, given the same upload id and metadata, sends only the rest.
  RunResult resumed = server_->Cli({"-o", "json", "datasets", "upload", dir_ + "/big.jsonl",
                                    "--upload-id", upload_id});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.err.find("resuming upload resume-test at byte " +
                             std::to_string(kept.committed_size())),
            std::string::npos)
      << resumed.err;
  json d = json::parse(resumed.out);
  EXPECT_EQ(d["state"], "DATASET_STATE_READY");
  EXPECT_EQ(d["sizeBytes"], std::to_string(bytes.size()));
  EXPECT_EQ(d["report"]["exampleCount"], json::parse(sha.out)["exampleCount"]);
}

TEST_F(EndToEndTest, BrokenDatasetIsReportedAndRefusedForJobs) {
  WriteFile(dir_ + "/broken.jsonl",
            "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
            "{\"prompt\": \"a\"}\n"
            "not json\n");
  // A dry run on the server reports the same and stores nothing.
  RunResult dry = server_->Cli({"datasets", "validate", "--remote", dir_ + "/broken.jsonl"});
  EXPECT_EQ(dry.exit_code, 1) << dry.out << dry.err;
  EXPECT_NE(dry.out.find("line 2, column 1, record 2, field /completion"), std::string::npos)
      << dry.out;
  EXPECT_EQ(server_->Cli({"-o", "name", "datasets", "list"}).out, "");

  RunResult upload = server_->Cli({"datasets", "upload", dir_ + "/broken.jsonl"});
  EXPECT_EQ(upload.exit_code, 1);
  EXPECT_NE(upload.out.find("INVALID"), std::string::npos) << upload.out;
  EXPECT_NE(upload.out.find("line 2, column 1, record 2, field /completion"), std::string::npos)
      << upload.out;
  EXPECT_NE(upload.out.find("line 3"), std::string::npos);

  std::string dataset = server_->Cli({"-o", "name", "datasets", "list"}).out;
  dataset = dataset.substr(0, dataset.find('\n'));
  RunResult create = server_->Cli({"jobs", "create", "--training-dataset", dataset});
  EXPECT_EQ(create.exit_code, 1);
  EXPECT_NE(create.err.find("INVALID with 2 errors"), std::string::npos) << create.err;
  EXPECT_EQ(server_->Cli({"datasets", "delete", dataset}).exit_code, 0);
  EXPECT_EQ(server_->Cli({"datasets", "get", dataset}).exit_code, 4);
}

}  // namespace
}  // namespace tuneforge::testing
