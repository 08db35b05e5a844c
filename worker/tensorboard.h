// A job's metrics as a TensorBoard event file, so `tensorboard --logdir`
// shows its curves: TFRecord framing (length, masked CRC32C of the length,
// data, masked CRC32C of the data) around `Event` protos carrying scalar
// summaries, written by hand from the public format (no TensorFlow).
//
// The scalars come from the job's metrics CSV, which survives a resume, so
// the file holds the whole run: train/loss, train/learning_rate,
// train/grad_norm, train/tokens_per_second, validation/loss,
// validation/perplexity, validation/token_accuracy. Wall times are when the
// file was written (the CSV has steps, not times).
#ifndef TUNEFORGE_WORKER_TENSORBOARD_H_
#define TUNEFORGE_WORKER_TENSORBOARD_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tuneforge {

// CRC-32C (Castagnoli), as TFRecord uses it, and its masked form.
uint32_t Crc32c(std::string_view data);
uint32_t MaskedCrc32c(std::string_view data);

// Writes `dir`/events.out.tfevents.{seconds}.{host} from the metrics CSV at
// `metrics_csv`; returns its path.
absl::StatusOr<std::string> WriteTensorBoardEvents(const std::string& metrics_csv,
                                                   const std::string& dir,
                                                   const std::string& host);

}  // namespace tuneforge

#endif  // TUNEFORGE_WORKER_TENSORBOARD_H_
