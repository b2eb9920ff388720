#include "reports/slices.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <unordered_map>

#include "impl/base/assert.h"
#include "impl/base/hash.h"
#include "impl/runtime.h"
#include "sim/disk.h"
#include "sim/simulator.h"

namespace msgsim::reports {

namespace {

using sim::NetworkConfig;
using sim::Simulator;

// The slices' frames: type, client index, a sequence number, and the send time (true time, so
// the population node can measure latency on arrival).
enum FrameType : uint8_t { kRequest = 1, kHeartbeat, kSend, kPush, kHello, kReply, kWelcome, kDeliver, kTypes };

struct SliceFrame {
  uint8_t type = 0;
  uint32_t client = 0;
  int64_t sent_ns = 0;
};
constexpr size_t kFrameBytes = 1 + 4 + 8;

Bytes encode(const SliceFrame& f) {
  Bytes out(kFrameBytes);
  out[0] = f.type;
  std::memcpy(out.data() + 1, &f.client, 4);
  std::memcpy(out.data() + 5, &f.sent_ns, 8);
  return out;
}
SliceFrame decode(ByteView bytes) {
  MSGSIM_ASSERT_EQ(bytes.size(), kFrameBytes);
  SliceFrame f;
  f.type = bytes[0];
  std::memcpy(&f.client, bytes.data() + 1, 4);
  std::memcpy(&f.sent_ns, bytes.data() + 5, 8);
  return f;
}

NetworkConfig one_region(int64_t one_way_ns) {
  NetworkConfig net;
  net.regions = {"r"};
  net.base_ns = {{one_way_ns}};
  net.jitter_mean_ns = {{0}};
  net.connection_timeout_ns = 10 * kNanosPerSecond;
  return net;
}

double percentile_ms(std::vector<int64_t>& samples, double q) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const size_t index = std::min(samples.size() - 1, static_cast<size_t>(q * static_cast<double>(samples.size())));
  return static_cast<double>(samples[index]) / 1e6;
}

// Bounded sample sets: beyond this, later samples are dropped (the slices stay far below it).
constexpr size_t kSamplesMax = 2'000'000;

// CPU accounting per time bucket, for utilisation plots.
struct CpuBuckets {
  int64_t bucket_ns = 100 * kNanosPerMilli;
  std::vector<int64_t> charged_ns;
  void add(int64_t now_ns, int64_t cost_ns) {
    const auto b = static_cast<size_t>(now_ns / bucket_ns);
    if (b >= charged_ns.size()) charged_ns.resize(b + 1, 0);
    charged_ns[b] += cost_ns;
  }
};

// A server of some role: each frame costs cost_ns[type]; requests, heartbeats and sends are
// answered (after the work, as the simulator sends a handler's frames once its CPU is spent);
// a push is forwarded to the client's connection; a hello is welcomed.
class StationNode final : public Node {
 public:
  struct Shared {
    std::array<int64_t, kTypes> cost_ns{};
    uint32_t cores = 1;
    double baseline_utilisation = 0;  // charged in 10 ms slices on every core
    int64_t charged_ns = 0;
    CpuBuckets buckets;
  };
  explicit StationNode(Shared& shared) : shared_(shared) {}

  void on_start(Context& ctx) override {
    if (shared_.baseline_utilisation > 0)
      for (uint32_t c = 0; c < shared_.cores; ++c) ctx.set_timer(kBaselineSliceNs, 0);
  }
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView bytes) override {
    SliceFrame f = decode(bytes);
    MSGSIM_ASSERT(f.type < kTypes);
    charge(ctx, shared_.cost_ns[f.type]);
    switch (f.type) {
      case kHello:
        clients_[f.client] = conn;
        f.type = kWelcome;
        ctx.send(conn, encode(f));
        break;
      case kPush: {
        const auto it = clients_.find(f.client);
        if (it != clients_.end()) {
          f.type = kDeliver;
          ctx.send(it->second, encode(f));
        }
        break;
      }
      default:
        f.type = kReply;
        ctx.send(conn, encode(f));
    }
  }
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context& ctx, uint64_t) override {
    charge(ctx, static_cast<int64_t>(shared_.baseline_utilisation * static_cast<double>(kBaselineSliceNs)));
    ctx.set_timer(kBaselineSliceNs, 0);
  }

 private:
  static constexpr int64_t kBaselineSliceNs = 10 * kNanosPerMilli;
  void charge(Context& ctx, int64_t cost_ns) {
    ctx.charge_cpu(cost_ns);
    shared_.charged_ns += cost_ns;
    shared_.buckets.add(ctx.now_ns(), cost_ns);
  }
  Shared& shared_;
  std::unordered_map<uint32_t, ConnId> clients_;  // looked up only, never iterated
};

