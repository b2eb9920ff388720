// The cost table: per-role virtual CPU for each kind of work (impl/chat/cpu_costs.h), as JSON.
//
// `msgsim calibrate` runs the project's Google Benchmark programs (bench/cost_bench.cpp) and
// maps their results to the table with cost_table_from_benchmarks; the simulator's runs read
// the table (load_cost_table) and never the clock. The file:
//   {"format": "msgsim-cost-table/1",
//    "machine": "what it was measured on",
//    "benchmarks_ns": {"BM_CostDecode": 310.5, ...},        (what the mapping started from)
//    "costs_ns": {"chat": {"decode": 420, "route": 900, ...}, "queue": {...}, ...},
//    "fsync_quantiles_ns": [0 %, 5 %, ..., 100 %],   (optional: append + fdatasync of a WAL file)
//    "loopback_rtt_ns": 41000,                         (optional: a small-frame round trip on 127.0.0.1)
//    "idle_hop_quantiles_ns": [0 %, 0.1 %, ..., 100 %]} (optional: one-way hop to an idle reader)
// costs_ns, fsync_quantiles_ns, loopback_rtt_ns and idle_hop_quantiles_ns are read back; a role or
// work missing from costs_ns costs zero. The last three are what the live twin
// (reports/live_twin.h) charges.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/result.h"
#include "impl/chat/cpu_costs.h"

namespace msgsim::reports {

struct CostTable {
  chat::CpuCosts costs;
  std::string machine;
  std::map<std::string, double> benchmarks_ns;  // per benchmark name, CPU ns per iteration
  std::vector<int64_t> fsync_quantiles_ns;      // 21 evenly spaced quantiles, or empty: not measured
  int64_t loopback_rtt_ns = 0;                  // 0: not measured
  // Evenly spaced quantiles of the one-way loopback hop to a reader asleep between frames, or
  // empty: not measured (then the twin charges half of loopback_rtt_ns a hop).
  std::vector<int64_t> idle_hop_quantiles_ns;
};

// `label` names the input in error messages (a file path).
Result<CostTable> parse_cost_table(std::string_view json_text, const std::string& label);
Result<CostTable> load_cost_table(const std::string& path);
std::string cost_table_json(const CostTable& table);

// The benchmarks calibrate needs, by name, and how each maps onto the table (documented in
// reports/README.md): every role pays BM_CostFrameIo + BM_CostDecode per frame as "decode";
// the other works come from one benchmark each.
struct BenchMapping {
  chat::Work work;
  const char* benchmark;
};
const std::vector<BenchMapping>& bench_mapping();

// Reads Google Benchmark JSON output (one or more documents' "benchmarks" arrays merged into
// `benchmarks_ns` first) and fills the table. Fails naming the benchmark that is missing.
Result<CostTable> cost_table_from_benchmarks(const std::map<std::string, double>& benchmarks_ns, std::string machine);
// Parses one Google Benchmark --benchmark_format=json document into name -> cpu ns/iteration.
Status read_benchmark_json(std::string_view json_text, const std::string& label, std::map<std::string, double>& out);

}  // namespace msgsim::reports
