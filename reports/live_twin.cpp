#include "reports/live_twin.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "impl/base/assert.h"
#include "impl/runtime.h"
#include "sim/simulator.h"

namespace msgsim::reports {

using chat::CostRole;
using chat::Work;

LiveTwinCosts live_twin_costs(const chat::CpuCosts& c, std::vector<int64_t> fsync_quantiles_ns, int64_t loopback_rtt_ns) {
  LiveTwinCosts out;
  // One delivered 1:1 message in the live server process: the chat server decodes the Send and
  // routes it; the queue decodes and appends (a commit); the storage decodes, stores (a commit)
  // and fans out; push decodes and pushes; the chat server decodes the push and sends the Deliver;
  // the chat server decodes the receiver's ack and routes it to the storage, which decodes it.
  out.server_ns_per_message = c.of(CostRole::chat, Work::decode) + c.of(CostRole::chat, Work::route) +
                              c.of(CostRole::queue, Work::decode) + c.of(CostRole::queue, Work::append) +
                              c.of(CostRole::storage, Work::decode) + c.of(CostRole::storage, Work::store) +
                              c.of(CostRole::storage, Work::fanout) + c.of(CostRole::push, Work::decode) +
                              c.of(CostRole::push, Work::push) + c.of(CostRole::chat, Work::decode) +
                              c.of(CostRole::chat, Work::push) + c.of(CostRole::chat, Work::decode) +
                              c.of(CostRole::chat, Work::route) + c.of(CostRole::storage, Work::decode);
  out.files_per_batch = 2;
  // The loop's share of a batch: SQLite's sync bookkeeping once per file (the fdatasync itself
  // runs on the worker thread and costs the loop nothing).
  out.server_ns_per_batch = static_cast<int64_t>(static_cast<double>(c.of(CostRole::storage, Work::sync)) * out.files_per_batch);
  out.fsync_quantiles_ns = std::move(fsync_quantiles_ns);
  out.loopback_rtt_ns = loopback_rtt_ns;
  return out;
}

int64_t sample_quantiles(const std::vector<int64_t>& q, double u) {
  if (q.empty()) return 0;
  if (q.size() == 1) return q[0];
  const double position = u * static_cast<double>(q.size() - 1);
  const auto i = std::min(q.size() - 2, static_cast<size_t>(position));
  const double frac = position - static_cast<double>(i);
  return q[i] + static_cast<int64_t>(std::llround(frac * static_cast<double>(q[i + 1] - q[i])));
}

namespace {

// A message on the wire: who sent it (the sender's index) and when (true time).
struct TwinFrame {
  uint32_t sender = 0;
  int64_t sent_ns = 0;
};
constexpr size_t kTwinFrameBytes = 4 + 8;
Bytes encode(const TwinFrame& f) {
  Bytes out(kTwinFrameBytes);
  std::memcpy(out.data(), &f.sender, 4);
  std::memcpy(out.data() + 4, &f.sent_ns, 8);
  return out;
}
TwinFrame decode(ByteView bytes) {
  MSGSIM_ASSERT_EQ(bytes.size(), kTwinFrameBytes);
  TwinFrame f;
  std::memcpy(&f.sender, bytes.data(), 4);
  std::memcpy(&f.sent_ns, bytes.data() + 4, 8);
  return f;
}

// Bounds: far above what a few seconds at a few thousand messages per second hold.
constexpr size_t kHeldMax = 4'000'000;
constexpr size_t kSamplesMax = 4'000'000;

// The server process: one core, one FIFO. A Send costs the per-message CPU; its Deliver is held
// until the batch covering its commits is durable.
class ServerProcessNode final : public Node {
 public:
  struct Shared {
    const LiveTwinCosts* costs = nullptr;
    int64_t charged_ns = 0;
    uint64_t batches = 0, batched_messages = 0;
  };
  explicit ServerProcessNode(Shared& shared) : shared_(shared) {}
  void on_start(Context&) override {}
  void on_accept(Context&, ConnId conn, NodeId) override { loader_conn_ = conn; }
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView bytes) override {
    loader_conn_ = conn;
    charge(ctx, shared_.costs->server_ns_per_message);
    MSGSIM_ASSERT_LT(pending_.size(), kHeldMax);
    pending_.push_back(Bytes(bytes.begin(), bytes.end()));
    if (!syncing_) start_batch(ctx);
  }
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context& ctx, uint64_t) override {
    // The batch is durable: the worker posted its completion, the loop releases the frames.
    charge(ctx, shared_.costs->server_ns_per_batch);
    shared_.batches++;
    shared_.batched_messages += in_flight_.size();
    for (Bytes& frame : in_flight_) ctx.send(loader_conn_, std::move(frame));
    in_flight_.clear();
    syncing_ = false;
    if (!pending_.empty()) start_batch(ctx);
  }

