#include "worker/engine/data_parallel.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace tuneforge::engine {

#ifdef USE_C10D_GLOO

namespace {

// "host:port" split at its last colon; throws when it is not that.
std::pair<std::string, int> HostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon != std::string::npos && colon > 0) {
    try {
      size_t used = 0;
      port = std::stoi(address.substr(colon + 1), &used);
      if (used != address.size() - colon - 1) port = 0;
    } catch (const std::exception&) {
    }
  }
  if (port < 1 || port > 65535) {
    throw std::invalid_argument("rendezvous '" + address + "' is not host:port");
  }
  return {address.substr(0, colon), port};
}

std::string Describe(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

}  // namespace

struct DataParallel::Group {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
  std::chrono::milliseconds timeout;

  void Wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
    try {
      work->wait(timeout);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string(what) +
                               " over the data-parallel ranks failed (a rank "
                               "stopped, or took longer than the timeout): " +
                               Describe(e));
    }
  }
};

DataParallel::DataParallel(const DataParallelOptions& options) : options_(options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    throw std::invalid_argument("rank " + std::to_string(options.rank) + " is not in [0, " +
                                std::to_string(options.world_size) + ")");
  }
  const auto [host, port] = HostPort(options.rendezvous);
  group_ = std::make_unique<Group>();
  group_->timeout = std::chrono::seconds(options.timeout_seconds);
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(port);
    store_options.isServer = options.rank == 0;
    store_options.numWorkers = options.world_size;
    store_options.waitWorkers = true;
    store_options.timeout = group_->timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(host, store_options);
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(group_->timeout);
    // Peers connect to the address this rank binds: that of the network
    // interface GLOO_SOCKET_IFNAME names (as in PyTorch), else loopback when
    // the ranks meet there, else the address the host name resolves to.
    const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
    const bool loopback = host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
    gloo_options->devices.push_back(
        interface && *interface ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
        : loopback              ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                : c10d::ProcessGroupGloo::createDefaultDevice());
    gloo_options->threads = 1;
    group_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("tuneforge", store), options.rank,
        options.world_size, gloo_options);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(options.rank) + " of " +
                             std::to_string(options.world_size) + " could not meet the others at " +
                             options.rendezvous + " (waiting up to " +
                             std::to_string(options.timeout_seconds) + " s): " + Describe(e));
  }
}

void DataParallel::SumInPlace(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  for (const torch::Tensor& t : tensors) {
    flat.push_back(t.detach().reshape({-1}).to(torch::kCPU, torch::kFloat32));
  }
  std::vector<torch::Tensor> buffer = {torch::cat(flat)};
  group_->Wait(group_->gloo->allreduce(buffer), "a sum");
  int64_t at = 0;
  for (const torch::Tensor& t : tensors) {
    t.copy_(buffer[0].narrow(0, at, t.numel()).view(t.sizes()));
    at += t.numel();
  }
}

std::vector<double> DataParallel::Sum(std::vector<double> values) {
  std::vector<torch::Tensor> buffer = {
      torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kFloat64)};
  group_->Wait(group_->gloo->allreduce(buffer), "a sum");
  return values;
}

void DataParallel::Broadcast(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& t : tensors) {
    std::vector<torch::Tensor> buffer = {t.detach().to(torch::kCPU).contiguous()};
    group_->Wait(group_->gloo->broadcast(buffer), "a broadcast");
    if (options_.rank != 0) t.copy_(buffer[0]);
  }
}

std::string DataParallel::Broadcast(const std::string& bytes) {
  std::vector<torch::Tensor> size = {
      torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64)};
  group_->Wait(group_->gloo->broadcast(size), "a broadcast");
  std::vector<torch::Tensor> data = {torch::empty({size[0].item<int64_t>()}, torch::kUInt8)};
  if (options_.rank == 0) std::memcpy(data[0].data_ptr(), bytes.data(), bytes.size());
  group_->Wait(group_->gloo->broadcast(data), "a broadcast");
  return std::string(static_cast<const char*>(data[0].data_ptr()), data[0].numel());
}

#else  // no Gloo in this build

struct DataParallel::Group {};

DataParallel::DataParallel(const DataParallelOptions& options) : options_(options) {
  throw std::runtime_error(
      "data-parallel training needs Gloo, and this build has none "
      "(install libgloo-dev and rebuild)");
}
void DataParallel::SumInPlace(const std::vector<torch::Tensor>&) {}
std::vector<double> DataParallel::Sum(std::vector<double> values) { return values; }
void DataParallel::Broadcast(const std::vector<torch::Tensor>&) {}
std::string DataParallel::Broadcast(const std::string& bytes) { return bytes; }

#endif

DataParallel::~DataParallel() = default;

void DataParallel::CheckSame(const std::string& what, const std::string& value) {
  const std::string root = Broadcast(value);
  const double differing = Sum(std::vector<double>{root == value ? 0.0 : 1.0})[0];
  if (differing == 0) return;
  if (root != value) {
    throw std::invalid_argument("rank " + std::to_string(rank()) + "'s " + what +
                                " differ from rank 0's (" + value + "; rank 0: " + root + ")");
  }
  throw std::invalid_argument(std::to_string(static_cast<int>(differing)) + " rank(s)' " + what +
                              " differ from rank 0's (" + root + ")");
}

}  // namespace tuneforge::engine