// Offered load: a Poisson stream of `type` frames at `rate_per_s` over `conns` connections to
// one server; latency of each answer into `samples` once `measure_from_ns` has passed.
class LoadNode final : public Node {
 public:
  struct Shared {
    NodeId server = kNoNode;
    uint32_t conns = 16;
    uint8_t type = kRequest;
    double rate_per_s = 0;
    uint32_t requests_max = 0;  // stop after this many (0: no limit)
    int64_t measure_from_ns = 0;
    std::vector<int64_t> samples;
    uint32_t sent = 0;
  };
  explicit LoadNode(Shared& shared) : shared_(shared) {}
  void on_start(Context& ctx) override {
    for (uint32_t i = 0; i < shared_.conns; ++i) conns_.push_back(ctx.connect(shared_.server));
    schedule(ctx);
  }
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId, ByteView bytes) override {
    const SliceFrame f = decode(bytes);
    if (f.sent_ns >= shared_.measure_from_ns && shared_.samples.size() < kSamplesMax)
      shared_.samples.push_back(ctx.now_ns() - f.sent_ns);
  }
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context& ctx, uint64_t) override {
    if (shared_.requests_max != 0 && shared_.sent >= shared_.requests_max) return;
    SliceFrame f{shared_.type, shared_.sent, ctx.now_ns()};
    ctx.send(conns_[shared_.sent % conns_.size()], encode(f));
    shared_.sent++;
    schedule(ctx);
  }

 private:
  void schedule(Context& ctx) {
    if (shared_.rate_per_s <= 0) return;
    const double gap_ns = ctx.rng().exponential(1e9 / shared_.rate_per_s);
    ctx.set_timer(std::max<int64_t>(1, static_cast<int64_t>(gap_ns)), 0);
  }
  Shared& shared_;
  std::vector<ConnId> conns_;
};

}  // namespace

RoleCurve role_curve(const std::string& role, int64_t cost_ns, uint32_t cores, const CurveOptions& options) {
  MSGSIM_ASSERT_GT(cost_ns, 0);
  RoleCurve curve;
  curve.role = role;
  curve.cost_ns = cost_ns;
  curve.cores = cores;
  curve.capacity_per_s = 1e9 * cores / static_cast<double>(cost_ns);
  Digest digest;
  for (double u : options.utilisations) {
    Simulator sim(options.seed, one_region(options.one_way_ns));
    StationNode::Shared station;
    station.cost_ns.fill(cost_ns);
    station.cores = cores;
    LoadNode::Shared load;
    load.rate_per_s = u * curve.capacity_per_s;
    load.requests_max = options.requests_per_point;
    // Enough connections that the clients never throttle the offered load.
    load.conns = std::max<uint32_t>(4, cores * 2);
    const NodeId server = sim.add_node("server", 0, [&] { return std::make_unique<StationNode>(station); });
    sim.set_cores(server, cores);
    load.server = server;
    const NodeId client = sim.add_node("load", 0, [&] { return std::make_unique<LoadNode>(load); });
    sim.start(server);
    sim.start(client);
    while (sim.step()) {
    }
    LatencyPoint point;
    point.offered_per_s = load.rate_per_s;
    point.utilisation = u;
    point.samples = load.samples.size();
    point.p50_ms = percentile_ms(load.samples, 0.50);
    point.p99_ms = percentile_ms(load.samples, 0.99);
    curve.points.push_back(point);
    digest.fold(sim.digest());
  }
  const double light = curve.points.empty() ? 0 : curve.points.front().p99_ms;
  for (const LatencyPoint& p : curve.points) {
    if (p.p99_ms > 3 * light) break;
    curve.knee_utilisation = p.utilisation;
  }
  curve.digest = digest.value();
  return curve;
}

