// Whole runs of the scenarios in scenarios/: every one replays with the same digest, seeds
// matter, the ledger's durability check bites when the durability is taken away, and the
// runtime contract holds up under crashes, restarts, partitions and reconnects.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "sim/scenario.h"
#include "impl/chat/config.h"
#include "sim/world.h"

namespace msgsim::sim {
namespace {

constexpr int64_t kS = kNanosPerSecond;

RunOptions seeded(uint64_t seed) {
  RunOptions options;
  options.seed = seed;
  return options;
}

Scenario load(const std::string& relative) {
  Result<Scenario> loaded = load_scenario_file(std::string(MSGSIM_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.error().message);
  return std::move(loaded).value();
}

std::vector<std::string> scenario_files() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(MSGSIM_SOURCE_DIR) + "/scenarios")) {
    if (entry.path().extension() == ".json" && entry.path().filename() != "schema.json") {
      files.push_back("scenarios/" + entry.path().filename().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

class EveryScenario : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryScenario, RunsTwiceWithTheSameDigestAndPasses) {
  const Scenario scenario = load(GetParam());
  const RunReport first = run_world(scenario, seeded(scenario.seed));
  const RunReport second = run_world(scenario, seeded(scenario.seed));
  EXPECT_EQ(first.digest_hex, second.digest_hex);
  EXPECT_EQ(first.stats.events, second.stats.events);
  EXPECT_GT(first.stats.frames_delivered, 0u);
  for (const auto& check : first.checks) EXPECT_TRUE(check.passed) << check.name << ": " << check.detail;
}

TEST_P(EveryScenario, DifferentSeedsGiveDifferentDigests) {
  const Scenario scenario = load(GetParam());
  const RunReport a = run_world(scenario, seeded(1001));
  const RunReport b = run_world(scenario, seeded(1002));
  EXPECT_NE(a.digest_hex, b.digest_hex);
}

INSTANTIATE_TEST_SUITE_P(Scenarios, EveryScenario, ::testing::ValuesIn(scenario_files()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = std::filesystem::path(info.param).stem().string();
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// A small ledger world with crashes that lose unsynced writes, written inline so the test says
// exactly what it exercises.
Scenario crashy_ledger(bool synchronous_full) {
  const std::string text = R"({
    "name": "crashy-ledger", "system": "ledger", "duration_s": 20, "quiescence_s": 10,
    "topology": {"regions": ["us-east"], "nodes": [
      {"name": "server", "role": "ledger-server", "count": 2, "region": "us-east"},
      {"name": "client", "role": "ledger-client", "count": 20, "region": "us-east"}]},
    "workload": {"ledger": {"append_interval_ms": 20, "synchronous": ")" +
                           std::string(synchronous_full ? "full" : "off") + R"("}},
    "faults": [
      {"at_s": 3, "kind": "crash", "nodes": "server", "restart_after_s": 1, "disk": "lose-unsynced"},
      {"at_s": 7, "kind": "crash", "nodes": "server", "restart_after_s": 1, "disk": "torn"},
      {"at_s": 11, "kind": "crash", "nodes": "server-1", "restart_after_s": 1, "disk": "lose-unsynced"},
      {"at_s": 15, "kind": "crash", "nodes": "server-2", "restart_after_s": 1, "disk": "lose-unsynced"}
    ]})";
  Result<Scenario> loaded = load_scenario_text(text, "crashy-ledger.json");
  EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.error().message);
  return std::move(loaded).value();
}

const CheckResult* find_check(const RunReport& report, const std::string& name) {
  for (const auto& c : report.checks)
    if (c.name == name) return &c;
  return nullptr;
}

TEST(Ledger, SynchronousFullKeepsEveryAcknowledgedAppendThroughCrashes) {
  const Scenario scenario = crashy_ledger(true);
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    const RunReport report = run_world(scenario, seeded(seed));
    for (const auto& check : report.checks) EXPECT_TRUE(check.passed) << "seed " << seed << ": " << check.name << ": " << check.detail;
    EXPECT_EQ(report.stats.crashes, 6u);
    EXPECT_EQ(report.stats.restarts, 6u);
  }
}

TEST(Ledger, SynchronousOffLosesAcknowledgedAppendsAndTheCheckSaysSo) {
  const Scenario scenario = crashy_ledger(false);
  int caught = 0;
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    const RunReport report = run_world(scenario, seeded(seed));
    const CheckResult* durability = find_check(report, "ledger.durability");
    ASSERT_NE(durability, nullptr);
    caught += !durability->passed;
  }
  EXPECT_GT(caught, 0) << "synchronous=OFF under power-loss crashes never lost an acknowledged append";
}

TEST(Ledger, ClientsReconnectAndSettleAfterAPartitionLongerThanTheTimeout) {
  const std::string text = R"({
    "name": "partitioned-ledger", "system": "ledger", "duration_s": 40, "quiescence_s": 15,
    "topology": {"regions": ["us-east", "in-central"], "nodes": [
      {"name": "server", "role": "ledger-server", "count": 1, "region": "us-east"},
      {"name": "client", "role": "ledger-client", "count": 10, "region": "in-central"}]},
    "network": {"connection_timeout_ms": 3000},
    "faults": [{"at_s": 5, "kind": "region-split", "regions": [["us-east"], ["in-central"]], "heal_after_s": 10}]
  })";
  Result<Scenario> loaded = load_scenario_text(text, "partitioned-ledger.json");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const RunReport report = run_world(*loaded, seeded(3));
  for (const auto& check : report.checks) EXPECT_TRUE(check.passed) << check.name << ": " << check.detail;
  EXPECT_GT(report.stats.connections_broken, 0u);  // the split outlasted the timeout
  EXPECT_FALSE(report.faults.empty());
}

