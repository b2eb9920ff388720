// Capacity planning (msgsim issue 8): the plan arithmetic against the seed's key-numbers table,
// the cost table's format, the simulator's multi-core CPU model, and the slices' determinism
// and saturation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "reports/cost_model.h"
#include "reports/live_twin.h"
#include "reports/plan.h"
#include "reports/report.h"
#include "reports/slices.h"
#include "sim/simulator.h"
#include "sim/world.h"

namespace msgsim::reports {
namespace {

using chat::CostRole;
using chat::Work;

chat::CpuCosts sample_costs() {
  chat::CpuCosts costs;
  for (size_t r = 0; r < chat::kCostRoles; ++r)
    for (size_t w = 0; w < chat::kWorkKinds; ++w) costs.ns[r][w] = 1000 + static_cast<int64_t>(100 * r + 10 * w);
  return costs;
}

double within(double value, double expected) { return std::fabs(value / expected - 1.0); }

// The bar: the seed's key numbers, reproduced within 10% from its own inputs (the values are
// the seed's table, not outputs of this code).
TEST(PlanArithmetic, SeedKeyNumbersWithinTenPercent) {
  Result<Workload> w = load_workload(std::string(MSGSIM_SOURCE_DIR) + "/workloads/seed.json");
  ASSERT_TRUE(w.ok()) << w.error().message;
  const Plan plan = make_plan(*w, sample_costs());
  const struct {
    const char* key;
    double seed;
  } table[] = {{"avg_messages_per_s", 1.15e6},   {"peak_messages_per_s", 3.5e6}, {"concurrent_connections", 100e6},
               {"chat_servers", 2000},           {"text_bytes_per_day", 2.5e12}, {"media_bytes_per_day", 1.25e15}};
  for (const auto& row : table) {
    const Figure* f = plan.find(row.key);
    ASSERT_NE(f, nullptr) << row.key;
    EXPECT_LT(within(f->value, row.seed), 0.10) << row.key << " = " << f->value << ", the seed says " << row.seed;
    EXPECT_FALSE(f->derivation.empty()) << row.key;
  }
  // msgsim's own chat server count keeps a spare per region, so it is at least the seed's.
  EXPECT_GE(plan.find("servers_chat")->value, plan.find("chat_servers")->value);
  EXPECT_EQ(plan.roles.size(), chat::kCostRoles);
  for (const RoleSizing& r : plan.roles) EXPECT_EQ(r.servers_per_region.size(), w->regions.size());
}

TEST(PlanArithmetic, ScalesWithDauAndCosts) {
  Result<Workload> w = load_workload(std::string(MSGSIM_SOURCE_DIR) + "/workloads/seed.json");
  ASSERT_TRUE(w.ok());
  const chat::CpuCosts costs = sample_costs();
  double previous = 0;
  for (double dau : {1e6, 1e7, 1e8, 1e9}) {
    double total = 0;
    for (const auto& [role, servers] : servers_for_dau(*w, costs, dau)) total += servers;
    EXPECT_GT(total, previous) << dau;
    previous = total;
  }
  // Ten times the CPU per unit of queue work needs more queue servers.
  chat::CpuCosts dear = costs;
  dear.at(CostRole::queue, Work::append) *= 10;
  auto queue_servers = [&](const chat::CpuCosts& c) {
    for (const auto& [role, servers] : servers_for_dau(*w, c, 5e8))
      if (role == CostRole::queue) return servers;
    return 0.0;
  };
  EXPECT_GT(queue_servers(dear), queue_servers(costs));
}

TEST(PlanArithmetic, BadWorkloadsAreErrorsNamingTheField) {
  Result<Workload> missing = parse_workload(R"({"dau": 10})", "w.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("messages_per_user_per_day"), std::string::npos);
  Result<Workload> negative = parse_workload(
      R"({"dau": 10, "messages_per_user_per_day": 5, "peak_factor": 0.5, "connections_per_server": 10})", "w.json");
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.error().message.find("w.json: $.peak_factor"), std::string::npos);
  Result<Workload> shares = parse_workload(
      R"({"dau": 10, "messages_per_user_per_day": 5, "peak_factor": 2, "connections_per_server": 10,
          "regions": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}]})", "w.json");
  ASSERT_FALSE(shares.ok());
  EXPECT_NE(shares.error().message.find("add up"), std::string::npos);
  EXPECT_FALSE(parse_workload("[1,", "w.json").ok());
}

