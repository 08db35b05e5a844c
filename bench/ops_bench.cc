// Each of the engine's operations (worker/engine/ops.h), forward and
// backward, as the fused CPU kernel and as the libtorch formula (what the
// Python loop computes), at the shapes the presets train: milliseconds at
// the median of --reps runs, and the ratio. AdamW is a whole step over the
// parameters of small-gpt2 (25M), clipping's norm included. Memory is
// allocated as in training (KeepFreedMemory).
//
//   tuneforge-bench-ops --threads 1
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "worker/engine/adamw.h"
#include "worker/engine/attention_kernels.h"
#include "worker/engine/keep_freed_memory.h"
#include "worker/engine/ops.h"

namespace tuneforge::engine {
namespace {

using Inputs = std::vector<torch::Tensor>;
using Op = std::function<torch::Tensor(const Inputs&, bool fused)>;

// Median seconds of `reps` calls of f, after one to warm up.
double MedianSeconds(int reps, const std::function<void()>& f) {
  f();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Forward and backward (a random output gradient) of op on fresh leaves.
double TimeOp(const Op& op, const Inputs& inputs, bool fused, int reps) {
  torch::Tensor dy;
  {
    torch::NoGradGuard no_grad;
    dy = torch::randn_like(op(inputs, false));
  }
  return MedianSeconds(reps, [&] {
    Inputs leaves;
    for (const torch::Tensor& t : inputs) leaves.push_back(t.detach().requires_grad_(true));
    op(leaves, fused).backward(dy);
  });
}

void Row(const std::string& name, const std::string& shape, double composed, double fused) {
  std::printf("%-14s %-28s %12.3f %10.3f %8.2fx\n", name.c_str(), shape.c_str(), composed * 1e3,
              fused * 1e3, composed / fused);
}

void Compare(const std::string& name, const std::string& shape, const Op& op, const Inputs& inputs,
             int reps) {
  Row(name, shape, TimeOp(op, inputs, false, reps), TimeOp(op, inputs, true, reps));
}

// name: "attention", or the kernel version's for rows that compare those.
void CompareAttention(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D, int reps,
                      const std::string& name = "attention") {
  Op op = [](const Inputs& in, bool fused) {
    AttentionOptions o;
    o.fused = fused;
    return CausalAttention(in[0], in[1], in[2], o);
  };
  char shape[64];
  std::snprintf(shape, sizeof(shape), "B%lld T%lld H%lld K%lld D%lld", (long long)B, (long long)T,
                (long long)H, (long long)K, (long long)D);
  Compare(name, shape, op,
          {torch::randn({B, T, H, D}), torch::randn({B, T, K, D}), torch::randn({B, T, K, D})},
          reps);
}

// One AdamW step with clipping over small-gpt2's parameter shapes.
void CompareAdamW(int reps) {
  const int64_t C = 512, L = 8;
  std::vector<std::vector<int64_t>> shapes = {{258, C}, {512, C}};
  for (int64_t l = 0; l < L; ++l) {
    for (auto s : std::vector<std::vector<int64_t>>{{C},
                                                    {C},
                                                    {3 * C, C},
                                                    {3 * C},
                                                    {C, C},
                                                    {C},
                                                    {C},
                                                    {C},
                                                    {4 * C, C},
                                                    {4 * C},
                                                    {C, 4 * C},
                                                    {C}}) {
      shapes.push_back(s);
    }
  }
  auto step_time = [&](bool fused) {
    std::vector<AdamW::Param> params;
    for (size_t i = 0; i < shapes.size(); ++i) {
      torch::Tensor p = torch::randn(shapes[i]).requires_grad_(true);
      p.mutable_grad() = torch::randn(shapes[i]);
      params.push_back({"p" + std::to_string(i), p, p.dim() >= 2});
    }
    AdamW::Options options;
    options.fused = fused;
    AdamW optimizer(params, options);
    return MedianSeconds(reps, [&] {
      const double norm = optimizer.GradNorm();
      optimizer.Step(1e-4, std::min(1.0, 1.0 / (norm + 1e-6)));
    });
  };
  Row("adamw + clip", "small-gpt2, 25.3M parameters", step_time(false), step_time(true));
}

int Run(int threads, int reps) {
  KeepFreedMemory keep_freed_memory;
  torch::set_num_threads(threads);
  torch::manual_seed(1);
  std::printf("threads %d; milliseconds, forward and backward, median of %d\n", threads, reps);
  std::printf("%-14s %-28s %12s %10s %9s\n", "operation", "shape", "libtorch", "fused", "speedup");
  const int64_t N = 8 * 128;  // tokens of a batch of 8 x 128
  Compare(
      "gelu (tanh)", "1024 x 2048 (small-gpt2 MLP)",
      [](const Inputs& in, bool f) { return GeluTanh(in[0], f); }, {torch::randn({N, 2048})}, reps);
  Compare(
      "swiglu", "1024 x 1376 (small-llama MLP)",
      [](const Inputs& in, bool f) { return SwiGlu(in[0], in[1], f); },
      {torch::randn({N, 1376}), torch::randn({N, 1376})}, reps);
  Compare(
      "rmsnorm", "1024 x 512",
      [](const Inputs& in, bool f) { return RmsNorm(in[0], in[1], 1e-5, f); },
      {torch::randn({N, 512}), torch::randn({512})}, reps);
  torch::Tensor half = torch::randn({128, 32});
  const Rope rope{torch::cat({half, half}, -1).cos(), torch::cat({half, half}, -1).sin(),
                  half.cos(), half.sin()};
  Compare(
      "rotary", "8 x 128 x 8 heads x 64",
      [&](const Inputs& in, bool f) { return RotaryEmbedding(in[0], 8, rope, f); },
      {torch::randn({8, 128, 8 * 64})}, reps);
  CompareAttention(8, 128, 4, 4, 32, reps);  // tiny-gpt2
  CompareAttention(8, 128, 8, 4, 64, reps);  // small-llama
  CompareAttention(4, 512, 8, 4, 64, reps);
  CompareAttention(1, 2048, 8, 8, 64, reps);
  // The kernel's other versions, for CPUs without AVX-512 or AVX2.
  const char* names[] = {"attn baseline", "attn AVX2", "attn AVX-512"};
  for (kernels::AttentionIsa isa : kernels::SupportedAttentionIsas()) {
    const kernels::AttentionIsa best = kernels::UseAttentionIsa(isa);
    CompareAttention(8, 128, 8, 4, 64, reps, names[static_cast<int>(isa)]);
    kernels::UseAttentionIsa(best);
  }
  for (int64_t V : {258, 32000}) {
    torch::Tensor targets = torch::randint(0, V, {N});
    Compare(
        "cross-entropy", "1024 x " + std::to_string(V),
        [&](const Inputs& in, bool f) { return CrossEntropySum(in[0], targets, -100, f); },
        {torch::randn({N, V})}, reps);
  }
  CompareAdamW(reps);
  return 0;
}

}  // namespace
}  // namespace tuneforge::engine

int main(int argc, char** argv) {
  CLI::App app("tuneforge-bench-ops: the fused kernels against libtorch's formulas");
  int threads = 1, reps = 20;
  app.add_option("--threads", threads, "intra-op threads")->capture_default_str();
  app.add_option("--reps", reps, "timed runs per measurement")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return tuneforge::engine::Run(threads, reps);
}
