// tuneforge-train: the training engine as a standalone command. Trains a preset
// or a Hugging Face model folder on local dataset files and prints the same
// metrics a job streams, with no scheduler and no RPC; evaluates, tokenizes
// and generates, so the engine is checkable against any reference.
//
//   tuneforge-train --data examples/hr.json --epochs 3 --learning-rate 1e-3
//   tuneforge-train --data hr.json --world-size 2 --rank 1 --rendezvous host0:29500
//   tuneforge-train eval --model out/ --data examples/hr.json
//   echo "Hello" | tuneforge-train tokenize --model gpt2/
//   tuneforge-train generate --model out/ --prompt "How many days"
//   tuneforge-train init --preset tiny-llama --output base/
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/file_util.h"
#include "common/dataset.h"
#include "common/dataset_validator.h"
#include "common/settings_flags.h"
#include "text/bpe_tokenizer.h"
#include "worker/engine/metrics_csv.h"
#include "worker/engine/model_folder.h"
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
  explicit PrintingObserver(std::string csv_path) : csv_path_(std::move(csv_path)) {}

  void OnStart(const TrainPlan& p) override {
    if (!csv_path_.empty()) csv_.Open(csv_path_, p.resumed_from_step);
    std::printf("model: %lld parameters (%lld trained), %s %s, %d threads\n",
                static_cast<long long>(p.parameter_count),
                static_cast<long long>(p.trainable_parameters), p.device.c_str(),
                p.precision.c_str(), p.threads);
    if (p.resumed_from_step > 0) {
      std::printf("resumed from the checkpoint of step %lld\n",
                  static_cast<long long>(p.resumed_from_step));
    }
    std::printf("data: %lld training, %lld validation examples, %lld truncated; %lld steps\n",
                static_cast<long long>(p.train_examples),
                static_cast<long long>(p.validation_examples),
                static_cast<long long>(p.truncated_examples),
                static_cast<long long>(p.total_steps));
    if (p.chat_template != "plain") std::printf("chat template: %s\n", p.chat_template.c_str());
    if (p.packed_rows > 0) {
      std::printf("packed %lld sequences into %lld rows\n",
                  static_cast<long long>(p.train_sequences), static_cast<long long>(p.packed_rows));
    }
  }
  void OnMetrics(const StepMetrics& m) override {
    csv_.Row(m);
    std::printf("epoch %d step %lld/%lld  train_loss %.4f  lr %.2e  grad_norm %.3f  "
                "tokens/s %.0f  eta %.0fs\n",
                m.epoch, static_cast<long long>(m.step), static_cast<long long>(m.total_steps),
                m.loss, m.learning_rate, m.grad_norm, m.tokens_per_second, m.eta_seconds);
    std::fflush(stdout);
  }
  void OnEvaluation(const EvalMetrics& m) override {
    csv_.Row(m);
    std::printf("epoch %d step %lld  validation_loss %.4f  perplexity %.2f  token_accuracy %.3f\n",
                m.epoch, static_cast<long long>(m.step), m.validation_loss, m.perplexity,
                m.token_accuracy);
    std::fflush(stdout);
  }
  void OnSample(const std::string& prompt, const std::string& completion,
                int64_t step) override {
    std::printf("sample: %s -> %s\n", prompt.c_str(), completion.c_str());
  }
  void OnCheckpoint(int64_t step, int epoch, const std::string& dir, bool best) override {
    std::printf("checkpoint step %lld: %s%s\n", static_cast<long long>(step), dir.c_str(),
                best ? " (best so far)" : "");
    std::fflush(stdout);
  }

 private:
  std::string csv_path_;
  tuneforge::engine::MetricsCsv csv_;
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