namespace {

// The clients of one chat server: a connection each, heartbeating round-robin, sending at a
// Poisson rate; they connect gradually over the first `ramp_ns`.
class PopulationNode final : public Node {
 public:
  struct Shared {
    NodeId server = kNoNode;
    uint32_t clients = 0;
    int64_t ramp_ns = 4 * kNanosPerSecond;
    double heartbeat_interval_s = 5;
    double sends_per_s = 0;
    int64_t measure_from_ns = 0;
    uint64_t welcomed = 0;
    std::vector<int64_t> heartbeat, send, delivery;
  };
  explicit PopulationNode(Shared& shared) : shared_(shared) {}
  enum Tag : uint64_t { kConnectTick = 1, kHeartbeatTick, kSendTick };
  static constexpr uint32_t kConnectsPerTick = 50;

  void on_start(Context& ctx) override {
    conns_.reserve(shared_.clients);
    const int64_t ticks = std::max<int64_t>(1, shared_.clients / kConnectsPerTick);
    connect_gap_ns_ = std::max<int64_t>(1, shared_.ramp_ns / ticks);
    ctx.set_timer(0, kConnectTick);
    if (shared_.sends_per_s > 0) ctx.set_timer(shared_.ramp_ns, kSendTick);
    ctx.set_timer(shared_.ramp_ns, kHeartbeatTick);
  }
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId, ByteView bytes) override {
    const SliceFrame f = decode(bytes);
    const int64_t latency = ctx.now_ns() - f.sent_ns;
    const bool measured = f.sent_ns >= shared_.measure_from_ns;
    std::vector<int64_t>* into = nullptr;
    if (f.type == kWelcome) shared_.welcomed++;
    else if (f.type == kDeliver) into = &shared_.delivery;
    else if (f.type == kReply) into = kind_of_[f.client] == kHeartbeat ? &shared_.heartbeat : &shared_.send;
    if (into != nullptr && measured && into->size() < kSamplesMax) into->push_back(latency);
  }
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context& ctx, uint64_t tag) override {
    if (tag == kConnectTick) {
      for (uint32_t i = 0; i < kConnectsPerTick && conns_.size() < shared_.clients; ++i) {
        const auto client = static_cast<uint32_t>(conns_.size());
        conns_.push_back(ctx.connect(shared_.server));
        ctx.send(conns_.back(), encode(SliceFrame{kHello, client, ctx.now_ns()}));
        kind_of_.push_back(kHeartbeat);
      }
      if (conns_.size() < shared_.clients) ctx.set_timer(connect_gap_ns_, kConnectTick);
    } else if (tag == kHeartbeatTick) {
      // One client's heartbeat per tick, round-robin: each client every heartbeat_interval_s.
      if (!conns_.empty()) {
        const uint32_t client = next_heartbeat_++ % static_cast<uint32_t>(conns_.size());
        send(ctx, client, kHeartbeat);
      }
      const double gap_ns = shared_.heartbeat_interval_s * 1e9 / std::max<uint32_t>(1, shared_.clients);
      ctx.set_timer(std::max<int64_t>(1, static_cast<int64_t>(gap_ns)), kHeartbeatTick);
    } else if (tag == kSendTick) {
      if (!conns_.empty()) send(ctx, static_cast<uint32_t>(ctx.rng().below(conns_.size())), kSend);
      ctx.set_timer(std::max<int64_t>(1, static_cast<int64_t>(ctx.rng().exponential(1e9 / shared_.sends_per_s))), kSendTick);
    }
  }

 private:
  void send(Context& ctx, uint32_t client, uint8_t type) {
    // A client has one request outstanding of each kind at most in practice; the reply is
    // classified by the kind of the client's last request.
    kind_of_[client] = type;
    ctx.send(conns_[client], encode(SliceFrame{type, client, ctx.now_ns()}));
  }
  Shared& shared_;
  std::vector<ConnId> conns_;
  std::vector<uint8_t> kind_of_;
  uint32_t next_heartbeat_ = 0;
  int64_t connect_gap_ns_ = 1;
};

