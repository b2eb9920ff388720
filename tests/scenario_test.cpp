// Scenarios: the example files load, every kind of bad scenario is rejected with the file, the
// JSON path and what was expected, selectors and defaults resolve as documented, and the
// built-in region table is what its method says.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "impl/base/prng.h"
#include "sim/json_schema.h"
#include "sim/regions.h"
#include "sim/scenario.h"

namespace msgsim::sim {
namespace {

namespace fs = std::filesystem;

const fs::path kSource = MSGSIM_SOURCE_DIR;
const fs::path kBadDir = kSource / "tests/data/scenarios/bad";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<uint32_t> iota(uint32_t first, uint32_t count) {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < count; ++i) out.push_back(first + i);
  return out;
}

// A small valid scenario: servers 0-2 in us-east, clients 3-6 in us-east, clients 7-9 in
// eu-west. `extra` is spliced in as further top-level fields.
std::string small_scenario(const std::string& extra = "") {
  return R"({
    "name": "small", "system": "ledger", "duration_s": 30,
    "topology": {
      "regions": ["us-east", "eu-west", "in-central"],
      "nodes": [
        {"name": "server", "role": "ledger-server", "count": 3, "region": "us-east"},
        {"name": "client", "role": "ledger-client", "count": 4, "region": "us-east"},
        {"name": "eu", "role": "ledger-client", "count": 3, "region": "eu-west"}
      ]
    })" + (extra.empty() ? "" : ",\n" + extra) + "\n}";
}

Scenario load_ok(const std::string& text) {
  Result<Scenario> loaded = load_scenario_text(text, "test.json");
  EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.error().message);
  if (!loaded.ok()) return Scenario{};
  return std::move(loaded).value();
}

std::string load_error(const std::string& text) {
  Result<Scenario> loaded = load_scenario_text(text, "test.json");
  EXPECT_FALSE(loaded.ok());
  if (loaded.ok()) return "";
  EXPECT_EQ(loaded.error().code, ErrorCode::bad_input);
  return loaded.error().message;
}

// ---------------------------------------------------------------------------------------------
// The example scenarios.

TEST(ScenarioFiles, EveryExampleLoads) {
  int loaded = 0;
  for (const auto& entry : fs::directory_iterator(kSource / "scenarios")) {
    if (entry.path().extension() != ".json" || entry.path().filename() == "schema.json") continue;
    Result<Scenario> scenario = load_scenario_file(entry.path().string());
    EXPECT_TRUE(scenario.ok()) << entry.path() << ": " << (scenario.ok() ? "" : scenario.error().message);
    if (!scenario.ok()) continue;
    EXPECT_EQ(scenario->file, entry.path().string());
    // Every role of the system has nodes, so every chat client encrypts.
    for (const std::string_view role : system_roles(scenario->system)) {
      EXPECT_FALSE(scenario->nodes_with_role(role).empty()) << entry.path() << ": no " << role;
    }
    ++loaded;
  }
  EXPECT_GE(loaded, 4);
}

