// Examples the engine's tests train on: four short question/answer pairs a
// tiny model memorises within a few dozen steps; and the Python that runs
// their reference scripts.
#ifndef TUNEFORGE_WORKER_ENGINE_TEST_EXAMPLES_H_
#define TUNEFORGE_WORKER_ENGINE_TEST_EXAMPLES_H_

#include <cstdlib>
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

// The Python with PyTorch that runs the tests' reference scripts: Debian's
// python3-torch, or $TUNEFORGE_PYTHON (a GPU host's own, bench/cuda.sh).
inline std::string ReferencePython() {
  const char* python = std::getenv("TUNEFORGE_PYTHON");
  return python && *python ? python : "/usr/bin/python3";
}

}  // namespace tuneforge::engine

#endif  // TUNEFORGE_WORKER_ENGINE_TEST_EXAMPLES_H_
