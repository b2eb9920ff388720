// BM_MessagePath: the end-to-end simulated throughput of the messaging system. 1:1 messages
// are sent by devices, made durable by the queue, acknowledged, stored, fanned out and shown on
// the other device, with every device online and no faults. Items per second = messages shown
// (history `deliver` events) per second of real CPU time; the counters say how many were acked
// and how much virtual time passed.
//
// Three figures:
//  - BM_MessagePath: bodies are opaque plaintext bytes (no key service in the topology, E2EE off).
//  - BM_MessagePath_E2EE: the same deployment with a key service, so every device encrypts
//    (X3DH on first contact, a Double Ratchet per device pair; spec/e2ee.md), and the
//    workload of the E2EE bar: 1:1 conversations whose replies alternate every 10 messages
//    (workload.chat.turn_messages = 10), so one message in 10 pays a DH ratchet step.
//  - BM_E2eeCryptoPerMessage: the crypto alone, as the devices run it (E2eeClient seal + open),
//    for 1:1 messages whose replies alternate every 10 messages: what E2EE adds per message.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define MSGSIM_CALLGRIND_START() \
  do {                           \
    CALLGRIND_ZERO_STATS;        \
    CALLGRIND_START_INSTRUMENTATION; \
  } while (0)
#define MSGSIM_CALLGRIND_STOP()            \
  do {                                     \
    CALLGRIND_STOP_INSTRUMENTATION;        \
    CALLGRIND_DUMP_STATS_AT("measured");   \
  } while (0)
#else
#define MSGSIM_CALLGRIND_START() ((void)0)
#define MSGSIM_CALLGRIND_STOP() ((void)0)
#endif

#include "impl/chat/e2ee_client.h"
#include "oracle/event.h"
#include "sim/disk.h"
#include "sim/randombytes.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::sim {
namespace {

// `keys_node`: the key service's node group, or empty for a run without E2EE;
// `turn_messages`: workload.chat.turn_messages (0: both sides of a conversation send freely).
std::string scenario_text(const std::string& keys_node, uint32_t turn_messages) {
  return R"({
  "name": "message-path", "system": "chat", "duration_s": 100000,
  "topology": {"regions": ["us-east"], "nodes": [
    {"name": "lb", "role": "lb", "count": 1, "region": "us-east"},
    {"name": "chat", "role": "chat", "count": 2, "region": "us-east"},
    {"name": "registry", "role": "registry", "count": 1, "region": "us-east"},
    {"name": "queue", "role": "queue", "count": 2, "region": "us-east"},
    {"name": "storage", "role": "storage", "count": 2, "region": "us-east"},
    {"name": "push", "role": "push", "count": 1, "region": "us-east"},)" +
         keys_node + R"(
    {"name": "device", "role": "device", "count": 400, "region": "us-east"}]},
  "workload": {"chat": {"contacts_per_user": 1, "groups": 0, "send_interval_ms": 2,
                        "turn_messages": )" + std::to_string(turn_messages) + R"(,
                        "body_bytes": [64, 64], "read_share": 0}}
})";
}

// Overrides for short runs (callgrind, quick checks), read once at registration; the figure
// keeps its meaning (deliveries per CPU second after the warm-up), only its precision changes.
//  MSGSIM_MESSAGE_PATH_MIN_TIME_S: Google Benchmark's minimum measured time (default 5);
//  MSGSIM_MESSAGE_PATH_WARMUP_S: virtual seconds run before measuring (default 5; at least 2,
//  so that every device is connected, synced and sending).
double env_number(const char* name, double fallback, double least) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const double value = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(value >= least) || value > 3600) {
    std::fprintf(stderr, "%s=\"%s\": expected a number in [%g, 3600], using %g\n", name, text, least, fallback);
    return fallback;
  }
  return value;
}
double min_time_s() { return env_number("MSGSIM_MESSAGE_PATH_MIN_TIME_S", 5.0, 0.01); }
int64_t warmup_ns() {
  return static_cast<int64_t>(env_number("MSGSIM_MESSAGE_PATH_WARMUP_S", 5.0, 2.0) * 1e9);
}

//  MSGSIM_MESSAGE_PATH_ITERATIONS: a fixed number of 10 ms slices instead of MinTime (one run,
//  no iteration-count estimation runs that each repeat the warm-up).
// `perf record -D -1 --control fifo:CTL` starts with its events off; with
// MSGSIM_PERF_CONTROL_FIFO=CTL the bench turns them on for the measured slices only, as the
// callgrind requests do under valgrind (bench/README.md).
void perf_control(const char* command) {
  const char* path = std::getenv("MSGSIM_PERF_CONTROL_FIFO");
  if (path == nullptr || *path == '\0') return;
  std::FILE* fifo = std::fopen(path, "w");
  if (fifo == nullptr) {
    std::fprintf(stderr, "MSGSIM_PERF_CONTROL_FIFO=%s: cannot open it for writing\n", path);
    return;
  }
  std::fprintf(fifo, "%s\n", command);
  std::fclose(fifo);
}