TEST(CostTable, RoundTripsAndRejectsBadInput) {
  std::map<std::string, double> bench;
  for (const BenchMapping& m : bench_mapping()) bench[m.benchmark] = 100 + static_cast<double>(bench.size());
  Result<CostTable> table = cost_table_from_benchmarks(bench, "test machine");
  ASSERT_TRUE(table.ok()) << table.error().message;
  // decode = frame I/O + codec decode, for every role.
  EXPECT_EQ(table->costs.of(CostRole::queue, Work::decode),
            std::llround(bench["BM_CostFrameIo"] + bench["BM_CostDecode"]));
  EXPECT_EQ(table->costs.of(CostRole::queue, Work::append), std::llround(bench["BM_CostAppend"]));
  Result<CostTable> back = parse_cost_table(cost_table_json(*table), "t.json");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->costs.ns, table->costs.ns);
  EXPECT_EQ(back->machine, "test machine");
  table->fsync_quantiles_ns = {100, 200, 4000};
  table->loopback_rtt_ns = 13000;
  table->idle_hop_quantiles_ns = {7000, 18000, 18000, 900000};
  Result<CostTable> with_disk = parse_cost_table(cost_table_json(*table), "t.json");
  ASSERT_TRUE(with_disk.ok()) << with_disk.error().message;
  EXPECT_EQ(with_disk->fsync_quantiles_ns, table->fsync_quantiles_ns);
  EXPECT_EQ(with_disk->loopback_rtt_ns, 13000);
  EXPECT_EQ(with_disk->idle_hop_quantiles_ns, table->idle_hop_quantiles_ns);
  Result<CostTable> hops_decreasing = parse_cost_table(R"({"costs_ns": {}, "idle_hop_quantiles_ns": [5, 6, 3]})", "t.json");
  ASSERT_FALSE(hops_decreasing.ok());
  EXPECT_NE(hops_decreasing.error().message.find("$.idle_hop_quantiles_ns[2]"), std::string::npos);
  Result<CostTable> decreasing = parse_cost_table(R"({"costs_ns": {}, "fsync_quantiles_ns": [5, 3]})", "t.json");
  ASSERT_FALSE(decreasing.ok());
  EXPECT_NE(decreasing.error().message.find("$.fsync_quantiles_ns[1]"), std::string::npos);
  EXPECT_FALSE(parse_cost_table(R"({"costs_ns": {}, "loopback_rtt_ns": "fast"})", "t.json").ok());

  bench.erase("BM_CostSync");
  Result<CostTable> incomplete = cost_table_from_benchmarks(bench, "m");
  ASSERT_FALSE(incomplete.ok());
  EXPECT_NE(incomplete.error().message.find("BM_CostSync"), std::string::npos);
  Result<CostTable> unknown = parse_cost_table(R"({"costs_ns": {"chat": {"teleport": 5}}})", "t.json");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("t.json: $.costs_ns.chat.teleport"), std::string::npos);
  EXPECT_FALSE(parse_cost_table(R"({"costs_ns": {"chat": {"route": -1}}})", "t.json").ok());
  EXPECT_FALSE(parse_cost_table(R"({"costs_ns": {"mainframe": {}}})", "t.json").ok());
}

TEST(CostTable, CommittedTableLoads) {
  Result<CostTable> table = load_cost_table(std::string(MSGSIM_SOURCE_DIR) + "/reports/cost_table.json");
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_FALSE(table->costs.zero());
  EXPECT_FALSE(table->machine.empty());
}

TEST(CostTable, FrameCostFollowsTheMapping) {
  const chat::CpuCosts costs = sample_costs();
  chat::Route route;
  route.targets.resize(3);
  EXPECT_EQ(costs.frame_cost_ns(CostRole::chat, chat::Frame{route}),
            costs.of(CostRole::chat, Work::decode) + 3 * costs.of(CostRole::chat, Work::push));
  EXPECT_EQ(costs.frame_cost_ns(CostRole::queue, chat::Frame{chat::Produce{}}),
            costs.of(CostRole::queue, Work::decode) + costs.of(CostRole::queue, Work::append));
  EXPECT_EQ(chat::CpuCosts{}.frame_cost_ns(CostRole::storage, chat::Frame{chat::SyncQuery{}}), 0);
}

// The simulator's CPU: a node with N cores runs N charged handlers at once; the (N+1)th waits.
class ChargingNode final : public Node {
 public:
  ChargingNode(int64_t cost_ns, std::vector<int64_t>& started) : cost_ns_(cost_ns), started_(started) {}
  void on_start(Context&) override {}
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId, ByteView) override {
    started_.push_back(ctx.now_ns());
    ctx.charge_cpu(cost_ns_);
  }
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context&, uint64_t) override {}

 private:
  int64_t cost_ns_;
  std::vector<int64_t>& started_;
};
class BurstNode final : public Node {
 public:
  BurstNode(NodeId server, int frames) : server_(server), frames_(frames) {}
  void on_start(Context& ctx) override {
    for (int i = 0; i < frames_; ++i) ctx.send(ctx.connect(server_), Bytes{1});
  }
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context&, ConnId, ByteView) override {}
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context&, uint64_t) override {}

 private:
  NodeId server_;
  int frames_;
};

std::vector<int64_t> burst_start_times(uint32_t cores) {
  sim::NetworkConfig net;
  net.regions = {"r"};
  net.base_ns = {{1'000'000}};
  net.jitter_mean_ns = {{0}};
  sim::Simulator sim(1, net);
  std::vector<int64_t> started;
  const NodeId server = sim.add_node("s", 0, [&] { return std::make_unique<ChargingNode>(10'000'000, started); });
  sim.set_cores(server, cores);
  const NodeId client = sim.add_node("c", 0, [&] { return std::make_unique<BurstNode>(server, 6); });
  sim.start(server);
  sim.start(client);
  while (sim.step()) {
  }
  return started;
}

TEST(CpuModel, CoresOverlapHandlersAndQueueTheRest) {
  // Six frames arrive together (1 ms one-way delay); each handler costs 10 ms.
  const std::vector<int64_t> one = burst_start_times(1);
  ASSERT_EQ(one.size(), 6u);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], 1'000'000 + static_cast<int64_t>(i) * 10'000'000) << i;
  const std::vector<int64_t> three = burst_start_times(3);
  ASSERT_EQ(three.size(), 6u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(three[i], 1'000'000) << i;
  for (size_t i = 3; i < 6; ++i) EXPECT_EQ(three[i], 11'000'000) << i;
}