// `tuneforge-train generate`: a model (a folder or a preset) continues a prompt.
int GenerateText(const std::string& model, const std::string& prompt,
                 tuneforge::engine::SamplingOptions sampling, uint64_t seed) {
  absl::StatusOr<tuneforge::engine::ModelFolder> m = tuneforge::engine::OpenModel(model, seed);
  if (!m.ok()) {
    std::fprintf(stderr, "tuneforge-train: %s\n", std::string(m.status().message()).c_str());
    return 1;
  }
  std::vector<int64_t> ids = m->tokenizer->prefix_ids();
  for (int64_t id : m->tokenizer->Encode(prompt)) ids.push_back(id);
  sampling.stop_tokens = m->stop_ids;
  try {
    std::vector<int64_t> out = tuneforge::engine::Generate(m->model, ids, sampling);
    std::printf("%s\n", m->tokenizer->Decode(out, /*skip_special=*/true).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tuneforge-train: %s\n", e.what());
    return 1;
  }
  return 0;
}

// `tuneforge-train tokenize`: the BPE tokenizer on its own, checkable
// against any reference.
int Tokenize(const std::string& dir, bool timing, bool added_tokens) {
  absl::StatusOr<std::unique_ptr<tuneforge::text::BpeTokenizer>> loaded =
      tuneforge::text::BpeTokenizer::FromModelFolder(dir);
  if (!loaded.ok()) {
    std::fprintf(stderr, "tuneforge-train: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  const tuneforge::text::BpeTokenizer* tok = loaded->get();
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  const auto start = std::chrono::steady_clock::now();
  std::vector<int64_t> ids = added_tokens ? tok->EncodeWithAddedTokens(text) : tok->Encode(text);
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

// Format options of a dataset file, from --format and the file's extension.
tuneforge::ValidatorOptions DatasetOptions(const std::string& path, const std::string& format,
                                           const std::string& separator) {
  tuneforge::ValidatorOptions options;
  options.separator = separator;
  if (format == "text" || EndsWith(path, ".txt") || EndsWith(path, ".md")) {
    options.declared = tuneforge::DatasetFormat::kText;
  } else if (format == "chat") {
    options.declared = tuneforge::DatasetFormat::kChat;
  } else if (format == "prompt_completion") {
    options.declared = tuneforge::DatasetFormat::kPromptCompletion;
  }
  return options;
}

// `tuneforge-train eval`: a model's mean loss per token on a dataset.
int Eval(const tuneforge::engine::TrainConfig& config, const std::string& data,
         const tuneforge::ValidatorOptions& options) {
  std::vector<tuneforge::Example> examples = Load(data, options);
  try {
    int64_t truncated = 0;
    EvalMetrics m = tuneforge::engine::EvaluateModel(config, examples, &truncated);
    std::printf("examples %zu  truncated %lld  loss %.6f  perplexity %.4f  token_accuracy %.4f\n",
                examples.size(), static_cast<long long>(truncated), m.validation_loss, m.perplexity,
                m.token_accuracy);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tuneforge-train: evaluation failed: %s\n", e.what());
    return 1;
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
  app.add_option("--model", config.model, "a preset or a Hugging Face model folder")
      ->capture_default_str();
  // --epochs, --learning-rate, ...: a flag per training setting.
  tuneforge::AddSettingFlags(app, config);
  app.add_option("--output", config.output_dir,
                 "save the trained model here as a Hugging Face folder");
  app.add_option("--threads", config.threads, "0: the cores this process may use")
      ->capture_default_str();
  app.add_option("--device", config.device, "auto, cpu or cuda")->capture_default_str();
  app.add_flag("!--no-fused-kernels", config.fused_kernels,
               "run norms, activations, rotary embeddings, softmax and AdamW as libtorch "
               "operations instead of the fused CPU kernels (for comparison)");
  app.add_option("--lora-rank", config.lora.rank, "LoRA adapters of this rank; 0: full fine-tuning")
      ->capture_default_str();
  app.add_option("--lora-alpha", config.lora.alpha)->capture_default_str();
  app.add_option("--lora-dropout", config.lora.dropout)->capture_default_str();
  app.add_option("--lora-targets", config.lora.targets,
                 "projections to adapt, e.g. q_proj,v_proj (default: the family's)")
      ->delimiter(',');
  std::string metrics_csv;
  app.add_option("--metrics-csv", metrics_csv, "write every metric here, at full precision");
  app.add_option("--checkpoint-dir", config.checkpoint_dir,
                 "save checkpoints here (every epoch and --checkpoint-every steps)");
  app.add_flag("--resume", config.resume,
               "continue from the newest checkpoint in --checkpoint-dir (same data and settings)");

  app.add_option("--world-size", config.world_size,
                 "data-parallel: this many processes train as one (each prints the same "
                 "metrics; rank 0 resumes and writes checkpoints and --output)")
      ->capture_default_str();
  app.add_option("--rank", config.rank, "data-parallel: this process's rank, 0 to world size - 1")
      ->capture_default_str();
  app.add_option("--rendezvous", config.rendezvous,
                 "data-parallel: host:port where rank 0 listens and the others meet it");
  app.add_option("--rendezvous-timeout", config.rendezvous_timeout_seconds,
                 "seconds to wait for the other ranks, to meet and at each step")
      ->capture_default_str();

  std::string model_dir;
  bool timing = false, added_tokens = false;
  CLI::App* tokenize = app.add_subcommand(
      "tokenize", "read text on standard input, print its token ids, space-separated");
  tokenize->add_option("--model", model_dir,
                       "a folder with tokenizer.json, or vocab.json and merges.txt")
      ->required();
  tokenize->add_flag("--time", timing, "print the encoding throughput on standard error");
  tokenize->add_flag("--added-tokens", added_tokens,
                     "match added and special tokens in the text (as Hugging Face does)");

  CLI::App* generate = app.add_subcommand("generate", "continue a prompt with a model");
  std::string prompt;
  tuneforge::engine::SamplingOptions sampling;
  generate->add_option("--model", model_dir, "a Hugging Face model folder or a preset")
      ->required();
  generate->add_option("--prompt", prompt)->required();
  generate->add_option("--max-tokens", sampling.max_new_tokens)->capture_default_str();
  generate->add_option("--temperature", sampling.temperature, "0: greedy")->capture_default_str();
  generate->add_option("--top-p", sampling.top_p)->capture_default_str();
  generate->add_option("--seed", sampling.seed)->capture_default_str();

  CLI::App* eval = app.add_subcommand(
      "eval", "print a model's mean loss per token on a dataset (tokens that carry loss)");
  std::string eval_data;
  eval->add_option("--model", config.model, "a Hugging Face model folder or a preset")
      ->required();
  eval->add_option("--data", eval_data, "dataset (JSON array, JSONL, or .txt/.md text)")
      ->required();
  eval->add_option("--batch-size", config.batch_size)->capture_default_str();
  eval->add_option("--max-seq-len", config.max_seq_len, "0: the model's context");
  eval->add_flag("--train-on-prompt", config.train_on_prompt, "count prompt tokens too");
  eval->add_option("--format", format, "prompt_completion, chat or text (default: detect)");
  eval->add_option("--separator", separator, "plain text: split documents on this string");
  CLI::App* init = app.add_subcommand(
      "init", "write a preset, random from the seed, as a Hugging Face model folder");
  std::string preset, init_output;
  uint64_t init_seed = 42;
  init->add_option("--preset", preset, "tiny-gpt2, tiny-llama, small-gpt2 or small-llama")
      ->required();
  init->add_option("--output", init_output, "the folder to write")->required();
  init->add_option("--seed", init_seed)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (init->parsed()) {
    const tuneforge::Preset* p = tuneforge::FindPreset(preset);
    const absl::Status written = p ? tuneforge::engine::WritePreset(*p, init_seed, init_output)
                                   : absl::NotFoundError("unknown preset " + preset);
    if (!written.ok()) {
      std::fprintf(stderr, "tuneforge-train: %s\n", std::string(written.message()).c_str());
    }
    return written.ok() ? 0 : 1;
  }
  if (tokenize->parsed()) return Tokenize(model_dir, timing, added_tokens);
  if (generate->parsed()) return GenerateText(model_dir, prompt, sampling, config.seed);
  if (eval->parsed()) return Eval(config, eval_data, DatasetOptions(eval_data, format, separator));
  if (data.empty()) {
    std::fprintf(stderr, "tuneforge-train: --data is required (or a subcommand; see --help)\n");
    return 2;
  }

  try {
    const tuneforge::ValidatorOptions options = DatasetOptions(data, format, separator);
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
    PrintingObserver observer(metrics_csv);
    tuneforge::engine::TrainResult r = tuneforge::engine::Train(config, train, val, observer);
    if (!r.stop_reason.empty()) std::printf("%s\n", r.stop_reason.c_str());
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    std::printf("done: %lld steps, train_loss %.4f, validation_loss %.4f, peak memory %.0f MB\n",
                static_cast<long long>(r.steps), r.final_train_loss, r.final_validation_loss,
                double(usage.ru_maxrss) / 1024.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tuneforge-train: training failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
