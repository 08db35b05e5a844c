// A soak of the whole system: several jobs train on several worker
// processes while workers and the scheduler itself are killed at random
// (SIGKILL, and SIGTERM for the scheduler: a rolling upgrade). Afterwards
// every job has succeeded, every job's events are gap-free and exactly once,
// no two workers ever ran one job at once, every loss equals the loss of an
// uninterrupted run at the same step, the database passes SQLite's
// integrity_check, and the blob directory holds exactly the blobs the
// database references (none orphaned, none missing).
//
// Bounded: TUNEFORGE_SOAK_SECONDS of chaos (60 by default, a few minutes in
// all), TUNEFORGE_SOAK_SEED picks the schedule of kills.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/cluster.h"

namespace tuneforge::testing {
namespace {

namespace fs = std::filesystem;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

class SoakTest : public ClusterTest {};

TEST_F(SoakTest, RandomKillsOfWorkersAndTheSchedulerLoseNothing) {
  const int chaos_seconds = EnvInt("TUNEFORGE_SOAK_SECONDS", 60);
  const unsigned seed = static_cast<unsigned>(EnvInt("TUNEFORGE_SOAK_SEED", 16));
  const int kJobs = 4, kWorkers = 3, kEpochs = 8;  // 144 steps a job
  const std::vector<std::string> server_args = {
      "--listen=127.0.0.1:" + std::to_string(FreeTcpPort()), "--heartbeat-ms=200",
      "--lease-seconds=3", "--max-attempts=100"};
  StartServer(server_args);
  std::vector<std::string> jobs;
  for (int i = 0; i < kJobs; ++i) jobs.push_back(CreateJob(kEpochs));
  std::vector<std::unique_ptr<BackgroundProcess>> workers(kWorkers);
  int incarnation = 0;  // each start is a new host: its cache starts empty
  auto start_worker = [&](int i) {
    workers[i] = StartWorker("w" + std::to_string(i) + "-" + std::to_string(incarnation++));
  };
  for (int i = 0; i < kWorkers; ++i) start_worker(i);

  std::mt19937 rng(seed);
  int worker_kills = 0, scheduler_kills = 0, scheduler_stops = 0;
  const auto started = std::chrono::steady_clock::now();
  const auto chaos_end = started + std::chrono::seconds(chaos_seconds);
  // The load stays on for the whole soak: a job that ends is replaced.
  auto keep_jobs_running = [&] {
    int active = 0;
    for (const std::string& job : jobs) active += !Ended(GetJob(job));
    for (; active < kJobs; ++active) jobs.push_back(CreateJob(kEpochs));
  };
  while (std::chrono::steady_clock::now() < chaos_end) {
    keep_jobs_running();
    std::this_thread::sleep_for(std::chrono::milliseconds(1500 + rng() % 2500));
    switch (rng() % 4) {
      case 0:
      case 1: {  // a worker's host dies; another takes its place
        const int i = static_cast<int>(rng() % kWorkers);
        workers[i]->Signal(SIGKILL);
        workers[i]->Wait(10);
        start_worker(i);
        ++worker_kills;
        break;
      }
      case 2:  // the scheduler crashes
        server_->Kill();
        std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 700));
        StartServer(server_args);
        ++scheduler_kills;
        break;
      case 3:  // a rolling upgrade
        ASSERT_EQ(server_->Stop(30), 0) << server_->Log();
        StartServer(server_args);
        ++scheduler_stops;
        break;
    }
  }
  for (const std::string& job : jobs) WaitForJob(job, Ended, 300);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  // An uninterrupted run of the same job: the curve every attempt must follow.
  const std::string reference_job = CreateJob(kEpochs);
  std::vector<std::map<int64_t, double>> reference = LossesByAttempt(WatchToEnd(reference_job));
  ASSERT_EQ(reference.size(), 1u);
  ASSERT_EQ(reference[0].size(), static_cast<size_t>(kEpochs * 18));

  int64_t events_total = 0, attempts_total = 0;
  for (const std::string& job : jobs) {
    json done = GetJob(job);
    ASSERT_EQ(done["state"], "JOB_STATE_SUCCEEDED") << done.dump();
    std::vector<json> events = WatchToEnd(job);  // gap-free, each once
    events_total += static_cast<int64_t>(events.size());
    // One owner at a time: RUNNING is entered only from a state that is not
    // RUNNING, and within an attempt steps only go forward.
    std::string state = "JOB_STATE_UNSPECIFIED";
    int64_t last_step = 0;
    for (const json& e : events) {
      if (e.contains("stateChange")) {
        const std::string to = e["stateChange"].value("to", "");
        EXPECT_FALSE(to == "JOB_STATE_RUNNING" && state == "JOB_STATE_RUNNING") << e.dump();
        state = to;
        if (to == "JOB_STATE_RUNNING") ++attempts_total;
      } else if (e.contains("started")) {
        last_step = Int(e["started"], "resumedFromStep");
      } else if (e.contains("metrics")) {
        const int64_t step = Int(e["metrics"], "step");
        EXPECT_EQ(step, last_step + 1) << job << ": " << e.dump();
        last_step = step;
        EXPECT_NEAR(e["metrics"]["loss"].get<double>(), reference[0][step], 1e-6)
            << job << " step " << step;
      }
    }
    std::map<int64_t, double> covered;
    for (const auto& attempt : LossesByAttempt(events)) covered.insert(attempt.begin(), attempt.end());
    EXPECT_EQ(covered.size(), reference[0].size()) << job << ": a step was never trained";
  }
  ASSERT_EQ(server_->Stop(30), 0);

  const std::string db = dir_ + "/data/tuneforge.db";
  EXPECT_EQ(testing::Run("/usr/bin/sqlite3", {db, "PRAGMA integrity_check;"}).out, "ok\n");
  std::set<std::string> referenced, on_disk;
  std::istringstream rows(
      testing::Run("/usr/bin/sqlite3", {db, "SELECT sha256 FROM datasets UNION SELECT sha256 FROM "
                                   "model_files UNION SELECT sha256 FROM job_files;"})
          .out);
  for (std::string line; std::getline(rows, line);) {
    if (!line.empty()) referenced.insert(line);
  }
  for (const auto& e : fs::recursive_directory_iterator(dir_ + "/data/blobs")) {
    if (e.is_regular_file()) on_disk.insert(e.path().filename().string());
  }
  EXPECT_EQ(referenced, on_disk) << "orphaned or missing blobs";
  std::printf("soak: %zu jobs, %d workers, %d worker SIGKILLs, %d scheduler SIGKILLs, "
              "%d scheduler SIGTERMs, %lld attempts, %lld events, in %.0f s (seed %u)\n",
              jobs.size(), kWorkers, worker_kills, scheduler_kills, scheduler_stops,
              static_cast<long long>(attempts_total), static_cast<long long>(events_total),
              seconds, seed);
}

}  // namespace
}  // namespace tuneforge::testing
