// tuneforge-train: the training engine as a standalone command. Trains a preset
// on local dataset files and prints the same metrics a job streams, with no
// scheduler and no RPC.
//
//   tuneforge-train --data examples/hr.json --epochs 3 --learning-rate 1e-3
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <exception>

#include <CLI/CLI.hpp>

#include "common/file_util.h"
#include "common/dataset.h"
#include "common/dataset_validator.h"
#include "worker/engine/bpe_tokenizer.h"
#include "worker/engine/byte_tokenizer.h"
#include "worker/engine/gpt.h"
#include "worker/engine/hf_gpt2.h"
#include "worker/engine/openmp_env.h"
#include "worker/engine/trainer.h"

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

using tuneforge::engine::EvalMetrics;
using tuneforge::engine::StepMetrics;
using tuneforge::engine::TrainPlan;

class PrintingObserver : public tuneforge::engine::TrainObserver {
 public:
  void OnStart(const TrainPlan& p) override {
    std::printf("model: %lld parameters, %d threads\n", static_cast<long long>(p.parameter_count),
                p.threads);
    std::printf("data: %lld training, %lld validation examples, %lld truncated; %lld steps\n",
                static_cast<long long>(p.train_examples),
                static_cast<long long>(p.validation_examples),
                static_cast<long long>(p.truncated_examples),
                static_cast<long long>(p.total_steps));
  }
  void OnMetrics(const StepMetrics& m) override {
    std::printf("epoch %d step %lld/%lld  train_loss %.4f  lr %.2e  grad_norm %.3f  "
                "tokens/s %.0f  eta %.0fs\n",
                m.epoch, static_cast<long long>(m.step), static_cast<long long>(m.total_steps),
                m.loss, m.learning_rate, m.grad_norm, m.tokens_per_second, m.eta_seconds);
    std::fflush(stdout);
  }
  void OnEvaluation(const EvalMetrics& m) override {
    std::printf("epoch %d step %lld  validation_loss %.4f  perplexity %.2f  token_accuracy %.3f\n",
                m.epoch, static_cast<long long>(m.step), m.loss, m.perplexity,
                m.token_accuracy);
    std::fflush(stdout);
  }
  void OnSample(const std::string& prompt, const std::string& completion,
                int64_t step) override {
    std::printf("sample: %s -> %s\n", prompt.c_str(), completion.c_str());
  }
};

// Reads and parses a dataset file; prints its problems and exits on errors.
std::vector<tuneforge::Example> Load(const std::string& path,
                                     const tuneforge::ValidatorOptions& options) {
  std::string bytes;
  if (!tuneforge::ReadWholeFile(path, &bytes)) {
    std::fprintf(stderr, "tuneforge-train: cannot read %s\n", path.c_str());
    std::exit(2);
  }
  tuneforge::ParsedDataset parsed = tuneforge::ParseDataset(bytes, options);
  for (const auto& p : parsed.report.problems) {
    std::fprintf(stderr, "%s:%lld:%lld: %s: %s [%s]%s%s\n", path.c_str(),
                 static_cast<long long>(p.line), static_cast<long long>(p.column),
                 p.severity == tuneforge::Severity::kError ? "error" : "warning",
                 p.message.c_str(), p.code.c_str(), p.field.empty() ? "" : " at ",
                 p.field.c_str());
  }
  if (parsed.report.error_count > 0) {
    std::fprintf(stderr, "tuneforge-train: %s has %lld errors\n", path.c_str(),
                 static_cast<long long>(parsed.report.error_count));
    std::exit(1);
  }
  return std::move(parsed.examples);
}

// The BPE tokenizer of a model folder: tokenizer.json, or vocab.json +
// merges.txt; null (with `*error` empty) when the folder has neither.
std::unique_ptr<tuneforge::engine::BpeTokenizer> LoadTokenizer(const std::string& dir,
                                                               std::string* error) {
  using tuneforge::engine::BpeTokenizer;
  if (std::filesystem::exists(dir + "/tokenizer.json")) {
    return BpeTokenizer::FromTokenizerJson(dir + "/tokenizer.json", error);
  }
  if (std::filesystem::exists(dir + "/vocab.json")) {
    return BpeTokenizer::FromVocabMerges(dir + "/vocab.json", dir + "/merges.txt", error);
  }
  return nullptr;
}

