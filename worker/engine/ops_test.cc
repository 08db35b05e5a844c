// The fused kernels against the formulas they replace, written with
// libtorch's operations (ops.h's other path: what the engine runs on CUDA,
// and what the Python loop runs): values and gradients, odd sizes that leave
// vector tails, the attention's windows, offsets and grouped heads, the same
// bits for any number of threads, and whole models that train alike either
// way.
#include "worker/engine/ops.h"

#include <gtest/gtest.h>

#include "worker/engine/adamw.h"
#include "worker/engine/attention_kernels.h"
#include "worker/engine/test_examples.h"
#include "worker/engine/trainer.h"
#include "worker/engine/transformer.h"

namespace tuneforge::engine {
namespace {

using torch::indexing::Slice;

// Fails with the largest difference when a and b differ by more than
// atol + rtol * |b| anywhere.
void ExpectClose(const torch::Tensor& a, const torch::Tensor& b, const std::string& what,
                 double rtol = 1e-5, double atol = 1e-6) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const torch::Tensor diff = (a - b).abs();
  EXPECT_TRUE(torch::allclose(a, b, rtol, atol))
      << what << ": largest difference " << diff.max().item<double>() << " at "
      << diff.argmax().item<int64_t>();
}

using Inputs = std::vector<torch::Tensor>;

// A leaf copy of t that collects a gradient.
torch::Tensor Leaf(const torch::Tensor& t) { return t.detach().clone().requires_grad_(true); }

// Runs f on fresh leaves of `inputs`, backpropagates `dy`; returns the
// output followed by each input's gradient.
template <typename F>
std::vector<torch::Tensor> ValueAndGrads(const F& f, const std::vector<torch::Tensor>& inputs,
                                         const torch::Tensor& dy) {
  std::vector<torch::Tensor> leaves;
  for (const torch::Tensor& t : inputs) leaves.push_back(Leaf(t));
  torch::Tensor y = f(leaves);
  y.backward(dy);
  std::vector<torch::Tensor> out{y.detach()};
  for (const torch::Tensor& l : leaves) out.push_back(l.grad());
  return out;
}

// op(inputs, fused) with the kernel and with libtorch's operations: the same
// values, and the same gradients for a random output gradient.
template <typename Op>
void ExpectBothWaysAlike(const Op& op, const std::vector<torch::Tensor>& inputs,
                         const std::string& what, double rtol = 1e-5, double atol = 1e-6) {
  torch::Tensor probe;
  {
    torch::NoGradGuard no_grad;
    probe = op(inputs, false);
  }
  const torch::Tensor dy = torch::randn_like(probe);
  const auto a = ValueAndGrads([&](const Inputs& in) { return op(in, true); }, inputs, dy);
  const auto b = ValueAndGrads([&](const Inputs& in) { return op(in, false); }, inputs, dy);
  ExpectClose(a[0], b[0], what + " value", rtol, atol);
  for (size_t i = 1; i < a.size(); ++i) {
    ExpectClose(a[i], b[i], what + " gradient " + std::to_string(i - 1), rtol * 10, atol * 10);
  }
}

TEST(OpsTest, GeluMatchesLibtorch) {
  torch::manual_seed(1);
  // Odd sizes (vector tails), large magnitudes (exp clamps), zero.
  torch::Tensor x = torch::cat({torch::randn({37 * 129}) * 3,
                                torch::tensor({-100.f, -20.f, -1e-8f, 0.f, 1e-8f, 20.f, 100.f})});
  ExpectBothWaysAlike([](const Inputs& in, bool fused) { return GeluTanh(in[0], fused); }, {x},
                      "gelu");
}

TEST(OpsTest, SwiGluMatchesLibtorch) {
  torch::manual_seed(2);
  torch::Tensor g = torch::randn({5, 7, 43}) * 4, u = torch::randn({5, 7, 43});
  ExpectBothWaysAlike([](const Inputs& in, bool fused) { return SwiGlu(in[0], in[1], fused); },
                      {g, u}, "swiglu");
}

TEST(OpsTest, RmsNormMatchesLibtorch) {
  torch::manual_seed(3);
  // 210 rows: more than one block of the weight gradient's sums, and a tail.
  torch::Tensor x = torch::randn({3, 70, 33}) * 2, w = torch::randn({33});
  ExpectBothWaysAlike(
      [](const Inputs& in, bool fused) { return RmsNorm(in[0], in[1], 1e-5, fused); }, {x, w},
      "rmsnorm");
}

// Angles (any: the rotation is the same) for positions shared by every row,
// or per row (packing).
Rope AnglesOf(const torch::Tensor& half) {
  torch::Tensor full = torch::cat({half, half}, -1);
  return Rope{full.cos(), full.sin(), half.cos(), half.sin()};
}

TEST(OpsTest, RotaryEmbeddingMatchesLibtorch) {
  torch::manual_seed(4);
  const int64_t B = 2, T = 7, N = 3, D = 10;
  torch::Tensor x = torch::randn({B, T, N * D});
  for (const Rope& rope :
       {AnglesOf(torch::randn({T, D / 2}) * 3), AnglesOf(torch::randn({B, T, D / 2}) * 3)}) {
    ExpectBothWaysAlike(
        [&](const Inputs& in, bool fused) { return RotaryEmbedding(in[0], N, rope, fused); }, {x},
        rope.cos.dim() == 2 ? "rope" : "rope per row");
  }
}

struct AttentionCase {
  const char* name;
  int64_t H, K, T, past, window, D;
};

TEST(OpsTest, AttentionMatchesLibtorch) {
  const AttentionCase cases[] = {
      {"causal", 4, 4, 19, 0, 0, 12},
      {"grouped heads", 6, 2, 11, 0, 0, 12},
      {"one key head", 4, 1, 9, 0, 0, 12},
      {"sliding window", 2, 2, 17, 0, 5, 12},
      {"after a cache", 4, 2, 3, 8, 0, 12},
      {"cache and window", 4, 2, 4, 9, 6, 12},
      {"several query blocks", 2, 1, 150, 0, 0, 32},  // blocks of 64 rows, keys padded to 32
      {"window across blocks", 2, 2, 150, 0, 40, 16},
      {"head size 64", 2, 2, 70, 0, 0, 64},
      {"head size 80", 1, 1, 33, 0, 0, 80},
  };
  const int64_t B = 2;
  for (const AttentionCase& c : cases) {
    torch::manual_seed(5);
    const int64_t S = c.past + c.T;
    torch::Tensor q = torch::randn({B, c.T, c.H, c.D}), k = torch::randn({B, S, c.K, c.D});
    torch::Tensor v = torch::randn({B, S, c.K, c.D});
    ExpectBothWaysAlike(
        [&](const Inputs& in, bool fused) {
          AttentionOptions o;
          o.past = c.past;
          o.window = c.window;
          o.fused = fused;
          return CausalAttention(in[0], in[1], in[2], o);
        },
        {q, k, v}, c.name);
  }
}

// Every version of the attention kernel this CPU runs (AVX-512, AVX2, the
// baseline), against libtorch.
TEST(OpsTest, EveryVersionOfTheAttentionKernelMatches) {
  torch::manual_seed(12);
  const int64_t B = 2, T = 100, H = 4, K = 2, D = 24;
  torch::Tensor q = torch::randn({B, T, H, D}), k = torch::randn({B, T, K, D});
  torch::Tensor v = torch::randn({B, T, K, D});
  for (kernels::AttentionIsa isa : kernels::SupportedAttentionIsas()) {
    const kernels::AttentionIsa before = kernels::UseAttentionIsa(isa);
    ExpectBothWaysAlike(
        [&](const Inputs& in, bool fused) {
          AttentionOptions o;
          o.window = 70;
          o.fused = fused;
          return CausalAttention(in[0], in[1], in[2], o);
        },
        {q, k, v}, "attention version " + std::to_string(static_cast<int>(isa)));
    kernels::UseAttentionIsa(before);
  }
}

// GPT-2's queries, keys and values are slices of one projection: read in
// place, their gradients land in it.
TEST(OpsTest, AttentionReadsSlicesOfOneProjection) {
  torch::manual_seed(10);
  const int64_t B = 2, T = 21, H = 3, D = 8;
  torch::Tensor qkv = torch::randn({B, T, 3 * H * D});
  ExpectBothWaysAlike(
      [&](const Inputs& in, bool fused) {
        std::vector<torch::Tensor> parts = in[0].split(H * D, 2);
        auto head = [&](int i) { return parts[i].view({B, T, H, D}); };
        AttentionOptions o;
        o.fused = fused;
        return CausalAttention(head(0), head(1), head(2), o);
      },
      {qkv}, "attention on slices");
}

// Packed rows: sequences of 40, 70 and 50 queries in a row of 160 (the
// last 0 padding), and one of 160; across query blocks and key padding.
TEST(OpsTest, PackedAttentionMatchesLibtorch) {
  torch::manual_seed(11);
  const int64_t B = 2, T = 160, H = 4, K = 2, D = 16;
  torch::Tensor q = torch::randn({B, T, H, D}), k = torch::randn({B, T, K, D}),
                v = torch::randn({B, T, K, D});
  for (int64_t window : {0, 30}) {
    ExpectBothWaysAlike(
        [&](const Inputs& in, bool fused) {
          AttentionOptions o;
          o.window = window;
          o.fused = fused;
          o.spans = torch::tensor({0, 0, 40, 0, 40, 70, 0, 110, 50, 1, 0, 160}, torch::kInt64)
                        .view({4, 3});
          return CausalAttention(in[0], in[1], in[2], o);
        },
        {q, k, v}, window ? "packed, window" : "packed");
  }
}

TEST(OpsTest, AttentionRefusesShapesThatDoNotFit) {
  torch::Tensor q = torch::zeros({1, 4, 3, 8}), k = torch::zeros({1, 4, 2, 8});
  EXPECT_THROW(CausalAttention(q, k, k, {}), c10::Error);  // 2 key heads do not divide 3
  AttentionOptions after_one;
  after_one.past = 1;
  EXPECT_THROW(CausalAttention(torch::zeros({1, 4, 4, 8}), k, k, after_one),
               c10::Error);  // S != past + T
  AttentionOptions gap;      // a sequence not starting where the one before ended
  gap.spans = torch::tensor({0, 0, 2, 0, 3, 1}, torch::kInt64).view({2, 3});
  torch::Tensor q4 = torch::zeros({1, 4, 2, 8});
  EXPECT_THROW(CausalAttention(q4, k, k, gap), c10::Error);
  AttentionOptions beyond;
  beyond.spans = torch::tensor({0, 0, 5}, torch::kInt64).view({1, 3});
  EXPECT_THROW(CausalAttention(q4, k, k, beyond), c10::Error);
}

TEST(OpsTest, CrossEntropyMatchesLibtorch) {
  torch::manual_seed(6);
  for (int64_t V : {258, 300, 1000}) {  // 300 and 1000: rows longer than one scratch block
    torch::Tensor logits = torch::randn({53, V}) * 4;
    torch::Tensor targets = torch::randint(0, V, {53});
    targets.index_put_({Slice(0, 53, 5)}, -100);  // every fifth row carries no loss
    ExpectBothWaysAlike(
        [&](const Inputs& in, bool fused) { return CrossEntropySum(in[0], targets, -100, fused); },
        {logits}, "cross-entropy V=" + std::to_string(V));
  }
}

TEST(OpsTest, CrossEntropyRefusesATargetOutsideTheVocabulary) {
  torch::Tensor logits = torch::zeros({2, 10});
  try {
    CrossEntropySum(logits, torch::tensor({3, 10}, torch::kInt64), -100, /*fused=*/true);
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("target 10 of row 1 is outside the vocabulary of 10"),
              std::string::npos)
        << e.what();
  }
}