// Deliveries arriving at the chat server from storage, for random clients, at a Poisson rate.
class FeederNode final : public Node {
 public:
  struct Shared {
    NodeId server = kNoNode;
    uint32_t clients = 0;
    double rate_per_s = 0;
    int64_t start_ns = 0;
  };
  explicit FeederNode(Shared& shared) : shared_(shared) {}
  void on_start(Context& ctx) override {
    conn_ = ctx.connect(shared_.server);
    if (shared_.rate_per_s > 0) ctx.set_timer(shared_.start_ns, 0);
  }
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context&, ConnId, ByteView) override {}
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context& ctx, uint64_t) override {
    const auto client = static_cast<uint32_t>(ctx.rng().below(shared_.clients));
    ctx.send(conn_, encode(SliceFrame{kPush, client, ctx.now_ns()}));
    ctx.set_timer(std::max<int64_t>(1, static_cast<int64_t>(ctx.rng().exponential(1e9 / shared_.rate_per_s))), 0);
  }

 private:
  Shared& shared_;
  ConnId conn_ = kNoConn;
};

}  // namespace

ChatSliceResult chat_server_peak(const ChatSliceOptions& o) {
  Simulator sim(o.seed, one_region(o.one_way_ns));
  StationNode::Shared station;
  station.cores = o.cores;
  station.cost_ns[kHeartbeat] = o.heartbeat_cost_ns;
  station.cost_ns[kSend] = o.send_cost_ns;
  station.cost_ns[kPush] = o.push_cost_ns;
  station.cost_ns[kHello] = o.connect_cost_ns;
  const NodeId server = sim.add_node("chat", 0, [&] { return std::make_unique<StationNode>(station); });
  sim.set_cores(server, o.cores);
  PopulationNode::Shared population;
  population.server = server;
  population.clients = o.connections;
  population.heartbeat_interval_s = o.heartbeat_interval_s;
  population.sends_per_s = o.sends_per_s;
  population.measure_from_ns = o.warmup_ns;
  const NodeId clients = sim.add_node("clients", 0, [&] { return std::make_unique<PopulationNode>(population); });
  FeederNode::Shared feeder;
  feeder.server = server;
  feeder.clients = o.connections;
  feeder.rate_per_s = o.deliveries_per_s;
  feeder.start_ns = population.ramp_ns;
  const NodeId storage = sim.add_node("storage", 0, [&] { return std::make_unique<FeederNode>(feeder); });
  sim.start(server);
  sim.start(clients);
  sim.start(storage);
  sim.run_until(o.warmup_ns);
  const int64_t charged_before = station.charged_ns;
  sim.run_until(o.warmup_ns + o.measure_ns);
  ChatSliceResult r;
  r.connected = population.welcomed;
  r.utilisation = static_cast<double>(station.charged_ns - charged_before) / (static_cast<double>(o.measure_ns) * o.cores);
  r.heartbeat_p50_ms = percentile_ms(population.heartbeat, 0.5);
  r.heartbeat_p99_ms = percentile_ms(population.heartbeat, 0.99);
  r.send_p50_ms = percentile_ms(population.send, 0.5);
  r.send_p99_ms = percentile_ms(population.send, 0.99);
  r.delivery_p50_ms = percentile_ms(population.delivery, 0.5);
  r.delivery_p99_ms = percentile_ms(population.delivery, 0.99);
  r.events = sim.stats().events;
  r.digest_hex = sim.digest_hex();
  return r;
}

namespace {

// The crashed server's clients: each reconnects with exponential backoff through a load
// balancer that routes by user hash, to the dead server until its health check notices, then
// over the survivors.
class StormClientsNode final : public Node {
 public:
  struct Shared {
    StormOptions options;
    NodeId crashed = kNoNode;
    std::vector<NodeId> survivors;
    int64_t detected_at_ns = 0;  // the load balancer's health check marks the server down
    std::vector<int64_t> back_at_ns;  // per client, when it was welcomed after the crash
    std::vector<uint32_t> connects_per_bucket;
    uint64_t refused = 0, timed_out = 0, attempts = 0;
  };
  explicit StormClientsNode(Shared& shared) : shared_(shared) {}