TEST(Nemesis, DrawsAreDeterministicAndWithinTheRun) {
  const std::string text = R"({
    "name": "nemesis-ledger", "system": "ledger", "duration_s": 60,
    "topology": {"regions": ["us-east"], "nodes": [
      {"name": "server", "role": "ledger-server", "count": 3, "region": "us-east"},
      {"name": "client", "role": "ledger-client", "count": 5, "region": "us-east"}]},
    "nemesis": {"kinds": ["crash", "partition", "isolate", "latency-spike", "clock", "slow"],
                "mean_interval_s": 4, "fault_duration_s": [1, 3], "max_concurrent": 2, "targets": "server"}
  })";
  Result<Scenario> loaded = load_scenario_text(text, "nemesis-ledger.json");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const auto a = draw_nemesis(*loaded, 9);
  const auto b = draw_nemesis(*loaded, 9);
  const auto c = draw_nemesis(*loaded, 10);
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].at_ns, b[i].at_ns);
    EXPECT_EQ(a[i].kind, b[i].kind);
    EXPECT_LT(a[i].at_ns, loaded->duration_ns);
    EXPECT_GE(*a[i].end_after_ns, 1 * kS);
    EXPECT_LE(*a[i].end_after_ns, 3 * kS);
  }
  bool differs = a.size() != c.size();
  for (size_t i = 0; !differs && i < a.size(); ++i) differs = a[i].at_ns != c[i].at_ns;
  EXPECT_TRUE(differs);
  const RunReport report = run_world(*loaded, seeded(9));
  for (const auto& check : report.checks) EXPECT_TRUE(check.passed) << check.name << ": " << check.detail;
}

TEST(Nemesis, SwarmPicksANonEmptySubsetOfKindsPerSeedAndDrawsOnlyThose) {
  Scenario scenario = load("scenarios/chat-faulty.json");
  ASSERT_TRUE(scenario.nemesis && scenario.nemesis->swarm);
  const std::vector<FaultKind>& all = scenario.nemesis->kinds;
  std::set<std::vector<FaultKind>> subsets;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const NemesisChoice choice = nemesis_choice(scenario, seed);
    EXPECT_TRUE(choice.swarm);
    ASSERT_FALSE(choice.kinds.empty());
    for (FaultKind k : choice.kinds) EXPECT_NE(std::find(all.begin(), all.end(), k), all.end());
    EXPECT_GE(choice.mean_interval_ns, scenario.nemesis->mean_interval_ns / 2);
    EXPECT_LE(choice.mean_interval_ns, scenario.nemesis->mean_interval_ns * 2);
    EXPECT_GE(choice.max_concurrent, 1u);
    EXPECT_LE(choice.max_concurrent, scenario.nemesis->max_concurrent);
    for (const FaultSpec& f : draw_nemesis(scenario, seed)) {
      EXPECT_NE(std::find(choice.kinds.begin(), choice.kinds.end(), f.kind), choice.kinds.end()) << "seed " << seed;
    }
    EXPECT_EQ(run_world(scenario, seeded(seed)).nemesis, choice.describe()) << "the run report names the choice";
    subsets.insert(choice.kinds);
    if (seed >= 3) break;  // runs are the slow part; the choice alone for the rest below
  }
  for (uint64_t seed = 4; seed <= 200; ++seed) subsets.insert(nemesis_choice(scenario, seed).kinds);
  EXPECT_GE(subsets.size(), 10u) << "swarm should vary the kinds from seed to seed";
  // Without swarm, every seed uses the scenario's kinds and rates.
  scenario.nemesis->swarm = false;
  const NemesisChoice plain = nemesis_choice(scenario, 5);
  EXPECT_EQ(plain.kinds, all);
  EXPECT_EQ(plain.mean_interval_ns, scenario.nemesis->mean_interval_ns);
  EXPECT_FALSE(plain.swarm);
}

TEST(Liveness, ASystemThatNeverSettlesFailsLivenessNamingWhatIsUnsettled) {
  Scenario scenario = load("scenarios/chat-faulty.json");
  RunOptions options = seeded(1);
  // The storage skips an entry in every sync: devices wait on the gap forever.
  options.bugs.enable(chat::Bug::sync_off_by_one);
  scenario.liveness_ns = 2 * kS;
  const RunReport report = run_world(scenario, options);
  EXPECT_EQ(report.liveness_bound_ns, 2 * kS);
  EXPECT_LT(report.settled_after_heal_ns, 0);
  bool found = false;
  for (const auto& check : report.checks) {
    if (check.name != "liveness") continue;
    found = true;
    EXPECT_FALSE(check.passed);
    EXPECT_NE(check.detail.find("not settled within 2.000s after every fault healed"), std::string::npos) << check.detail;
    EXPECT_NE(check.detail.find("waiting"), std::string::npos) << "names the devices' open gaps: " << check.detail;
  }
  EXPECT_TRUE(found);
}

TEST(Liveness, ACleanRunSettlesWithinTheBoundAndReportsWhen) {
  const Scenario scenario = load("scenarios/chat-faulty.json");
  const RunReport report = run_world(scenario, seeded(2));
  EXPECT_EQ(report.liveness_bound_ns, scenario.quiescence_ns + 5 * kS);  // the default
  EXPECT_GE(report.settled_after_heal_ns, 0);
  EXPECT_LE(report.settled_after_heal_ns, report.liveness_bound_ns);
  for (const auto& check : report.checks) EXPECT_TRUE(check.passed) << check.name << ": " << check.detail;
}

}  // namespace
}  // namespace msgsim::sim