// Two identical parameter sets updated by the fused and the composed AdamW.
TEST(OpsTest, AdamWMatchesTheComposedUpdate) {
  torch::manual_seed(7);
  std::vector<torch::Tensor> a, b;
  for (auto shape :
       {std::vector<int64_t>{70, 33}, std::vector<int64_t>{33}, std::vector<int64_t>{40001}}) {
    torch::Tensor t = torch::randn(shape);
    a.push_back(Leaf(t));
    b.push_back(Leaf(t));
  }
  auto make = [](std::vector<torch::Tensor>& ps, bool fused) {
    AdamW::Options o;
    o.fused = fused;
    return AdamW({{"w", ps[0], true}, {"b", ps[1], false}, {"big", ps[2], true}}, o);
  };
  AdamW fused = make(a, true), composed = make(b, false);
  for (int step = 0; step < 6; ++step) {
    for (size_t i = 0; i < a.size(); ++i) {
      torch::Tensor g = torch::randn_like(a[i]) * (step + 1);
      a[i].mutable_grad() = g.clone();
      b[i].mutable_grad() = g.clone();
    }
    const double norm = fused.GradNorm();
    EXPECT_NEAR(norm, composed.GradNorm(), 1e-5 * norm) << "step " << step;
    fused.Step(1e-2, 0.5);
    composed.Step(1e-2, 0.5);
    fused.ZeroGrad();
    composed.ZeroGrad();
  }
  for (size_t i = 0; i < a.size(); ++i) ExpectClose(a[i], b[i], "parameter " + std::to_string(i));
  const auto sa = fused.State(), sb = composed.State();
  for (const auto& [key, value] : sa) ExpectClose(value, sb.at(key), key);
}

