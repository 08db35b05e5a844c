// Sends one attempt's events to the scheduler, in order and exactly once,
// across broken streams and scheduler restarts.
//
// Training never waits on the network: Send() numbers the event (1, 2, ...)
// and queues it; a thread of the reporter's own writes the queue to a
// ReportEvents stream. When the stream breaks (the scheduler was restarted,
// killed, or is briefly unreachable), the reporter opens a new one with
// backoff and writes again every event the scheduler has not acknowledged;
// the scheduler drops the ones it had already committed (by their number),
// so each event is stored once and none is lost. Heartbeats carry the
// scheduler's acknowledgement (Acknowledge()), and so does a stream closed
// by Drain(), so the queue holds only what is in doubt.
//
// The queue is bounded in bytes: when the scheduler stays unreachable long
// enough to fill it, Send() blocks (training waits) until it drains, the
// lease is lost, or Abandon() is called.
//
//   EventReporter reporter(stub, job, lease);
//   reporter.Send(event);                       // from the training thread
//   reporter.Acknowledge(hb.last_report_sequence());  // from heartbeats
//   absl::Status s = reporter.Drain(deadline);  // before FinishJob
//
// Thread-safe.
#ifndef TUNEFORGE_WORKER_EVENT_REPORTER_H_
#define TUNEFORGE_WORKER_EVENT_REPORTER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "tuneforge/v1/worker.grpc.pb.h"

namespace tuneforge {

class EventReporter {
 public:
  static constexpr size_t kDefaultMaxQueuedBytes = 64 << 20;

  // `stub` gives the stub to open each stream with; `reconnect` is called
  // before a broken stream is opened again (the agent then makes a new
  // channel, which reaches a restarted scheduler at once).
  using StubFn = std::function<std::shared_ptr<v1::WorkerService::Stub>()>;
  EventReporter(StubFn stub, std::string job, std::string lease,
                std::function<void()> reconnect = [] {},
                size_t max_queued_bytes = kDefaultMaxQueuedBytes);
  // Stops the sender; what is still queued is not sent.
  ~EventReporter();
  EventReporter(const EventReporter&) = delete;
  EventReporter& operator=(const EventReporter&) = delete;

  // Queues the event. False (and the event is dropped) once the attempt is
  // over for the reporter: the lease was lost, the scheduler refused an
  // event, or Abandon() was called.
  bool Send(v1::JobEvent event);
  // The scheduler has committed every event numbered up to `n`.
  void Acknowledge(int64_t n);
  // Waits until the scheduler has committed every queued event, reconnecting
  // as needed, until `deadline`. OK; ABORTED when the lease was lost; the
  // scheduler's refusal of an event; UNAVAILABLE when the deadline passed
  // with events still unacknowledged.
  absl::Status Drain(std::chrono::system_clock::time_point deadline);
  // Gives up: Send() returns false, Drain() returns at once.
  void Abandon();

  bool lease_lost() const;
  int64_t reconnects() const;  // streams opened again after one broke
  // How the last stream broke (OK when none has): RESOURCE_EXHAUSTED is the
  // scheduler out of disk, UNAVAILABLE unreachable or restarting.
  absl::Status last_break() const;

 private:
  struct Queued {
    int64_t number;
    v1::ReportEventsRequest request;
    size_t bytes;
  };
  void Loop();
  // Writes queue_ entries after `sent_` to `stream`; false when the stream broke.
  bool WritePending(std::unique_lock<std::mutex>& lock);
  // Closes the open stream and reads its verdict. Returns true when every
  // event it carried was committed.
  bool CloseStream(std::unique_lock<std::mutex>& lock);
  void ForgetUpTo(int64_t n);  // requires mu_

  const StubFn stub_;
  const std::string job_;
  const std::string lease_;
  const std::function<void()> reconnect_;
  const size_t max_queued_bytes_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;   // unacknowledged, in number order
  size_t queued_bytes_ = 0;
  int64_t next_number_ = 1;
  int64_t acked_ = 0;          // committed by the scheduler, as far as we know
  int64_t sent_ = 0;           // written on the current stream (or earlier ones)
  int64_t stream_first_ = 0;   // first number written on the current stream
  bool draining_ = false;      // Drain() waits: close the stream to learn what it committed
  bool stopping_ = false;
  bool abandoned_ = false;
  bool lease_lost_ = false;
  absl::Status refused_;       // a refusal of the scheduler's other than ABORTED
  int64_t reconnects_ = 0;
  absl::Status last_break_;
  int64_t backoff_ms_ = 0;

  grpc::ClientContext* open_ctx_ = nullptr;  // the open stream's, for TryCancel
  // The open stream; only the sender thread touches these.
  std::shared_ptr<v1::WorkerService::Stub> stream_stub_;  // its channel lives while it is open
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<v1::ReportEventsResponse> response_;
  std::unique_ptr<grpc::ClientWriter<v1::ReportEventsRequest>> stream_;
  std::thread thread_;
};

}  // namespace tuneforge

#endif  // TUNEFORGE_WORKER_EVENT_REPORTER_H_
