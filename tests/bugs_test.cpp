// The planted bugs are caught: every bug of the catalogue, switched on alone in the small faulty
// scenario (scenarios/chat-faulty.json), makes some seed in 1..200 fail the check that names
// its damage. The test iterates the catalogue itself, so a bug added later without an expected
// check here fails, and so does an expectation left behind for a bug that is gone. The clean
// side (every bug off, every seed passes) is the `sweep_chat_faulty` ctest and the 1,000-seed
// sweep (tests/CMakeLists.txt).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "impl/chat/config.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::chat {
// How gtest prints a parameter (found by argument-dependent lookup): the bug's name, not bytes.
void PrintTo(const BugInfo& info, std::ostream* out) { *out << info.name; }
}  // namespace msgsim::chat

namespace msgsim::sim {
namespace {

constexpr uint64_t kSeedsMax = 200;
const char* const kScenario = "scenarios/chat-faulty.json";

// For each bug, the check whose failure names the damage the bug does. These are the oracle's
// invariants of spec/history.md (and the world's own `liveness`); the reasons:
//  - ack-before-durable: a crash loses a message the queue already acknowledged, so an acked
//    message never reaches its recipients.
//  - retry-new-seq: a retried send is stored twice under two seqs, so one msg has two seqs.
//  - reject-after-append: the refused message is still stored and fanned out.
//  - leave-one-late: the message after a leave still reaches the leaver. With E2EE (every
//    chat scenario) the leaver cannot open it (its sender was told the member list without the
//    leaver, so a new key), so no leaver shows it (membership holds); the leaver's device
//    reports a decrypt_error for a message from a current member instead.
//  - sync-off-by-one: the entry right after a device's cursor never comes in a sync, so a
//    device that missed it live never shows it (the reorder buffer waits on the gap forever,
//    which also fails liveness, but the loss is the damage).
//  - client-no-dedup: the same message is shown twice.
//  - no-reorder-buffer: a later seq is shown before an earlier one arrives, and the earlier one
//    is then dropped as old; delivered seqs still increase, so `order` holds and the damage is
//    the skipped message (gap-free).
//  - gap-skip: the device moves past a missing seq.
//  - read-before-display: a read receipt covers messages the reader has not shown.
//  - expiry-ignored: a shown disappearing message is never expired.
//  - server-sees-plaintext: a message body's plaintext travels through the servers (the
//    simulator's own check, not a history invariant: a history cannot show it).
const std::map<std::string, std::string>& expected_checks() {
  static const std::map<std::string, std::string> table = {
      {"ack-before-durable", "no-loss"},
      {"retry-new-seq", "seq-agreement"},
      {"reject-after-append", "no-rejected-delivery"},
      {"leave-one-late", "decrypt"},
      {"sync-off-by-one", "no-loss"},
      {"client-no-dedup", "no-duplicate"},
      {"no-reorder-buffer", "gap-free"},
      {"gap-skip", "gap-free"},
      {"read-before-display", "receipts"},
      {"expiry-ignored", "expiry"},
      {"server-sees-plaintext", "e2ee-confidentiality"},
      // The replicated queue's (scenarios/chat-replicated.json, see replicated_bugs()):
      //  - leader-ack-before-replication: the leader acks, then fails before its followers have
      //    the message; the new leader never had it, so an acked message is never delivered.
      //  - no-epoch-fencing: a deposed leader comes back and its followers (even the new leader)
      //    follow it again, cutting records the new leader committed and acked.
      {"leader-ack-before-replication", "no-loss"},
      {"no-epoch-fencing", "no-loss"},
      // The disk path's (scenarios/chat-disk-faults.json, see disk_bug()):
      //  - fsync-error-ignored: storage takes a commit whose fsync failed (entries or a receipt)
      //    as done and carries on, so it stores the next batch's offset past entries it never
      //    kept: they never come in a sync. Devices that got them live show them; a device that
      //    missed one (its chat server crashed) waits on the gap and syncs for it in vain: the
      //    world's liveness check (a gap still open at the end) names it, first at seed 3.
      {"fsync-error-ignored", "liveness"},
      //  - cursor-past-unsynced: storage commits a batch's offset, then writes its entries
      //    without a sync; the scripted power loss of storage-1 at 8 s keeps the offset and
      //    loses the entries, so acknowledged messages that a device missed live never come in a
      //    sync (seed 1 already).
      {"cursor-past-unsynced", "no-loss"},
      //  - storage-not-idempotent: storage inserts entries with no key on the message and
      //    commits its offset every 5 s; a crash of a storage node resubscribes it from the
      //    older offset and it stores the same records again. Devices drop the second copy (it
      //    is at or below their cursors), so no history shows it: the simulator's
      //    store-consistency check of the storage databases names the message stored twice.
      {"storage-not-idempotent", "store-consistency"},
      //  - drain-drops-buffered: a draining chat server closes each device's connection as soon
      //    as it has told it to go, so the queue's answers to the sends it forwarded just before
      //    come to a closed session and are dropped. The device resends them to its next server
      //    (the queue answers a retry with the first answer), so no history shows it: the
      //    simulator's handoff check names the connection closed with an answer owed.
      {"drain-drops-buffered", "handoff"},
  };
  return table;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Bugs that only a replicated queue can show, caught in a scenario with three copies of every
// partition and a nemesis that crashes and cuts off queue leaders.
const char* const kReplicatedScenario = "scenarios/chat-replicated.json";
bool replicated_bug(const std::string& name) {
  return name == "leader-ack-before-replication" || name == "no-epoch-fencing";
}
const Scenario& replicated_scenario() {
  static const Scenario scenario = [] {
    Result<Scenario> loaded = load_scenario_file(std::string(MSGSIM_SOURCE_DIR) + "/" + kReplicatedScenario);
    if (!loaded.ok()) {
      ADD_FAILURE() << kReplicatedScenario << ": " << loaded.error().message;
      return Scenario{};
    }
    return std::move(loaded).value();
  }();
  return scenario;
}

// Bugs on the disk path show only under disk faults (fsync failures, full disks, power loss).
const char* const kDiskScenario = "scenarios/chat-disk-faults.json";
bool disk_bug(const std::string& name) {
  return name == "fsync-error-ignored" || name == "cursor-past-unsynced" || name == "storage-not-idempotent";
}
const Scenario& disk_scenario() {
  static const Scenario scenario = [] {
    Result<Scenario> loaded = load_scenario_file(std::string(MSGSIM_SOURCE_DIR) + "/" + kDiskScenario);
    if (!loaded.ok()) {
      ADD_FAILURE() << kDiskScenario << ": " << loaded.error().message;
      return Scenario{};
    }
    return std::move(loaded).value();
  }();
  return scenario;
}

// Bugs of the graceful shutdown show only where chat servers drain while devices send.
const char* const kDrainScenario = "scenarios/chat-drain.json";
bool drain_bug(const std::string& name) { return name == "drain-drops-buffered"; }
const Scenario& drain_scenario() {
  static const Scenario scenario = [] {
    Result<Scenario> loaded = load_scenario_file(std::string(MSGSIM_SOURCE_DIR) + "/" + kDrainScenario);
    if (!loaded.ok()) {
      ADD_FAILURE() << kDrainScenario << ": " << loaded.error().message;
      return Scenario{};
    }
    return std::move(loaded).value();
  }();
  return scenario;
}

const Scenario& faulty_scenario() {
  static const Scenario scenario = [] {
    Result<Scenario> loaded = load_scenario_file(std::string(MSGSIM_SOURCE_DIR) + "/" + kScenario);
    if (!loaded.ok()) {
      ADD_FAILURE() << kScenario << ": " << loaded.error().message;
      return Scenario{};
    }
    return std::move(loaded).value();
  }();
  return scenario;
}

const CheckResult* find_check(const RunReport& report, const std::string& name) {
  for (const auto& check : report.checks)
    if (check.name == name) return &check;
  return nullptr;
}

std::string failed_check_names(const RunReport& report) {
  std::string out;
  for (const auto& check : report.checks) {
    if (check.passed) continue;
    if (!out.empty()) out += ", ";
    out += check.name;
  }
  return out.empty() ? "none" : out;
}

// A gtest parameter name: letters, digits and underscores only.
std::string test_name(const std::string& bug_name) {
  std::string out = bug_name;
  std::replace(out.begin(), out.end(), '-', '_');
  return out;
}

class EveryBug : public ::testing::TestWithParam<chat::BugInfo> {};

TEST_P(EveryBug, CaughtWithinSeedsUnderTheCheckNamingItsDamage) {
  const chat::BugInfo& bug = GetParam();
  const auto expected = expected_checks().find(bug.name);
  ASSERT_NE(expected, expected_checks().end())
      << "bug " << bug.name << " has no expected check in bugs_test.cpp's table: add the invariant it must be caught under";
  const std::string& check_name = expected->second;

  const Scenario& scenario = replicated_bug(bug.name) ? replicated_scenario()
                             : disk_bug(bug.name)     ? disk_scenario()
                             : drain_bug(bug.name)    ? drain_scenario()
                                                      : faulty_scenario();
  ASSERT_EQ(scenario.system, "chat");
  std::string seen;  // the failed checks of the first few seeds, for the message when none is found
  for (uint64_t seed = 1; seed <= kSeedsMax; ++seed) {
    RunOptions options;
    options.seed = seed;
    options.bugs.enable(bug.bug);
    const RunReport report = run_world(scenario, options);
    const CheckResult* check = find_check(report, check_name);
    // Every run reports every check, so a name missing here is a typo in the table, not a pass.
    ASSERT_NE(check, nullptr) << "the run reports no check named " << check_name << " (bug " << bug.name << ")";
    if (!check->passed) {
      RecordProperty("first_seed", static_cast<int>(seed));
      RecordProperty("failed_checks", failed_check_names(report));
      std::cout << "[ bug      ] " << bug.name << ": " << check_name << " violated at seed " << seed
                << " (failed: " << failed_check_names(report) << ")\n";
      return;
    }
    if (seed <= 5) seen += "\n  seed " + std::to_string(seed) + ": failed " + failed_check_names(report);
  }
  ADD_FAILURE() << "bug " << bug.name << " was not caught under " << check_name << " in seeds 1.." << kSeedsMax
                << " of "
                << (replicated_bug(bug.name) ? kReplicatedScenario
                    : disk_bug(bug.name)     ? kDiskScenario
                    : drain_bug(bug.name)    ? kDrainScenario
                                             : kScenario)
                << seen;
}

INSTANTIATE_TEST_SUITE_P(Catalogue, EveryBug, ::testing::ValuesIn(chat::bug_catalogue()),
                         [](const ::testing::TestParamInfo<chat::BugInfo>& info) { return test_name(info.param.name); });

TEST(BugCatalogue, NamesAreUniqueAndEveryBugIsListedOnce) {
  const auto& catalogue = chat::bug_catalogue();
  EXPECT_EQ(catalogue.size(), static_cast<size_t>(chat::Bug::count));
  std::set<std::string> names;
  std::set<int> bugs;
  for (const auto& info : catalogue) {
    EXPECT_TRUE(names.insert(info.name).second) << "duplicate bug name " << info.name;
    EXPECT_TRUE(bugs.insert(static_cast<int>(info.bug)).second) << "bug " << info.name << " listed twice";
    EXPECT_NE(std::string(info.what), "") << info.name;
  }
}

TEST(BugCatalogue, EveryExpectationNamesABugOfTheCatalogue) {
  std::set<std::string> names;
  for (const auto& info : chat::bug_catalogue()) names.insert(info.name);
  for (const auto& [bug, check] : expected_checks()) {
    EXPECT_TRUE(names.count(bug)) << "bugs_test.cpp expects " << check << " for " << bug << ", which is not in the catalogue";
  }
}

TEST(BugCatalogue, MatchesTheSchemaEnum) {
  const std::string path = std::string(MSGSIM_SOURCE_DIR) + "/scenarios/schema.json";
  const nlohmann::json schema = nlohmann::json::parse(read_text(path), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(schema.is_discarded()) << path << " is not JSON";
  const nlohmann::json::json_pointer enum_path("/properties/bugs/items/enum");
  ASSERT_TRUE(schema.contains(enum_path)) << path << " has no " << enum_path.to_string();
  const nlohmann::json& listed = schema.at(enum_path);
  ASSERT_TRUE(listed.is_array());

  std::set<std::string> in_schema;
  for (const auto& name : listed) {
    ASSERT_TRUE(name.is_string()) << enum_path.to_string() << " holds " << name.dump();
    EXPECT_TRUE(in_schema.insert(name.get<std::string>()).second) << "schema lists " << name << " twice";
  }
  std::set<std::string> in_catalogue;
  for (const auto& info : chat::bug_catalogue()) {
    in_catalogue.insert(info.name);
    EXPECT_TRUE(in_schema.count(info.name)) << "bug " << info.name << " is missing from " << enum_path.to_string();
  }
  for (const auto& name : in_schema) {
    EXPECT_TRUE(in_catalogue.count(name)) << "schema lists bug " << name << ", which is not in the catalogue";
  }
}

}  // namespace
}  // namespace msgsim::sim
