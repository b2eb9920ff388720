// Simulated slices that check the capacity arithmetic, run on the deterministic simulator with
// the cost model (Simulator::set_cores, Context::charge_cpu):
//  - role_curve: latency against offered load for one role's server (a station whose frames
//    cost the role's mean CPU per unit of work from the plan), and the saturation knee.
//  - chat_server_peak: one chat server with its full complement of connections (50,000 at the
//    seed's figure), each heartbeating, at the per-server peak send and delivery rates.
//  - reconnect_storm: a chat server crashes; its clients back off (with or without jitter),
//    are refused while the load balancer still routes them to the dead server (until its health
//    check notices), then spread over the surviving pool; how long until all are back, and how
//    loaded the survivors get.
// The slices model clients as populations inside a few nodes (one connection per client, the
// per-client state a few words), not as full devices: the server side is where the cost model
// applies, and 50,000 full devices would take minutes (see reports/README.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace msgsim::reports {

struct LatencyPoint {
  double offered_per_s = 0;
  double utilisation = 0;  // offered load / capacity
  double p50_ms = 0;
  double p99_ms = 0;
  uint64_t samples = 0;
};

struct RoleCurve {
  std::string role;
  int64_t cost_ns = 0;
  uint32_t cores = 1;
  double capacity_per_s = 0;
  std::vector<LatencyPoint> points;
  double knee_utilisation = 0;  // the highest load whose p99 stays within 3x the light-load p99
  uint64_t digest = 0;          // the simulator digests folded together (determinism checks)
};

struct CurveOptions {
  uint64_t seed = 1;
  std::vector<double> utilisations = {0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1};
  uint32_t requests_per_point = 3000;
  int64_t one_way_ns = 0;  // no network: the latency is the server's own (queueing plus service)
};
RoleCurve role_curve(const std::string& role, int64_t cost_ns, uint32_t cores, const CurveOptions& options);

struct ChatSliceOptions {
  uint64_t seed = 1;
  uint32_t connections = 50'000;
  uint32_t cores = 16;
  double heartbeat_interval_s = 5;
  double sends_per_s = 0;
  double deliveries_per_s = 0;
  int64_t heartbeat_cost_ns = 0, send_cost_ns = 0, push_cost_ns = 0, connect_cost_ns = 0;
  int64_t warmup_ns = 6 * 1'000'000'000LL;   // connections ramp up over the first 4 s
  int64_t measure_ns = 10 * 1'000'000'000LL;
  int64_t one_way_ns = 500'000;
};
struct ChatSliceResult {
  uint64_t connected = 0;
  double utilisation = 0;
  double heartbeat_p50_ms = 0, heartbeat_p99_ms = 0;
  double send_p50_ms = 0, send_p99_ms = 0;
  double delivery_p50_ms = 0, delivery_p99_ms = 0;
  uint64_t events = 0;
  std::string digest_hex;
};
ChatSliceResult chat_server_peak(const ChatSliceOptions& options);

enum class Jitter { none, full };
struct StormOptions {
  uint64_t seed = 1;
  uint32_t clients = 50'000;
  uint32_t survivors = 8;
  uint32_t cores = 16;
  int64_t connect_cost_ns = 0;
  double baseline_utilisation = 0;     // the survivors' own load before the storm
  int64_t backoff_initial_ns = 1'000'000'000;
  int64_t backoff_max_ns = 32'000'000'000;
  Jitter jitter = Jitter::none;
  int64_t health_check_interval_ns = 5'000'000'000;  // the LB notices the crash this long after
  int64_t hello_timeout_ns = 5'000'000'000;          // a connect unanswered this long is retried
  int64_t crash_at_ns = 2'000'000'000;
  int64_t horizon_ns = 90'000'000'000;                // gives up measuring after this
  int64_t bucket_ns = 100'000'000;
  int64_t one_way_ns = 500'000;
};
struct StormResult {
  std::string label;
  double all_back_s = -1;              // from the crash to the last client back; -1 if not by the horizon
  double half_back_s = -1;
  uint64_t refused = 0, timed_out = 0, attempts = 0;
  double peak_survivor_utilisation = 0;
  double peak_connects_per_s = 0;
  std::vector<double> time_s;          // bucket starts, from the crash
  std::vector<double> online;          // clients back online at the end of each bucket
  std::vector<double> survivor_utilisation;  // the busiest survivor's CPU share in each bucket
  uint64_t events = 0;
  std::string digest_hex;
};
StormResult reconnect_storm(const StormOptions& options);

}  // namespace msgsim::reports
