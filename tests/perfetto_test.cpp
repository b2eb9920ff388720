// The --perfetto timeline (sim/perfetto.h): a small chat run with a crash and a partition,
// written in Chrome's trace event format and read back as JSON: a named track per node, a flow
// pair (send slice, receive slice, one id) per delivered frame, the faults as slices from begin
// to heal, the crashed node's downtime, the devices' history events; the same file twice, the
// same digest as without it; and a cut file that says it was cut.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <sstream>
#include <string>

#include "sim/perfetto.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::sim {
namespace {

using nlohmann::json;

Scenario small_faulty_chat() {
  const std::string text = R"({
    "name": "perfetto-chat", "system": "chat", "duration_s": 16, "quiescence_s": 10,
    "topology": {"regions": ["us-east"], "nodes": [
      {"name": "lb", "role": "lb", "count": 1, "region": "us-east"},
      {"name": "chat", "role": "chat", "count": 2, "region": "us-east"},
      {"name": "registry", "role": "registry", "count": 1, "region": "us-east"},
      {"name": "queue", "role": "queue", "count": 1, "region": "us-east"},
      {"name": "storage", "role": "storage", "count": 1, "region": "us-east"},
      {"name": "push", "role": "push", "count": 1, "region": "us-east"},
      {"name": "device", "role": "device", "count": 6, "region": "us-east"}]},
    "workload": {"chat": {"contacts_per_user": 2, "groups": 1, "group_size": 3, "send_interval_ms": 1000}},
    "faults": [
      {"at_s": 4, "kind": "crash", "nodes": "chat-1", "restart_after_s": 3},
      {"at_s": 9, "kind": "partition", "sides": [["storage-1"], ["queue-1"]], "heal_after_s": 2}
    ]})";
  Result<Scenario> loaded = load_scenario_text(text, "perfetto-chat.json");
  EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.error().message);
  return std::move(loaded).value();
}

struct Traced {
  RunReport report;
  std::string text;
};

Traced run_traced(const Scenario& scenario, size_t events_max = kPerfettoEventsMaxDefault) {
  std::ostringstream out;
  RunOptions options;
  options.seed = 3;
  options.perfetto_out = &out;
  options.perfetto_events_max = events_max;
  Traced traced;
  traced.report = run_world(scenario, options);
  traced.text = out.str();
  return traced;
}