// Every kernel's output and gradients, with 1 and with 3 threads: the same
// bits, which exact resumption needs.
TEST(OpsTest, SameBitsWhateverTheThreads) {
  const int threads = at::get_num_threads();
  auto run = [](int n) {
    at::set_num_threads(n);
    torch::manual_seed(8);
    std::vector<torch::Tensor> out;
    auto collect = [&](const std::vector<torch::Tensor>& v) {
      out.insert(out.end(), v.begin(), v.end());
    };
    torch::Tensor x = torch::randn({300, 301});
    collect(ValueAndGrads([](const Inputs& in) { return GeluTanh(in[0], true); }, {x}, x));
    collect(
        ValueAndGrads([](const Inputs& in) { return SwiGlu(in[0], in[1], true); }, {x, x * 2}, x));
    collect(ValueAndGrads([](const Inputs& in) { return RmsNorm(in[0], in[1], 1e-5, true); },
                          {x, torch::randn({301})}, x));
    const Rope rope = AnglesOf(torch::randn({64, 8}));
    torch::Tensor r = torch::randn({4, 64, 6 * 16});
    collect(ValueAndGrads([&](const Inputs& in) { return RotaryEmbedding(in[0], 6, rope, true); },
                          {r}, torch::randn({4, 64, 6, 16})));
    torch::Tensor q = torch::randn({4, 100, 6, 16}), kv = torch::randn({4, 100, 2, 16});
    collect(ValueAndGrads([](const Inputs& in) { return CausalAttention(in[0], in[1], in[2], {}); },
                          {q, kv, kv * 3}, q));
    torch::Tensor targets = torch::randint(0, 301, {300});
    collect(
        ValueAndGrads([&](const Inputs& in) { return CrossEntropySum(in[0], targets, -100, true); },
                      {x}, torch::tensor(0.5f)));
    return out;
  };
  const auto one = run(1), three = run(3);
  at::set_num_threads(threads);
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < one.size(); ++i)
    EXPECT_TRUE(torch::equal(one[i], three[i])) << "tensor " << i;
}

