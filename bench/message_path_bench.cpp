// BM_MessagePath: the end-to-end simulated throughput of the messaging system. 1:1 messages
// are sent by devices, made durable by the queue, acknowledged, stored, fanned out and shown on
// the other device, with every device online and no faults. Items per second = messages shown
// (history `deliver` events) per second of real CPU time; the counters say how many were acked
// and how much virtual time passed. Bodies are opaque bytes here (no E2EE).
#include <benchmark/benchmark.h>

#include "oracle/event.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::sim {
namespace {

constexpr const char* kScenario = R"({
  "name": "message-path", "system": "chat", "duration_s": 100000,
  "topology": {"regions": ["us-east"], "nodes": [
    {"name": "lb", "role": "lb", "count": 1, "region": "us-east"},
    {"name": "chat", "role": "chat", "count": 2, "region": "us-east"},
    {"name": "registry", "role": "registry", "count": 1, "region": "us-east"},
    {"name": "queue", "role": "queue", "count": 2, "region": "us-east"},
    {"name": "storage", "role": "storage", "count": 2, "region": "us-east"},
    {"name": "push", "role": "push", "count": 1, "region": "us-east"},
    {"name": "device", "role": "device", "count": 400, "region": "us-east"}]},
  "workload": {"chat": {"contacts_per_user": 1, "groups": 0, "send_interval_ms": 2,
                        "body_bytes": [64, 64], "read_share": 0}}
})";

void BM_MessagePath(benchmark::State& state) {
  Result<Scenario> loaded = load_scenario_text(kScenario, "message-path.json");
  if (!loaded.ok()) {
    state.SkipWithError(loaded.error().message.c_str());
    return;
  }
  RunOptions options;
  Simulator sim(1, [&] {
    NetworkConfig net;
    net.regions = loaded->regions;
    net.base_ns = {{loaded->latency[0][0].base_ns}};
    net.jitter_mean_ns = {{loaded->latency[0][0].jitter_mean_ns}};
    net.connection_timeout_ns = loaded->connection_timeout_ns;
    return net;
  }());
  uint64_t delivered = 0, acked = 0;
  sim.set_history_sink([&](NodeId, const history::Event& e) {
    delivered += e.type == history::EventType::deliver;
    acked += e.type == history::EventType::ack;
  });
  std::unique_ptr<SystemUnderTest> system = make_system(*loaded, options);
  system->build(sim, *loaded);
  system->start(sim);
  sim.run_until(5 * kNanosPerSecond);  // connected, synced, sending
  const uint64_t delivered_before = delivered;
  const uint64_t acked_before = acked;
  const int64_t virtual_before = sim.now_ns();
  for (auto _ : state) {
    sim.run_until(sim.now_ns() + 10 * kNanosPerMilli);
  }
  state.SetItemsProcessed(static_cast<int64_t>(delivered - delivered_before));
  state.counters["acked"] = static_cast<double>(acked - acked_before);
  state.counters["virtual_s"] = static_cast<double>(sim.now_ns() - virtual_before) / 1e9;
}
BENCHMARK(BM_MessagePath)->Unit(benchmark::kMillisecond)->MinTime(5.0);

}  // namespace
}  // namespace msgsim::sim
