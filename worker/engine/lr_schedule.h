// The learning rate at each optimizer step: linear warmup from 0 to the
// peak, then the setting's schedule (training_settings.def): cosine to 10%
// of the peak, linear to 0, or constant.
#ifndef TUNEFORGE_WORKER_ENGINE_LR_SCHEDULE_H_
#define TUNEFORGE_WORKER_ENGINE_LR_SCHEDULE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "worker/engine/trainer.h"

namespace tuneforge::engine {

// `step` counts from 0; `warmup` steps of warmup out of `total_steps`.
inline double LearningRateAt(int64_t step, int64_t total_steps, int64_t warmup, const TrainConfig& c) {
  if (warmup > 0 && step < warmup) return c.learning_rate * double(step + 1) / double(warmup);
  const double decay_steps = std::max<int64_t>(1, total_steps - warmup);
  const double progress = std::clamp(double(step - warmup) / decay_steps, 0.0, 1.0);
  if (c.schedule == "constant") return c.learning_rate;
  if (c.schedule == "linear") return c.learning_rate * (1.0 - progress);
  // cosine, to 10% of the peak
  const double min_lr = 0.1 * c.learning_rate;
  return min_lr + 0.5 * (c.learning_rate - min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_LR_SCHEDULE_H_