ModelConfig Small(Architecture arch, int64_t window = 0) {
  ModelConfig c;
  c.context_length = 32;
  c.n_layer = 2;
  c.d_model = 32;
  c.d_ff = 72;
  if (arch == Architecture::kGpt2) {
    c.n_head = c.n_kv_head = 2;
    c.head_dim = 16;
  } else {
    c.architecture = arch;
    c.model_type = window > 0 ? "mistral" : "llama";
    c.n_head = 4;
    c.n_kv_head = 2;
    c.head_dim = 8;
    c.qkv_bias = c.o_bias = false;
    c.tie_embeddings = false;
    c.sliding_window = window;
  }
  return c;
}

// The same weights compute the same logits and parameter gradients with
// and without the kernels, on plain and on packed rows.
TEST(OpsTest, ModelsComputeTheSameEitherWay) {
  for (const ModelConfig& config : {Small(Architecture::kGpt2), Small(Architecture::kLlama),
                                    Small(Architecture::kLlama, /*window=*/5)}) {
    torch::manual_seed(9);
    Transformer model(config);
    torch::Tensor ids = torch::randint(0, config.vocab_size, {3, 20});
    Packing packing{
        torch::cat({torch::arange(12), torch::arange(8)}).repeat({3, 1}),
        torch::tensor({0, 0, 12, 0, 12, 8, 1, 0, 12, 1, 12, 8, 2, 0, 12, 2, 12, 8}).view({6, 3})};
    for (const Packing* pack : std::vector<const Packing*>{nullptr, &packing}) {
      std::vector<std::vector<torch::Tensor>> runs;
      for (bool fused : {true, false}) {
        ComputeOptions options;
        options.fused_kernels = fused;
        model->SetCompute(options);
        model->zero_grad();
        torch::Tensor logits = model->forward(ids, nullptr, pack);
        logits.pow(2).mean().backward();
        std::vector<torch::Tensor> run{logits.detach()};
        for (const torch::Tensor& p : model->parameters()) run.push_back(p.grad().clone());
        runs.push_back(run);
      }
      const std::string what = config.model_type + (pack ? " packed" : "");
      ExpectClose(runs[0][0], runs[1][0], what + " logits", 1e-5, 1e-5);
      for (size_t i = 1; i < runs[0].size(); ++i) {
        ExpectClose(runs[0][i], runs[1][i], what + " gradient " + std::to_string(i), 1e-4, 1e-6);
      }
    }
  }
}

