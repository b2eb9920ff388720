#include "reports/plan.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace msgsim::reports {

namespace {

using chat::CostRole;
using chat::Work;

constexpr double kSecondsPerDay = 86'400;
// Assumptions msgsim adds to the seed's inputs (stated in the report's derivations).
constexpr double kSessionSecondsMean = 3'600;   // a connection lasts an hour: LB routes per second
constexpr double kRegistryTtlSeconds = 30;      // presence refresh per connection (ChatTuning)
constexpr double kHeartbeatWireBytes = 66;      // a heartbeat frame with TCP/IP headers

std::string fmt(double value, int decimals = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

Status read_number(const nlohmann::json& doc, const std::string& label, const char* key, double& out, double lo,
                   double hi, bool required) {
  if (!doc.contains(key)) {
    if (required) return make_error(ErrorCode::bad_input, label + ": $." + key + ": required");
    return {};
  }
  const auto& v = doc[key];
  if (!v.is_number() || v.get<double>() < lo || v.get<double>() > hi) {
    return make_error(ErrorCode::bad_input,
                      label + ": $." + key + ": expected a number in [" + fmt(lo, 3) + ", " + fmt(hi, 0) + "]");
  }
  out = v.get<double>();
  return {};
}

}  // namespace

std::string with_commas(double value) {
  const bool negative = value < 0;
  std::string digits = fmt(std::fabs(std::round(value)));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return negative ? "-" + out : out;
}

std::string human(double value, const std::string& unit) {
  static const struct {
    double scale;
    const char* prefix;
  } steps[] = {{1e15, "P"}, {1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "K"}};
  for (const auto& s : steps) {
    if (std::fabs(value) >= s.scale) return fmt(value / s.scale, value / s.scale < 10 ? 2 : 1) + " " + s.prefix + unit;
  }
  return fmt(value, value < 10 ? 2 : 0) + " " + unit;
}

Result<Workload> parse_workload(std::string_view json_text, const std::string& label) {
  nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return make_error(ErrorCode::bad_input, label + ": not valid JSON");
  if (!doc.is_object()) return make_error(ErrorCode::bad_input, label + ": expected an object at the top");
  Workload w;
  w.name = doc.value("name", "workload");
  w.notes = doc.contains("notes") && doc["notes"].is_string() ? doc["notes"].get<std::string>() : "";
  double cores = w.server_cores, rf = w.replication_factor, pool = w.storm_pool_servers;
  struct Field {
    const char* key;
    double* out;
    double lo, hi;
    bool required;
  } fields[] = {
      {"dau", &w.dau, 1, 1e11, true},
      {"messages_per_user_per_day", &w.messages_per_user_per_day, 0, 1e5, true},
      {"peak_factor", &w.peak_factor, 1, 100, true},
      {"concurrent_share", &w.concurrent_share, 0.001, 1, false},
      {"devices_per_user", &w.devices_per_user, 1, 16, false},
      {"group_share", &w.group_share, 0, 1, false},
      {"group_size_mean", &w.group_size_mean, 2, 1024, false},
      {"media_share", &w.media_share, 0, 1, false},
      {"media_bytes_mean", &w.media_bytes_mean, 0, 1e10, false},
      {"text_bytes_mean", &w.text_bytes_mean, 1, 65536, false},
      {"envelope_bytes", &w.envelope_bytes, 0, 65536, false},
      {"connections_per_server", &w.connections_per_server, 1, 1e7, true},
      {"heartbeat_interval_s", &w.heartbeat_interval_s, 0.1, 3600, false},
      {"delivery_slo_ms", &w.delivery_slo_ms, 1, 1e6, false},
      {"server_cores", &cores, 1, 1024, false},
      {"target_utilisation", &w.target_utilisation, 0.05, 1, false},
      {"replication_factor", &rf, 1, 9, false},
      {"partition_messages_per_s_max", &w.partition_messages_per_s_max, 1, 1e9, false},
      {"storm_pool_servers", &pool, 2, 256, false},
  };
  for (const Field& f : fields) {
    Status s = read_number(doc, label, f.key, *f.out, f.lo, f.hi, f.required);
    if (!s.ok()) return s.error();
  }
  w.server_cores = static_cast<uint32_t>(cores);
  w.replication_factor = static_cast<uint32_t>(rf);
  w.storm_pool_servers = static_cast<uint32_t>(pool);
  if (doc.contains("regions")) {
    if (!doc["regions"].is_array() || doc["regions"].empty() || doc["regions"].size() > 64) {
      return make_error(ErrorCode::bad_input, label + ": $.regions: expected 1 to 64 {name, share} objects");
    }
    double total = 0;
    for (size_t i = 0; i < doc["regions"].size(); ++i) {
      const auto& r = doc["regions"][i];
      const std::string where = label + ": $.regions[" + std::to_string(i) + "]";
      if (!r.is_object() || !r.contains("name") || !r["name"].is_string() || !r.contains("share") ||
          !r["share"].is_number() || r["share"].get<double>() <= 0) {
        return make_error(ErrorCode::bad_input, where + ": expected {\"name\": string, \"share\": number > 0}");
      }
      w.regions.push_back({r["name"].get<std::string>(), r["share"].get<double>()});
      total += w.regions.back().share;
    }
    if (std::fabs(total - 1.0) > 1e-6) {
      return make_error(ErrorCode::bad_input, label + ": $.regions: the shares add up to " + fmt(total, 4) + ", not 1");
    }
  } else {
    w.regions.push_back({"global", 1.0});
  }
  return w;
}

Result<Workload> load_workload(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::not_found, path + ": cannot open the workload");
  std::stringstream text;
  text << in.rdbuf();
  return parse_workload(text.str(), path);
}