 private:
  void start_batch(Context& ctx) {
    in_flight_.swap(pending_);
    syncing_ = true;
    int64_t sync_ns = 0;
    // A whole number of files; a fraction is a chance of one more (drawn only when there is
    // one, so a whole measured value draws as the assumed 2 always did).
    const double files = std::max(0.0, shared_.costs->files_per_batch);
    auto whole = static_cast<uint32_t>(files);
    if (files > whole && ctx.rng().uniform01() < files - whole) whole++;
    for (uint32_t f = 0; f < whole; ++f)
      sync_ns += sample_quantiles(shared_.costs->fsync_quantiles_ns, ctx.rng().uniform01());
    ctx.set_timer(std::max<int64_t>(1, sync_ns), 0);
  }
  void charge(Context& ctx, int64_t cost_ns) {
    ctx.charge_cpu(cost_ns);
    shared_.charged_ns += cost_ns;
  }
  Shared& shared_;
  ConnId loader_conn_ = kNoConn;
  bool syncing_ = false;
  std::vector<Bytes> pending_, in_flight_;
};

// The loader processes (senders and receivers): every millisecond, the sends owed by then.
class LoaderNode final : public Node {
 public:
  struct Shared {
    NodeId server = kNoNode;
    double rate_per_s = 0;
    uint32_t pairs = 1;
    int64_t start_ns = 0, measure_from_ns = 0, stop_ns = 0;
    uint64_t sent = 0, measured_delivered = 0;
    std::vector<int64_t> samples;
  };
  explicit LoaderNode(Shared& shared) : shared_(shared) {}
  void on_start(Context& ctx) override {
    conn_ = ctx.connect(shared_.server);
    ctx.set_timer(kTickNs, 0);
  }
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId, ByteView bytes) override {
    const TwinFrame f = decode(bytes);
    if (f.sent_ns < shared_.measure_from_ns || f.sent_ns >= shared_.stop_ns) return;
    shared_.measured_delivered++;
    if (shared_.samples.size() < kSamplesMax) shared_.samples.push_back(ctx.now_ns() - f.sent_ns);
  }
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context& ctx, uint64_t) override {
    const int64_t now = ctx.now_ns();
    if (now >= shared_.stop_ns) return;
    const auto owed = static_cast<uint64_t>(static_cast<double>(now - shared_.start_ns) * shared_.rate_per_s / 1e9);
    while (shared_.sent < owed) {
      ctx.send(conn_, encode(TwinFrame{static_cast<uint32_t>(shared_.sent % shared_.pairs), now}));
      shared_.sent++;
    }
    ctx.set_timer(kTickNs, 0);
  }

 private:
  static constexpr int64_t kTickNs = kNanosPerMilli;
  Shared& shared_;
  ConnId conn_ = kNoConn;
};

double percentile_ms(std::vector<int64_t>& samples, double q) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const size_t index = std::min(samples.size() - 1, static_cast<size_t>(q * static_cast<double>(samples.size())));
  return static_cast<double>(samples[index]) / 1e6;
}

}  // namespace

LiveTwinResult run_live_twin(const LiveTwinCosts& costs, const LiveTwinOptions& options) {
  MSGSIM_ASSERT_GT(options.offered_per_s, 0.0);
  sim::NetworkConfig net;
  net.regions = {"loopback"};
  net.base_ns = {{costs.loopback_rtt_ns / 2}};
  net.jitter_mean_ns = {{0}};
  net.connection_timeout_ns = 10 * kNanosPerSecond;
  sim::Simulator sim(options.seed, net);
  ServerProcessNode::Shared server_shared;
  server_shared.costs = &costs;
  LoaderNode::Shared loader;
  loader.rate_per_s = options.offered_per_s;
  loader.pairs = std::max<uint32_t>(1, options.pairs);
  loader.start_ns = 0;
  loader.measure_from_ns = options.warmup_ns;
  loader.stop_ns = options.warmup_ns + options.measure_ns;
  const NodeId server = sim.add_node("server-process", 0, [&] { return std::make_unique<ServerProcessNode>(server_shared); });
  sim.set_cores(server, 1);
  loader.server = server;
  const NodeId client = sim.add_node("loaders", 0, [&] { return std::make_unique<LoaderNode>(loader); });
  sim.start(server);
  sim.start(client);
  sim.run_until(loader.stop_ns + options.drain_ns);
  LiveTwinResult result;
  result.offered_per_s = options.offered_per_s;
  result.delivered_per_s = static_cast<double>(loader.measured_delivered) / (static_cast<double>(options.measure_ns) / 1e9);
  result.p50_ms = percentile_ms(loader.samples, 0.50);
  result.p99_ms = percentile_ms(loader.samples, 0.99);
  result.server_utilisation =
      static_cast<double>(server_shared.charged_ns) / static_cast<double>(loader.stop_ns + options.drain_ns);
  result.batches = server_shared.batches;
  result.mean_batch_messages =
      server_shared.batches == 0 ? 0 : static_cast<double>(server_shared.batched_messages) / static_cast<double>(server_shared.batches);
  result.digest_hex = sim.digest_hex();
  return result;
}

}  // namespace msgsim::reports
