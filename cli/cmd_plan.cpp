// `msgsim plan WORKLOAD.json [--cost-table FILE] [--out DIR] [--no-slices] [--live-json FILE]`:
// the capacity arithmetic with each derivation (printed as Markdown), the simulated slices
// with the cost model, and the report (DIR/report.html with SVG plots, DIR/report.md).
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "oracle/event.h"
#include "reports/cost_model.h"
#include "reports/live_twin.h"
#include "reports/plan.h"
#include "reports/report.h"
#include "reports/slices.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::cli {

namespace {

using chat::CostRole;
using chat::Work;

struct PlanArgs {
  std::string workload;
  std::string cost_table = "reports/cost_table.json";
  std::string out = "plan-out";
  std::string live_json;
  bool no_slices = false;
  bool small = false;  // slices at a tenth of the connections, fewer points: for tests
  uint64_t seed = 1;
};

// What `msgsim live bench --json` reports, one entry per offered rate, end-to-end latency from
// the sender's send to the receiver's Deliver:
//   {"traffic": {"rates": [{"offered_per_s": 400, "latency_p50_us": 1900, "latency_p99_us": 6100}, ...]}}
// or, simpler, {"results": [{"offered_per_s": 400, "p50_ms": 1.9, "p99_ms": 6.1}, ...]}.
// Optional: "delivered_per_s" per rate, "group_commit": {"files_per_batch": F} per rate (the
// server's measured files per group-commit batch, shown next to the twin's),
// "server_loop_cpu_us_per_msg" per rate (the server's event-loop CPU per delivered message in the
// send window: the twin then charges it instead of the cost table's), "senders" next to
// "rates" (the pairs), "queue_commit_window_us" and "queue_linger_us" next to "rates" (the queue's
// batching delays the bench ran with; without them, the ChatTuning defaults, which every bench
// before they were reported ran with), "storage_commit_window_us" next to "rates" (the storage's
// group commit window, negative: each Records frame commits alone; without it, the ChatTuning
// default, 0, which every bench from storage's group commit (412c991) until it was reported ran
// with; earlier ones committed each frame alone), and a top-level "uptime" string
// (scripts/plan-vs-live adds the machine's load during the run).
// An event loop's turns as live bench measured them ("server_loop" / "client_loop" per rate:
// "cpu_us_per_msg", "turns_per_msg", "turn_cpu_buckets_us" as [[lower_us, upper_us, count], ..]).
struct LiveLoopTurns {
  double cpu_us_per_msg = 0;
  double turns_per_msg = 0;
  std::vector<int64_t> turn_quantiles_ns;
  // Optional "runqueue_wait_us_per_msg" and "involuntary_switches_per_s": the loop's preemptions.
  double runqueue_wait_us_per_msg = 0;
  double involuntary_switches_per_s = 0;
};
// Seeds the live twin runs at each rate (its prediction: the run with the median p99). With 5,
// the median still moved by 12 points of error between sets of seeds (reports/README.md).
constexpr uint64_t kTwinSeeds = 51;

struct LivePoint {
  double offered_per_s, p50_ms, p99_ms;
  std::optional<double> delivered_per_s;
  std::optional<double> files_per_batch;
  std::optional<double> loop_cpu_us_per_msg;  // the server's event-loop thread, per delivered message
  std::optional<double> fsync_mean_us;        // the group commit's mean fdatasync during the rate
  std::vector<int64_t> fsync_quantiles_ns;    // its fdatasyncs' distribution (evenly spaced quantiles), if measured
  std::optional<LiveLoopTurns> server_loop, client_loop;
  std::optional<double> duration_s;  // the rate's send window (live bench's "duration_s")
  // SQLite's checkpoints on the server loop in the send window (group_commit's commits,
  // checkpoints, checkpoint_cpu_us_per_msg, checkpoint_buckets_us), if measured.
  std::optional<double> checkpoints_per_commit;
  double checkpoint_cpu_us_per_msg = 0;
  std::vector<int64_t> checkpoint_quantiles_ns;
  // How alike consecutive group-commit batches' fdatasyncs were (group_commit's
  // fsync_lag1_log_correlation), if measured.
  std::optional<double> fsync_correlation;
};

// A histogram of durations as live bench writes it: [[lower_us, upper_us, count], ..], ascending.
Result<std::vector<reports::DurationBucket>> read_buckets(const nlohmann::json& h, const std::string& label) {
  if (!h.is_array() || h.size() > 1000) return make_error(ErrorCode::bad_input, label + ": expected an array of at most 1000 buckets");
  std::vector<reports::DurationBucket> buckets;
  for (size_t k = 0; k < h.size(); ++k) {
    const auto& b = h[k];
    const bool valid = b.is_array() && b.size() == 3 && b[0].is_number() && b[1].is_number() && b[2].is_number_unsigned() &&
                       b[0].get<double>() >= 0 && b[1].get<double>() >= b[0].get<double>() && b[1].get<double>() <= 1e8 &&
                       (k == 0 || b[0].get<double>() >= h[k - 1][1].get<double>());
    if (!valid)
      return make_error(ErrorCode::bad_input, label + "[" + std::to_string(k) +
                                                  "]: expected [lower_us, upper_us, count], lower <= upper <= 1e8, above the bucket before");
    buckets.push_back({std::llround(b[0].get<double>() * 1e3), std::llround(b[1].get<double>() * 1e3), b[2].get<uint64_t>()});
  }
  return buckets;
}

// A rate's "server_loop" or "client_loop"; nothing when it measured no turns.
Result<std::optional<LiveLoopTurns>> read_loop_turns(const nlohmann::json& loop, const std::string& label) {
  if (!loop.is_object()) return make_error(ErrorCode::bad_input, label + ": expected an object");
  LiveLoopTurns out;
  for (const auto& [key, target] : {std::pair<const char*, double*>{"cpu_us_per_msg", &out.cpu_us_per_msg},
                                    std::pair<const char*, double*>{"turns_per_msg", &out.turns_per_msg}}) {
    if (!loop.contains(key) || !loop[key].is_number() || loop[key].get<double>() < 0 || loop[key].get<double>() > 1e6)
      return make_error(ErrorCode::bad_input, label + "." + key + ": expected a number in [0, 1e6]");
    *target = loop[key].get<double>();
  }
  for (const auto& [key, target] : {std::pair<const char*, double*>{"runqueue_wait_us_per_msg", &out.runqueue_wait_us_per_msg},
                                    std::pair<const char*, double*>{"involuntary_switches_per_s", &out.involuntary_switches_per_s}}) {
    if (!loop.contains(key)) continue;
    if (!loop[key].is_number() || loop[key].get<double>() < 0 || loop[key].get<double>() > 1e6)
      return make_error(ErrorCode::bad_input, label + "." + key + ": expected a number in [0, 1e6]");
    *target = loop[key].get<double>();
  }
  if (!loop.contains("turn_cpu_buckets_us")) return make_error(ErrorCode::bad_input, label + ".turn_cpu_buckets_us: missing");
  Result<std::vector<reports::DurationBucket>> buckets = read_buckets(loop["turn_cpu_buckets_us"], label + ".turn_cpu_buckets_us");
  if (!buckets.ok()) return buckets.error();
  // 100,001 quantiles, as for the fsyncs: a lone long turn keeps its own weight.
  out.turn_quantiles_ns = reports::quantiles_from_buckets(*buckets, 100'000);
  if (out.turn_quantiles_ns.empty() || out.turns_per_msg <= 0 || out.cpu_us_per_msg <= 0) return std::optional<LiveLoopTurns>{};
  return std::optional<LiveLoopTurns>{std::move(out)};
}
struct LiveRun {
  std::vector<LivePoint> points;
  uint32_t pairs = 500;
  int64_t queue_commit_window_ns = chat::ChatTuning{}.queue_commit_window_ns;
  int64_t queue_linger_ns = chat::ChatTuning{}.queue_linger_ns;
  int64_t storage_commit_window_ns = chat::ChatTuning{}.storage_commit_window_ns;
  std::string uptime;
  // The bench server's event loops (`live bench --server-loops`, "server_loops" next to "rates";
  // 1 before session 12). The twin models one; with two, each rate's "server_loop" is both
  // together, and the report says so.
  uint32_t server_loops = 1;
};
Result<LiveRun> read_live(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::not_found, path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, false);
  if (doc.is_discarded()) return make_error(ErrorCode::bad_input, path + ": not valid JSON");
  const bool live_bench = doc.is_object() && doc.contains("traffic") && doc["traffic"].is_object() &&
                          doc["traffic"].contains("rates");
  const nlohmann::json* list = live_bench ? &doc["traffic"]["rates"] : (doc.is_object() && doc.contains("results") ? &doc["results"] : nullptr);
  const std::string where = live_bench ? "$.traffic.rates" : "$.results";
  if (list == nullptr || !list->is_array()) return make_error(ErrorCode::bad_input, path + ": " + where + ": expected an array");
  const char* p50 = live_bench ? "latency_p50_us" : "p50_ms";
  const char* p99 = live_bench ? "latency_p99_us" : "p99_ms";
  const double to_ms = live_bench ? 1e-3 : 1.0;
  LiveRun out;
  if (doc.is_object() && doc.contains("uptime") && doc["uptime"].is_string()) out.uptime = doc["uptime"].get<std::string>();
  if (live_bench && doc["traffic"].contains("senders")) {
    const auto& s = doc["traffic"]["senders"];
    if (!s.is_number_unsigned() || s.get<uint64_t>() < 1 || s.get<uint64_t>() > 100000)
      return make_error(ErrorCode::bad_input, path + ": $.traffic.senders: expected an integer in [1, 100000]");
    out.pairs = s.get<uint32_t>();
  }
  if (live_bench && doc["traffic"].contains("server_loops")) {
    const auto& v = doc["traffic"]["server_loops"];
    if (!v.is_number_unsigned() || v.get<uint64_t>() < 1 || v.get<uint64_t>() > 2)
      return make_error(ErrorCode::bad_input, path + ": $.traffic.server_loops: expected 1 or 2");
    out.server_loops = v.get<uint32_t>();
  }
  if (live_bench) {
    for (const auto& [key, target] : {std::pair<const char*, int64_t*>{"queue_commit_window_us", &out.queue_commit_window_ns},
                                      std::pair<const char*, int64_t*>{"queue_linger_us", &out.queue_linger_ns}}) {
      if (!doc["traffic"].contains(key)) continue;
      const auto& v = doc["traffic"][key];
      if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1e6)
        return make_error(ErrorCode::bad_input, path + ": $.traffic." + key + ": expected a number of microseconds in [0, 1e6]");
      *target = std::llround(v.get<double>() * 1e3);
    }
    if (doc["traffic"].contains("storage_commit_window_us")) {
      const auto& v = doc["traffic"]["storage_commit_window_us"];
      if (!v.is_number() || v.get<double>() > 1e6)
        return make_error(ErrorCode::bad_input,
                          path + ": $.traffic.storage_commit_window_us: expected a number of microseconds up to 1e6 (negative: none)");
      out.storage_commit_window_ns = v.get<double>() < 0 ? -1 : std::llround(v.get<double>() * 1e3);
    }
  }
  for (size_t i = 0; i < list->size(); ++i) {
    const auto& r = (*list)[i];
    for (const char* k : {"offered_per_s", p50, p99}) {
      if (!r.is_object() || !r.contains(k) || !r[k].is_number())
        return make_error(ErrorCode::bad_input, path + ": " + where + "[" + std::to_string(i) + "]." + k + ": expected a number");
    }
    if (r["offered_per_s"].get<double>() <= 0 || r["offered_per_s"].get<double>() > 1e7)
      return make_error(ErrorCode::bad_input, path + ": " + where + "[" + std::to_string(i) + "].offered_per_s: expected (0, 1e7]");
    LivePoint point{r["offered_per_s"].get<double>(), r[p50].get<double>() * to_ms, r[p99].get<double>() * to_ms, std::nullopt,
                    std::nullopt, std::nullopt, std::nullopt, {}, std::nullopt, std::nullopt, std::nullopt, std::nullopt, 0, {}, std::nullopt};
    if (r.contains("delivered_per_s")) {
      if (!r["delivered_per_s"].is_number())
        return make_error(ErrorCode::bad_input, path + ": " + where + "[" + std::to_string(i) + "].delivered_per_s: expected a number");
      point.delivered_per_s = r["delivered_per_s"].get<double>();
    }
    if (r.contains("group_commit")) {
      const auto& g = r["group_commit"];
      const bool valid = g.is_object() && g.contains("files_per_batch") && g["files_per_batch"].is_number() &&
                         g["files_per_batch"].get<double>() >= 0 && g["files_per_batch"].get<double>() <= 64;
      if (!valid)
        return make_error(ErrorCode::bad_input, path + ": " + where + "[" + std::to_string(i) +
                                                    "].group_commit.files_per_batch: expected a number in [0, 64]");
      // 0: no batch completed during the rate (nothing measured).
      if (g["files_per_batch"].get<double>() > 0) point.files_per_batch = g["files_per_batch"].get<double>();
      if (g.contains("fsync_mean_us")) {
        const auto& v = g["fsync_mean_us"];
        if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1e7)
          return make_error(ErrorCode::bad_input, path + ": " + where + "[" + std::to_string(i) +
                                                      "].group_commit.fsync_mean_us: expected a number in [0, 1e7]");
        if (v.get<double>() > 0) point.fsync_mean_us = v.get<double>();
      }
      if (g.contains("fsync_quantiles_us")) {
        // Evenly spaced quantiles of the fdatasyncs the group commit measured during the rate;
        // an empty array: none measured.
        const auto& q = g["fsync_quantiles_us"];
        const std::string label = path + ": " + where + "[" + std::to_string(i) + "].group_commit.fsync_quantiles_us";
        if (!q.is_array() || q.size() == 1 || q.size() > 1001)
          return make_error(ErrorCode::bad_input, label + ": expected an array of 2 to 1001 quantiles");
        for (size_t k = 0; k < q.size(); ++k) {
          if (!q[k].is_number() || q[k].get<double>() < 0 || q[k].get<double>() > 1e7 ||
              (k > 0 && q[k].get<double>() < q[k - 1].get<double>()))
            return make_error(ErrorCode::bad_input, label + "[" + std::to_string(k) + "]: expected a number in [0, 1e7], not below the one before");
          point.fsync_quantiles_ns.push_back(std::llround(q[k].get<double>() * 1e3));
        }
      }
      if (g.contains("fsync_lag1_log_correlation")) {
        const auto& v = g["fsync_lag1_log_correlation"];
        if (!v.is_number() || !(v.get<double>() >= -1) || !(v.get<double>() <= 1))
          return make_error(ErrorCode::bad_input, path + ": " + where + "[" + std::to_string(i) +
                                                      "].group_commit.fsync_lag1_log_correlation: expected a number in [-1, 1]");
        point.fsync_correlation = v.get<double>();
      }
      if (g.contains("fsync_buckets_us")) {
        // The histogram the quantiles come from ([[lower_us, upper_us, count], ..], ascending):
        // the twin draws from it at a resolution where a lone slow fsync keeps its own weight.
        Result<std::vector<reports::DurationBucket>> buckets =
            read_buckets(g["fsync_buckets_us"], path + ": " + where + "[" + std::to_string(i) + "].group_commit.fsync_buckets_us");
        if (!buckets.ok()) return buckets.error();
        // 100,001 quantiles: a step is 0.001 %, far below one fsync of a 10 s rate.
        std::vector<int64_t> quantiles = reports::quantiles_from_buckets(*buckets, 100'000);
        if (!quantiles.empty()) point.fsync_quantiles_ns = std::move(quantiles);
      }
      if (g.contains("checkpoints") || g.contains("commits") || g.contains("checkpoint_buckets_us")) {
        // The checkpoints that stalled the server loop, among the window's commits: all three
        // fields, or none.
        const std::string label = path + ": " + where + "[" + std::to_string(i) + "].group_commit";
        for (const char* key : {"commits", "checkpoints"}) {
          if (!g.contains(key) || !g[key].is_number_unsigned() || g[key].get<uint64_t>() > 1'000'000'000)
            return make_error(ErrorCode::bad_input, label + "." + key + ": expected an integer in [0, 1e9] (with commits, checkpoints and checkpoint_buckets_us)");
        }
        const uint64_t commits = g["commits"].get<uint64_t>(), checkpoints = g["checkpoints"].get<uint64_t>();
        if (checkpoints > commits)
          return make_error(ErrorCode::bad_input, label + ".checkpoints: " + std::to_string(checkpoints) + " is more than the " +
                                                      std::to_string(commits) + " commits they run in");
        if (!g.contains("checkpoint_buckets_us"))
          return make_error(ErrorCode::bad_input, label + ".checkpoint_buckets_us: expected with commits and checkpoints");
        Result<std::vector<reports::DurationBucket>> buckets = read_buckets(g["checkpoint_buckets_us"], label + ".checkpoint_buckets_us");
        if (!buckets.ok()) return buckets.error();
        uint64_t counted = 0;
        for (const reports::DurationBucket& b : *buckets) counted += b.count;
        if (counted != checkpoints)
          return make_error(ErrorCode::bad_input, label + ".checkpoint_buckets_us: holds " + std::to_string(counted) + " checkpoints, checkpoints says " +
                                                      std::to_string(checkpoints));
        if (g.contains("checkpoint_cpu_us_per_msg")) {
          const auto& v = g["checkpoint_cpu_us_per_msg"];
          if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1e6)
            return make_error(ErrorCode::bad_input, label + ".checkpoint_cpu_us_per_msg: expected a number in [0, 1e6]");
          point.checkpoint_cpu_us_per_msg = v.get<double>();
        }
        if (commits > 0) {
          point.checkpoints_per_commit = static_cast<double>(checkpoints) / static_cast<double>(commits);
          point.checkpoint_quantiles_ns = reports::quantiles_from_buckets(*buckets, 10'000);
        }
      }
    }
    if (r.contains("server_loop_cpu_us_per_msg")) {
      const auto& v = r["server_loop_cpu_us_per_msg"];
      if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1e6)
        return make_error(ErrorCode::bad_input, path + ": " + where + "[" + std::to_string(i) +
                                                    "].server_loop_cpu_us_per_msg: expected a number in [0, 1e6]");
      // 0: nothing delivered (nothing measured); the twin keeps the cost table's.
      if (v.get<double>() > 0) point.loop_cpu_us_per_msg = v.get<double>();
    }
    if (r.contains("duration_s")) {
      const auto& v = r["duration_s"];
      if (!v.is_number() || !(v.get<double>() > 0) || v.get<double>() > 3600)
        return make_error(ErrorCode::bad_input, path + ": " + where + "[" + std::to_string(i) + "].duration_s: expected a number in (0, 3600]");
      point.duration_s = v.get<double>();
    }
    for (const auto& [key, target] : {std::pair<const char*, std::optional<LiveLoopTurns>*>{"server_loop", &point.server_loop},
                                      std::pair<const char*, std::optional<LiveLoopTurns>*>{"client_loop", &point.client_loop}}) {
      if (!r.contains(key)) continue;
      Result<std::optional<LiveLoopTurns>> turns = read_loop_turns(r[key], path + ": " + where + "[" + std::to_string(i) + "]." + key);
      if (!turns.ok()) return turns.error();
      *target = std::move(*turns);
    }
    out.points.push_back(point);
  }
  return out;
}