TEST(Perfetto, TracksFlowsFaultsAndHistoryOfAFaultyChatRun) {
  const Scenario scenario = small_faulty_chat();
  const Traced traced = run_traced(scenario);
  const json doc = json::parse(traced.text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << "not valid JSON";
  ASSERT_TRUE(doc.contains("traceEvents") && doc["traceEvents"].is_array());
  EXPECT_EQ(doc["otherData"]["truncated"], false);

  // A named track per node, in a process per node group.
  std::map<int64_t, std::string> thread_names;  // tid -> name
  std::set<std::string> process_names;
  for (const json& e : doc["traceEvents"]) {
    if (e["ph"] != "M") continue;
    if (e["name"] == "thread_name") thread_names[e["tid"].get<int64_t>()] = e["args"]["name"];
    if (e["name"] == "process_name") process_names.insert(e["args"]["name"].get<std::string>());
  }
  for (const NodeSpec& node : scenario.nodes) {
    bool found = false;
    for (const auto& [tid, name] : thread_names) found |= name.rfind(node.name + " ", 0) == 0;
    EXPECT_TRUE(found) << "no track for " << node.name;
  }
  EXPECT_TRUE(process_names.count("faults"));
  EXPECT_TRUE(process_names.count("chat (chat)"));
  EXPECT_TRUE(process_names.count("device (device)"));

  // Flows: every send has an "s", every delivery an "f" with the id of a send; as many of each
  // as the simulator counted.
  std::map<uint64_t, json> starts;
  size_t finishes = 0, send_slices = 0, receive_slices = 0;
  std::map<std::string, size_t> history_events;
  std::vector<json> fault_slices, down_slices;
  for (const json& e : doc["traceEvents"]) {
    const std::string ph = e["ph"];
    if (ph == "s") {
      EXPECT_TRUE(starts.emplace(e["id"].get<uint64_t>(), e).second) << "flow id used twice";
    }
    if (ph == "X" && e["cat"] == "send") send_slices++;
    if (ph == "X" && e["cat"] == "receive") receive_slices++;
    if (ph == "X" && e["cat"] == "fault") fault_slices.push_back(e);
    if (ph == "X" && e["cat"] == "lifecycle") down_slices.push_back(e);
    if (ph == "i" && e["cat"] == "history") history_events[e["name"].get<std::string>()]++;
  }
  for (const json& e : doc["traceEvents"]) {
    if (e["ph"] != "f") continue;
    finishes++;
    const auto start = starts.find(e["id"].get<uint64_t>());
    ASSERT_NE(start, starts.end()) << "a flow end without its start: " << e.dump();
    EXPECT_EQ(start->second["name"], e["name"]) << "the two ends of a flow name different frame types";
    EXPECT_LE(start->second["ts"].get<double>(), e["ts"].get<double>()) << "a frame received before it was sent";
    EXPECT_NE(start->second["tid"], e["tid"]);
  }
  EXPECT_EQ(starts.size(), traced.report.stats.frames_sent);
  EXPECT_EQ(send_slices, traced.report.stats.frames_sent);
  EXPECT_EQ(finishes, traced.report.stats.frames_delivered);
  EXPECT_EQ(receive_slices, traced.report.stats.frames_delivered);
  EXPECT_GT(finishes, 1000u);

  // The two faults, from begin to heal, in microseconds.
  ASSERT_EQ(fault_slices.size(), 2u);
  std::map<std::string, json> faults_by_kind;
  for (const json& f : fault_slices) faults_by_kind[f["args"]["kind"]] = f;
  ASSERT_TRUE(faults_by_kind.count("crash") && faults_by_kind.count("partition"));
  EXPECT_EQ(faults_by_kind["crash"]["name"], "crash chat-1");
  EXPECT_DOUBLE_EQ(faults_by_kind["crash"]["ts"].get<double>(), 4e6);
  EXPECT_DOUBLE_EQ(faults_by_kind["crash"]["dur"].get<double>(), 3e6);
  EXPECT_DOUBLE_EQ(faults_by_kind["partition"]["ts"].get<double>(), 9e6);
  EXPECT_DOUBLE_EQ(faults_by_kind["partition"]["dur"].get<double>(), 2e6);
  // chat-1 was down from the crash to its restart, on its own track.
  ASSERT_EQ(down_slices.size(), 1u);
  EXPECT_EQ(down_slices[0]["name"], "down (crash)");
  EXPECT_EQ(thread_names[down_slices[0]["tid"].get<int64_t>()].rfind("chat-1 ", 0), 0u);
  EXPECT_DOUBLE_EQ(down_slices[0]["dur"].get<double>(), 3e6);

  // The devices' history: as many deliveries and sends as the oracle judged.
  ASSERT_TRUE(traced.report.verdict.has_value());
  EXPECT_EQ(history_events["deliver"], traced.report.verdict->stats.delivers);
  EXPECT_EQ(history_events["send"], traced.report.verdict->stats.sends);
  EXPECT_GT(history_events["deliver"], 0u);
}

TEST(Perfetto, SameSeedSameFileAndTheRunIsUnchanged) {
  const Scenario scenario = small_faulty_chat();
  const Traced a = run_traced(scenario);
  const Traced b = run_traced(scenario);
  EXPECT_EQ(a.text, b.text);
  RunOptions plain;
  plain.seed = 3;
  EXPECT_EQ(run_world(scenario, plain).digest_hex, a.report.digest_hex);
}

TEST(Perfetto, ACutFileSaysSoAndStaysValid) {
  const Scenario scenario = small_faulty_chat();
  constexpr size_t kMax = 300;
  const Traced traced = run_traced(scenario, kMax);
  const json doc = json::parse(traced.text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << "a cut file is not valid JSON";
  EXPECT_EQ(doc["otherData"]["truncated"], true);
  EXPECT_GT(doc["otherData"]["events_dropped"].get<uint64_t>(), 0u);
  // The bound holds (a frame is two events, and the note one more).
  EXPECT_LE(doc["traceEvents"].size(), kMax + 3);
  bool noted = false, fault_kept = false;
  for (const json& e : doc["traceEvents"]) {
    noted |= e["name"].get<std::string>().rfind("msgsim: trace truncated", 0) == 0;
    fault_kept |= e["ph"] == "X" && e["cat"] == "fault";
  }
  EXPECT_TRUE(noted);
  EXPECT_TRUE(fault_kept) << "the faults should fit in the tenth kept for slices";
}

}  // namespace
}  // namespace msgsim::sim
