#include "reports/cost_model.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace msgsim::reports {

namespace {

using chat::CostRole;
using chat::Work;

// The works each role does (impl/chat/cpu_costs.h's mapping); the table lists only these.
const std::vector<std::pair<CostRole, std::vector<Work>>>& role_works() {
  static const std::vector<std::pair<CostRole, std::vector<Work>>> table = {
      {CostRole::lb, {Work::decode, Work::route}},
      {CostRole::chat, {Work::decode, Work::connect, Work::heartbeat, Work::route, Work::sync, Work::push}},
      {CostRole::registry, {Work::decode, Work::route}},
      {CostRole::queue, {Work::decode, Work::append, Work::replicate}},
      {CostRole::storage, {Work::decode, Work::store, Work::fanout, Work::sync}},
      {CostRole::push, {Work::decode, Work::push}},
  };
  return table;
}

bool role_from_name(std::string_view name, CostRole& out) {
  for (size_t r = 0; r < chat::kCostRoles; ++r) {
    if (name == chat::to_string(static_cast<CostRole>(r))) {
      out = static_cast<CostRole>(r);
      return true;
    }
  }
  return false;
}

bool work_from_name(std::string_view name, Work& out) {
  for (size_t w = 0; w < chat::kWorkKinds; ++w) {
    if (name == chat::to_string(static_cast<Work>(w))) {
      out = static_cast<Work>(w);
      return true;
    }
  }
  return false;
}

}  // namespace

const std::vector<BenchMapping>& bench_mapping() {
  static const std::vector<BenchMapping> mapping = {
      {Work::decode, "BM_CostFrameIo"},  {Work::decode, "BM_CostDecode"},   {Work::route, "BM_CostRoute"},
      {Work::append, "BM_CostAppend"},   {Work::replicate, "BM_CostReplicate"}, {Work::store, "BM_CostStore"},
      {Work::fanout, "BM_CostFanout"},   {Work::push, "BM_CostPush"},       {Work::sync, "BM_CostSync"},
      {Work::connect, "BM_CostConnect"}, {Work::heartbeat, "BM_CostHeartbeat"},
  };
  return mapping;
}

Result<CostTable> parse_cost_table(std::string_view json_text, const std::string& label) {
  nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return make_error(ErrorCode::bad_input, label + ": not valid JSON");
  if (!doc.is_object()) return make_error(ErrorCode::bad_input, label + ": expected an object at the top");
  CostTable table;
  if (doc.contains("machine") && doc["machine"].is_string()) table.machine = doc["machine"].get<std::string>();
  if (doc.contains("benchmarks_ns") && doc["benchmarks_ns"].is_object()) {
    for (const auto& [name, value] : doc["benchmarks_ns"].items()) {
      if (value.is_number()) table.benchmarks_ns[name] = value.get<double>();
    }
  }
  if (!doc.contains("costs_ns") || !doc["costs_ns"].is_object()) {
    return make_error(ErrorCode::bad_input, label + ": $.costs_ns: expected an object of roles");
  }
  for (const auto& [role_name, works] : doc["costs_ns"].items()) {
    CostRole role;
    if (!role_from_name(role_name, role)) {
      return make_error(ErrorCode::bad_input, label + ": $.costs_ns." + role_name +
                                                  ": unknown role (lb, chat, registry, queue, storage, push)");
    }
    if (!works.is_object()) {
      return make_error(ErrorCode::bad_input, label + ": $.costs_ns." + role_name + ": expected an object of works");
    }
    for (const auto& [work_name, value] : works.items()) {
      Work work;
      const std::string where = label + ": $.costs_ns." + role_name + "." + work_name;
      if (!work_from_name(work_name, work)) return make_error(ErrorCode::bad_input, where + ": unknown kind of work");
      if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > kNanosPerSecond) {
        return make_error(ErrorCode::bad_input, where + ": expected an integer number of nanoseconds in [0, 1e9]");
      }
      table.costs.at(role, work) = value.get<int64_t>();
    }
  }
  constexpr int64_t kMeasuredMaxNs = 10 * kNanosPerSecond;
  // Evenly spaced quantiles, non-decreasing, in [0, 10 s].
  const auto read_quantiles = [&](const char* key, std::vector<int64_t>& out) -> Status {
    if (!doc.contains(key)) return Status{};
    const auto& q = doc[key];
    if (!q.is_array() || q.size() < 2 || q.size() > 1001) {
      return make_error(ErrorCode::bad_input, label + ": $." + key + ": expected an array of 2 to 1001 quantiles");
    }
    for (size_t i = 0; i < q.size(); ++i) {
      if (!q[i].is_number_integer() || q[i].get<int64_t>() < 0 || q[i].get<int64_t>() > kMeasuredMaxNs ||
          (i > 0 && q[i].get<int64_t>() < out.back())) {
        return make_error(ErrorCode::bad_input, label + ": $." + key + "[" + std::to_string(i) +
                                                    "]: expected non-decreasing integer nanoseconds in [0, 1e10]");
      }
      out.push_back(q[i].get<int64_t>());
    }
    return Status{};
  };
  if (Status read = read_quantiles("fsync_quantiles_ns", table.fsync_quantiles_ns); !read.ok()) return read.error();
  if (Status read = read_quantiles("idle_hop_quantiles_ns", table.idle_hop_quantiles_ns); !read.ok()) return read.error();
  if (doc.contains("loopback_rtt_ns")) {
    const auto& v = doc["loopback_rtt_ns"];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMeasuredMaxNs) {
      return make_error(ErrorCode::bad_input, label + ": $.loopback_rtt_ns: expected integer nanoseconds in [0, 1e10]");
    }
    table.loopback_rtt_ns = v.get<int64_t>();
  }
  return table;
}