TEST(ScenarioFiles, DefaultIsResolvedCompletely) {
  Result<Scenario> loaded = load_scenario_file((kSource / "scenarios/default.json").string());
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const Scenario& s = *loaded;
  EXPECT_EQ(s.name, "ledger-default");
  EXPECT_EQ(s.system, "ledger");
  EXPECT_EQ(s.duration_ns, 60'000'000'000);
  EXPECT_EQ(s.quiescence_ns, 10'000'000'000);
  ASSERT_EQ(s.regions, (std::vector<std::string>{"us-east", "in-central"}));
  ASSERT_EQ(s.nodes.size(), 203u);
  EXPECT_EQ(s.nodes[0].name, "server-1");
  EXPECT_EQ(s.nodes[2].name, "server-3");
  EXPECT_EQ(s.nodes[3].name, "client-us-1");
  EXPECT_EQ(s.nodes[103].name, "client-in-1");
  EXPECT_EQ(s.nodes[103].region, 1u);
  EXPECT_EQ(s.nodes[202].name, "client-in-100");
  EXPECT_EQ(s.nodes_with_role("ledger-server"), iota(0, 3));
  EXPECT_EQ(s.nodes_with_role("ledger-client"), iota(3, 200));

  // US East to Central India: the published 218 ms RTT p95 -> base 0.45 R, mean R / 60.
  EXPECT_EQ(s.latency[0][1].base_ns, 98'100'000);
  EXPECT_EQ(s.latency[0][1].jitter_mean_ns, 3'633'333);
  EXPECT_EQ(s.latency[1][0].base_ns, s.latency[0][1].base_ns);
  EXPECT_EQ(s.latency[0][0].base_ns, 400'000);
  EXPECT_EQ(s.latency[1][1].jitter_mean_ns, 100'000);

  ASSERT_EQ(s.faults.size(), 3u);
  const FaultSpec& crash = s.faults[0];
  EXPECT_EQ(crash.kind, FaultKind::crash);
  EXPECT_EQ(crash.at_ns, 10'000'000'000);
  EXPECT_EQ(crash.end_after_ns, 5'000'000'000);
  EXPECT_EQ(crash.nodes, std::vector<uint32_t>{0});
  EXPECT_EQ(crash.disk, CrashDiskMode::lose_unsynced);
  EXPECT_EQ(crash.path, "$.faults[0]");
  const FaultSpec& partition = s.faults[1];
  EXPECT_EQ(partition.kind, FaultKind::partition);
  EXPECT_EQ(partition.side_a, iota(0, 3));
  EXPECT_EQ(partition.side_b, iota(103, 100));
  EXPECT_FALSE(partition.one_way);
  EXPECT_EQ(partition.end_after_ns, 8'000'000'000);
  const FaultSpec& clock = s.faults[2];
  EXPECT_EQ(clock.kind, FaultKind::clock);
  EXPECT_EQ(clock.nodes, std::vector<uint32_t>{9});  // client-us-7
  EXPECT_EQ(clock.skew_ns, -500'000'000);
  EXPECT_EQ(clock.drift_ppm, 200);
  EXPECT_EQ(clock.end_after_ns, 10'000'000'000);
}

TEST(ScenarioFiles, ThousandNodesOverThreeRegions) {
  Result<Scenario> loaded = load_scenario_file((kSource / "scenarios/ledger-1000.json").string());
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->nodes.size(), 1000u);
  EXPECT_EQ(loaded->regions.size(), 3u);
  std::set<std::string> names;
  for (const NodeSpec& node : loaded->nodes) names.insert(node.name);
  EXPECT_EQ(names.size(), 1000u);
  ASSERT_EQ(loaded->faults.size(), 2u);
  EXPECT_EQ(loaded->faults[1].kind, FaultKind::region_split);
  EXPECT_EQ(loaded->faults[1].regions_a, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(loaded->faults[1].regions_b, (std::vector<uint32_t>{2}));
}

TEST(ScenarioFiles, NemesisIsRead) {
  Result<Scenario> loaded = load_scenario_file((kSource / "scenarios/ledger-nemesis.json").string());
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  ASSERT_TRUE(loaded->nemesis.has_value());
  const NemesisSpec& n = *loaded->nemesis;
  EXPECT_EQ(n.kinds, (std::vector<FaultKind>{FaultKind::crash, FaultKind::partition, FaultKind::isolate,
                                             FaultKind::latency_spike, FaultKind::clock, FaultKind::slow}));
  EXPECT_EQ(n.mean_interval_ns, 5'000'000'000);
  EXPECT_EQ(n.duration_min_ns, 1'000'000'000);
  EXPECT_EQ(n.duration_max_ns, 5'000'000'000);
  EXPECT_EQ(n.max_concurrent, 1u);
  EXPECT_EQ(n.targets, iota(0, 3));
}

TEST(ScenarioFiles, EmbeddedSchemaIsTheFileInTheRepository) {
  EXPECT_EQ(scenario_schema_text(), read_file(kSource / "scenarios/schema.json"));
}

// ---------------------------------------------------------------------------------------------
// Every kind of bad scenario: one file each under tests/data/scenarios/bad/, and what its error
// must say after the file name (": <path>: expected ..." or ":<line>:<column>: malformed ...").

struct BadCase {
  const char* file;
  const char* says;
};

const BadCase kBadCases[] = {
    // Not JSON.
    {"malformed-trailing-comma.json", ":4:1: malformed JSON: syntax error while parsing object key - unexpected '}'"},
    {"malformed-truncated.json", ":4:1: malformed JSON: syntax error while parsing array - unexpected end of input"},
    {"malformed-number-overflow.json", ":3:21: malformed JSON: number overflow parsing '1e400'"},
    {"malformed-too-deep.json", ":2:81: malformed JSON: nested deeper than 64 levels"},
    {"malformed-empty.json", ":1:1: malformed JSON: syntax error while parsing value - unexpected end of input"},
    {"malformed-comment.json", ":2:3: malformed JSON: syntax error while parsing object key - invalid literal"},
    {"malformed-invalid-utf8.json", ":2:13: malformed JSON: syntax error while parsing value - invalid string: ill-formed UTF-8 byte"},
    {"duplicate-key.json", ": $.topology.nodes[1].count: expected each key once in an object, got it again"},
    // The wrong shape.
    {"not-an-object.json", ": $: expected an object, got an array of 2 items"},
    {"wrong-type-duration.json", ": $.duration_s: expected a number, got \"30\""},
    {"wrong-type-count.json", ": $.topology.nodes[0].count: expected an integer, got 2.5"},
    {"wrong-type-selector.json", ": $.faults[0].nodes: expected a string or an array, got 5"},
    {"wrong-type-fault.json", ": $.faults[0]: expected an object, got 3"},
    {"unknown-field.json", ": $.topology.colour: expected one of the fields nodes, regions, got an unknown field"},
    {"unknown-fault-field.json",
     ": $.faults[0].heal_after_s: expected one of the fields at_s, disk, kind, nodes, restart_after_s, got an unknown field"},
    {"missing-topology.json", ": $.topology: expected an object (a required field), got nothing"},
    {"missing-fault-field.json", ": $.faults[0].extra_ms: expected a number > 0 (a required field), got nothing"},
    {"bad-system.json", ": $.system: expected one of \"ledger\", \"chat\", got \"irc\""},
    {"bad-name-pattern.json", ": $.name: expected a string matching ^[a-z0-9][a-z0-9-]*$, got \"Ledger Test\""},
    {"unknown-fault-kind.json", ": $.faults[0].kind: expected one of \"crash\", \"shutdown\", \"host-loss\", \"partition\""},
    {"negative-count.json", ": $.topology.nodes[1].count: expected a number >= 1, got -5"},
    {"count-zero.json", ": $.topology.nodes[1].count: expected a number >= 1, got 0"},
    {"count-too-large.json", ": $.topology.nodes[1].count: expected a number <= 1000000, got 1000001"},
    {"duration-overflow.json", ": $.duration_s: expected a number <= 1000000000, got 1000000000000"},
    {"restart-overflow.json", ": $.faults[0].restart_after_s: expected a number <= 1000000000, got 9.3e+18"},
    {"negative-seed.json", ": $.seed: expected a number >= 0, got -1"},
    {"nemesis-unknown-kind.json", ": $.nemesis.kinds[1]: expected one of \"crash\", \"shutdown\""},
    {"nemesis-zero-interval.json", ": $.nemesis.mean_interval_s: expected a number > 0, got 0"},
    {"duplicate-region.json", ": $.topology.regions[2]: expected unique items, got a repeat of $.topology.regions[0] (\"us-east\")"},
    {"partition-empty-array.json", ": $.faults[0].sides[1]: expected an array of at least 1 item, got an empty array"},
    // Impossible topology and references to nothing.
    {"total-too-large.json", ": $.topology.nodes: expected at most 2000000 nodes in all, got more (2000008 by $.topology.nodes[3])"},
    {"duplicate-group.json",
     ": $.topology.nodes[2].name: expected a group name not used by another group, got \"server\", already the name of $.topology.nodes[0]"},
    {"group-collides-with-node.json",
     ": $.topology.nodes[2].name: expected a group name unlike the node names of group \"server\" (server-1 to server-3), got \"server-2\""},
    {"unknown-region-in-group.json",
     ": $.topology.nodes[1].region: expected one of the scenario's regions (\"us-east\", \"eu-west\"), got \"mars\""},
    {"role-not-of-system.json",
     ": $.topology.nodes[0].role: expected a role of system \"ledger\": \"ledger-server\", \"ledger-client\", got \"chat-server\""},
    {"missing-role.json", ": $.topology.nodes: expected at least one group with role \"ledger-client\""},
    {"latency-unknown-region.json", ": $.network.latency[0].between[1]: expected one of the scenario's regions (\"us-east\", \"eu-west\"), got \"mars\""},
    {"latency-same-region.json", ": $.network.latency[0].between: expected two different regions"},
    {"latency-duplicate-pair.json", ": $.network.latency[1]: expected one entry per pair of regions, got a second entry for eu-west and us-east (the first is $.network.latency[0])"},
    {"custom-region-without-latency.json",
     ": $.network.latency: expected an entry {\"between\": [\"us-east\", \"moon-base\"], \"one_way_ms\": ...} (\"moon-base\" is not a built-in region"},
    {"partition-overlap.json", ": $.faults[0].sides: expected two sides with no node in common, got \"server-1\" on both sides"},
    {"partition-empty-side.json", ": $.faults[0].sides[1]: expected a selector that matches at least one node, got \"region:eu-west\", a region with no nodes"},
    {"region-split-overlap.json", ": $.faults[0].regions: expected two groups of regions with none in common, got \"us-east\" in both"},
    {"region-split-unknown-region.json", ": $.faults[0].regions[1][0]: expected one of the scenario's regions (\"us-east\", \"eu-west\"), got \"in-south\""},
    {"fault-at-after-duration.json", ": $.faults[0].at_s: expected a time before duration_s (30 s), got 30"},
    {"unknown-selector.json",
     ": $.faults[0].nodes: expected a node name (like \"server-1\"), a group name, \"region:NAME\" or \"*\", got \"srv-1\""},
    {"selector-node-out-of-range.json", ": $.faults[0].nodes[1]: expected a node of group \"server\" (server-1 to server-3), got \"server-4\""},
    {"selector-unknown-region.json", ": $.faults[0].nodes: expected \"region:NAME\" with NAME one of the scenario's regions"},
    {"nemesis-duration-min-over-max.json", ": $.nemesis.fault_duration_s: expected [min, max] with min <= max, got [5, 1]"},
};

TEST(BadScenarios, EachFileFailsWithFilePathAndExpectation) {
  for (const BadCase& bad : kBadCases) {
    const std::string path = (kBadDir / bad.file).string();
    SCOPED_TRACE(path);
    ASSERT_TRUE(fs::exists(path));
    Result<Scenario> loaded = load_scenario_file(path);
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.error().code, ErrorCode::bad_input);
    const std::string& message = loaded.error().message;
    EXPECT_EQ(message.rfind(path, 0), 0u) << message;  // the message starts with the file
    EXPECT_NE(message.find(path + bad.says), std::string::npos) << "message: " << message << "\nwanted: " << bad.says;
  }
}

TEST(BadScenarios, EveryFileHasAnExpectation) {
  std::set<std::string> expected;
  for (const BadCase& bad : kBadCases) expected.insert(bad.file);
  EXPECT_EQ(expected.size(), std::size(kBadCases));
  std::set<std::string> present;
  for (const auto& entry : fs::directory_iterator(kBadDir)) present.insert(entry.path().filename().string());
  EXPECT_EQ(present, expected);
}

TEST(BadScenarios, MissingFile) {
  Result<Scenario> loaded = load_scenario_file((kBadDir / "no-such-file.json").string());
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().code, ErrorCode::bad_input);
  EXPECT_NE(loaded.error().message.find("no-such-file.json: expected a readable scenario file, got No such file or directory"),
            std::string::npos)
      << loaded.error().message;
}

TEST(BadScenarios, DirectoryIsNotAFile) {
  Result<Scenario> loaded = load_scenario_file(kBadDir.string());
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.error().message.find("expected a readable scenario file"), std::string::npos) << loaded.error().message;
}

TEST(BadScenarios, SchemaErrorsListTheFirstFive) {
  const std::string message = load_error(small_scenario(R"("a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7)"));
  EXPECT_EQ(std::count(message.begin(), message.end(), '\n'), 4) << message;
  EXPECT_NE(message.find("test.json: $.a: expected one of the fields bugs, checks, description, duration_s"), std::string::npos)
      << message;
  EXPECT_NE(message.find("test.json: $.e: expected"), std::string::npos);
  EXPECT_EQ(message.find("$.f:"), std::string::npos);
}

TEST(BadScenarios, OddKeysAreQuotedInPaths) {
  const std::string message = load_error(small_scenario(R"("a b": 1)"));
  EXPECT_NE(message.find("test.json: $[\"a b\"]: expected one of the fields"), std::string::npos) << message;
}

TEST(BadScenarios, LongStringsAreCutInMessages) {
  std::string text = small_scenario();
  const std::string system = R"("system": "ledger")";
  text.replace(text.find(system), system.size(), R"("system": ")" + std::string(500, 'x') + "\"");
  const std::string message = load_error(text);
  EXPECT_LT(message.size(), 300u) << message;
  EXPECT_NE(message.find("xxx\"..."), std::string::npos) << message;
}

TEST(BadScenarios, OversizedTextIsRejectedBeforeParsing) {
  const std::string huge(kScenarioBytesMax + 1, ' ');
  const std::string message = load_error(huge);
  EXPECT_NE(message.find("test.json: $: expected a scenario of at most 16777216 bytes"), std::string::npos) << message;
}

TEST(BadScenarios, NeverCrashesOnTruncationsOrMutations) {
  const std::string text = read_file(kSource / "scenarios/ledger-partitions.json");
  ASSERT_FALSE(text.empty());
  size_t rejected = 0;
  auto check = [&](const std::string& input) {
    Result<Scenario> loaded = load_scenario_text(input, "mutant.json");
    if (loaded.ok()) return;
    ++rejected;
    const std::string& message = loaded.error().message;
    EXPECT_EQ(message.rfind("mutant.json", 0), 0u) << message;
    EXPECT_EQ(message.find("mutant.json: $: internal error"), std::string::npos) << message;
  };
  for (size_t cut = 0; cut < text.size(); ++cut) check(text.substr(0, cut));
  // Every prefix is malformed but the one that drops only the final newline.
  EXPECT_EQ(rejected, text.size() - 1);
  Prng prng(2026);
  const std::string alphabet = "{}[],:\"0123456789-.e+truefalsnl ";
  for (int round = 0; round < 3000; ++round) {
    std::string mutant = text;
    const int edits = 1 + static_cast<int>(prng.below(4));
    for (int e = 0; e < edits; ++e) {
      const size_t at = prng.below(mutant.size());
      switch (prng.below(3)) {
        case 0: mutant[at] = alphabet[prng.below(alphabet.size())]; break;
        case 1: mutant.erase(at, 1 + prng.below(8)); break;
        default: mutant.insert(at, 1, alphabet[prng.below(alphabet.size())]); break;
      }
    }
    check(mutant);
  }
}

// ---------------------------------------------------------------------------------------------
// Selectors and defaults.

std::vector<uint32_t> selected(const std::string& selector_json) {
  const Scenario s =
      load_ok(small_scenario(R"("faults": [{"at_s": 1, "kind": "isolate", "nodes": )" + selector_json + "}]"));
  if (s.faults.empty()) return {};
  return s.faults[0].nodes;
}

TEST(Selectors, ResolveToSortedNodeIndexes) {
  EXPECT_EQ(selected(R"("server-2")"), std::vector<uint32_t>{1});
  EXPECT_EQ(selected(R"("server")"), iota(0, 3));
  EXPECT_EQ(selected(R"("eu-3")"), std::vector<uint32_t>{9});
  EXPECT_EQ(selected(R"("region:eu-west")"), iota(7, 3));
  EXPECT_EQ(selected(R"("region:us-east")"), iota(0, 7));
  EXPECT_EQ(selected(R"("*")"), iota(0, 10));
  EXPECT_EQ(selected(R"(["eu-2", "server-3", "eu-2", "client"])"), (std::vector<uint32_t>{2, 3, 4, 5, 6, 8}));
}

TEST(Selectors, RejectWhatMatchesNothing) {
  auto error_for = [](const std::string& selector_json) {
    return load_error(small_scenario(R"("faults": [{"at_s": 1, "kind": "isolate", "nodes": )" + selector_json + "}]"));
  };
  EXPECT_NE(error_for(R"("server-0")").find("$.faults[0].nodes: expected a node of group \"server\""), std::string::npos);
  EXPECT_NE(error_for(R"("server-01")").find("$.faults[0].nodes: expected a node of group \"server\""), std::string::npos);
  EXPECT_NE(error_for(R"("server-99999999999")").find("$.faults[0].nodes: expected a node of group \"server\""),
            std::string::npos);
  EXPECT_NE(error_for(R"("servers-1")").find("$.faults[0].nodes: expected a node name (like \"server-1\")"), std::string::npos);
  EXPECT_NE(error_for(R"(["server", "region:in-central"])").find("$.faults[0].nodes[1]: expected a selector that matches at least one node"),
            std::string::npos);
  EXPECT_NE(error_for(R"([])").find("$.faults[0].nodes: expected an array of at least 1 item"), std::string::npos);
  EXPECT_NE(error_for(R"("")").find("$.faults[0].nodes: expected a string of at least 1 characters"), std::string::npos);
}

TEST(Defaults, FillWhatTheFileLeavesOut) {
  const Scenario s = load_ok(small_scenario(R"("faults": [
      {"at_s": 1, "kind": "crash", "nodes": "server-1"},
      {"at_s": 2, "kind": "shutdown", "nodes": "server-2"},
      {"at_s": 3, "kind": "partition", "sides": ["server-1", "server-2"]},
      {"at_s": 4, "kind": "clock", "nodes": "eu-1"},
      {"at_s": 5, "kind": "disk", "nodes": "eu-2", "fault": "full"}],
    "nemesis": {"kinds": ["slow"], "mean_interval_s": 0.5})"));
  EXPECT_EQ(s.seed, 1u);
  EXPECT_EQ(s.description, "");
  EXPECT_EQ(s.quiescence_ns, 10'000'000'000);
  EXPECT_EQ(s.connection_timeout_ns, 10'000'000'000);
  EXPECT_EQ(s.ledger.append_interval_ns, 200'000'000);
  EXPECT_EQ(s.ledger.request_timeout_ns, 1'000'000'000);
  EXPECT_TRUE(s.ledger.synchronous_full);
  for (size_t r = 0; r < s.regions.size(); ++r) {
    EXPECT_EQ(s.latency[r][r].base_ns, 400'000);
    EXPECT_EQ(s.latency[r][r].jitter_mean_ns, 100'000);
  }
  EXPECT_FALSE(s.latency_p99_bound_ns.has_value());
  ASSERT_EQ(s.faults.size(), 5u);
  for (const FaultSpec& fault : s.faults) EXPECT_FALSE(fault.end_after_ns.has_value()) << fault.path;
  EXPECT_EQ(s.faults[0].disk, CrashDiskMode::lose_unsynced);
  EXPECT_EQ(s.faults[1].drain_ns, 5'000'000'000);
  EXPECT_FALSE(s.faults[2].one_way);
  EXPECT_EQ(s.faults[3].skew_ns, 0);
  EXPECT_EQ(s.faults[3].drift_ppm, 0);
  EXPECT_EQ(s.faults[4].disk_fault, DiskFaultKind::full);
  ASSERT_TRUE(s.nemesis.has_value());
  EXPECT_EQ(s.nemesis->mean_interval_ns, 500'000'000);
  EXPECT_EQ(s.nemesis->duration_min_ns, 1'000'000'000);
  EXPECT_EQ(s.nemesis->duration_max_ns, 5'000'000'000);
  EXPECT_EQ(s.nemesis->max_concurrent, 1u);
  EXPECT_EQ(s.nemesis->targets, iota(0, 10));
}

TEST(Defaults, ExplicitValuesAreRead) {
  const Scenario s = load_ok(small_scenario(R"("seed": 18446744073709551615, "quiescence_s": 0, "description": "d",
    "network": {"connection_timeout_ms": 2500, "intra_region_one_way_us": 250.5, "intra_region_jitter_us": 0},
    "workload": {"ledger": {"append_interval_ms": 50, "request_timeout_ms": 300, "synchronous": "off"}},
    "checks": {"latency_p99_ms": 0.25},
    "faults": [
      {"at_s": 0.5, "kind": "crash", "nodes": "server-1", "restart_after_s": 2, "disk": "torn"},
      {"at_s": 1, "kind": "shutdown", "nodes": "server-2", "drain_s": 0, "restart_after_s": 100},
      {"at_s": 2, "kind": "host-loss", "nodes": "server-3", "replace_after_s": 10},
      {"at_s": 3, "kind": "partition", "sides": ["server", "client"], "one_way": true, "heal_after_s": 1},
      {"at_s": 4, "kind": "latency-spike", "nodes": "eu", "extra_ms": 300, "duration_s": 4},
      {"at_s": 5, "kind": "clock", "nodes": "eu-1", "skew_ms": -1.5, "drift_ppm": -200},
      {"at_s": 6, "kind": "slow", "nodes": "eu-2", "factor": 10},
      {"at_s": 7, "kind": "disk", "nodes": "eu-3", "fault": "fsync-fail", "duration_s": 3}])"));
  EXPECT_EQ(s.seed, UINT64_MAX);
  EXPECT_EQ(s.quiescence_ns, 0);
  EXPECT_EQ(s.description, "d");
  EXPECT_EQ(s.connection_timeout_ns, 2'500'000'000);
  EXPECT_EQ(s.latency[0][0].base_ns, 250'500);
  EXPECT_EQ(s.latency[0][0].jitter_mean_ns, 0);
  EXPECT_EQ(s.ledger.append_interval_ns, 50'000'000);
  EXPECT_EQ(s.ledger.request_timeout_ns, 300'000'000);
  EXPECT_FALSE(s.ledger.synchronous_full);
  EXPECT_EQ(s.latency_p99_bound_ns, 250'000);
  ASSERT_EQ(s.faults.size(), 8u);
  EXPECT_EQ(s.faults[0].at_ns, 500'000'000);
  EXPECT_EQ(s.faults[0].disk, CrashDiskMode::torn);
  EXPECT_EQ(s.faults[1].drain_ns, 0);
  EXPECT_EQ(s.faults[1].end_after_ns, 100'000'000'000);  // restarts may fall in quiescence
  EXPECT_EQ(s.faults[2].kind, FaultKind::host_loss);
  EXPECT_EQ(s.faults[3].one_way, true);
  EXPECT_EQ(s.faults[3].side_b, iota(3, 4));
  EXPECT_EQ(s.faults[4].extra_latency_ns, 300'000'000);
  EXPECT_EQ(s.faults[4].nodes, iota(7, 3));
  EXPECT_EQ(s.faults[5].skew_ns, -1'500'000);
  EXPECT_EQ(s.faults[5].drift_ppm, -200);
  EXPECT_EQ(s.faults[6].slow_factor, 10u);
  EXPECT_EQ(s.faults[7].disk_fault, DiskFaultKind::fsync_fail);
  EXPECT_EQ(s.faults[7].end_after_ns, 3'000'000'000);
}

TEST(Defaults, FaultsAreSortedByTimeKeepingFileOrderForTies) {
  const Scenario s = load_ok(small_scenario(R"("faults": [
      {"at_s": 9, "kind": "isolate", "nodes": "server-1"},
      {"at_s": 2, "kind": "isolate", "nodes": "server-2"},
      {"at_s": 9, "kind": "isolate", "nodes": "server-3"},
      {"at_s": 2, "kind": "crash", "nodes": "eu-1"}])"));
  ASSERT_EQ(s.faults.size(), 4u);
  EXPECT_EQ(s.faults[0].path, "$.faults[1]");
  EXPECT_EQ(s.faults[1].path, "$.faults[3]");
  EXPECT_EQ(s.faults[2].path, "$.faults[0]");
  EXPECT_EQ(s.faults[3].path, "$.faults[2]");
}

TEST(Defaults, CustomRegionsUseTheirOverridesSymmetrically) {
  const Scenario s = load_ok(R"({
    "name": "custom", "system": "ledger", "duration_s": 10,
    "topology": {
      "regions": ["us-east", "lab-a", "lab-b"],
      "nodes": [
        {"name": "server", "role": "ledger-server", "count": 1, "region": "lab-a"},
        {"name": "client", "role": "ledger-client", "count": 1, "region": "lab-b"}
      ]
    },
    "network": {"latency": [
      {"between": ["lab-b", "lab-a"], "one_way_ms": 27},
      {"between": ["lab-a", "us-east"], "one_way_ms": 10, "jitter_ms": 2},
      {"between": ["us-east", "lab-b"], "one_way_ms": 0.5, "jitter_ms": 0}
    ]}})");
  ASSERT_EQ(s.latency.size(), 3u);
  EXPECT_EQ(s.latency[1][2].base_ns, 27'000'000);
  EXPECT_EQ(s.latency[1][2].jitter_mean_ns, 1'000'000);  // one_way / 27 by default
  EXPECT_EQ(s.latency[2][1].base_ns, 27'000'000);
  EXPECT_EQ(s.latency[0][1].jitter_mean_ns, 2'000'000);
  EXPECT_EQ(s.latency[1][0].base_ns, 10'000'000);
  EXPECT_EQ(s.latency[2][0].base_ns, 500'000);
  EXPECT_EQ(s.latency[0][2].jitter_mean_ns, 0);
}

TEST(Defaults, OverridesReplaceBuiltinFigures) {
  const Scenario s = load_ok(small_scenario(R"("network": {"latency": [{"between": ["eu-west", "us-east"], "one_way_ms": 1}]})"));
  EXPECT_EQ(s.latency[0][1].base_ns, 1'000'000);
  EXPECT_EQ(s.latency[1][0].base_ns, 1'000'000);
  EXPECT_EQ(s.latency[0][2].base_ns, builtin_latency("us-east", "in-central")->base_ns);
}

TEST(Defaults, LargestTopologyLoads) {
  const Scenario s = load_ok(R"({
    "name": "big", "system": "ledger", "duration_s": 1,
    "topology": {"regions": ["us-east"], "nodes": [
      {"name": "s", "role": "ledger-server", "count": 1000000, "region": "us-east"},
      {"name": "c", "role": "ledger-client", "count": 1000000, "region": "us-east"}]}})");
  ASSERT_EQ(s.nodes.size(), 2'000'000u);
  EXPECT_EQ(s.nodes.back().name, "c-1000000");
}

// ---------------------------------------------------------------------------------------------
// The built-in region table.

constexpr double kLn20 = 2.995732273553991;  // the exponential's p95 is mean * ln(20)

TEST(Regions, UsEastToIndiaIsOver200MsRttAtP95) {
  const std::optional<LinkLatency> link = builtin_latency("us-east", "in-central");
  ASSERT_TRUE(link.has_value());
  const double one_way_p95_ms = (static_cast<double>(link->base_ns) + kLn20 * static_cast<double>(link->jitter_mean_ns)) / 1e6;
  EXPECT_GE(2 * one_way_p95_ms, 200.0);
  EXPECT_NEAR(2 * one_way_p95_ms, 218.0, 1.0);  // the model reproduces the published p95

  // The same by sampling the model: RTT = two independent one-way delays.
  Prng prng(7);
  std::vector<double> rtts_ms;
  for (int i = 0; i < 20000; ++i) {
    const double there = static_cast<double>(link->base_ns) + prng.exponential(static_cast<double>(link->jitter_mean_ns));
    const double back = static_cast<double>(link->base_ns) + prng.exponential(static_cast<double>(link->jitter_mean_ns));
    rtts_ms.push_back((there + back) / 1e6);
  }
  std::sort(rtts_ms.begin(), rtts_ms.end());
  EXPECT_GE(rtts_ms[rtts_ms.size() * 95 / 100], 200.0);
  EXPECT_TRUE(builtin_latency("in-south", "us-east").has_value());
  EXPECT_GE(*builtin_rtt_p95_us("in-south", "us-east"), 200'000);
}

TEST(Regions, IntraRegionIsSubMillisecond) {
  const Scenario s = load_ok(small_scenario());
  for (size_t r = 0; r < s.regions.size(); ++r) {
    const LinkLatency& intra = s.latency[r][r];
    EXPECT_LT(static_cast<double>(intra.base_ns) + kLn20 * static_cast<double>(intra.jitter_mean_ns), 1e6);
  }
  EXPECT_FALSE(builtin_latency("us-east", "us-east").has_value());  // from the network section
}

TEST(Regions, LookupIsSymmetricAndKnowsOnlyBuiltins) {
  EXPECT_TRUE(is_builtin_region("us-east"));
  EXPECT_TRUE(is_builtin_region("in-south"));
  EXPECT_FALSE(is_builtin_region("mars"));
  EXPECT_FALSE(builtin_latency("us-east", "mars").has_value());
  for (const BuiltinRegion& a : builtin_regions()) {
    for (const BuiltinRegion& b : builtin_regions()) {
      if (a.name == b.name) continue;
      ASSERT_TRUE(builtin_rtt_p95_us(a.name, b.name).has_value()) << a.name << " " << b.name;
      EXPECT_EQ(builtin_rtt_p95_us(a.name, b.name), builtin_rtt_p95_us(b.name, a.name));
    }
  }
  const size_t n = builtin_regions().size();
  EXPECT_EQ(builtin_region_pairs().size(), n * (n - 1) / 2);
}

TEST(Regions, PublishedFiguresAreThoseOfTheDataFile) {
  // The figures of data/region-rtt.json (Azure's published P95 round-trip statistics).
  const std::map<std::pair<std::string, std::string>, int64_t> published = {
      {{"us-east", "us-west"}, 72}, {{"us-east", "eu-west"}, 91}, {{"us-east", "eu-north"}, 76},
      {{"us-east", "uk-south"}, 80}, {{"us-east", "in-central"}, 218}, {{"us-east", "in-south"}, 246},
      {{"eu-west", "in-central"}, 153}};
  size_t count = 0;
  for (const RegionPairRtt& pair : builtin_region_pairs()) {
    const auto it = published.find({std::string(pair.a), std::string(pair.b)});
    EXPECT_EQ(pair.published, it != published.end()) << pair.a << " " << pair.b;
    if (it == published.end()) continue;
    EXPECT_EQ(pair.rtt_p95_us, it->second * 1000);
    ++count;
  }
  EXPECT_EQ(count, published.size());
}

// Re-derives the estimates independently of scripts/gen-region-table: haversine distances and a
// least-squares route factor through the origin, fitted to the published pairs.
TEST(Regions, EstimatesFollowTheFittedRouteFactor) {
  std::map<std::string_view, const BuiltinRegion*> by_name;
  for (const BuiltinRegion& region : builtin_regions()) by_name[region.name] = &region;
  auto distance_km = [&](std::string_view a, std::string_view b) {
    constexpr double kPi = 3.14159265358979323846;
    const double lat1 = by_name.at(a)->latitude_deg * kPi / 180, lon1 = by_name.at(a)->longitude_deg * kPi / 180;
    const double lat2 = by_name.at(b)->latitude_deg * kPi / 180, lon2 = by_name.at(b)->longitude_deg * kPi / 180;
    const double h = std::pow(std::sin((lat2 - lat1) / 2), 2) +
                     std::cos(lat1) * std::cos(lat2) * std::pow(std::sin((lon2 - lon1) / 2), 2);
    return 2 * 6371.0 * std::asin(std::sqrt(h));
  };
  double numerator = 0, denominator = 0;
  for (const RegionPairRtt& pair : builtin_region_pairs()) {
    if (!pair.published) continue;
    const double d = distance_km(pair.a, pair.b);
    numerator += d * static_cast<double>(pair.rtt_p95_us) / 1000;
    denominator += d * d;
  }
  const double factor = numerator / denominator;
  EXPECT_NEAR(builtin_route_factor_ms_per_km(), factor, 1e-9);
  EXPECT_GT(factor, 0.01);  // light in fibre alone is 0.01 ms of RTT per km
  for (const RegionPairRtt& pair : builtin_region_pairs()) {
    if (pair.published) continue;
    EXPECT_NEAR(static_cast<double>(pair.rtt_p95_us) / 1000, factor * distance_km(pair.a, pair.b), 0.051)
        << pair.a << " " << pair.b;
  }
}

TEST(Regions, ModelIsHalfTheRttOneWay) {
  const LinkLatency link = latency_from_rtt_p95_us(120'000);
  EXPECT_EQ(link.base_ns, 54'000'000);
  EXPECT_EQ(link.jitter_mean_ns, 2'000'000);
}

// ---------------------------------------------------------------------------------------------
// The schema validator and its patterns.

TEST(JsonSchemaValidator, RejectsKeywordsItDoesNotImplement) {
  using nlohmann::json;
  EXPECT_FALSE(JsonSchema::compile(json::parse(R"({"oneOf": [{"type": "string"}]})")).ok());
  EXPECT_FALSE(JsonSchema::compile(json::parse(R"({"properties": {"a": {"format": "email"}}})")).ok());
  EXPECT_FALSE(JsonSchema::compile(json::parse(R"({"$ref": "#/$defs/missing"})")).ok());
  EXPECT_FALSE(JsonSchema::compile(json::parse(R"js({"pattern": "(a|b)"})js")).ok());
  EXPECT_TRUE(JsonSchema::compile(json::parse(std::string(scenario_schema_text()))).ok());
}

TEST(JsonSchemaValidator, IfThenElseAndRefs) {
  using nlohmann::json;
  Result<JsonSchema> schema = JsonSchema::compile(json::parse(R"({
    "$defs": {"small": {"type": "integer", "maximum": 3}},
    "type": "object",
    "if": {"required": ["k"], "properties": {"k": {"const": "a"}}},
    "then": {"properties": {"v": {"$ref": "#/$defs/small"}}},
    "else": {"properties": {"v": {"type": "string"}}}})"));
  ASSERT_TRUE(schema.ok()) << schema.error().message;
  EXPECT_TRUE(schema->validate(json::parse(R"({"k": "a", "v": 2})"), 5).empty());
  EXPECT_TRUE(schema->validate(json::parse(R"({"k": "b", "v": "x"})"), 5).empty());
  const auto errors = schema->validate(json::parse(R"({"k": "a", "v": 4})"), 5);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].path, "$.v");
  EXPECT_EQ(errors[0].expected, "a number <= 3");
  EXPECT_EQ(errors[0].got, "4");
  EXPECT_EQ(schema->validate(json::parse(R"({"k": "b", "v": 1})"), 5).size(), 1u);
}

TEST(JsonSchemaValidator, PatternsSearchUnlessAnchored) {
  auto matches = [](std::string_view pattern, std::string_view text) {
    Result<SimplePattern> compiled = SimplePattern::compile(pattern);
    EXPECT_TRUE(compiled.ok()) << pattern;
    return compiled.ok() && compiled->search(text);
  };
  EXPECT_TRUE(matches("^[a-z0-9][a-z0-9-]*$", "us-east-2"));
  EXPECT_FALSE(matches("^[a-z0-9][a-z0-9-]*$", "-us"));
  EXPECT_FALSE(matches("^[a-z0-9][a-z0-9-]*$", "Us"));
  EXPECT_FALSE(matches("^[a-z0-9][a-z0-9-]*$", ""));
  EXPECT_TRUE(matches("b+c?d", "xxabbbdyy"));
  EXPECT_FALSE(matches("^b+c?d", "abd"));
  EXPECT_TRUE(matches("a\\.b$", "xa.b"));
  EXPECT_FALSE(matches("a\\.b$", "axb"));
  EXPECT_TRUE(matches("[^0-9]\\d", "1a2"));
  EXPECT_TRUE(matches("", "anything"));
  EXPECT_TRUE(matches("a*a*a*a*a*a*a*a*b", std::string(5000, 'a') + "b"));  // linear, no backtracking
  EXPECT_FALSE(matches("a*a*a*a*a*a*a*a*b", std::string(5000, 'a')));
}

TEST(JsonSchemaValidator, AnIntegralFloatIsAnInteger) {
  const Scenario s = load_ok(small_scenario(R"("seed": 5.0)"));
  EXPECT_EQ(s.seed, 5u);
  EXPECT_NE(load_error(small_scenario(R"("seed": 5.5)")).find("$.seed: expected an integer, got 5.5"), std::string::npos);
}

}  // namespace
}  // namespace msgsim::sim