TEST(Slices, RoleCurveIsDeterministicAndSaturates) {
  CurveOptions options;
  options.utilisations = {0.1, 0.5, 0.8, 1.1};
  options.requests_per_point = 2000;
  const RoleCurve a = role_curve("queue", 20'000, 2, options);
  const RoleCurve b = role_curve("queue", 20'000, 2, options);
  EXPECT_EQ(a.digest, b.digest);
  ASSERT_EQ(a.points.size(), 4u);
  for (size_t i = 0; i < a.points.size(); ++i) EXPECT_EQ(a.points[i].p99_ms, b.points[i].p99_ms);
  // Light load: the service time alone (the curves leave the network out). Past the knee,
  // queueing grows.
  EXPECT_NEAR(a.points[0].p50_ms, 0.02, 0.002);
  // Past capacity the backlog grows with every request: 10% over for 2,000 requests leaves
  // ~200 queued at 10 us each, so p99 is several times the light-load figure.
  EXPECT_GT(a.points[3].p99_ms, 5 * a.points[0].p99_ms);
  EXPECT_GT(a.points[3].p50_ms, 3 * a.points[0].p50_ms);
  EXPECT_LT(a.points[1].p99_ms, a.points[3].p99_ms);
  EXPECT_GE(a.knee_utilisation, 0.5);
  EXPECT_LT(a.knee_utilisation, 1.1);
  CurveOptions other = options;
  other.seed = 2;
  EXPECT_NE(role_curve("queue", 20'000, 2, other).digest, a.digest);
}

TEST(Slices, ChatServerSliceCarriesItsConnections) {
  ChatSliceOptions o;
  o.connections = 5'000;
  o.cores = 2;
  o.sends_per_s = 500;
  o.deliveries_per_s = 400;
  o.heartbeat_cost_ns = 5'000;
  o.send_cost_ns = 20'000;
  o.push_cost_ns = 10'000;
  o.connect_cost_ns = 50'000;
  o.measure_ns = 4 * kNanosPerSecond;
  const ChatSliceResult a = chat_server_peak(o);
  EXPECT_EQ(a.connected, 5'000u);
  // CPU: 1,000 heartbeats/s x 5 us + 500 x 20 us + 400 x 10 us = 19 ms per s over 2 cores.
  EXPECT_NEAR(a.utilisation, 0.0095, 0.002);
  EXPECT_GT(a.delivery_p50_ms, 0);
  EXPECT_EQ(chat_server_peak(o).digest_hex, a.digest_hex);
}

TEST(Slices, ReconnectStormJitterSpreadsTheLoad) {
  StormOptions o;
  o.clients = 4'000;
  o.survivors = 4;
  o.cores = 1;
  o.connect_cost_ns = 200'000;  // 4,000 connects = 0.8 s of CPU over 4 survivors
  o.backoff_initial_ns = kNanosPerSecond;
  o.horizon_ns = 60 * kNanosPerSecond;
  const StormResult plain = reconnect_storm(o);
  o.jitter = Jitter::full;
  const StormResult jittered = reconnect_storm(o);
  ASSERT_GT(plain.all_back_s, 0);
  ASSERT_GT(jittered.all_back_s, 0);
  // Nobody is back before the load balancer notices the crash (5 s health check).
  EXPECT_GT(plain.half_back_s, 5.0);
  // Without jitter every client retries in the same instant: the survivors saturate; jitter
  // spreads the connects out.
  EXPECT_GT(plain.peak_survivor_utilisation, 0.9);
  EXPECT_LT(jittered.peak_connects_per_s, plain.peak_connects_per_s);
  EXPECT_EQ(reconnect_storm(o).digest_hex, jittered.digest_hex);
}

TEST(Report, HtmlHasEveryPlotAndNoScript) {
  Result<Workload> w = load_workload(std::string(MSGSIM_SOURCE_DIR) + "/workloads/seed.json");
  ASSERT_TRUE(w.ok());
  Report report;
  report.plan = make_plan(*w, sample_costs());
  CurveOptions options;
  options.utilisations = {0.2, 0.9};
  options.requests_per_point = 200;
  report.curves.push_back(role_curve("chat", 5'000, 4, options));
  report.dau_axis = {1e6, 1e8};
  report.servers_by_role = {{3, 20}};
  report.servers_series_names = {"chat"};
  StormResult storm;
  storm.label = "no jitter";
  storm.time_s = {0, 0.1};
  storm.online = {0, 10};
  storm.survivor_utilisation = {0.1, 0.5};
  report.storms.push_back(storm);
  report.model.push_back({100, 1.0, 2.0, 1.1, 2.3, 99.0, 98.0});
  const std::string html = render_html(report);
  for (const char* id : {"plot-servers-vs-dau", "plot-latency-p99", "plot-storm-online", "plot-storm-cpu", "plot-model-vs-live"})
    EXPECT_NE(html.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  EXPECT_EQ(html.find("<script"), std::string::npos);
  // Self-contained: nothing loaded from elsewhere.
  EXPECT_EQ(html.find(" src="), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  const std::string md = render_markdown(report);
  EXPECT_NE(md.find("| Chat servers | ~2000 |"), std::string::npos);
}

}  // namespace
}  // namespace msgsim::reports

namespace msgsim {

// The live twin: deterministic, every message waits for a group-commit batch (so no latency is
// below the fsync floor), and one server core saturates where the per-message CPU says.
// Quantiles from a histogram (the live bench's fsync buckets): linear within a bucket, empty
// buckets skipped, and at a resolution finer than one sample a lone outlier keeps its weight:
// one 40 ms fsync among 10,000 is the top 0.01 %, not the top quantile step's worth.
TEST(LiveTwin, QuantilesFromBucketsKeepALoneOutlierItsWeight) {
  const std::vector<reports::DurationBucket> buckets = {
      {100'000, 200'000, 9'999}, {1'000'000, 2'000'000, 0}, {40'000'000, 41'000'000, 1}};
  const auto coarse = reports::quantiles_from_buckets(buckets, 10);
  ASSERT_EQ(coarse.size(), 11u);
  EXPECT_EQ(coarse.front(), 100'000);
  EXPECT_EQ(coarse[5], 150'005);  // rank 5,000 of 9,999 in [100, 200) us
  EXPECT_EQ(coarse.back(), 41'000'000);
  const auto fine = reports::quantiles_from_buckets(buckets, 100'000);
  ASSERT_EQ(fine.size(), 100'001u);
  EXPECT_LT(fine[99'989], 200'001);  // 99.989 %: still among the 9,999
  EXPECT_GE(fine[99'991], 40'000'000);
  EXPECT_TRUE(std::is_sorted(fine.begin(), fine.end()));
  EXPECT_TRUE(reports::quantiles_from_buckets({{1, 2, 0}}, 10).empty());
  EXPECT_TRUE(reports::quantiles_from_buckets({}, 10).empty());
}

TEST(LiveTwin, DeterministicAndChargesFsyncAndTheSingleCore) {
  reports::LiveTwinCosts costs;
  costs.server_ns_on_send = 40'000;  // 100 us per message: 10,000 msg/s capacity
  costs.server_ns_on_commit = 10'000;
  costs.server_ns_on_records = 50'000;
  costs.fsync_quantiles_ns = {1'000'000, 2'000'000, 3'000'000};
  costs.loopback_rtt_ns = 20'000;
  reports::LiveTwinOptions light;
  light.offered_per_s = 1000;
  light.measure_ns = 2 * kNanosPerSecond;
  light.queue_commit_window_ns = 0;
  light.queue_linger_ns = 0;
  const auto a = reports::run_live_twin(costs, light);
  const auto b = reports::run_live_twin(costs, light);
  EXPECT_EQ(a.digest_hex, b.digest_hex);
  EXPECT_EQ(a.p99_ms, b.p99_ms);
  EXPECT_NEAR(a.delivered_per_s, 1000, 20);
  EXPECT_GE(a.p50_ms, 2.0);   // the queue's log and the storage's file, 1 ms each at least
  EXPECT_LE(a.p99_ms, 13.0);  // at most a sync in flight plus a batch of two files, plus CPU
  EXPECT_GT(a.batches, 0u);
  reports::LiveTwinOptions over = light;
  over.offered_per_s = 20'000;  // twice the core's capacity
  const auto c = reports::run_live_twin(costs, over);
  EXPECT_LT(c.delivered_per_s, 15'000);
  EXPECT_GT(c.p50_ms, 10 * a.p50_ms);
  costs.fsync_quantiles_ns.clear();  // unmeasured: no fsync time, the CPU and the hops only
  const auto d = reports::run_live_twin(costs, light);
  EXPECT_LT(d.p50_ms, 1.0);
}

// The low-load twin several tests start from: small per-stage CPU, every fsync 100 us, a 20 us
// round trip, and 200 msg/s with the queue's delays 0, so no two messages overlap.
namespace {
reports::LiveTwinCosts low_load_costs() {
  reports::LiveTwinCosts costs;
  costs.server_ns_on_send = 5'000;
  costs.server_ns_on_commit = 1'000;
  costs.server_ns_on_records = 10'000;
  costs.fsync_quantiles_ns = {100'000, 100'000};  // every fsync 100 us
  costs.loopback_rtt_ns = 20'000;
  return costs;
}
reports::LiveTwinOptions low_load_options() {
  reports::LiveTwinOptions options;
  options.offered_per_s = 200;  // one message per millisecond tick at most: nothing overlaps
  options.measure_ns = 2 * kNanosPerSecond;
  options.queue_commit_window_ns = 0;
  options.queue_linger_ns = 0;
  return options;
}
}  // namespace

// The queue's commit window and linger (as the bench server ran them) add to every message at
// low load; with both 0 and a quiet server, the queue's log and the storage's file go to the disk
// in two batches one after the other (one file each), as live bench measured at low rates.
TEST(LiveTwin, QueueBatchingDelaysAndTwoBatchesInARow) {
  const reports::LiveTwinCosts costs = low_load_costs();
  reports::LiveTwinOptions options = low_load_options();
  const auto none = reports::run_live_twin(costs, options);
  EXPECT_EQ(none.digest_hex, reports::run_live_twin(costs, options).digest_hex);
  EXPECT_NEAR(none.delivered_per_s, 200, 5);
  EXPECT_NEAR(none.files_per_batch, 1.0, 0.01);
  // The hop in (10 us), the Send's and the commit's CPU (6 us), the queue's fsync then the
  // storage's (the Records' 10 us of CPU runs during the first), the hop out: 0.226 ms.
  EXPECT_NEAR(none.p50_ms, 0.226, 0.0001);
  options.queue_commit_window_ns = 250 * kNanosPerMicro;
  options.queue_linger_ns = 1 * kNanosPerMilli;
  const auto delayed = reports::run_live_twin(costs, options);
  // The hop in, the window (a timer runs from its handler's start, so the Send's CPU is inside
  // it), the linger (the commit's CPU inside it), the Records' CPU, one fsync (the linger
  // outlasts the queue's, so the storage's file waits for nothing in flight), the hop out.
  EXPECT_NEAR(delayed.p50_ms, 0.010 + 0.25 + 1.0 + 0.010 + 0.1 + 0.010, 0.0001);
  EXPECT_NEAR(delayed.files_per_batch, 1.0, 0.01);
}

// Storage's group commit (as the bench server ran it): the records' transaction stays open for
// the storage's window, so at low load a message waits the window before the storage's file goes
// to the disk; a window of 0 (the loop's next turn: at once in the twin) and none at all (each
// flush commits at once, the storage before its group commit) cost nothing more.
TEST(LiveTwin, StorageCommitWindowHoldsTheRecordsUntilItEnds) {
  const reports::LiveTwinCosts costs = low_load_costs();
  reports::LiveTwinOptions options = low_load_options();
  options.storage_commit_window_ns = -1;
  const auto at_once = reports::run_live_twin(costs, options);
  EXPECT_NEAR(at_once.p50_ms, 0.226, 0.0001);  // as QueueBatchingDelaysAndTwoBatchesInARow
  options.storage_commit_window_ns = 0;
  EXPECT_NEAR(reports::run_live_twin(costs, options).p50_ms, 0.226, 0.0001);
  options.storage_commit_window_ns = 500 * kNanosPerMicro;
  const auto held = reports::run_live_twin(costs, options);
  EXPECT_EQ(held.digest_hex, reports::run_live_twin(costs, options).digest_hex);
  // The hop in, the Send's and the commit's CPU, the window (from the flush's start: the Records'
  // CPU is inside it, and the queue's fsync is long done), the storage's fsync, the hop out.
  EXPECT_NEAR(held.p50_ms, 0.010 + 0.006 + 0.5 + 0.1 + 0.010, 0.0001);
  EXPECT_NEAR(held.files_per_batch, 1.0, 0.01);
}

// CorrelatedQuantileDraws keeps the quantiles' distribution whatever rho is, and consecutive
// draws correlate as rho says: for a uniform distribution the Pearson correlation of the draws
// of a Gaussian copula is (6 / pi) asin(rho / 2), 0.786 at rho 0.8.
TEST(LiveTwin, CorrelatedDrawsKeepTheDistributionAndCorrelateConsecutively) {
  const std::vector<int64_t> uniform_0_to_1000 = {0, 1000};
  std::mt19937_64 rng(42);
  const auto uniform01 = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  for (const double rho : {0.0, 0.8, -0.5}) {
    SCOPED_TRACE("rho " + std::to_string(rho));
    reports::CorrelatedQuantileDraws draws(rho);
    constexpr size_t kDraws = 200'000;
    std::vector<double> v;
    v.reserve(kDraws);
    for (size_t i = 0; i < kDraws; ++i) {
      const double u1 = uniform01();
      v.push_back(static_cast<double>(draws.next(uniform_0_to_1000, u1, uniform01())));
    }
    double mean = 0;
    for (double x : v) mean += x;
    mean /= kDraws;
    EXPECT_NEAR(mean, 500, 5);
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_NEAR(sorted[kDraws / 10], 100, 5);
    EXPECT_NEAR(sorted[kDraws * 99 / 100], 990, 3);
    double sxy = 0, sxx = 0;
    for (size_t i = 0; i + 1 < kDraws; ++i) sxy += (v[i] - mean) * (v[i + 1] - mean);
    for (double x : v) sxx += (x - mean) * (x - mean);
    const double expected = 6 / 3.141592653589793 * std::asin(rho / 2);
    EXPECT_NEAR(sxy / sxx, expected, 0.01);
  }
}

// Where the bench measured consecutive fdatasyncs alike, the twin's p99 at a low rate rises:
// a message waits for two batches in a row (the queue's log, then the storage's file), and
// slow syncs come together. The median barely moves (each draw keeps the distribution).
TEST(LiveTwin, CorrelatedFsyncsRaiseTheTailOfTwoBatchesInARow) {
  reports::LiveTwinCosts costs = low_load_costs();
  // 100 us for 90 % of fsyncs, up to 2 ms for the slowest tenth.
  costs.fsync_quantiles_ns = {100'000, 100'000, 100'000, 100'000, 100'000, 100'000, 100'000, 100'000, 100'000, 100'000, 2'000'000};
  reports::LiveTwinOptions options = low_load_options();  // each message's two batches are its own
  options.measure_ns = 10 * kNanosPerSecond;
  const auto independent = reports::run_live_twin(costs, options);
  costs.fsync_correlation = 0.9;
  const auto correlated = reports::run_live_twin(costs, options);
  EXPECT_EQ(correlated.digest_hex, reports::run_live_twin(costs, options).digest_hex);
  EXPECT_NE(correlated.digest_hex, independent.digest_hex);
  // Independent: the p99 message has one slow sync and one fast (two slow ones come 1 % of the
  // time, the edge of the p99); correlated, both of the p99 message's syncs are slow.
  EXPECT_GT(correlated.p99_ms, independent.p99_ms + 0.5) << independent.p99_ms << " " << correlated.p99_ms;
  EXPECT_NEAR(correlated.p50_ms, independent.p50_ms, 0.05);
}

// With the idle-hop distribution measured, each wake-up of a sleeping process or thread draws
// from it instead of the network's half round trip: the hop in to an idle loop, the group
// commit's completion reaching an idle loop (after each of the two batches), the hop out to the
// receiving loader. A loop still busy with charged CPU takes a frame without a wake-up.
TEST(LiveTwin, IdleHopsDrawWakeUpsOnlyWhenTheLoopSleeps) {
  reports::LiveTwinCosts costs = low_load_costs();
  costs.idle_hop_quantiles_ns = {50'000, 50'000};  // every wake-up 50 us
  reports::LiveTwinOptions options = low_load_options();
  const auto idle = reports::run_live_twin(costs, options);
  EXPECT_EQ(idle.digest_hex, reports::run_live_twin(costs, options).digest_hex);
  // Wake-up in (50), the Send's and the commit's CPU (6), the queue's fsync (100, the Records'
  // CPU during it), the completion's wake-up (50), the storage's fsync (100), its completion's
  // wake-up (50), the receiver's wake-up (50): 0.406 ms, against 0.226 with half round trips.
  EXPECT_NEAR(idle.p50_ms, 0.406, 0.0001);
  EXPECT_NEAR(idle.p99_ms, 0.406, 0.0001);
  // A loop that is still busy when a Send or a completion arrives takes it without a wake-up:
  // with 400 us of CPU per Send at 2,000/s (80 % busy; a tick's two Sends arrive together), most
  // messages pay fewer than the 4 wake-ups (200 us) over the same twin with zero-time wake-ups,
  // and the busy loop skipping them shows at the median.
  costs.server_ns_on_send = 400'000;
  options.offered_per_s = 2'000;
  const auto busy = reports::run_live_twin(costs, options);
  reports::LiveTwinCosts instant = costs;
  instant.idle_hop_quantiles_ns = {0, 0};
  const auto zero = reports::run_live_twin(instant, options);
  std::printf("busy p50 %.3f ms, zero-time wake-ups %.3f ms\n", busy.p50_ms, zero.p50_ms);
  EXPECT_LT(busy.p50_ms - zero.p50_ms, 0.115);  // 0.100; 0.130 when every wake-up is paid
}

// The live bench's measured loop CPU per message replaces the table's total, split over the
// stages as the table splits it, with no separate batch charge; more CPU, later deliveries.
TEST(LiveTwin, MeasuredLoopCpuKeepsTheTablesProportions) {
  reports::LiveTwinCosts table;
  table.server_ns_on_send = 10'000;
  table.server_ns_on_commit = 2'000;
  table.server_ns_on_records = 8'000;
  table.server_ns_per_batch = 5'000;
  table.fsync_quantiles_ns = {100'000, 100'000};
  table.loopback_rtt_ns = 20'000;
  const reports::LiveTwinCosts measured = reports::with_measured_loop_cpu(table, 400'001);
  EXPECT_EQ(measured.server_ns_on_send, 200'001);  // half of it, rounded
  EXPECT_EQ(measured.server_ns_on_commit, 40'000);
  EXPECT_EQ(measured.server_ns_on_records, 160'000);
  EXPECT_EQ(measured.server_ns_per_message(), 400'001);
  EXPECT_EQ(measured.server_ns_per_batch, 0);
  EXPECT_EQ(measured.fsync_quantiles_ns, table.fsync_quantiles_ns);
  reports::LiveTwinOptions options;
  options.offered_per_s = 200;
  options.measure_ns = 2 * kNanosPerSecond;
  options.queue_commit_window_ns = 0;
  options.queue_linger_ns = 0;
  // The table's 20 us against 400 us, most of it before the storage's file can be synced.
  EXPECT_GT(reports::run_live_twin(measured, options).p50_ms, reports::run_live_twin(table, options).p50_ms + 0.2);
  const reports::LiveTwinCosts from_zero = reports::with_measured_loop_cpu(reports::LiveTwinCosts{}, 90'000);
  EXPECT_EQ(from_zero.server_ns_per_message(), 90'000);
  EXPECT_EQ(from_zero.server_ns_on_send, 30'000);
}

// The LiveTwin tests' server process: fixed CPU at each stage, every fsync 100 us, a 20 us
// loopback round trip; and the bench's options without the queue's batching delays (as
// `live bench` runs since session 7), measuring `measure_s` seconds at `offered_per_s`.
reports::LiveTwinCosts stage_costs(int64_t on_send_ns, int64_t on_commit_ns, int64_t on_records_ns) {
  reports::LiveTwinCosts costs;
  costs.server_ns_on_send = on_send_ns;
  costs.server_ns_on_commit = on_commit_ns;
  costs.server_ns_on_records = on_records_ns;
  costs.fsync_quantiles_ns = {100'000, 100'000};
  costs.loopback_rtt_ns = 20'000;
  return costs;
}
reports::LiveTwinOptions unbatched_options(double offered_per_s, int64_t measure_s) {
  reports::LiveTwinOptions options;
  options.offered_per_s = offered_per_s;
  options.measure_ns = measure_s * kNanosPerSecond;
  options.queue_commit_window_ns = 0;
  options.queue_linger_ns = 0;
  return options;
}

// The loops' measured turns: each stage's CPU drawn as turns of the measured shape, scaled to the
// stage's mean. The server's charged CPU keeps its mean (utilisation within a few per cent of the
// mean-only twin's), a rare long turn reaches the p99, and the run stays deterministic; the
// client loop's turns delay what it reads after them.
TEST(LiveTwin, MeasuredTurnsKeepTheMeanAndReachTheTail) {
  const reports::LiveTwinCosts costs = stage_costs(40'000, 10'000, 50'000);
  const reports::LiveTwinOptions options = unbatched_options(2'000, 3);
  const auto mean = reports::run_live_twin(costs, options);
  // 10 turns a message: 98 % of them 5 us, 2 % 2 ms (101 quantiles).
  reports::LiveTwinCosts turns = costs;
  turns.server_turn_quantiles_ns.assign(99, 5'000);
  turns.server_turn_quantiles_ns.push_back(2'000'000);
  turns.server_turn_quantiles_ns.push_back(2'000'000);
  turns.server_turns_per_msg = 10;
  const auto drawn = reports::run_live_twin(turns, options);
  EXPECT_EQ(drawn.digest_hex, reports::run_live_twin(turns, options).digest_hex);
  EXPECT_NE(drawn.digest_hex, mean.digest_hex);
  EXPECT_NEAR(drawn.server_utilisation, mean.server_utilisation, 0.05 * mean.server_utilisation);
  EXPECT_GT(drawn.p99_ms, mean.p99_ms + 0.5);
  std::printf("mean-only p50 %.3f p99 %.3f ms; turns p50 %.3f p99 %.3f ms\n", mean.p50_ms, mean.p99_ms, drawn.p50_ms, drawn.p99_ms);
  // The client loop: 200 us a message in 2 turns of 100 us, 60 % of it before the Deliver is
  // read (its own Deliver's and its Send's turns, and those queued before it).
  reports::LiveTwinCosts client = turns;
  client.client_turn_quantiles_ns = {100'000, 100'000};
  client.client_turns_per_msg = 2;
  client.client_ns_per_message = 200'000;
  const auto loaded = reports::run_live_twin(client, options);
  EXPECT_EQ(loaded.digest_hex, reports::run_live_twin(client, options).digest_hex);
  EXPECT_GT(loaded.p50_ms, drawn.p50_ms + 0.05);
  EXPECT_NEAR(loaded.delivered_per_s, 2'000, 40);
  // Far past the knee (20 times the core's capacity) the batches grow every turn; the draws per
  // charge stay bounded (kTurnsDrawnMax) and the twin saturates instead of stopping.
  reports::LiveTwinOptions over = options;
  over.offered_per_s = 200'000;
  over.measure_ns = kNanosPerSecond;
  const auto saturated = reports::run_live_twin(turns, over);
  EXPECT_LT(saturated.delivered_per_s, 20'000);
}

// A loop's measured preemptions: the core taken away at Poisson times for exponential spells.
// Frames wait behind a spell, so the tail grows while the server's own CPU (the utilisation) does
// not; no preemption rate, no change at all (the same digest).
TEST(LiveTwin, PreemptionsHoldTheLoopButAreNotItsCpu) {
  const reports::LiveTwinCosts costs = stage_costs(20'000, 5'000, 25'000);
  const reports::LiveTwinOptions options = unbatched_options(1'000, 3);
  const auto dedicated = reports::run_live_twin(costs, options);
  reports::LiveTwinCosts zero_rate = costs;
  zero_rate.server_preemption_mean_ns = 1'000'000;  // a mean without a rate: nothing happens
  EXPECT_EQ(reports::run_live_twin(zero_rate, options).digest_hex, dedicated.digest_hex);
  reports::LiveTwinCosts shared = costs;
  shared.server_preemptions_per_s = 500;  // 500 spells a second of 500 us on average: 25 % of the core
  shared.server_preemption_mean_ns = 500'000;
  const auto preempted = reports::run_live_twin(shared, options);
  EXPECT_EQ(preempted.digest_hex, reports::run_live_twin(shared, options).digest_hex);
  EXPECT_NEAR(preempted.server_utilisation, dedicated.server_utilisation, 0.01 * dedicated.server_utilisation);
  EXPECT_GT(preempted.p99_ms, dedicated.p99_ms + 1.0);
  EXPECT_NEAR(preempted.delivered_per_s, 1'000, 20);
  reports::LiveTwinCosts client = costs;
  client.client_preemptions_per_s = 500;
  client.client_preemption_mean_ns = 500'000;
  EXPECT_GT(reports::run_live_twin(client, options).p99_ms, dedicated.p99_ms + 1.0);
}

// A commit's SQLite checkpoint stalls the loop (live bench measured ~6 per 1,000 commits of
// ~1.5-2 ms each at 1,000 msg/s): every frame waiting for the loop waits it out, so the tail
// grows by about a stall while the median barely moves.
TEST(LiveTwin, CheckpointsStallTheLoopAtTheMeasuredRate) {
  const reports::LiveTwinCosts costs = stage_costs(20'000, 5'000, 25'000);
  const reports::LiveTwinOptions options = unbatched_options(1'000, 3);
  const auto none = reports::run_live_twin(costs, options);
  EXPECT_EQ(none.checkpoints, 0u);
  reports::LiveTwinCosts unmeasured = costs;
  unmeasured.checkpoints_per_commit = 0.02;  // a rate without durations: nothing happens
  EXPECT_EQ(reports::run_live_twin(unmeasured, options).digest_hex, none.digest_hex);
  reports::LiveTwinCosts stalls = costs;
  stalls.checkpoints_per_commit = 0.01;
  stalls.checkpoint_quantiles_ns = {3'000'000, 3'000'000};
  const auto stalled = reports::run_live_twin(stalls, options);
  EXPECT_EQ(stalled.digest_hex, reports::run_live_twin(stalls, options).digest_hex);
  // Two commits a message (the queue's, the storage's) over ~6 s of sends and drain: ~120.
  EXPECT_GT(stalled.checkpoints, 60u);
  EXPECT_LT(stalled.checkpoints, 200u);
  EXPECT_GT(stalled.p99_ms, none.p99_ms + 1.0);
  EXPECT_LT(stalled.p50_ms, none.p50_ms + 0.1);
  EXPECT_NEAR(stalled.delivered_per_s, 1'000, 20);
  // The twin's stages are in path order, each at least the one before.
  for (const auto& r : {none, stalled}) {
    EXPECT_LE(r.read_p50_ms, r.records_p50_ms);
    EXPECT_LE(r.records_p50_ms, r.written_p50_ms);
    EXPECT_LE(r.written_p50_ms, r.p50_ms);
    EXPECT_LE(r.read_p99_ms, r.records_p99_ms);
    EXPECT_LE(r.records_p99_ms, r.written_p99_ms);
    EXPECT_GT(r.read_p50_ms, 0.0);
  }
  EXPECT_GT(stalled.read_p99_ms, none.read_p99_ms + 0.5);  // a Send arriving during a stall waits for the loop
}

// The bench's measured mean fsync rescales the calibrated distribution, keeping its shape.
TEST(LiveTwin, MeasuredFsyncMeanScalesTheDistribution) {
  reports::LiveTwinCosts costs;
  costs.fsync_quantiles_ns = {50'000, 100'000, 250'000};  // mean of the linear pieces: 125 us
  const auto scaled = reports::with_measured_fsync_mean(costs, 250'000);
  EXPECT_EQ(scaled.fsync_quantiles_ns, (std::vector<int64_t>{100'000, 200'000, 500'000}));
  EXPECT_EQ(reports::with_measured_fsync_mean(reports::LiveTwinCosts{}, 70'000).fsync_quantiles_ns, (std::vector<int64_t>{70'000}));
  reports::LiveTwinOptions options;
  options.offered_per_s = 200;
  options.measure_ns = 2 * kNanosPerSecond;
  options.queue_commit_window_ns = 0;
  options.queue_linger_ns = 0;
  EXPECT_GT(reports::run_live_twin(scaled, options).p50_ms, reports::run_live_twin(costs, options).p50_ms + 0.15);
}

TEST(LiveTwin, QuantileSamplingInterpolates) {
  const std::vector<int64_t> q = {0, 100, 300};
  EXPECT_EQ(reports::sample_quantiles(q, 0.0), 0);
  EXPECT_EQ(reports::sample_quantiles(q, 0.25), 50);
  EXPECT_EQ(reports::sample_quantiles(q, 0.75), 200);
  EXPECT_EQ(reports::sample_quantiles({}, 0.5), 0);
}

TEST(Report, ComparisonVerdicts) {
  std::vector<reports::ModelPoint> points = {{500, 10, 20, 11.0, 21.0, 500.0, 500.0},
                                             {1000, 10, 20, 15.0, 50.0, 1000.0, 999.0},
                                             {2000, 10, 20, 900.0, 2000.0, 2000.0, 1500.0}};
  EXPECT_TRUE(reports::below_knee(points[0], points));
  EXPECT_TRUE(reports::below_knee(points[1], points));
  EXPECT_FALSE(reports::below_knee(points[2], points));  // delivered 75 % and p99 100x
  EXPECT_NEAR(reports::error_percent(10, 11), -9.09, 0.01);
  reports::Report report;
  report.model = points;
  const std::string md = reports::render_markdown(report);
  EXPECT_NE(md.find("| 500 | 10.00 ms | 11.00 ms | -9 % | 20.00 ms | 21.00 ms | -5 % | 500 | 500 | yes | yes |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 1,000 | 10.00 ms | 15.00 ms | -33 % |"), std::string::npos) << md;
}

TEST(Report, ASideThatDeliveredNothingHasNoLatency) {
  // An overloaded twin delivers nothing in its window: its latency is not 0 ms, -100 %.
  std::vector<reports::ModelPoint> points = {{500, 10, 20, 11.0, 21.0, 500.0, 500.0},
                                             {56000, 0, 0, 900.0, 2000.0, 0.0, 15000.0},
                                             {90000, 40, 80, 0.0, 0.0, 20000.0, 0.0}};
  reports::Report report;
  report.model = points;
  const std::string md = reports::render_markdown(report);
  EXPECT_NE(md.find("| 56,000 | none delivered | 900.00 ms | - | none delivered | 2000.00 ms | - | 0 | 15,000 | no | no |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| 90,000 | 40.00 ms | none delivered | - | 80.00 ms | none delivered | - | 20,000 | 0 | no | no |"),
            std::string::npos)
      << md;
  EXPECT_EQ(md.find("-100 %"), std::string::npos) << md;
  EXPECT_NE(reports::render_html(report).find("none delivered"), std::string::npos);
}

}  // namespace msgsim