Result<CostTable> load_cost_table(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::not_found, path + ": cannot open the cost table");
  std::stringstream text;
  text << in.rdbuf();
  return parse_cost_table(text.str(), path);
}

std::string cost_table_json(const CostTable& table) {
  nlohmann::ordered_json doc;
  doc["format"] = "msgsim-cost-table/1";
  doc["machine"] = table.machine;
  nlohmann::ordered_json benchmarks = nlohmann::ordered_json::object();
  for (const auto& [name, ns] : table.benchmarks_ns) benchmarks[name] = std::round(ns * 10.0) / 10.0;
  doc["benchmarks_ns"] = benchmarks;
  nlohmann::ordered_json costs = nlohmann::ordered_json::object();
  for (const auto& [role, works] : role_works()) {
    nlohmann::ordered_json row = nlohmann::ordered_json::object();
    for (Work work : works) row[chat::to_string(work)] = table.costs.of(role, work);
    costs[chat::to_string(role)] = row;
  }
  doc["costs_ns"] = costs;
  if (!table.fsync_quantiles_ns.empty()) doc["fsync_quantiles_ns"] = table.fsync_quantiles_ns;
  if (table.loopback_rtt_ns > 0) doc["loopback_rtt_ns"] = table.loopback_rtt_ns;
  if (!table.idle_hop_quantiles_ns.empty()) doc["idle_hop_quantiles_ns"] = table.idle_hop_quantiles_ns;
  return doc.dump(2) + "\n";
}

Result<CostTable> cost_table_from_benchmarks(const std::map<std::string, double>& benchmarks_ns, std::string machine) {
  CostTable table;
  table.machine = std::move(machine);
  std::array<double, chat::kWorkKinds> work_ns{};
  for (const BenchMapping& m : bench_mapping()) {
    const auto it = benchmarks_ns.find(m.benchmark);
    if (it == benchmarks_ns.end()) {
      return make_error(ErrorCode::not_found, std::string("benchmark ") + m.benchmark +
                                                  " is missing from the results (is bench/cost_bench built?)");
    }
    table.benchmarks_ns[m.benchmark] = it->second;
    work_ns[static_cast<size_t>(m.work)] += it->second;
  }
  for (const auto& [role, works] : role_works()) {
    for (Work work : works) table.costs.at(role, work) = static_cast<int64_t>(std::llround(work_ns[static_cast<size_t>(work)]));
  }
  return table;
}

Status read_benchmark_json(std::string_view json_text, const std::string& label, std::map<std::string, double>& out) {
  nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return make_error(ErrorCode::bad_input, label + ": not Google Benchmark JSON");
  if (!doc.contains("benchmarks") || !doc["benchmarks"].is_array()) {
    return make_error(ErrorCode::bad_input, label + ": $.benchmarks: expected an array");
  }
  for (const auto& b : doc["benchmarks"]) {
    if (!b.is_object() || !b.contains("name") || !b.contains("cpu_time") || !b["cpu_time"].is_number()) continue;
    if (b.contains("run_type") && b["run_type"] != "iteration") continue;  // skip aggregates
    double ns = b["cpu_time"].get<double>();
    const std::string unit = b.value("time_unit", "ns");
    if (unit == "us") ns *= 1e3;
    else if (unit == "ms") ns *= 1e6;
    else if (unit == "s") ns *= 1e9;
    out[b["name"].get<std::string>()] = ns;
  }
  return {};
}

}  // namespace msgsim::reports