  void on_start(Context& ctx) override {
    const uint32_t n = shared_.options.clients;
    clients_.resize(n);
    shared_.back_at_ns.assign(n, -1);
    for (uint32_t i = 0; i < n; ++i) open(ctx, i, shared_.crashed);
  }
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView bytes) override {
    const SliceFrame f = decode(bytes);
    if (f.type != kWelcome) return;
    Client& c = clients_[f.client];
    if (c.conn != conn) return;
    c.online = true;
    c.attempt = 0;
    if (ctx.now_ns() >= shared_.options.crash_at_ns) shared_.back_at_ns[f.client] = ctx.now_ns();
  }
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override {
    const auto it = by_conn_.find(conn);
    if (it == by_conn_.end()) return;
    const uint32_t i = it->second;
    by_conn_.erase(it);
    Client& c = clients_[i];
    if (c.conn != conn) return;
    if (reason == DisconnectReason::refused) shared_.refused++;
    c.conn = kNoConn;
    c.online = false;
    backoff(ctx, i);
  }
  void on_timer(Context& ctx, uint64_t tag) override {
    const auto i = static_cast<uint32_t>(tag >> 1);
    Client& c = clients_[i];
    if ((tag & 1) == 0) {  // backoff over: reconnect through the load balancer
      if (c.conn != kNoConn) return;
      shared_.attempts++;
      const int64_t now = ctx.now_ns();
      const auto bucket = static_cast<size_t>(std::max<int64_t>(0, now - shared_.options.crash_at_ns) / shared_.options.bucket_ns);
      if (bucket >= shared_.connects_per_bucket.size()) shared_.connects_per_bucket.resize(bucket + 1, 0);
      shared_.connects_per_bucket[bucket]++;
      const NodeId target = now < shared_.detected_at_ns
                                ? shared_.crashed
                                : shared_.survivors[hash_string("u" + std::to_string(i)) % shared_.survivors.size()];
      open(ctx, i, target);
    } else if (!c.online && c.conn != kNoConn && c.attempt_serial == hello_serial(tag)) {
      // The welcome did not come in time: give up on this connection and back off.
      shared_.timed_out++;
      by_conn_.erase(c.conn);
      ctx.close(c.conn);
      c.conn = kNoConn;
      backoff(ctx, i);
    }
  }

 private:
  struct Client {
    ConnId conn = kNoConn;
    uint32_t attempt = 0;
    uint32_t attempt_serial = 0;
    bool online = false;
  };
  static uint32_t hello_serial(uint64_t tag) { return static_cast<uint32_t>(tag >> 33); }

  void open(Context& ctx, uint32_t i, NodeId server) {
    Client& c = clients_[i];
    c.conn = ctx.connect(server);
    by_conn_[c.conn] = i;
    c.attempt_serial++;
    ctx.send(c.conn, encode(SliceFrame{kHello, i, ctx.now_ns()}));
    // Tag: bit 0 = hello timeout, bits 1..32 = client, bits 33.. = attempt serial.
    if (ctx.now_ns() > 0) {
      ctx.set_timer(shared_.options.hello_timeout_ns,
                    (static_cast<uint64_t>(c.attempt_serial) << 33) | (static_cast<uint64_t>(i) << 1) | 1);
    }
  }
  void backoff(Context& ctx, uint32_t i) {
    Client& c = clients_[i];
    const StormOptions& o = shared_.options;
    int64_t delay = o.backoff_initial_ns;
    for (uint32_t k = 0; k < c.attempt && delay < o.backoff_max_ns; ++k) delay *= 2;
    delay = std::min(delay, o.backoff_max_ns);
    if (o.jitter == Jitter::full) delay = static_cast<int64_t>(ctx.rng().below(static_cast<uint64_t>(delay))) + 1;
    c.attempt++;
    ctx.set_timer(delay, static_cast<uint64_t>(i) << 1);
  }
  Shared& shared_;
  std::vector<Client> clients_;
  std::unordered_map<ConnId, uint32_t> by_conn_;  // looked up only, never iterated
};

}  // namespace