// The real chat system in the simulator with the cost table, at an offered message rate:
// end-to-end latency from the sender's send to the receiver's deliver (history events), as
// `live bench` measures it.
reports::ModelPoint model_at(double offered_per_s, const chat::CpuCosts& costs, uint64_t seed, std::string& error) {
  constexpr int kDevices = 200;
  const int interval_ms = std::max(1, static_cast<int>(std::lround(kDevices * 1000.0 / offered_per_s)));
  const std::string text = R"({"name": "plan-model", "system": "chat", "duration_s": 100000,
    "topology": {"regions": ["us-east"], "nodes": [
      {"name": "lb", "role": "lb", "count": 1, "region": "us-east"},
      {"name": "chat", "role": "chat", "count": 2, "region": "us-east"},
      {"name": "registry", "role": "registry", "count": 1, "region": "us-east"},
      {"name": "queue", "role": "queue", "count": 2, "region": "us-east"},
      {"name": "storage", "role": "storage", "count": 2, "region": "us-east"},
      {"name": "push", "role": "push", "count": 1, "region": "us-east"},
      {"name": "device", "role": "device", "count": )" + std::to_string(kDevices) + R"(, "region": "us-east"}]},
    "workload": {"chat": {"contacts_per_user": 1, "groups": 0, "send_interval_ms": )" + std::to_string(interval_ms) + R"(,
                          "body_bytes": [100, 100], "read_share": 0}}})";
  reports::ModelPoint point;
  point.offered_per_s = kDevices * 1000.0 / interval_ms;
  Result<sim::Scenario> loaded = sim::load_scenario_text(text, "plan-model.json");
  if (!loaded.ok()) {
    error = loaded.error().message;
    return point;
  }
  sim::NetworkConfig net;
  net.regions = loaded->regions;
  net.base_ns = {{loaded->latency[0][0].base_ns}};
  net.jitter_mean_ns = {{loaded->latency[0][0].jitter_mean_ns}};
  net.connection_timeout_ns = loaded->connection_timeout_ns;
  sim::Simulator simulator(seed, net);
  sim::RunOptions options;
  options.seed = seed;
  options.cpu_costs = costs;
  constexpr int64_t kWarmupNs = 5 * kNanosPerSecond, kMeasureNs = 10 * kNanosPerSecond;
  std::map<std::string, int64_t> sent_at;  // by message id (UUIDs: unique in the run)
  std::vector<int64_t> latency;
  simulator.set_history_sink([&](NodeId, const history::Event& e) {
    const int64_t now = simulator.now_ns();  // the history sink stamps events with run time
    if (e.type == history::EventType::send && now >= kWarmupNs) sent_at.emplace(e.msg, now);
    if (e.type == history::EventType::deliver) {
      const auto it = sent_at.find(e.msg);
      if (it != sent_at.end()) {
        latency.push_back(now - it->second);
        sent_at.erase(it);
      }
    }
  });
  std::unique_ptr<sim::SystemUnderTest> system = sim::make_system(*loaded, options);
  system->build(simulator, *loaded);
  system->start(simulator);
  simulator.run_until(kWarmupNs + kMeasureNs);
  std::sort(latency.begin(), latency.end());
  if (!latency.empty()) {
    point.predicted_p50_ms = static_cast<double>(latency[latency.size() / 2]) / 1e6;
    point.predicted_p99_ms = static_cast<double>(latency[std::min(latency.size() - 1, latency.size() * 99 / 100)]) / 1e6;
  }
  return point;
}