// `tuneforge-train generate`: a saved model continues a prompt, with the
// folder's BPE tokenizer, or bytes for the byte-level presets.
int GenerateText(const std::string& dir, const std::string& prompt,
                 tuneforge::engine::SamplingOptions sampling) {
  using tuneforge::engine::ByteTokenizer;
  std::string error;
  std::optional<tuneforge::engine::Gpt> model = tuneforge::engine::LoadHfGpt2(dir, &error);
  if (!model) {
    std::fprintf(stderr, "tuneforge-train: %s\n", error.c_str());
    return 1;
  }
  std::unique_ptr<tuneforge::engine::BpeTokenizer> bpe = LoadTokenizer(dir, &error);
  if (!error.empty()) {
    std::fprintf(stderr, "tuneforge-train: %s\n", error.c_str());
    return 1;
  }
  const int64_t vocab = bpe ? bpe->vocab_size() : ByteTokenizer::kVocabSize;
  if (vocab > (*model)->config().vocab_size) {
    std::fprintf(stderr, "tuneforge-train: the tokenizer has %lld tokens but the model only %lld\n",
                 static_cast<long long>(vocab),
                 static_cast<long long>((*model)->config().vocab_size));
    return 1;
  }
  std::vector<int64_t> ids = bpe ? bpe->Encode(prompt) : ByteTokenizer::Encode(prompt);
  sampling.stop_token = bpe ? bpe->TokenId("<|endoftext|>").value_or(-1) : ByteTokenizer::kEndOfText;
  try {
    std::vector<int64_t> out = tuneforge::engine::Generate(*model, ids, sampling);
    std::printf("%s\n", (bpe ? bpe->Decode(out) : ByteTokenizer::Decode(out)).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tuneforge-train: %s\n", e.what());
    return 1;
  }
  return 0;
}

// `tuneforge-train tokenize`: the BPE tokenizer on its own, checkable
// against any reference.
int Tokenize(const std::string& dir, bool timing) {
  std::string error;
  std::unique_ptr<tuneforge::engine::BpeTokenizer> tok = LoadTokenizer(dir, &error);
  if (!tok) {
    if (error.empty()) error = dir + " has neither tokenizer.json nor vocab.json + merges.txt";
    std::fprintf(stderr, "tuneforge-train: %s\n", error.c_str());
    return 1;
  }
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  const auto start = std::chrono::steady_clock::now();
  std::vector<int64_t> ids = tok->Encode(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
  std::printf("%s\n", out.c_str());
  if (timing) {
    std::fprintf(stderr, "encoded %zu bytes into %zu tokens in %.3f s: %.1f MB/s\n", text.size(),
                 ids.size(), seconds, static_cast<double>(text.size()) / 1e6 / seconds);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tuneforge::engine::UsePassiveOpenMpWait(argv);
  CLI::App app{"tuneforge-train: fine-tune a model on local files, no server"};
  tuneforge::engine::TrainConfig config;
  std::string data, validation;
  double split = 0.1;
  app.add_option("--data", data, "training dataset (JSON array or JSONL)");
  app.add_option("--validation", validation, "validation dataset; else --validation-split");
  app.add_option("--validation-split", split, "fraction held out for validation")
      ->capture_default_str();
  std::string format, separator;
  app.add_option("--format", format, "prompt_completion, chat or text (default: detect; "
                                     ".txt and .md files are text)");
  app.add_option("--separator", separator, "plain text: split documents on this string");
  app.add_option("--model", config.model, "preset")->capture_default_str();
  app.add_option("--epochs", config.epochs)->capture_default_str();
  app.add_option("--batch-size", config.batch_size)->capture_default_str();
  app.add_option("--learning-rate", config.learning_rate)->capture_default_str();
  app.add_option("--warmup-steps", config.warmup_steps)->capture_default_str();
  app.add_option("--weight-decay", config.weight_decay)->capture_default_str();
  app.add_option("--max-seq-len", config.max_seq_len, "0: the model's context")
      ->capture_default_str();
  app.add_option("--grad-accum", config.gradient_accumulation_steps)->capture_default_str();
  app.add_option("--seed", config.seed)->capture_default_str();
  app.add_option("--log-every", config.log_every_steps)->capture_default_str();
  app.add_option("--output", config.output_dir,
                 "save the trained model here as a Hugging Face GPT-2 folder");
  app.add_option("--threads", config.threads, "0: the cores this process may use")
      ->capture_default_str();
  std::string tokenizer_dir;
  bool timing = false;
  CLI::App* tokenize = app.add_subcommand(
      "tokenize", "read text on standard input, print its token ids, space-separated");
  tokenize->add_option("--model", tokenizer_dir,
                       "a folder with tokenizer.json, or vocab.json and merges.txt")
      ->required();
  tokenize->add_flag("--time", timing, "print the encoding throughput on standard error");
  CLI::App* generate = app.add_subcommand("generate", "continue a prompt with a saved model");
  std::string prompt;
  tuneforge::engine::SamplingOptions sampling;
  generate->add_option("--model", tokenizer_dir,
                       "a Hugging Face GPT-2 folder (its tokenizer files, or bytes)")
      ->required();
  generate->add_option("--prompt", prompt)->required();
  generate->add_option("--max-tokens", sampling.max_new_tokens)->capture_default_str();
  generate->add_option("--temperature", sampling.temperature, "0: greedy")->capture_default_str();
  generate->add_option("--top-p", sampling.top_p)->capture_default_str();
  generate->add_option("--seed", sampling.seed)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (tokenize->parsed()) return Tokenize(tokenizer_dir, timing);
  if (generate->parsed()) return GenerateText(tokenizer_dir, prompt, sampling);
  if (data.empty()) {
    std::fprintf(stderr, "tuneforge-train: --data is required (or a subcommand; see --help)\n");
    return 2;
  }

  try {
    tuneforge::ValidatorOptions options;
    options.separator = separator;
    if (format == "text" || EndsWith(data, ".txt") || EndsWith(data, ".md")) {
      options.declared = tuneforge::DatasetFormat::kText;
    } else if (format == "chat") {
      options.declared = tuneforge::DatasetFormat::kChat;
    } else if (format == "prompt_completion") {
      options.declared = tuneforge::DatasetFormat::kPromptCompletion;
    }
    std::vector<tuneforge::Example> all = Load(data, options);
    std::vector<tuneforge::Example> train, val;
    if (!validation.empty()) {
      train = std::move(all);
      val = Load(validation, options);
    } else {
      tuneforge::Split s = tuneforge::SplitExamples(all, split, config.seed);
      for (int64_t i : s.train) train.push_back(all[i]);
      for (int64_t i : s.validation) val.push_back(all[i]);
    }
    PrintingObserver observer;
    tuneforge::engine::TrainResult r = tuneforge::engine::Train(config, train, val, observer);
    std::printf("done: %lld steps, train_loss %.4f, validation_loss %.4f\n",
                static_cast<long long>(r.steps), r.final_train_loss, r.final_validation_loss);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tuneforge-train: training failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
