// Data-parallel training across processes (ranks): each rank trains on its
// share of every optimizer step's micro-batches, and the ranks sum their
// gradients, so all of them take the same step with the same weights. The
// ranks meet at rank 0's TCP store (`rendezvous`, host:port) and sum over
// Gloo (torch's c10d), on CPU tensors.
//
//   DataParallel group({/*world_size=*/2, /*rank=*/1, "10.0.0.5:29500"});
//   group.SumInPlace(grads);                      // in place, over every rank
//   double total = group.Sum(std::vector<double>{local})[0];
//
// Every call is a collective: every rank must make the same calls in the
// same order, or they wait on one another until `timeout_seconds` and throw.
// A rank that exits makes the others' next call throw. Not thread-safe.
#ifndef TUNEFORGE_WORKER_ENGINE_DATA_PARALLEL_H_
#define TUNEFORGE_WORKER_ENGINE_DATA_PARALLEL_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace tuneforge::engine {

struct DataParallelOptions {
  int world_size = 1;
  int rank = 0;
  std::string rendezvous;     // host:port; rank 0 listens there
  int timeout_seconds = 300;  // to meet, and for each collective
};

class DataParallel {
 public:
  // Meets the other ranks; throws std::runtime_error saying what failed
  // (the address, or that a rank did not come within the timeout).
  explicit DataParallel(const DataParallelOptions& options);
  ~DataParallel();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

  // Sums float tensors over the ranks, in place, in one message.
  void SumInPlace(const std::vector<torch::Tensor>& tensors);
  std::vector<double> Sum(std::vector<double> values);
  // Rank 0's tensors (their shapes must match) or bytes, on every rank.
  void Broadcast(const std::vector<torch::Tensor>& tensors);
  std::string Broadcast(const std::string& bytes);
  // Throws on every rank when any rank's `value` differs from rank 0's;
  // `what` names it in the message.
  void CheckSame(const std::string& what, const std::string& value);

 private:
  struct Group;
  DataParallelOptions options_;
  std::unique_ptr<Group> group_;
};

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_DATA_PARALLEL_H_