int64_t fixed_iterations() { return static_cast<int64_t>(env_number("MSGSIM_MESSAGE_PATH_ITERATIONS", 0, 1)); }

void configure(benchmark::internal::Benchmark* bench) {
  bench->Unit(benchmark::kMillisecond);
  if (fixed_iterations() > 0) {
    bench->Iterations(fixed_iterations());
  } else {
    bench->MinTime(min_time_s());
  }
}

void run_message_path(benchmark::State& state, bool e2ee) {
  const std::string text =
      scenario_text(e2ee ? R"(
    {"name": "keys", "role": "keys", "count": 1, "region": "us-east"},)" : "",
                    e2ee ? 10 : 0);
  Result<Scenario> loaded = load_scenario_text(text, "message-path.json");
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
  sim.run_until(warmup_ns());  // connected, synced, sending
  const uint64_t delivered_before = delivered;
  const uint64_t acked_before = acked;
  const int64_t virtual_before = sim.now_ns();
  const SimStats stats_before = sim.stats();
  const DiskCounters disk_before = sim.disk().counters();
  // Under `valgrind --tool=callgrind --instr-atstart=no` only the measured slices are counted
  // (bench/README.md); elsewhere these do nothing.
  MSGSIM_CALLGRIND_START();
  perf_control("enable");
  for (auto _ : state) {
    sim.run_until(sim.now_ns() + 10 * kNanosPerMilli);
  }
  perf_control("disable");
  MSGSIM_CALLGRIND_STOP();
  state.SetItemsProcessed(static_cast<int64_t>(delivered - delivered_before));
  state.counters["acked"] = static_cast<double>(acked - acked_before);
  state.counters["virtual_s"] = static_cast<double>(sim.now_ns() - virtual_before) / 1e9;
  // What the simulator did for each delivered message: the costs below the rate.
  const double per_msg = delivered > delivered_before ? 1.0 / static_cast<double>(delivered - delivered_before) : 0.0;
  state.counters["events_per_msg"] = static_cast<double>(sim.stats().events - stats_before.events) * per_msg;
  state.counters["frames_per_msg"] =
      static_cast<double>(sim.stats().frames_delivered - stats_before.frames_delivered) * per_msg;
  state.counters["timers_per_msg"] = static_cast<double>(sim.stats().timers_fired - stats_before.timers_fired) * per_msg;
  // SQLite's write amplification: every node's disk writes (WAL frames, checkpoints) in KiB, and
  // its syncs (one a commit, one a checkpoint), per delivered message.
  const DiskCounters disk_after = sim.disk().counters();
  state.counters["disk_kib_per_msg"] =
      static_cast<double>(disk_after.bytes_written - disk_before.bytes_written) / 1024.0 * per_msg;
  state.counters["syncs_per_msg"] = static_cast<double>(disk_after.syncs - disk_before.syncs) * per_msg;
}

void BM_MessagePath(benchmark::State& state) { run_message_path(state, false); }
BENCHMARK(BM_MessagePath)->Apply(configure);

void BM_MessagePath_E2EE(benchmark::State& state) { run_message_path(state, true); }
BENCHMARK(BM_MessagePath_E2EE)->Apply(configure);

// One message per iteration: the sender seals it (one envelope: one recipient device), the
// recipient opens it; every 10 messages the other side answers, so each switch costs the DH
// ratchet steps a real conversation pays.
void BM_E2eeCryptoPerMessage(benchmark::State& state) {
  reseed_randombytes(5);
  chat::E2eeClient alice("u1", "u1.d1"), bob("u2", "u2.d1");
  const chat::PublishKeys keys = bob.initial_publish(1);
  const chat::DeviceBundle bundle{"u2", "u2.d1", keys.identity, keys.spk_id, keys.spk, keys.spk_sig,
                                  true, keys.opks[0].id, keys.opks[0].key};
  if (!alice.add_bundle(bundle).ok()) {
    state.SkipWithError("X3DH failed");
    return;
  }
  const Bytes plaintext(64, 0x5a);
  const std::vector<std::string> to_bob{"u2.d1"}, to_alice{"u1.d1"};
  uint64_t n = 0;
  for (auto _ : state) {
    const bool from_alice = (n / 10) % 2 == 0;
    chat::E2eeClient& sender = from_alice ? alice : bob;
    chat::E2eeClient& recipient = from_alice ? bob : alice;
    Result<Bytes> body = sender.seal_direct(plaintext, from_alice ? to_bob : to_alice);
    Result<chat::E2eeClient::Opened> opened = recipient.open("dm:u1:u2", sender.device(), *body);
    if (!opened.ok() || opened->plaintext.size() != plaintext.size()) {
      state.SkipWithError("open failed");
      return;
    }
    benchmark::DoNotOptimize(opened->plaintext.data());
    n++;
  }
  state.SetItemsProcessed(static_cast<int64_t>(n));
}
BENCHMARK(BM_E2eeCryptoPerMessage);

}  // namespace
}  // namespace msgsim::sim
