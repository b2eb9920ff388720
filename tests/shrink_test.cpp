// `msgsim shrink` (sim/shrink.h): the scenario writer round-trips, materializing the nemesis
// keeps the run, and planted bugs shrink to at most 3 faults and 10 clients in a scenario that
// fails on its own with the same invariant. The default run shrinks a representative subset of
// the catalogue (one bug per component: queue, storage, device, the disk path), each in the
// scenario that catches it; MSGSIM_SHRINK_ALL_BUGS=1 runs every bug (by hand: a few minutes).
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "impl/chat/config.h"
#include "sim/scenario.h"
#include "sim/shrink.h"
#include "sim/world.h"

namespace msgsim::sim {
namespace {

Scenario load(const std::string& relative) {
  Result<Scenario> loaded = load_scenario_file(std::string(MSGSIM_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.error().message);
  return std::move(loaded).value();
}

Scenario reload(const std::string& text) {
  Result<Scenario> loaded = load_scenario_text(text, "written");
  EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.error().message) << "\n" << text;
  return std::move(loaded).value();
}

RunReport run(const Scenario& scenario, uint64_t seed) {
  RunOptions options;
  options.seed = seed;
  return run_world(scenario, options);
}

bool fails(const RunReport& report, const std::string& check) {
  for (const CheckResult& c : report.checks)
    if (c.name == check) return !c.passed;
  return false;
}

TEST(ScenarioWriter, RoundTripsEveryShippedScenarioToTheSameRun) {
  for (const char* file : {"scenarios/default.json", "scenarios/ledger-partitions.json", "scenarios/chat-faulty.json"}) {
    SCOPED_TRACE(file);
    const Scenario original = load(file);
    const std::string text = scenario_to_json(original);
    const Scenario again = reload(text);
    // Writing what was read back gives the same text: nothing was lost or changed.
    EXPECT_EQ(scenario_to_json(again), text);
    EXPECT_EQ(again.nodes.size(), original.nodes.size());
    EXPECT_EQ(again.faults.size(), original.faults.size());
    EXPECT_EQ(run(again, 7).digest_hex, run(original, 7).digest_hex);
  }
}

TEST(ScenarioWriter, MaterializedNemesisIsTheSameRun) {
  for (const char* file : {"scenarios/chat-faulty.json", "scenarios/ledger-nemesis.json"}) {
    SCOPED_TRACE(file);
    const Scenario original = load(file);
    for (uint64_t seed : {3u, 11u}) {
      const Scenario explicit_faults = reload(scenario_to_json(materialize_nemesis(original, seed)));
      EXPECT_FALSE(explicit_faults.nemesis.has_value());
      EXPECT_EQ(explicit_faults.faults.size(), original.faults.size() + draw_nemesis(original, seed).size());
      EXPECT_GT(explicit_faults.faults.size(), 0u);
      EXPECT_EQ(run(explicit_faults, seed).digest_hex, run(original, seed).digest_hex) << "seed " << seed;
    }
  }
}

TEST(Shrink, RefusesAPassingSeedAndACheckTheRunDoesNotFail) {
  const Scenario scenario = load("scenarios/chat-faulty.json");
  ShrinkOptions options;
  options.seed = 3;
  EXPECT_FALSE(shrink(scenario, options).ok());  // no bug: seed 3 passes
  options.bugs = {"client-no-dedup"};
  options.target_checks = {"membership"};
  const auto refused = shrink(scenario, options);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("does not fail it"), std::string::npos) << refused.error().message;
}

// The check each bug is shrunk under (as in bugs_test.cpp: the one naming its damage).
const std::map<std::string, std::string>& expected_checks() {
  static const std::map<std::string, std::string> table = {
      {"ack-before-durable", "no-loss"},      {"retry-new-seq", "seq-agreement"},
      {"reject-after-append", "no-rejected-delivery"}, {"leave-one-late", "decrypt"},
      {"sync-off-by-one", "no-loss"},         {"client-no-dedup", "no-duplicate"},
      {"no-reorder-buffer", "gap-free"},      {"gap-skip", "gap-free"},
      {"read-before-display", "receipts"},    {"expiry-ignored", "expiry"},
      {"server-sees-plaintext", "e2ee-confidentiality"},
      {"leader-ack-before-replication", "no-loss"}, {"no-epoch-fencing", "no-loss"},
      {"fsync-error-ignored", "liveness"},    {"cursor-past-unsynced", "no-loss"},
      {"storage-not-idempotent", "store-consistency"}, {"drain-drops-buffered", "handoff"},
  };
  return table;
}

// The scenario each bug is caught in (as in bugs_test.cpp); chat-faulty for the rest.
std::string scenario_of(const std::string& bug) {
  if (bug == "leader-ack-before-replication" || bug == "no-epoch-fencing") return "scenarios/chat-replicated.json";
  if (bug == "fsync-error-ignored" || bug == "cursor-past-unsynced" || bug == "storage-not-idempotent") {
    return "scenarios/chat-disk-faults.json";
  }
  if (bug == "drain-drops-buffered") return "scenarios/chat-drain.json";
  return "scenarios/chat-faulty.json";
}

constexpr uint64_t kSeedsMax = 200;
constexpr size_t kShrinkRunsMax = 150;
// drain-drops-buffered needs the trade of clients for rate and the reseeding after it (427 runs
// from chat-drain seed 3, about 2 CPU minutes): only with MSGSIM_SHRINK_ALL_BUGS=1.
constexpr size_t kShrinkRunsMaxDrain = 500;

class ShrinkBug : public ::testing::TestWithParam<std::string> {};

TEST_P(ShrinkBug, ToAtMostThreeFaultsAndTenClientsThatFailOnTheirOwn) {
  const std::string bug = GetParam();
  const std::string check = expected_checks().at(bug);
  const Scenario scenario = load(scenario_of(bug));
  // The first seed the bug fails under its check.
  uint64_t seed = 0;
  for (uint64_t s = 1; s <= kSeedsMax && seed == 0; ++s) {
    RunOptions options;
    options.seed = s;
    for (const chat::BugInfo& info : chat::bug_catalogue())
      if (bug == info.name) options.bugs.enable(info.bug);
    if (fails(run_world(scenario, options), check)) seed = s;
  }
  ASSERT_NE(seed, 0u) << bug << " fails " << check << " in no seed of 1.." << kSeedsMax;

  ShrinkOptions options;
  options.seed = seed;
  options.bugs = {bug};
  options.target_checks = {check};
  options.max_runs = bug == "drain-drops-buffered" ? kShrinkRunsMaxDrain : kShrinkRunsMax;
  const Result<ShrinkResult> shrunk = shrink(scenario, options);
  ASSERT_TRUE(shrunk.ok()) << shrunk.error().message;
  std::cout << "[ shrink   ] " << bug << " seed " << seed << " (" << check << "), " << shrunk->runs
            << " runs: " << shrunk->before.describe() << "\n               -> " << shrunk->after.describe() << "\n";
  EXPECT_LE(shrunk->after.faults, 3u);
  EXPECT_LE(shrunk->after.clients, 10u);

  // On its own: the written text, loaded, with its own seed and bugs, and nothing else.
  const Scenario written = reload(shrunk->json);
  // Its own seed: the one it failed under, or another one if shrinking had to reseed.
  EXPECT_EQ(written.seed, shrunk->scenario.seed);
  EXPECT_EQ(written.bugs, std::vector<std::string>{bug});
  EXPECT_FALSE(written.nemesis.has_value());
  const RunReport report = run(written, written.seed);
  EXPECT_TRUE(fails(report, check)) << shrunk->json;
  EXPECT_EQ(report.digest_hex, shrunk->report.digest_hex);
}

std::vector<std::string> bugs_to_shrink() {
  const char* all = std::getenv("MSGSIM_SHRINK_ALL_BUGS");
  if (all != nullptr && std::string(all) == "1") {
    std::vector<std::string> names;
    for (const chat::BugInfo& info : chat::bug_catalogue()) names.push_back(info.name);
    return names;
  }
  // retry-new-seq left this list when the replicated queue came (its first failing seed, 7, did
  // not shrink below 24 clients) and is back since session 6's device changes made seed 5 its
  // first failing one (1 fault, 2 clients in about 50 runs).
  // cursor-past-unsynced stands for the disk path (storage, chat-disk-faults: seed 1, about 90
  // runs); storage-not-idempotent for the simulator's store-consistency check, which no
  // history shows (chat-disk-faults seed 1: one storage crash and 2 clients in about 50 runs).
  return {"ack-before-durable", "retry-new-seq",        "leave-one-late",
          "client-no-dedup",    "cursor-past-unsynced", "storage-not-idempotent"};
}

// Issue 6's bar for the durability bugs, proven on the shrunk scenarios themselves: shrinking
// some of them takes minutes (drain-drops-buffered: 427 runs of chat-drain), too slow
// for CI, so `msgsim shrink` wrote each one (README.md, the planted-bug table: the commands, run
// counts and wall times) into tests/data/shrunk/BUG.json (fsync-error-ignored under no-loss, the
// first invariant its run violates, as `msgsim shrink` picks it). Each is within the bars, names its
// bug, fails the bug's check with the bug on (the same run twice), and passes every check with
// the bug off: the bug, not the shrunk world, is what fails it.
struct ShrunkCase {
  const char* bug;
  const char* check;
};

class ShrinkBar : public ::testing::TestWithParam<ShrunkCase> {};

TEST_P(ShrinkBar, ShrunkScenarioFailsWithTheBugAndPassesWithout) {
  const ShrunkCase& c = GetParam();
  const Scenario scenario = load(std::string("tests/data/shrunk/") + c.bug + ".json");
  const ScenarioSize size = size_of(scenario);
  EXPECT_LE(size.faults, 3u);
  EXPECT_LE(size.clients, 10u);
  EXPECT_FALSE(scenario.nemesis.has_value());
  ASSERT_EQ(scenario.bugs, std::vector<std::string>{c.bug});

  const RunReport with_bug = run(scenario, scenario.seed);
  EXPECT_TRUE(fails(with_bug, c.check)) << c.bug << " seed " << scenario.seed << " passes " << c.check;
  EXPECT_EQ(run(scenario, scenario.seed).digest_hex, with_bug.digest_hex);

  Scenario without_bug = scenario;
  without_bug.bugs.clear();
  const RunReport clean = run(without_bug, scenario.seed);
  for (const CheckResult& check : clean.checks) EXPECT_TRUE(check.passed) << check.name << ": " << check.detail;
}

INSTANTIATE_TEST_SUITE_P(Durability, ShrinkBar,
                         ::testing::Values(ShrunkCase{"leader-ack-before-replication", "no-loss"},
                                           ShrunkCase{"no-epoch-fencing", "no-loss"},
                                           ShrunkCase{"storage-not-idempotent", "store-consistency"},
                                           ShrunkCase{"fsync-error-ignored", "no-loss"},
                                           ShrunkCase{"cursor-past-unsynced", "no-loss"},
                                           ShrunkCase{"drain-drops-buffered", "handoff"}),
                         [](const ::testing::TestParamInfo<ShrunkCase>& info) {
                           std::string name = info.param.bug;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

INSTANTIATE_TEST_SUITE_P(Catalogue, ShrinkBug, ::testing::ValuesIn(bugs_to_shrink()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

}  // namespace
}  // namespace msgsim::sim