StormResult reconnect_storm(const StormOptions& o) {
  MSGSIM_ASSERT_GE(o.survivors, 1u);
  Simulator sim(o.seed, one_region(o.one_way_ns));
  std::vector<std::unique_ptr<StationNode::Shared>> stations;
  std::vector<NodeId> servers;
  for (uint32_t s = 0; s <= o.survivors; ++s) {
    auto shared = std::make_unique<StationNode::Shared>();
    shared->cores = o.cores;
    shared->cost_ns[kHello] = o.connect_cost_ns;
    shared->buckets.bucket_ns = o.bucket_ns;
    // Only the survivors carry their own load; the crashed server's clients connect at time 0
    // before the measurement starts.
    shared->baseline_utilisation = s == 0 ? 0 : o.baseline_utilisation;
    StationNode::Shared* raw = shared.get();
    const NodeId id = sim.add_node("chat" + std::to_string(s), 0, [raw] { return std::make_unique<StationNode>(*raw); });
    sim.set_cores(id, o.cores);
    servers.push_back(id);
    stations.push_back(std::move(shared));
  }
  StormClientsNode::Shared clients;
  clients.options = o;
  clients.crashed = servers[0];
  clients.survivors.assign(servers.begin() + 1, servers.end());
  clients.detected_at_ns = o.crash_at_ns + o.health_check_interval_ns;
  const NodeId population = sim.add_node("clients", 0, [&] { return std::make_unique<StormClientsNode>(clients); });
  for (NodeId id : servers) sim.start(id);
  sim.start(population);
  sim.at(o.crash_at_ns, [&] { sim.crash(servers[0], sim::CrashDisk::keep_unsynced); });

  const int64_t step_ns = 500 * kNanosPerMilli;
  int64_t t = 0;
  auto all_back = [&] {
    return std::all_of(clients.back_at_ns.begin(), clients.back_at_ns.end(), [](int64_t b) { return b >= 0; });
  };
  while (t < o.crash_at_ns + o.horizon_ns) {
    t += step_ns;
    sim.run_until(t);
    if (t > o.crash_at_ns + step_ns && all_back()) break;
  }

  StormResult r;
  r.events = sim.stats().events;
  r.digest_hex = sim.digest_hex();
  r.refused = clients.refused;
  r.timed_out = clients.timed_out;
  r.attempts = clients.attempts;
  std::vector<int64_t> back;
  for (int64_t b : clients.back_at_ns)
    if (b >= 0) back.push_back(b - o.crash_at_ns);
  std::sort(back.begin(), back.end());
  if (back.size() == o.clients) r.all_back_s = static_cast<double>(back.back()) / 1e9;
  if (back.size() * 2 >= o.clients && !back.empty()) r.half_back_s = static_cast<double>(back[(o.clients - 1) / 2]) / 1e9;
  const auto buckets = static_cast<size_t>((t - o.crash_at_ns) / o.bucket_ns);
  size_t cursor = 0;
  for (size_t b = 0; b < buckets; ++b) {
    const int64_t end = static_cast<int64_t>(b + 1) * o.bucket_ns;
    while (cursor < back.size() && back[cursor] < end) cursor++;
    r.time_s.push_back(static_cast<double>(b) * static_cast<double>(o.bucket_ns) / 1e9);
    r.online.push_back(static_cast<double>(cursor));
    double busiest = 0;
    const size_t global = static_cast<size_t>(o.crash_at_ns / o.bucket_ns) + b;
    for (size_t s = 1; s < stations.size(); ++s) {
      const auto& charged = stations[s]->buckets.charged_ns;
      const double used = global < charged.size() ? static_cast<double>(charged[global]) : 0.0;
      busiest = std::max(busiest, used / (static_cast<double>(o.bucket_ns) * o.cores));
    }
    r.survivor_utilisation.push_back(busiest);
    r.peak_survivor_utilisation = std::max(r.peak_survivor_utilisation, busiest);
    const double connects = b < clients.connects_per_bucket.size() ? clients.connects_per_bucket[b] : 0;
    r.peak_connects_per_s = std::max(r.peak_connects_per_s, connects * 1e9 / static_cast<double>(o.bucket_ns));
  }
  r.label = std::string(o.jitter == Jitter::full ? "full jitter" : "no jitter") + ", backoff from " +
            std::to_string(static_cast<double>(o.backoff_initial_ns) / 1e9).substr(0, 4) + " s";
  return r;
}

}  // namespace msgsim::reports
