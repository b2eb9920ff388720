// Scenarios: the JSON files under scenarios/ that say what one simulated run contains (format
// version 1, described by scenarios/schema.json, which is embedded in the binary).
//
// Loading is three steps, each of which reports problems as
//   <file>: <JSON path>: expected <what>, got <what>
// (or <file>:<line>:<column>: malformed JSON: <reason> when the text is not JSON):
//  1. parse the text (bounded size and nesting depth);
//  2. validate it against the schema (shape, types, ranges, unknown fields);
//  3. read it into a Scenario and check what a schema cannot say: names and regions that must
//     exist, roles of the system, selectors, overlapping partition sides, times within the run.
// The result is fully resolved: node names are expanded, selectors are node indexes, the
// latency matrix is complete, every time is int64 nanoseconds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/result.h"
#include "sim/regions.h"

namespace msgsim::sim {

// A node of the topology. Nodes are numbered in declaration order: group by group, "NAME-1" to
// "NAME-count" within a group; that number is the node's index in Scenario::nodes.
struct NodeSpec {
  std::string name;   // "server-2"
  std::string group;  // "server"
  std::string role;   // "ledger-server"
  uint32_t region;    // index into Scenario::regions
};

enum class FaultKind : uint8_t {
  crash,
  shutdown,
  host_loss,
  partition,
  isolate,
  region_split,
  latency_spike,
  clock,
  slow,
  disk
};
// The scenario spelling: "crash", "host-loss", "region-split", ...
std::string_view to_string(FaultKind kind);
std::optional<FaultKind> fault_kind_from_string(std::string_view text);

// What a crash does to data written but not yet synced to disk.
enum class CrashDiskMode : uint8_t { keep_unsynced, lose_unsynced, torn };
enum class DiskFaultKind : uint8_t { fsync_fail, full };

struct FaultSpec {
  FaultKind kind = FaultKind::crash;
  int64_t at_ns = 0;  // 0 <= at_ns < Scenario::duration_ns
  // How long after at_ns the fault ends: restart_after_s (crash, shutdown), replace_after_s
  // (host-loss), heal_after_s (partition, isolate, region-split), duration_s (latency-spike,
  // clock, slow, disk). Absent: the fault lasts until the quiescence phase begins at
  // duration_ns, which heals every fault still active then (sim/world.cpp), so an end after
  // duration_ns comes at duration_ns.
  std::optional<int64_t> end_after_ns;
  // The target nodes (sorted, unique) for crash, shutdown, host-loss, isolate, latency-spike,
  // clock, slow and disk.
  std::vector<uint32_t> nodes;
  // Partition: traffic from side_a to side_b is dropped, and from side_b to side_a too unless
  // one_way. Sorted, unique, non-empty, disjoint.
  std::vector<uint32_t> side_a, side_b;
  bool one_way = false;
  // Region split: region indexes, sorted, unique, non-empty, disjoint.
  std::vector<uint32_t> regions_a, regions_b;
  CrashDiskMode disk = CrashDiskMode::lose_unsynced;         // crash
  int64_t drain_ns = 5'000'000'000;                          // shutdown
  int64_t extra_latency_ns = 0;                              // latency-spike, one way
  int64_t skew_ns = 0;                                       // clock: a jump, may be negative
  int32_t drift_ppm = 0;                                     // clock: rate error, may be negative
  uint32_t slow_factor = 1;                                  // slow: handlers take this many times longer
  DiskFaultKind disk_fault = DiskFaultKind::fsync_fail;      // disk
  std::string path;                                          // "$.faults[3]", for messages
};

// Random faults drawn from the run's seed: starts at exponential intervals, each lasting a
// uniform time in [duration_min_ns, duration_max_ns], at most max_concurrent at once, on nodes
// drawn from targets. The kinds' own parameters (extra latency, skew, factor) are the
// simulator's choice.
struct NemesisSpec {
  std::vector<FaultKind> kinds;  // unique, in the order written
  int64_t mean_interval_ns = 0;
  int64_t duration_min_ns = 1'000'000'000;
  int64_t duration_max_ns = 5'000'000'000;
  uint32_t max_concurrent = 1;
  std::vector<uint32_t> targets;  // sorted, unique, non-empty
  // Swarm testing: per seed, a random non-empty subset of kinds and varied rates (see
  // sim/world.h, nemesis_choice).
  bool swarm = false;
};

// The ledger system's workload: each client appends every append_interval_ns and gives up on a
// request after request_timeout_ns. synchronous_full = false plants the lost-write bug
// (SQLite's synchronous=OFF).
struct LedgerWorkload {
  int64_t append_interval_ns = 200'000'000;
  int64_t request_timeout_ns = 1'000'000'000;
  bool synchronous_full = true;
};

// The messaging system's workload (system "chat"): users and their devices (the scenario's
// "device" nodes, devices_per_user consecutive ones to a user), their 1:1 contacts and groups,
// and what each device does. Drawn from the run's seed by the world (sim/chat_system.cpp).
struct ChatWorkloadSpec {
  uint32_t devices_per_user = 1;
  uint32_t contacts_per_user = 3;
  uint32_t groups = 0;
  uint32_t group_size = 5;
  uint32_t membership_changes = 0;  // per group, during the workload phase
  int64_t send_interval_mean_ns = 10'000'000'000;
  // 1:1 conversations take turns: see ChatWorkload::turn_messages (0: no turns).
  uint32_t turn_messages = 0;
  uint32_t body_bytes_min = 16;
  uint32_t body_bytes_max = 256;
  double group_share = 0.3;
  double disappearing_share = 0.0;
  int64_t disappearing_ttl_ns = 30'000'000'000;
  double read_share = 0.5;
  uint32_t partitions = 16;
  // Copies of each queue partition (leader + followers), capped by the number of queue nodes.
  uint32_t replication_factor = 3;
};

struct Scenario {
  std::string file;  // as given to the loader, for messages
  std::string name, description, system;
  uint64_t seed = 1;  // the run's seed when the command line gives none
  int64_t duration_ns = 0;      // the workload-and-faults phase
  int64_t quiescence_ns = 10'000'000'000;  // then: faults healed, no new work
  // The liveness bound: after every fault healed at duration_ns, the system must settle within
  // this; absent, quiescence_ns plus the end grace (sim/world.cpp).
  std::optional<int64_t> liveness_ns;
  std::vector<std::string> regions;
  // One-way latency from region a to region b, latency[a][b]; square, symmetric, complete. The
  // diagonal is the intra-region latency.
  std::vector<std::vector<LinkLatency>> latency;
  int64_t connection_timeout_ns = 10'000'000'000;
  std::vector<NodeSpec> nodes;  // in declaration order; index = node number
  LedgerWorkload ledger;
  ChatWorkloadSpec chat;
  std::vector<std::string> bugs;  // planted bugs switched on by the scenario itself (`shrink` writes these)
  std::vector<FaultSpec> faults;  // sorted by at_ns; equal times keep the file's order
  std::optional<NemesisSpec> nemesis;
  std::optional<int64_t> latency_p99_bound_ns;  // checks.latency_p99_ms

  // The indexes of the nodes with this role, ascending.
  std::vector<uint32_t> nodes_with_role(std::string_view role) const;
};

// Bounds on what a scenario may ask for, so that no input can exhaust memory.
inline constexpr size_t kScenarioBytesMax = 16 << 20;
inline constexpr size_t kScenarioJsonDepthMax = 64;
inline constexpr uint32_t kNodesPerGroupMax = 1'000'000;
inline constexpr uint32_t kNodesTotalMax = 2'000'000;
// Every time field is at most 10^9 s (10^18 ns), so a sum of a few of them fits int64.
inline constexpr int64_t kScenarioTimeMaxNs = 1'000'000'000'000'000'000;

// The roles a system's scenario may use; each must have at least one group.
std::vector<std::string_view> system_roles(std::string_view system);

// Errors are ErrorCode::bad_input with the message forms above (the caller prints the message
// and exits 2). Schema violations list up to the first 5, one per line.
Result<Scenario> load_scenario_file(const std::string& path);
Result<Scenario> load_scenario_text(std::string_view text, const std::string& file_label);

// The embedded scenarios/schema.json, for `msgsim` to print and for tests.
std::string_view scenario_schema_text();

}  // namespace msgsim::sim
