// The simulator kernel's speed: the event queue with 100,000 pending events (BM_EventLoop,
// against a std::priority_queue baseline) and frames delivered between 1,000 nodes
// (BM_NetworkFrames: a ring of connections, 20 frames in flight on each, half the links
// crossing regions). README's performance table quotes these.
#include <benchmark/benchmark.h>

#include <queue>

#include "impl/base/prng.h"
#include "sim/event_queue.h"
#include "sim/simulator.h"

namespace msgsim::sim {
namespace {

constexpr size_t kPending = 100'000;

// Delays drawn once, so the loop measures the queue and not the generator.
std::vector<int64_t> delays() {
  Prng rng(1);
  std::vector<int64_t> out(1 << 16);
  for (auto& d : out) d = static_cast<int64_t>(rng.below(10'000'000));  // up to 10 ms
  return out;
}

// Steady state: pop the earliest event, schedule one more, with kPending always pending.
void BM_EventLoop(benchmark::State& state) {
  const auto delay = delays();
  EventQueue queue;
  queue.reserve(kPending + 1);
  for (size_t i = 0; i < kPending; ++i) queue.push(delay[i % delay.size()], EventPayload{EventKind::timer, 0, 0, 0, i});
  size_t i = 0;
  EventPayload event;
  for (auto _ : state) {
    const int64_t now = queue.pop(event);
    queue.push(now + delay[i++ & (delay.size() - 1)], event);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["bytes_per_pending_event"] =
      static_cast<double>(queue.bytes_reserved()) / static_cast<double>(queue.size());
}
BENCHMARK(BM_EventLoop);

// The baseline the issue names: std::priority_queue of (time, sequence, payload).
void BM_EventLoopStdPriorityQueue(benchmark::State& state) {
  const auto delay = delays();
  struct Entry {
    int64_t time;
    uint64_t seq;
    EventPayload payload;
    bool operator>(const Entry& o) const { return time > o.time || (time == o.time && seq > o.seq); }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
  uint64_t seq = 0;
  for (size_t i = 0; i < kPending; ++i) queue.push(Entry{delay[i % delay.size()], seq++, {}});
  size_t i = 0;
  for (auto _ : state) {
    Entry top = queue.top();
    queue.pop();
    top.time += delay[i++ & (delay.size() - 1)];
    top.seq = seq++;
    queue.push(top);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_EventLoopStdPriorityQueue);

// A node that forwards every frame it receives to the next node of the ring.
class RingNode final : public Node {
 public:
  RingNode(NodeId next, int frames_to_start) : next_(next), frames_to_start_(frames_to_start) {}
  void on_start(Context& ctx) override {
    out_ = ctx.connect(next_);
    for (int i = 0; i < frames_to_start_; ++i) ctx.send(out_, Bytes(16, static_cast<uint8_t>(i)));
  }
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId, ByteView frame) override { ctx.send(out_, Bytes(frame.begin(), frame.end())); }
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context&, uint64_t) override {}

 private:
  NodeId next_;
  int frames_to_start_;
  ConnId out_ = kNoConn;
};

void BM_NetworkFrames(benchmark::State& state) {
  constexpr NodeId kNodes = 1000;
  NetworkConfig net;
  net.regions = {"a", "b"};
  net.base_ns = {{400'000, 50'000'000}, {50'000'000, 400'000}};
  net.jitter_mean_ns = {{100'000, 1'000'000}, {1'000'000, 100'000}};
  Simulator sim(1, net);
  for (NodeId n = 0; n < kNodes; ++n) {
    sim.add_node("n" + std::to_string(n), n % 2, [n] { return std::make_unique<RingNode>((n + 1) % kNodes, 20); });
  }
  for (NodeId n = 0; n < kNodes; ++n) sim.start(n);
  for (int i = 0; i < 100'000; ++i) sim.step();  // past the handshakes
  const uint64_t delivered_before = sim.stats().frames_delivered;
  for (auto _ : state) sim.step();
  state.SetItemsProcessed(static_cast<int64_t>(sim.stats().frames_delivered - delivered_before));
  state.counters["network_bytes_per_node"] = static_cast<double>(sim.connection_bytes()) / kNodes;
}
BENCHMARK(BM_NetworkFrames);

}  // namespace
}  // namespace msgsim::sim
