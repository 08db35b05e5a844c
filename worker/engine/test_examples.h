// Examples the engine's tests train on: four short question/answer pairs a
// tiny model memorises within a few dozen steps.
#ifndef TUNEFORGE_WORKER_ENGINE_TEST_EXAMPLES_H_
#define TUNEFORGE_WORKER_ENGINE_TEST_EXAMPLES_H_

#include <string>
#include <vector>

#include "common/dataset.h"

namespace tuneforge::engine {

inline Example Pair(std::string prompt, std::string completion) {
  Example e;
  e.prompt = std::move(prompt);
  e.completion = std::move(completion);
  return e;
}

inline std::vector<Example> Memorisable() {
  return {Pair("Q: leave? A:", " 25 days."), Pair("Q: pay day? A:", " The last Friday."),
          Pair("Q: probation? A:", " Six months."), Pair("Q: remote? A:", " Two days a week.")};
}

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_TEST_EXAMPLES_H_
