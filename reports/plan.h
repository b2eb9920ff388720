// Capacity planning arithmetic (`msgsim plan`): from a workload (DAU, messages per user per day,
// peak factor, group and media mix, connections per server, regions, delivery SLO) and the cost
// table, the servers per role per region, queue partitions, storage per day and bandwidth, each
// figure with the derivation that produced it.
//
// Two sets of figures: the seed's method (the seed's key-numbers table: average and peak
// message rate, chat servers from connections alone, plaintext bytes once) and msgsim's own
// (CPU-bound servers from the cost table at a target utilisation, one spare server per region
// and role, ciphertext envelopes and replication in storage, group fan-out in deliveries).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/result.h"
#include "impl/chat/cpu_costs.h"

namespace msgsim::reports {

struct Region {
  std::string name;
  double share = 1.0;  // of the users; the shares add up to 1
};

struct Workload {
  std::string name;
  double dau = 0;
  double messages_per_user_per_day = 0;
  double peak_factor = 1;
  double concurrent_share = 0.2;     // of DAU connected at the peak
  double devices_per_user = 1;
  double group_share = 0;            // of messages, those sent to a group
  double group_size_mean = 2;        // members of a group, sender included
  double media_share = 0;            // of messages, those carrying media
  double media_bytes_mean = 0;
  double text_bytes_mean = 100;
  double envelope_bytes = 0;         // per stored message: ciphertext overhead and ids (msgsim's figure)
  double connections_per_server = 50'000;
  double heartbeat_interval_s = 5;
  double delivery_slo_ms = 100;
  uint32_t server_cores = 16;
  double target_utilisation = 0.7;   // msgsim sizes CPU-bound roles to this
  uint32_t replication_factor = 3;
  double partition_messages_per_s_max = 5'000;  // per queue partition (one leader appends in order)
  uint32_t storm_pool_servers = 8;   // survivors that share a crashed server's clients (slices)
  std::vector<Region> regions;
  std::string notes;
};

Result<Workload> parse_workload(std::string_view json_text, const std::string& label);
Result<Workload> load_workload(const std::string& path);

// One derived figure with how it was derived.
struct Figure {
  std::string key;        // stable id, for tests and the seed comparison: "avg_messages_per_s"
  std::string what;       // "Messages per second, average"
  double value = 0;
  std::string unit;       // "msg/s"
  std::string derivation; // "500,000,000 DAU x 200 msg/day / 86,400 s = 1,157,407"
};

struct RoleSizing {
  chat::CostRole role;
  double work_per_s = 0;       // units of the role's work at the peak (frames handled)
  double cpu_ns_per_unit = 0;  // from the cost table
  double cores_needed = 0;
  std::vector<uint32_t> servers_per_region;  // msgsim's figure, with a spare per region
  std::string derivation;
};

struct Plan {
  Workload workload;
  std::vector<Figure> seed_method;  // the seed's figures, reproduced
  std::vector<Figure> own;          // msgsim's figures
  std::vector<RoleSizing> roles;
  std::vector<std::string> differences;  // where and why msgsim's figures differ from the seed's
  const Figure* find(std::string_view key) const;
};

Plan make_plan(const Workload& workload, const chat::CpuCosts& costs);

// Servers of each role needed for `dau` with the rest of the workload unchanged (the
// servers-vs-DAU plot): chat servers by msgsim's method, and every role's total.
std::vector<std::pair<chat::CostRole, double>> servers_for_dau(const Workload& workload, const chat::CpuCosts& costs,
                                                               double dau);

// 1234567 -> "1,234,567"; 1.15e6 with digits=2 -> "1.15 M" style helpers for the report.
std::string with_commas(double value);
std::string human(double value, const std::string& unit);

}  // namespace msgsim::reports