const Figure* Plan::find(std::string_view key) const {
  for (const auto* list : {&seed_method, &own})
    for (const Figure& f : *list)
      if (f.key == key) return &f;
  return nullptr;
}

Plan make_plan(const Workload& w, const chat::CpuCosts& costs) {
  Plan plan;
  plan.workload = w;
  auto& seed = plan.seed_method;
  auto& own = plan.own;

  // --- the seed's method
  const double per_day = w.dau * w.messages_per_user_per_day;
  seed.push_back({"messages_per_day", "Messages per day", per_day, "msg/day",
                  with_commas(w.dau) + " DAU x " + fmt(w.messages_per_user_per_day, 1) + " msg/user/day = " +
                      with_commas(per_day)});
  const double avg = per_day / kSecondsPerDay;
  seed.push_back({"avg_messages_per_s", "Messages per second, average", avg, "msg/s",
                  with_commas(per_day) + " / 86,400 s = " + with_commas(avg)});
  const double peak = avg * w.peak_factor;
  seed.push_back({"peak_messages_per_s", "Messages per second, peak", peak, "msg/s",
                  with_commas(avg) + " x peak factor " + fmt(w.peak_factor, 2) + " = " + with_commas(peak)});
  const double connections = w.dau * w.concurrent_share * w.devices_per_user;
  seed.push_back({"concurrent_connections", "Concurrent connections at the peak", connections, "connections",
                  with_commas(w.dau) + " DAU x " + fmt(w.concurrent_share, 3) + " online x " +
                      fmt(w.devices_per_user, 1) + " devices = " + with_commas(connections)});
  const double chat_by_connections = std::ceil(connections / w.connections_per_server);
  seed.push_back({"chat_servers", "Chat servers (connections only)", chat_by_connections, "servers",
                  with_commas(connections) + " / " + with_commas(w.connections_per_server) +
                      " connections per server = " + with_commas(chat_by_connections)});
  const double text_per_day = per_day * w.text_bytes_mean;
  seed.push_back({"text_bytes_per_day", "Text stored per day", text_per_day, "B",
                  with_commas(per_day) + " msg x " + fmt(w.text_bytes_mean, 0) + " B = " + human(text_per_day, "B")});
  const double media_per_day = per_day * w.media_share * w.media_bytes_mean;
  seed.push_back({"media_bytes_per_day", "Media stored per day", media_per_day, "B",
                  with_commas(per_day) + " msg x " + fmt(w.media_share, 3) + " with media x " +
                      human(w.media_bytes_mean, "B") + " = " + human(media_per_day, "B")});

  // --- msgsim's figures
  const double recipients = (1 - w.group_share) * 1.0 + w.group_share * (w.group_size_mean - 1);
  const double deliveries = peak * recipients * w.devices_per_user;
  own.push_back({"peak_deliveries_per_s", "Device deliveries per second, peak", deliveries, "deliveries/s",
                 with_commas(peak) + " msg/s x " + fmt(recipients, 2) + " recipients (" + fmt(w.group_share, 2) +
                     " of messages to groups of " + fmt(w.group_size_mean, 1) + ") x " + fmt(w.devices_per_user, 1) +
                     " devices = " + with_commas(deliveries)});
  // A recipient device is connected with the probability that any user is at the peak; the
  // others get a push now and a sync when they come back.
  const double online = deliveries * w.concurrent_share;
  const double offline = deliveries - online;
  own.push_back({"online_deliveries_per_s", "Deliveries pushed over a connection, peak", online, "deliveries/s",
                 with_commas(deliveries) + " x " + fmt(w.concurrent_share, 2) +
                     " connected (a recipient is online as often as any user) = " + with_commas(online)});
  const double heartbeats = connections / w.heartbeat_interval_s;
  const double routes = connections / kSessionSecondsMean;
  const double registrations = connections / kRegistryTtlSeconds;

  struct RoleLoad {
    CostRole role;
    std::vector<std::pair<double, double>> parts;  // (frames per second, ns per frame)
    std::string why;
  };
  const auto c = [&](CostRole role, Work work) { return static_cast<double>(costs.of(role, work)); };
  const double rf = static_cast<double>(w.replication_factor);
  std::vector<RoleLoad> loads = {
      {CostRole::lb, {{routes, c(CostRole::lb, Work::decode) + c(CostRole::lb, Work::route)}},
       with_commas(routes) + " routes/s (connections / 3,600 s mean session)"},
      {CostRole::chat,
       {{heartbeats, c(CostRole::chat, Work::decode) + c(CostRole::chat, Work::heartbeat)},
        {peak, c(CostRole::chat, Work::decode) + c(CostRole::chat, Work::route)},
        {online, c(CostRole::chat, Work::decode) + c(CostRole::chat, Work::push)},
        {offline, c(CostRole::chat, Work::decode) + c(CostRole::chat, Work::sync)},
        {routes, c(CostRole::chat, Work::decode) + c(CostRole::chat, Work::connect)}},
       with_commas(heartbeats) + " heartbeats/s + " + with_commas(peak) + " sends/s + " + with_commas(online) +
           " pushes/s + " + with_commas(offline) + " syncs/s (one per offline delivery, an upper bound) + " +
           with_commas(routes) + " connects/s"},
      {CostRole::registry,
       {{peak * recipients, c(CostRole::registry, Work::decode) + c(CostRole::registry, Work::route)},
        {registrations, c(CostRole::registry, Work::decode) + c(CostRole::registry, Work::route)}},
       with_commas(peak * recipients) + " lookups/s + " + with_commas(registrations) +
           " presence refreshes/s (30 s TTL)"},
      {CostRole::queue,
       {{peak, c(CostRole::queue, Work::decode) + c(CostRole::queue, Work::append)},
        {peak * (rf - 1), c(CostRole::queue, Work::decode) + c(CostRole::queue, Work::replicate)}},
       with_commas(peak) + " appends/s at leaders + " + with_commas(peak * (rf - 1)) + " replica appends/s (RF " +
           fmt(rf) + ")"},
      {CostRole::storage,
       {{peak, c(CostRole::storage, Work::decode) + c(CostRole::storage, Work::store) +
                   c(CostRole::storage, Work::fanout)},
        {offline, c(CostRole::storage, Work::decode) + c(CostRole::storage, Work::sync)}},
       with_commas(peak) + " stores+fan-outs/s + " + with_commas(offline) + " sync queries/s"},
      {CostRole::push, {{offline, c(CostRole::push, Work::decode) + c(CostRole::push, Work::push)}},
       with_commas(offline) + " notifications/s"},
  };
  const double core_ns_per_s = 1e9 * w.target_utilisation;
  for (const RoleLoad& load : loads) {
    RoleSizing sizing;
    sizing.role = load.role;
    double ns_per_s = 0;
    for (const auto& [rate, ns] : load.parts) {
      sizing.work_per_s += rate;
      ns_per_s += rate * ns;
    }
    sizing.cpu_ns_per_unit = sizing.work_per_s > 0 ? ns_per_s / sizing.work_per_s : 0;
    sizing.cores_needed = ns_per_s / 1e9;
    const double by_cpu_total = ns_per_s / (core_ns_per_s * w.server_cores);
    double total = 0;
    for (const Region& region : w.regions) {
      double need = std::ceil(by_cpu_total * region.share);
      if (load.role == CostRole::chat) need = std::max(need, std::ceil(connections * region.share / w.connections_per_server));
      const auto servers = static_cast<uint32_t>(std::max(1.0, need) + 1);  // one spare per region
      sizing.servers_per_region.push_back(servers);
      total += servers;
    }
    sizing.derivation = load.why + "; mean " + fmt(sizing.cpu_ns_per_unit, 0) + " ns CPU each = " +
                        fmt(sizing.cores_needed, 1) + " cores; / (" + std::to_string(w.server_cores) + " cores x " +
                        fmt(w.target_utilisation, 2) + " target) = " + fmt(by_cpu_total, 1) + " servers by CPU" +
                        (load.role == CostRole::chat ? ", " + with_commas(chat_by_connections) + " by connections" : "") +
                        "; rounded up per region plus one spare each = " + with_commas(total);
    own.push_back({std::string("servers_") + chat::to_string(load.role), std::string("Servers: ") + chat::to_string(load.role),
                   total, "servers", sizing.derivation});
    plan.roles.push_back(std::move(sizing));
  }

  const double partitions = std::ceil(peak / w.partition_messages_per_s_max);
  own.push_back({"queue_partitions", "Queue partitions", partitions, "partitions",
                 with_commas(peak) + " msg/s / " + with_commas(w.partition_messages_per_s_max) +
                     " msg/s per partition leader = " + with_commas(partitions)});
  const double stored_text = per_day * (w.text_bytes_mean + w.envelope_bytes) * rf;
  own.push_back({"stored_text_bytes_per_day", "Message bytes stored per day (ciphertext, replicated)", stored_text, "B",
                 with_commas(per_day) + " msg x (" + fmt(w.text_bytes_mean, 0) + " B text + " +
                     fmt(w.envelope_bytes, 0) + " B envelope) x RF " + fmt(rf) + " = " + human(stored_text, "B")});
  const double msg_bytes = w.text_bytes_mean + w.envelope_bytes;
  const double media_peak_in = media_per_day / kSecondsPerDay * w.peak_factor;
  const double ingress = (peak * msg_bytes + heartbeats * kHeartbeatWireBytes + media_peak_in) * 8;
  own.push_back({"ingress_bits_per_s", "Ingress bandwidth at the peak", ingress, "bit/s",
                 "(" + with_commas(peak) + " msg/s x " + fmt(msg_bytes, 0) + " B + " + with_commas(heartbeats) +
                     " heartbeats/s x 66 B + media " + human(media_peak_in, "B/s") + ") x 8 = " + human(ingress, "bit/s")});
  const double egress = (deliveries * msg_bytes + heartbeats * kHeartbeatWireBytes + media_peak_in * recipients) * 8;
  own.push_back({"egress_bits_per_s", "Egress bandwidth at the peak", egress, "bit/s",
                 "(" + with_commas(deliveries) + " deliveries/s x " + fmt(msg_bytes, 0) + " B + heartbeat acks + media x " +
                     fmt(recipients, 2) + " recipients) x 8 = " + human(egress, "bit/s")});

  // --- where the figures differ, and why
  const Figure* chat_own = plan.find("servers_chat");
  plan.differences.push_back(
      "Chat servers: the seed divides connections by " + with_commas(w.connections_per_server) + " (" +
      with_commas(chat_by_connections) + "); msgsim also checks CPU (" + fmt(plan.roles[1].cores_needed, 0) +
      " cores at the peak, so connections stay the binding limit when that is below " +
      with_commas(chat_by_connections * w.server_cores * w.target_utilisation) +
      ") and keeps one spare per region so the survivors can take a crashed server's clients: " +
      with_commas(chat_own->value) + ".");
  plan.differences.push_back("Text storage: the seed counts " + fmt(w.text_bytes_mean, 0) +
                             " B of plaintext once per message (" + human(text_per_day, "B") +
                             "/day); msgsim's servers store ciphertext with its envelope (" + fmt(w.envelope_bytes, 0) +
                             " B more: ratchet header, MAC, ids, seq) on " + fmt(rf) + " replicas: " +
                             human(stored_text, "B") + "/day.");
  plan.differences.push_back("Deliveries: the seed's rates count messages sent; a group message is delivered to each "
                             "member's devices, so the delivery path carries " +
                             fmt(recipients * w.devices_per_user, 2) + "x the send rate (" + with_commas(deliveries) +
                             "/s at the peak).");
  plan.differences.push_back("Rounding: the seed rounds 1,157,407 to 1.15 M and 3.47 M to 3.5 M; msgsim prints the "
                             "unrounded arithmetic.");
  return plan;
}

std::vector<std::pair<chat::CostRole, double>> servers_for_dau(const Workload& workload, const chat::CpuCosts& costs,
                                                               double dau) {
  Workload w = workload;
  w.dau = dau;
  const Plan plan = make_plan(w, costs);
  std::vector<std::pair<chat::CostRole, double>> out;
  for (const RoleSizing& r : plan.roles) {
    double total = 0;
    for (uint32_t s : r.servers_per_region) total += s;
    out.emplace_back(r.role, total);
  }
  return out;
}

}  // namespace msgsim::reports
