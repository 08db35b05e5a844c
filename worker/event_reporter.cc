#include "worker/event_reporter.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/grpc_call.h"

#include <spdlog/spdlog.h>

namespace tuneforge {
namespace {

constexpr int64_t kFirstBackoffMs = 100;
constexpr int64_t kMaxBackoffMs = 2000;

// Whether the scheduler refused the stream for good (the attempt cannot go
// on), rather than being unreachable, restarting or short of disk for now.
bool IsRefusal(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::UNIMPLEMENTED:
      return true;
    default:
      return false;
  }
}

}  // namespace

EventReporter::EventReporter(StubFn stub, std::string job, std::string lease,
                             std::function<void()> reconnect, size_t max_queued_bytes)
    : stub_(std::move(stub)),
      job_(std::move(job)),
      lease_(std::move(lease)),
      reconnect_(std::move(reconnect)),
      max_queued_bytes_(max_queued_bytes),
      thread_([this] { Loop(); }) {}

EventReporter::~EventReporter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (open_ctx_ != nullptr) open_ctx_->TryCancel();  // a Write blocked on a hung scheduler
  }
  cv_.notify_all();
  thread_.join();
}

bool EventReporter::Send(v1::JobEvent event) {
  std::unique_lock<std::mutex> lock(mu_);
  auto over = [&] { return abandoned_ || lease_lost_ || !refused_.ok() || stopping_; };
  Queued q;
  q.request.set_job(job_);
  q.request.set_lease(lease_);
  *q.request.mutable_event() = std::move(event);
  q.bytes = q.request.ByteSizeLong();
  // Backpressure: a full queue waits for the scheduler to acknowledge.
  cv_.wait(lock, [&] { return over() || queued_bytes_ + q.bytes <= max_queued_bytes_ ||
                              queue_.empty(); });
  if (over()) return false;
  q.number = next_number_++;
  q.request.set_report_sequence(q.number);
  queued_bytes_ += q.bytes;
  queue_.push_back(std::move(q));
  cv_.notify_all();
  return true;
}

void EventReporter::ForgetUpTo(int64_t n) {
  acked_ = std::max(acked_, n);
  sent_ = std::max(sent_, acked_);
  while (!queue_.empty() && queue_.front().number <= acked_) {
    queued_bytes_ -= queue_.front().bytes;
    queue_.pop_front();
  }
}

void EventReporter::Acknowledge(int64_t n) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ForgetUpTo(n);
  }
  cv_.notify_all();
}

absl::Status EventReporter::Drain(std::chrono::system_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  cv_.notify_all();
  const int64_t target = next_number_ - 1;
  const bool done = cv_.wait_until(lock, deadline, [&] {
    return acked_ >= target || lease_lost_ || !refused_.ok() || abandoned_;
  });
  draining_ = false;
  if (lease_lost_) return absl::AbortedError("the lease was lost");
  if (!refused_.ok()) return refused_;
  if (!done || acked_ < target) {
    return absl::UnavailableError(absl::StrCat(
        target - acked_, " events could not be delivered to the scheduler in time"));
  }
  return absl::OkStatus();
}

void EventReporter::Abandon() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    abandoned_ = true;
    if (open_ctx_ != nullptr) open_ctx_->TryCancel();
  }
  cv_.notify_all();
}

bool EventReporter::lease_lost() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lease_lost_;
}

absl::Status EventReporter::last_break() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_break_;
}

int64_t EventReporter::reconnects() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reconnects_;
}

bool EventReporter::WritePending(std::unique_lock<std::mutex>& lock) {
  if (!stream_) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::hours(24 * 30));
    open_ctx_ = ctx.get();
    ctx_ = std::move(ctx);
    response_ = std::make_unique<v1::ReportEventsResponse>();
    stream_first_ = sent_ + 1;
    lock.unlock();
    std::shared_ptr<v1::WorkerService::Stub> stub = stub_();
    auto stream = stub->ReportEvents(ctx_.get(), response_.get());
    lock.lock();
    stream_stub_ = std::move(stub);
    stream_ = std::move(stream);
  }
  while (sent_ < next_number_ - 1 && !stopping_ && !abandoned_) {
    const int64_t number = sent_ + 1;
    if (queue_.empty() || queue_.front().number > number) {
      sent_ = std::max(sent_, acked_);  // acknowledged meanwhile: nothing to write
      continue;
    }
    v1::ReportEventsRequest request = queue_[number - queue_.front().number].request;
    lock.unlock();
    const bool ok = stream_->Write(request);
    lock.lock();
    if (!ok) return false;
    sent_ = std::max(sent_, number);
  }
  return true;
}

bool EventReporter::CloseStream(std::unique_lock<std::mutex>& lock) {
  const int64_t written = sent_ - stream_first_ + 1;
  lock.unlock();
  stream_->WritesDone();
  const grpc::Status status = stream_->Finish();
  lock.lock();
  const int64_t accepted = response_->accepted();
  stream_.reset();
  response_.reset();
  open_ctx_ = nullptr;
  ctx_.reset();
  stream_stub_.reset();
  if (status.ok() && accepted == written) {
    ForgetUpTo(sent_);
    backoff_ms_ = 0;
    return true;
  }
  last_break_ = FromGrpc(status);
  // What the scheduler committed of this stream, in order: the first
  // `accepted` events written on it.
  if (status.ok() || accepted > 0) ForgetUpTo(stream_first_ + accepted - 1);
  if (status.error_code() == grpc::StatusCode::ABORTED) {
    spdlog::warn("{}: lease lost ({}); stopping", job_, status.error_message());
    lease_lost_ = true;
  } else if (IsRefusal(status.error_code())) {
    refused_ = last_break_;
    spdlog::error("{}: the scheduler refused a training event: {}", job_,
                  status.error_message());
  } else if (!stopping_ && !abandoned_) {
    spdlog::warn("{}: the event stream to the scheduler broke ({}: {}); {} events held, "
                 "sending them again once it answers",
                 job_, static_cast<int>(status.error_code()), status.error_message(),
                 next_number_ - 1 - acked_);
  }
  return false;
}

void EventReporter::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  auto over = [&] { return stopping_ || abandoned_ || lease_lost_ || !refused_.ok(); };
  while (true) {
    cv_.wait(lock, [&] {
      return over() || sent_ < next_number_ - 1 || (draining_ && acked_ < next_number_ - 1);
    });
    if (over()) break;
    bool broke = false;
    if (sent_ < next_number_ - 1) {
      broke = !WritePending(lock) && !over();
      if (broke) CloseStream(lock);
    } else if (stream_) {
      // Drain(): everything is written; closing the stream tells what the
      // scheduler committed.
      broke = !CloseStream(lock);
    } else {
      sent_ = acked_;  // nothing open, still unacknowledged: write it again
      continue;
    }
    cv_.notify_all();
    if (!broke || over()) continue;
    // Write again, after a pause, everything not known to be committed.
    sent_ = acked_;
    ++reconnects_;
    backoff_ms_ = std::min(kMaxBackoffMs, std::max(kFirstBackoffMs, backoff_ms_ * 2));
    cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms_), over);
    lock.unlock();
    reconnect_();
    lock.lock();
  }
  if (stream_) {
    grpc::ClientWriter<v1::ReportEventsRequest>* stream = stream_.get();
    if (open_ctx_ != nullptr) open_ctx_->TryCancel();
    lock.unlock();
    stream->Finish();
    lock.lock();
    stream_.reset();
    open_ctx_ = nullptr;
    ctx_.reset();
    stream_stub_.reset();
  }
  cv_.notify_all();
}

}  // namespace tuneforge