int plan(const PlanArgs& args) {
  Result<reports::Workload> workload = reports::load_workload(args.workload);
  if (!workload.ok()) {
    std::cerr << "msgsim plan: " << workload.error().message << "\n";
    return kExitBadInput;
  }
  Result<reports::CostTable> table = reports::load_cost_table(args.cost_table);
  if (!table.ok()) {
    std::cerr << "msgsim plan: --cost-table: " << table.error().message << " (run `msgsim calibrate -o FILE`)\n";
    return kExitBadInput;
  }
  std::optional<LiveRun> live;
  if (!args.live_json.empty()) {
    Result<LiveRun> read = read_live(args.live_json);
    if (!read.ok()) {
      std::cerr << "msgsim plan: --live-json: " << read.error().message << "\n";
      return kExitBadInput;
    }
    live = *read;
  }
  const chat::CpuCosts& costs = table->costs;
  reports::Report report;
  report.plan = reports::make_plan(*workload, costs);
  report.cost_table_label = args.cost_table + (table->machine.empty() ? "" : " (measured on " + table->machine + ")");
  const reports::Workload& w = report.plan.workload;

  // Servers against DAU, from 1 M to 10 G users.
  const std::vector<CostRole> plotted = {CostRole::chat, CostRole::queue, CostRole::storage, CostRole::registry};
  report.servers_series_names = {"chat", "queue", "storage", "registry", "all roles"};
  report.servers_by_role.assign(report.servers_series_names.size(), {});
  for (double e = 6; e <= 10.0001; e += 0.25) {
    const double dau = std::pow(10.0, e);
    report.dau_axis.push_back(dau);
    const auto sizing = reports::servers_for_dau(w, costs, dau);
    double total = 0;
    for (const auto& [role, servers] : sizing) {
      total += servers;
      for (size_t k = 0; k < plotted.size(); ++k)
        if (plotted[k] == role) report.servers_by_role[k].push_back(servers);
    }
    report.servers_by_role.back().push_back(total);
  }

  if (!args.no_slices) {
    const auto started = std::chrono::steady_clock::now();
    for (const reports::RoleSizing& sizing : report.plan.roles) {
      reports::CurveOptions options;
      options.seed = args.seed;
      if (args.small) {
        options.utilisations = {0.2, 0.6, 0.9, 1.05};
        options.requests_per_point = 500;
      }
      const auto cost = std::max<int64_t>(1, std::llround(sizing.cpu_ns_per_unit));
      report.curves.push_back(reports::role_curve(chat::to_string(sizing.role), cost, w.server_cores, options));
    }
    const auto c = [&](Work work) { return costs.of(CostRole::chat, work); };
    const reports::Figure* chat_servers = report.plan.find("servers_chat");
    const double servers = std::max(1.0, chat_servers->value);
    reports::ChatSliceOptions slice;
    slice.seed = args.seed;
    slice.connections = static_cast<uint32_t>(w.connections_per_server / (args.small ? 10 : 1));
    slice.cores = w.server_cores;
    slice.heartbeat_interval_s = w.heartbeat_interval_s;
    slice.sends_per_s = report.plan.find("peak_messages_per_s")->value / servers;
    slice.deliveries_per_s = report.plan.find("online_deliveries_per_s")->value / servers;
    slice.heartbeat_cost_ns = c(Work::decode) + c(Work::heartbeat);
    slice.send_cost_ns = c(Work::decode) + c(Work::route);
    slice.push_cost_ns = c(Work::decode) + c(Work::push);
    slice.connect_cost_ns = c(Work::decode) + c(Work::connect);
    report.chat_slice = reports::chat_server_peak(slice);
    const std::vector<double> backoffs = args.small ? std::vector<double>{1.0} : std::vector<double>{0.5, 1.0, 2.0};
    for (double backoff_s : backoffs) {
      for (reports::Jitter jitter : {reports::Jitter::none, reports::Jitter::full}) {
        reports::StormOptions storm;
        storm.seed = args.seed;
        storm.clients = slice.connections;
        storm.survivors = w.storm_pool_servers;
        storm.cores = w.server_cores;
        storm.connect_cost_ns = slice.connect_cost_ns;
        storm.baseline_utilisation = report.chat_slice->utilisation;
        storm.backoff_initial_ns = static_cast<int64_t>(backoff_s * 1e9);
        storm.jitter = jitter;
        report.storms.push_back(reports::reconnect_storm(storm));
      }
    }
    if (live) {
      // The simulated twin of the live bench at each measured rate (reports/live_twin.h).
      const reports::LiveTwinCosts twin = reports::live_twin_costs(costs, table->fsync_quantiles_ns, table->loopback_rtt_ns,
                                                                         table->idle_hop_quantiles_ns);
      std::string files_per_batch;  // predicted against measured, per rate
      std::string loop_cpu;         // the measured loop CPU per message the twin charged, per rate
      std::string fsync_means;      // the bench's mean fdatasync the twin's distribution was scaled to, per rate
      std::string fsync_measured;   // the bench's own fdatasync distribution the twin drew from, per rate
      std::string loop_turns;       // the measured event-loop turns the twin drew its CPU from, per rate
      std::string checkpoints;      // the measured SQLite checkpoints the twin stalled its loop for, per rate
      std::string checkpoints_off_loop;  // the twin's p99 without those stalls, per rate
      std::string stages;           // the twin's stage times (as MSGSIM_BENCH_TRACE prints live's), per rate
      for (const LivePoint& p : live->points) {
        reports::LiveTwinOptions options;
        options.seed = args.seed;
        options.offered_per_s = p.offered_per_s;
        options.pairs = live->pairs;
        options.queue_commit_window_ns = live->queue_commit_window_ns;
        options.queue_linger_ns = live->queue_linger_ns;
        options.storage_commit_window_ns = live->storage_commit_window_ns;
        reports::LiveTwinCosts at_rate = twin;
        // Where the checkpoints were measured, the twin stalls its loop for them itself: their CPU
        // leaves the per-message charge.
        const bool stalls = p.checkpoints_per_commit.has_value() && !p.checkpoint_quantiles_ns.empty();
        const auto loop_ns = [&](double loop_us_per_msg) {
          return std::llround(std::max(0.0, loop_us_per_msg - (stalls ? p.checkpoint_cpu_us_per_msg : 0.0)) * 1e3);
        };
        if (stalls) {
          at_rate.checkpoints_per_commit = *p.checkpoints_per_commit;
          at_rate.checkpoint_quantiles_ns = p.checkpoint_quantiles_ns;
          const auto& q = p.checkpoint_quantiles_ns;
          char text[160];
          std::snprintf(text, sizeof text, "%s%.1f per 1,000 commits, p50 %.2f / max %.2f ms, %.1f us of loop CPU a message at %.0f/s",
                        checkpoints.empty() ? "" : "; ", *p.checkpoints_per_commit * 1000,
                        static_cast<double>(reports::sample_quantiles(q, 0.5)) / 1e6, static_cast<double>(q.back()) / 1e6,
                        p.checkpoint_cpu_us_per_msg, p.offered_per_s);
          checkpoints += text;
        }
        if (p.loop_cpu_us_per_msg.has_value()) {
          at_rate = reports::with_measured_loop_cpu(at_rate, loop_ns(*p.loop_cpu_us_per_msg));
          char cpu[64];
          std::snprintf(cpu, sizeof cpu, "%s%.0f us at %.0f/s", loop_cpu.empty() ? "" : ", ", *p.loop_cpu_us_per_msg, p.offered_per_s);
          loop_cpu += cpu;
        }
        if (p.server_loop.has_value()) {
          // The loop's turns: each stage's CPU drawn as turns of the measured shape.
          if (!p.loop_cpu_us_per_msg.has_value())
            at_rate = reports::with_measured_loop_cpu(at_rate, loop_ns(p.server_loop->cpu_us_per_msg));
          at_rate.server_turn_quantiles_ns = p.server_loop->turn_quantiles_ns;
          at_rate.server_turns_per_msg = p.server_loop->turns_per_msg;
        }
        // A loop's preemptions: its involuntary switches per second, each holding the loop for
        // its share of the measured wait for a core (wait per message x messages per second /
        // switches per second).
        const auto preemption = [&](const std::optional<LiveLoopTurns>& loop, double& per_s, int64_t& mean_ns) {
          if (!loop.has_value() || loop->involuntary_switches_per_s <= 0 || loop->runqueue_wait_us_per_msg <= 0) return;
          per_s = loop->involuntary_switches_per_s;
          mean_ns = std::llround(loop->runqueue_wait_us_per_msg * 1e3 * p.offered_per_s / per_s);
        };
        preemption(p.server_loop, at_rate.server_preemptions_per_s, at_rate.server_preemption_mean_ns);
        preemption(p.client_loop, at_rate.client_preemptions_per_s, at_rate.client_preemption_mean_ns);
        if (p.client_loop.has_value()) {
          at_rate.client_turn_quantiles_ns = p.client_loop->turn_quantiles_ns;
          at_rate.client_turns_per_msg = p.client_loop->turns_per_msg;
          at_rate.client_ns_per_message = std::llround(p.client_loop->cpu_us_per_msg * 1e3);
        }
        if (p.server_loop.has_value() || p.client_loop.has_value()) {
          const auto loop_text = [&p](const char* name, const std::optional<LiveLoopTurns>& loop) {
            if (!loop.has_value()) return std::string();
            const auto& q = loop->turn_quantiles_ns;
            char text[240];
            int n = std::snprintf(text, sizeof text, "%s %.1f turns a message, turn p50 %.1f / p99 %.0f / max %.0f us", name, loop->turns_per_msg,
                                  static_cast<double>(reports::sample_quantiles(q, 0.5)) / 1e3,
                                  static_cast<double>(reports::sample_quantiles(q, 0.99)) / 1e3, static_cast<double>(q.back()) / 1e3);
            if (loop->involuntary_switches_per_s > 0 && loop->runqueue_wait_us_per_msg > 0 && n > 0 && static_cast<size_t>(n) < sizeof text)
              std::snprintf(text + n, sizeof text - static_cast<size_t>(n), ", preempted %.0f times a second for %.0f us on average",
                            loop->involuntary_switches_per_s, loop->runqueue_wait_us_per_msg * p.offered_per_s / loop->involuntary_switches_per_s);
            return std::string(text);
          };
          const std::string server_text = loop_text("server", p.server_loop), client_text = loop_text("client", p.client_loop);
          char rate[48];
          std::snprintf(rate, sizeof rate, " at %.0f/s", p.offered_per_s);
          loop_turns += (loop_turns.empty() ? "" : "; ") + server_text + (server_text.empty() || client_text.empty() ? "" : ", ") +
                        client_text + rate;
        }
        if (!p.fsync_quantiles_ns.empty()) {
          // The bench measured the distribution itself (its tail included): the twin draws from it.
          at_rate.fsync_quantiles_ns = p.fsync_quantiles_ns;
          const auto& q = p.fsync_quantiles_ns;
          char fsync[160];
          std::snprintf(fsync, sizeof fsync, "%sp50 %.0f / p95 %.0f / max %.0f us", fsync_measured.empty() ? "" : ", ",
                        static_cast<double>(q[q.size() / 2]) / 1e3, static_cast<double>(q[q.size() * 19 / 20]) / 1e3,
                        static_cast<double>(q.back()) / 1e3);
          fsync_measured += fsync;
          if (p.fsync_correlation.has_value()) {
            // Consecutive draws as alike as the bench's consecutive batches were.
            at_rate.fsync_correlation = *p.fsync_correlation;
            std::snprintf(fsync, sizeof fsync, ", consecutive ones drawn correlated at %.2f", *p.fsync_correlation);
            fsync_measured += fsync;
          }
          std::snprintf(fsync, sizeof fsync, " at %.0f/s", p.offered_per_s);
          fsync_measured += fsync;
        } else if (p.fsync_mean_us.has_value()) {
          at_rate = reports::with_measured_fsync_mean(at_rate, std::llround(*p.fsync_mean_us * 1e3));
          char fsync[64];
          std::snprintf(fsync, sizeof fsync, "%s%.0f us at %.0f/s", fsync_means.empty() ? "" : ", ", *p.fsync_mean_us, p.offered_per_s);
          fsync_means += fsync;
        }
        // The twin measures as long as the bench did, and its prediction is the run with the
        // median p99 of kTwinSeeds seeds: a rare event (one 70 ms fsync among thousands) decides
        // a single run's p99 by whether it lands in the window, in the bench and in the twin
        // alike; the median says what a run typically shows.
        if (p.duration_s.has_value()) options.measure_ns = std::llround(*p.duration_s * 1e9);
        std::vector<reports::LiveTwinResult> runs;
        for (uint64_t k = 0; k < kTwinSeeds; ++k) {
          options.seed = args.seed + k;
          runs.push_back(reports::run_live_twin(at_rate, options));
        }
        std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) { return a.p99_ms < b.p99_ms; });
        const reports::LiveTwinResult predicted = runs[runs.size() / 2];
        if (stalls) {
          // What the stalls cost: the same twin with the checkpoints off the loop (as if another
          // thread ran them, their CPU still out of the loop's charge), the same seeds' median.
          reports::LiveTwinCosts off_loop = at_rate;
          off_loop.checkpoints_per_commit = 0;
          std::vector<double> p99s;
          for (uint64_t k = 0; k < kTwinSeeds; ++k) {
            options.seed = args.seed + k;
            p99s.push_back(reports::run_live_twin(off_loop, options).p99_ms);
          }
          std::sort(p99s.begin(), p99s.end());
          char text[96];
          std::snprintf(text, sizeof text, "%s%.2f instead of %.2f ms at %.0f/s", checkpoints_off_loop.empty() ? "" : ", ",
                        p99s[p99s.size() / 2], predicted.p99_ms, p.offered_per_s);
          checkpoints_off_loop += text;
        }
        char stage_text[200];
        std::snprintf(stage_text, sizeof stage_text, "%sread %.2f / %.2f, records %.2f / %.2f, written %.2f / %.2f ms at %.0f/s",
                      stages.empty() ? "" : "; ", predicted.read_p50_ms, predicted.read_p99_ms, predicted.records_p50_ms,
                      predicted.records_p99_ms, predicted.written_p50_ms, predicted.written_p99_ms, p.offered_per_s);
        stages += stage_text;
        char text[96];
        if (p.files_per_batch.has_value()) {
          std::snprintf(text, sizeof text, "%s%.2f / %.2f at %.0f/s", files_per_batch.empty() ? "" : ", ", predicted.files_per_batch,
                        *p.files_per_batch, p.offered_per_s);
        } else {
          std::snprintf(text, sizeof text, "%s%.2f / not measured at %.0f/s", files_per_batch.empty() ? "" : ", ",
                        predicted.files_per_batch, p.offered_per_s);
        }
        files_per_batch += text;
        reports::ModelPoint point;
        point.offered_per_s = p.offered_per_s;
        point.predicted_p50_ms = predicted.p50_ms;
        point.predicted_p99_ms = predicted.p99_ms;
        point.predicted_delivered_per_s = predicted.delivered_per_s;
        point.measured_p50_ms = p.p50_ms;
        point.measured_p99_ms = p.p99_ms;
        point.measured_delivered_per_s = p.delivered_per_s;
        report.model.push_back(point);
      }
      auto us = [](int64_t ns) { return std::to_string((ns + 500) / 1000) + " us"; };
      const auto& q = twin.fsync_quantiles_ns;
      report.model_note =
          "The simulated twin of `msgsim live bench` (reports/live_twin.h), the run with the median p99 of " +
          std::to_string(kTwinSeeds) + " seeds at each rate, each as long as the bench's rate: " + std::to_string(live->pairs) +
          " senders to as many receivers, 1:1, the offered rate sent every millisecond as live bench does; one server "
          "process on one core (every server role's frames in one FIFO) charging " +
          (loop_cpu.empty() ? us(twin.server_ns_per_message()) +
                                  " of CPU per message (the cost table's per-role costs of the frames the message makes there, at "
                                  "the stage that spends them) and " + us(twin.server_ns_per_batch) + " per group-commit batch"
                            : "the CPU per message the live bench measured on its server's event-loop thread (" + loop_cpu +
                                  "; the cost table says " + us(twin.server_ns_per_message()) +
                                  "), split over the stages that spend it in the table's proportions") +
          "; the queue's commit window " +
          us(live->queue_commit_window_ns) + " and linger " + us(live->queue_linger_ns) + " and the storage's commit window " +
          (live->storage_commit_window_ns < 0 ? std::string("none (each Records frame commits alone)") : us(live->storage_commit_window_ns)) +
          " as the bench ran them (0: the loop's next turn); group commit as live/group_commit does it (each commit "
          "defers its file's fdatasync, a batch syncs the files deferred since the last one began, frames held until "
          "the batch covering their commits is durable; files per batch, twin / live bench: " + files_per_batch + "); "
          "fsync time drawn from the cost table's measured distribution (" +
          (q.empty() ? std::string("not measured: zero; run `msgsim calibrate` without --no-disk")
                     : "p50 " + us(q[q.size() / 2]) + ", max " + us(q.back())) +
          (fsync_means.empty() ? std::string()
                               : ", scaled to the mean fdatasync the bench's group commit measured during each rate: " + fsync_means) +
          (fsync_measured.empty() ? std::string()
                                  : "; where the bench measured its fdatasyncs' distribution, drawn from that instead: " + fsync_measured) +
          "); " +
          (twin.idle_hop_quantiles_ns.empty()
               ? "each hop half the measured loopback round trip (" +
                     (twin.loopback_rtt_ns == 0 ? std::string("not measured: zero") : us(twin.loopback_rtt_ns)) + ")"
               : "each hop (loader to server, server to loader) and the group commit worker's completion reaching the loop "
                 "drawn from the measured one-way loopback hop to a reader asleep between frames (p50 " +
                     us(reports::sample_quantiles(twin.idle_hop_quantiles_ns, 0.5)) + ", p99 " +
                     us(reports::sample_quantiles(twin.idle_hop_quantiles_ns, 0.99)) + ", max " + us(twin.idle_hop_quantiles_ns.back()) +
                     "; back-to-back round trip " + us(twin.loopback_rtt_ns) + ")") +
          (loop_turns.empty()
               ? ". Loaders' CPU is not charged (separate processes)"
               : ". Where the bench measured its event loops' turns, each stage's CPU is drawn as that many turns of the "
                 "measured distribution, scaled to the measured mean (a message waits behind a long turn as a live one does), "
                 "and the client loop (every sender and receiver on one thread) is charged its own measured turns, " +
                     std::to_string(static_cast<int>(reports::kClientSendShare * 100)) +
                     " % on the send and the rest on the Deliver's arrival; where it measured each loop's involuntary switches "
                     "and wait for a core, the loop loses its core at Poisson times at that rate for exponential spells of "
                     "that mean (" + loop_turns + ")") +
          (checkpoints.empty() ? std::string()
                               : ". SQLite's checkpoints, as far as they run on the server loop, stall it inside a commit (since "
                                 "session 16 the tail a checkpoint leaves after its bulk ran on a thread, live/wal_checkpointer.h; "
                                 "the bulk's own disk and CPU are not in the twin): a twin commit checkpoints with the measured "
                                 "probability and stalls the loop for a duration drawn from the measured ones, their CPU taken out of "
                                 "the per-message charge (" + checkpoints + "); without the stalls the twin's p99 would be " +
                                 checkpoints_off_loop + ")") +
          ". Where the twin's time goes, p50 / p99 since the send (compare `MSGSIM_BENCH_TRACE=1 msgsim live bench`): " + stages +
          ". Measured: " + args.live_json +
          " (msgsim live bench --json)" + (live->uptime.empty() ? std::string(".") : ", machine load during it: " + live->uptime + ".") +
          (live->server_loops == 1 ? std::string()
                                   : " The bench ran " + std::to_string(live->server_loops) +
                                         " server loops (the chat server on one, the nodes with databases on the other); the twin "
                                         "models one, charged both loops' CPU and turns together (run the bench with "
                                         "--server-loops 1 to compare like with like, as scripts/plan-vs-live does).") +
          " Below the knee: the live bench delivered at least 95 % of the offered rate and its p99 stayed within 3x the "
          "p99 of the lightest load.";
    } else {
      const std::vector<double> loads = args.small ? std::vector<double>{200} : std::vector<double>{200, 400, 800};
      for (double load : loads) {
        std::string error;
        reports::ModelPoint point = model_at(load, costs, args.seed, error);
        if (!error.empty()) {
          std::cerr << "msgsim plan: model run: " << error << "\n";
          return kExitBadInput;
        }
        report.model.push_back(point);
      }
      report.model_note =
          "The real chat system (1 load balancer, 2 chat servers, 1 registry, 2 queues, 2 storage, 1 push, 200 devices "
          "sending 100-byte 1:1 messages without E2EE) in the simulator with the cost table, one core per server, "
          "latency from the sender's send to the receiver's deliver over 10 virtual seconds after 5 s of warm-up. "
          "No live measurement was given (--live-json FILE from `msgsim live bench --json`, see scripts/plan-vs-live, "
          "which compares the live bench with its simulated twin): the measured columns are empty.";
    }
    report.slices_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }

  const std::string markdown = reports::render_markdown(report);
  std::cout << markdown;
  std::error_code error;
  std::filesystem::create_directories(args.out, error);
  std::ofstream html(args.out + "/report.html", std::ios::binary | std::ios::trunc);
  std::ofstream md(args.out + "/report.md", std::ios::binary | std::ios::trunc);
  if (error || !html || !md || !(html << reports::render_html(report)) || !(md << markdown)) {
    std::cerr << "msgsim plan: --out " << args.out << ": cannot write the report\n";
    return kExitBadInput;
  }
  std::cerr << "msgsim plan: wrote " << args.out << "/report.html and " << args.out << "/report.md\n";
  return kExitOk;
}

}  // namespace

void add_plan_command(CLI::App& app, Outcome& outcome) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand("plan", "capacity plan for a workload: arithmetic, simulated slices, report");
  cmd->add_option("workload", args->workload, "workload JSON (see workloads/seed.json)")->required();
  cmd->add_option("--cost-table", args->cost_table, "cost table from `msgsim calibrate` (default reports/cost_table.json)");
  cmd->add_option("--out", args->out, "directory for report.html and report.md (default plan-out)");
  cmd->add_option("--live-json", args->live_json, "`msgsim live bench --json` output to compare the model with");
  cmd->add_option("--seed", args->seed, "seed of the simulated slices (default 1)");
  cmd->add_flag("--no-slices", args->no_slices, "the arithmetic only, no simulation");
  cmd->add_flag("--small", args->small, "small slices (a tenth of the connections, fewer points): for tests");
  cmd->callback([args, &outcome] { outcome.exit_code = plan(*args); });
}

}  // namespace msgsim::cli