// A training run's losses with and without the kernels, step by step.
TEST(OpsTest, TrainingFollowsTheSameLosses) {
  class Losses : public TrainObserver {
   public:
    void OnMetrics(const StepMetrics& m) override { loss.push_back(m.loss); }
    std::vector<double> loss;
  };
  for (const char* model : {"tiny-gpt2", "tiny-llama"}) {
    std::vector<Losses> runs(2);
    for (int fused = 0; fused < 2; ++fused) {
      TrainConfig c;
      c.model = model;
      c.epochs = 6;
      c.batch_size = 2;
      c.learning_rate = 3e-3;
      c.log_every_steps = 1;
      c.threads = 1;
      c.fused_kernels = fused == 1;
      Train(c, Memorisable(), {}, runs[fused]);
    }
    ASSERT_EQ(runs[0].loss.size(), 12u);
    ASSERT_EQ(runs[1].loss.size(), 12u);
    for (size_t i = 0; i < 12; ++i) {
      EXPECT_NEAR(runs[1].loss[i], runs[0].loss[i], 1e-4 * runs[0].loss[i])
          << model << " step " << i + 1;
    }
    EXPECT_LT(runs[1].loss.back(), runs[1].loss.front()) << model;
  }
}

}  // namespace
}  // namespace tuneforge::engine
