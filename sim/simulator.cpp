#include "sim/simulator.h"

#include <sqlite3.h>

#include <algorithm>
#include <utility>

#include "impl/base/assert.h"
#include "sim/disk.h"
#include "sim/randombytes.h"

namespace msgsim::sim {

namespace {
constexpr int64_t kSlowEventCostNs = 100 * kNanosPerMicro;
constexpr size_t kFrameBytesMax = 16 * 1024 * 1024;
constexpr size_t kIdleFrameCapacityMax = 8;  // frames kept allocated on an idle direction

uint64_t kind_code(const char* kind) { return hash_string(kind); }
}  // namespace

namespace {

// Events waiting for a busy node, in arrival order: a vector and a read position rather than a
// std::deque, because libstdc++'s deque allocates its map and a first 512-byte block even while
// empty, once per node, and a full-scale run holds 150,000 device nodes that never wait (the
// run queue is for server nodes under the cost model). The consumed prefix is dropped once it
// is half of the vector, so a queue that never drains stays within twice its content.
class WaitingEvents {
 public:
  bool empty() const { return head_ == events_.size(); }
  size_t size() const { return events_.size() - head_; }
  void push_back(const EventPayload& event) { events_.push_back(event); }
  EventPayload pop_front() {
    const EventPayload event = events_[head_++];
    if (head_ == events_.size()) {
      events_.clear();
      head_ = 0;
    } else if (head_ >= 64 && head_ * 2 >= events_.size()) {
      events_.erase(events_.begin(), events_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
    return event;
  }

 private:
  std::vector<EventPayload> events_;
  size_t head_ = 0;
};

}  // namespace

struct Simulator::NodeSlot {
  std::string name;
  uint32_t region = 0;
  NodeFactory factory;
  std::unique_ptr<Node> node;
  std::unique_ptr<SimContext> ctx;
  NodeState state = NodeState::down;
  uint32_t incarnation = 0;
  std::vector<uint32_t> conns;  // connection slots this node is attached to
  Prng rng;                     // Context::rng()
  Prng crypto_rng;              // libsodium's randombytes while this node runs
  Prng disk_rng;                // SQLite's xRandomness, and torn-write choices
  int64_t clock_offset_ns = 0;  // local = true + offset + (true - drift_since) * drift / 1e6
  int64_t drift_since_ns = 0;
  int32_t drift_ppm = 0;
  int64_t extra_latency_ns = 0;
  uint32_t slow_factor = 1;
  // The cost model's virtual CPU. busy_until_ns is when the node can next start a handler:
  // with one core, when that core frees; with more, the earliest of core_free_ns (which is
  // empty for one core). Events for the node wait until then, in arrival order.
  int64_t busy_until_ns = 0;
  std::vector<int64_t> core_free_ns;
  int handler_core = -1;  // the core the running handler charges, once it charged
  // Under the cost model (set_cores, or any non-zero charge) events that find the node busy
  // wait here in arrival order, and one node_resume event runs them as cores free; without
  // it they are re-queued at busy_until_ns as before (so zero-cost runs keep their digests).
  bool run_queue = false;
  bool resume_scheduled = false;
  bool resuming = false;
  WaitingEvents waiting;
  sqlite3* db = nullptr;
};

// The simulator's side of the runtime contract, one per node.
class SimContext final : public Context {
 public:
  SimContext(Simulator& sim, NodeId id) : sim_(sim), id_(id) {}

  int64_t now_ns() const override { return sim_.local_time(*sim_.nodes_[id_]); }
  NodeId self() const override { return id_; }
  std::string_view region() const override {
    return sim_.network_.regions[sim_.nodes_[id_]->region];
  }

  ConnId connect(NodeId peer) override;
  void send(ConnId conn, Bytes frame) override;
  void close(ConnId conn) override;
  TimerId set_timer(int64_t delay_ns, uint64_t tag) override;
  void cancel_timer(TimerId timer) override;
  Prng& rng() override { return sim_.nodes_[id_]->rng; }
  sqlite3* db() override;
  void emit(const history::Event& event) override {
    if (sim_.history_sink_) sim_.history_sink_(id_, event);
  }
  void log(LogLevel level, std::string_view message) override {
    static constexpr const char* names[] = {"debug", "info", "warn", "error"};
    if (sim_.trace_sink_) {
      sim_.trace_sink_(TraceRecord{sim_.now_ns_, id_, names[static_cast<int>(level)], 0, message});
    }
  }
  void charge_cpu(int64_t cost_ns) override {
    MSGSIM_ASSERT_GE(cost_ns, 0);
    if (cost_ns == 0) return;
    sim_.nodes_[id_]->run_queue = true;
    sim_.occupy_cpu(*sim_.nodes_[id_], cost_ns);
    // What the handler sends after this charge leaves when the work is done.
    if (sim_.in_handler_) sim_.handler_cpu_ns_ += cost_ns;
  }
  void exit() override;

 private:
  Simulator& sim_;
  NodeId id_;
};

// ---------------------------------------------------------------------------------------------
// Construction

Simulator::Simulator(uint64_t seed, NetworkConfig network)
    : network_(std::move(network)), root_(seed), jitter_rng_(root_.split("network.jitter")),
      disk_(std::make_unique<SimDisk>()) {
  const size_t regions = network_.regions.size();
  MSGSIM_ASSERT_GT(regions, 0u);
  MSGSIM_ASSERT_EQ(network_.base_ns.size(), regions);
  MSGSIM_ASSERT_EQ(network_.jitter_mean_ns.size(), regions);
  for (size_t r = 0; r < regions; ++r) {
    MSGSIM_ASSERT_EQ(network_.base_ns[r].size(), regions);
    MSGSIM_ASSERT_EQ(network_.jitter_mean_ns[r].size(), regions);
  }
  MSGSIM_ASSERT_GT(network_.connection_timeout_ns, 0);
  reseed_randombytes(root_.split("randombytes").next_u64());
  queue_.reserve(1024);
}

Simulator::~Simulator() {
  // Close every database before the disk goes away; nodes first, since they may hold statements.
  for (auto& slot : nodes_) {
    slot->node.reset();
    if (slot->db != nullptr) sqlite3_close_v2(slot->db);
    slot->db = nullptr;
  }
}

NodeId Simulator::add_node(std::string name, uint32_t region, NodeFactory factory) {
  MSGSIM_ASSERT_LT(region, network_.regions.size());
  MSGSIM_ASSERT(factory != nullptr);
  const NodeId id = static_cast<NodeId>(nodes_.size());
  auto slot = std::make_unique<NodeSlot>();
  const Prng node_root = root_.split("node").split(id);
  slot->name = std::move(name);
  slot->region = region;
  slot->factory = std::move(factory);
  slot->rng = node_root.split("rng");
  slot->crypto_rng = node_root.split("crypto");
  slot->disk_rng = node_root.split("disk");
  slot->ctx = std::make_unique<SimContext>(*this, id);
  nodes_.push_back(std::move(slot));
  for (Partition& p : partitions_) {
    p.from.push_back(0);
    p.to.push_back(0);
  }
  return id;
}

const std::string& Simulator::node_name(NodeId node) const {
  MSGSIM_ASSERT_LT(node, nodes_.size());
  return nodes_[node]->name;
}

uint32_t Simulator::node_region(NodeId node) const {
  MSGSIM_ASSERT_LT(node, nodes_.size());
  return nodes_[node]->region;
}

bool Simulator::node_up(NodeId node) const {
  MSGSIM_ASSERT_LT(node, nodes_.size());
  const NodeState s = nodes_[node]->state;
  return s == NodeState::up || s == NodeState::draining;
}

int64_t Simulator::true_time_of(NodeId node, int64_t local_ns) const {
  MSGSIM_ASSERT_LT(node, nodes_.size());
  const NodeSlot& slot = *nodes_[node];
  // local = t + offset + (t - since) * drift / 1e6, solved for t.
  const int128_t numerator = static_cast<int128_t>(local_ns - slot.clock_offset_ns) * 1'000'000 +
                             static_cast<int128_t>(slot.drift_since_ns) * slot.drift_ppm;
  return static_cast<int64_t>(numerator / (1'000'000 + slot.drift_ppm));
}

Node* Simulator::node_object(NodeId node) {
  MSGSIM_ASSERT_LT(node, nodes_.size());
  return nodes_[node]->node.get();
}

// ---------------------------------------------------------------------------------------------
// The loop

void Simulator::at(int64_t time_ns, std::function<void()> action) {
  MSGSIM_ASSERT_GE(time_ns, now_ns_);
  uint32_t slot;
  if (!free_controls_.empty()) {
    slot = free_controls_.back();
    free_controls_.pop_back();
    controls_[slot] = std::move(action);
  } else {
    slot = static_cast<uint32_t>(controls_.size());
    controls_.push_back(std::move(action));
  }
  queue_.push(time_ns, EventPayload{EventKind::control, 0, 0, 0, slot});
}

bool Simulator::step() {
  if (queue_.empty()) return false;
  EventPayload event;
  const int64_t time_ns = queue_.pop(event);
  MSGSIM_ASSERT_GE(time_ns, now_ns_);
  now_ns_ = time_ns;
  stats_.events++;
  dispatch(event, time_ns);
  return true;
}

void Simulator::run_until(int64_t time_ns) {
  MSGSIM_ASSERT_GE(time_ns, now_ns_);
  while (!queue_.empty() && queue_.top_time() <= time_ns) step();
  now_ns_ = time_ns;
}

void Simulator::dispatch(const EventPayload& event, int64_t time_ns) {
  (void)time_ns;
  switch (event.kind) {
    case EventKind::control: {
      const auto slot = static_cast<uint32_t>(event.a);
      std::function<void()> action = std::move(controls_[slot]);
      controls_[slot] = nullptr;
      free_controls_.push_back(slot);
      digest_.fold(now_ns_);
      digest_.fold(kind_code("control"));
      action();
      return;
    }
    case EventKind::timer: {
      const auto slot = static_cast<uint32_t>(event.a & 0xffffffffu);
      Timer& timer = timers_[slot];
      MSGSIM_ASSERT_EQ(timer.generation, static_cast<uint32_t>(event.a >> 32));
      NodeSlot& node = *nodes_[timer.node];
      const bool live = timer.armed && node.incarnation == timer.incarnation && node_up(timer.node);
      if (live && defer_if_busy(timer.node, event)) return;
      const NodeId owner = timer.node;
      const uint64_t tag = timer.tag;
      timer.armed = false;
      free_timers_.push_back(slot);
      if (!live) return;
      stats_.timers_fired++;
      trace(owner, "timer", tag);
      call(owner, [&](Node& n, Context& ctx) { n.on_timer(ctx, tag); });
      return;
    }
    case EventKind::link: on_link_event(event); return;
    case EventKind::link_timeout: on_link_timeout(event); return;
    case EventKind::node_resume: resume(static_cast<NodeId>(event.node)); return;
  }
  MSGSIM_UNREACHABLE("unknown event kind");
}

bool Simulator::defer_if_busy(NodeId node, const EventPayload& event) {
  NodeSlot& slot = *nodes_[node];
  if (slot.run_queue) {
    if (slot.resuming) return false;  // the event resume() is running
    if (slot.busy_until_ns <= now_ns_ && slot.waiting.empty()) return false;
    MSGSIM_ASSERT(slot.waiting.size() < kRunQueueMax, "run queue of " + slot.name + " over its bound");
    slot.waiting.push_back(event);
    schedule_resume(node);
    return true;
  }
  if (slot.busy_until_ns <= now_ns_) return false;
  queue_.push(slot.busy_until_ns, event);
  return true;
}

void Simulator::schedule_resume(NodeId node) {
  NodeSlot& slot = *nodes_[node];
  if (slot.resume_scheduled || slot.waiting.empty()) return;
  slot.resume_scheduled = true;
  queue_.push(std::max(now_ns_, slot.busy_until_ns), EventPayload{EventKind::node_resume, 0, 0, node, 0});
}

void Simulator::resume(NodeId node) {
  NodeSlot& slot = *nodes_[node];
  slot.resume_scheduled = false;
  if (slot.waiting.empty()) return;
  if (slot.busy_until_ns > now_ns_) {
    schedule_resume(node);
    return;
  }
  const EventPayload event = slot.waiting.pop_front();
  slot.resuming = true;
  dispatch(event, now_ns_);
  slot.resuming = false;
  schedule_resume(node);
}

template <typename F>
void Simulator::call(NodeId id, F&& handler) {
  NodeSlot& slot = *nodes_[id];
  MSGSIM_ASSERT(slot.node != nullptr, "handler call on a node that is down: " + slot.name);
  MSGSIM_ASSERT(!in_handler_, "handlers are never re-entered");
  in_handler_ = true;
  handler_cpu_ns_ = 0;
  slot.handler_core = -1;
  RandombytesScope randomness(&slot.crypto_rng);
  disk_->set_context(id, local_time(slot), &slot.disk_rng);
  handler(*slot.node, *slot.ctx);
  in_handler_ = false;
  handler_cpu_ns_ = 0;
  if (slot.slow_factor > 1) occupy_cpu(slot, static_cast<int64_t>(slot.slow_factor - 1) * kSlowEventCostNs);
}

void Simulator::occupy_cpu(NodeSlot& slot, int64_t cost_ns) {
  if (slot.core_free_ns.empty()) {
    slot.busy_until_ns = std::max(slot.busy_until_ns, now_ns_) + cost_ns;
    return;
  }
  // Several cores: the handler runs on the core that frees first (free now, or it would not
  // have been dispatched) and keeps that core for all its charges.
  if (slot.handler_core < 0 || !in_handler_) {
    size_t best = 0;
    for (size_t c = 1; c < slot.core_free_ns.size(); ++c)
      if (slot.core_free_ns[c] < slot.core_free_ns[best]) best = c;
    slot.handler_core = static_cast<int>(best);
  }
  int64_t& core = slot.core_free_ns[static_cast<size_t>(slot.handler_core)];
  core = std::max(core, now_ns_) + cost_ns;
  slot.busy_until_ns = *std::min_element(slot.core_free_ns.begin(), slot.core_free_ns.end());
}

void Simulator::set_cores(NodeId id, uint32_t cores) {
  MSGSIM_ASSERT_LT(id, nodes_.size());
  MSGSIM_ASSERT_GE(cores, 1u);
  NodeSlot& slot = *nodes_[id];
  slot.core_free_ns.assign(cores == 1 ? 0 : cores, slot.busy_until_ns);
  slot.run_queue = true;
}

void Simulator::trace(NodeId node, const char* kind, uint64_t payload_digest, std::string_view detail) {
  digest_.fold(static_cast<uint64_t>(now_ns_));
  digest_.fold(node);
  digest_.fold(kind_code(kind));
  digest_.fold(payload_digest);
  if (trace_sink_) trace_sink_(TraceRecord{now_ns_, node, kind, payload_digest, detail});
}

int64_t Simulator::local_time(const NodeSlot& slot) const {
  const int64_t since = now_ns_ - slot.drift_since_ns;
  const auto drift = static_cast<int64_t>(static_cast<int128_t>(since) * slot.drift_ppm / 1'000'000);
  return now_ns_ + slot.clock_offset_ns + drift;
}

// ---------------------------------------------------------------------------------------------
// Node lifecycle

void Simulator::start(NodeId id) {
  MSGSIM_ASSERT_LT(id, nodes_.size());
  NodeSlot& slot = *nodes_[id];
  MSGSIM_ASSERT(slot.state == NodeState::down, "start of a node that is not down: " + slot.name);
  slot.incarnation++;
  slot.node = slot.factory();
  MSGSIM_ASSERT(slot.node != nullptr);
  slot.state = NodeState::up;
  slot.busy_until_ns = now_ns_;
  std::fill(slot.core_free_ns.begin(), slot.core_free_ns.end(), now_ns_);
  if (slot.incarnation > 1) stats_.restarts++;
  trace(id, "start", slot.incarnation);
  call(id, [](Node& n, Context& ctx) { n.on_start(ctx); });
}

void Simulator::crash(NodeId id, CrashDisk disk_mode) {
  MSGSIM_ASSERT_LT(id, nodes_.size());
  if (!node_up(id)) {
    // No process to kill, but a power loss still takes what the disk had not synced (a node
    // that stopped itself after a failed fsync leaves its failed commit in the page cache).
    NodeSlot& slot = *nodes_[id];
    if (slot.state == NodeState::down) disk_->crash(id, disk_mode, slot.disk_rng);
    return;
  }
  stats_.crashes++;
  trace(id, "crash", static_cast<uint64_t>(disk_mode));
  reset_connections_of(id, ResetHow::crash);
  stop(id, disk_mode, /*graceful=*/false);
}

void Simulator::shutdown(NodeId id, int64_t drain_ns) {
  MSGSIM_ASSERT_LT(id, nodes_.size());
  MSGSIM_ASSERT_GE(drain_ns, 0);
  NodeSlot& slot = *nodes_[id];
  if (slot.state != NodeState::up) return;
  slot.state = NodeState::draining;
  const uint32_t incarnation = slot.incarnation;
  trace(id, "drain", static_cast<uint64_t>(drain_ns));
  const int64_t deadline_local = local_time(slot) + drain_ns;
  call(id, [&](Node& n, Context& ctx) { n.on_drain(ctx, deadline_local); });
  at(now_ns_ + drain_ns, [this, id, incarnation] {
    NodeSlot& s = *nodes_[id];
    if (s.state == NodeState::draining && s.incarnation == incarnation) {
      trace(id, "stop", 0);
      reset_connections_of(id, ResetHow::graceful);
      stop(id, CrashDisk::keep_unsynced, /*graceful=*/true);
    }
  });
}

void Simulator::stop(NodeId id, CrashDisk disk_mode, bool graceful) {
  NodeSlot& slot = *nodes_[id];
  // The process is gone: nothing it does from here on reaches the disk, not even the writes a
  // destructor or sqlite3_close would make, unless it was a clean exit.
  if (!graceful) disk_->freeze(id);
  slot.node.reset();
  if (slot.db != nullptr) {
    sqlite3_close_v2(slot.db);
    slot.db = nullptr;
  }
  if (!graceful) disk_->crash(id, disk_mode, slot.disk_rng);
  slot.state = NodeState::down;
  slot.incarnation++;  // timers of the dead incarnation never fire
  slot.busy_until_ns = 0;
  std::fill(slot.core_free_ns.begin(), slot.core_free_ns.end(), 0);
}

void Simulator::lose_host(NodeId id) {
  MSGSIM_ASSERT_LT(id, nodes_.size());
  NodeSlot& slot = *nodes_[id];
  if (slot.state == NodeState::host_lost) return;
  trace(id, "host-loss", 0);
  if (node_up(id)) {
    stats_.crashes++;
    reset_connections_of(id, ResetHow::graceful);
    stop(id, CrashDisk::lose_unsynced, /*graceful=*/false);
  }
  disk_->wipe(id);
  slot.state = NodeState::host_lost;
}

void Simulator::replace_host(NodeId id) {
  MSGSIM_ASSERT_LT(id, nodes_.size());
  NodeSlot& slot = *nodes_[id];
  if (slot.state != NodeState::host_lost) return;
  slot.state = NodeState::down;
  release_held();
  start(id);
}

void SimContext::exit() {
  Simulator& sim = sim_;
  const NodeId id = id_;
  auto& slot = *sim.nodes_[id];
  const uint32_t incarnation = slot.incarnation;
  if (slot.state == Simulator::NodeState::up) {
    // Fail-stop: the node hit an error it cannot carry on from (a write or fsync failed) and
    // stopped itself. The process exits (its sockets close, the page cache survives); a
    // supervisor restarts it after kFailStopRestartNs, and it recovers from what the disk kept.
    sim.at(sim.now_ns_, [&sim, id, incarnation] {
      auto& s = *sim.nodes_[id];
      if (s.state != Simulator::NodeState::up || s.incarnation != incarnation) return;
      sim.stats_.fail_stops++;
      sim.trace(id, "fail-stop", 0);
      sim.reset_connections_of(id, Simulator::ResetHow::graceful);
      sim.stop(id, CrashDisk::keep_unsynced, /*graceful=*/false);
      const uint32_t stopped = s.incarnation;
      sim.at(sim.now_ns_ + Simulator::kFailStopRestartNs, [&sim, id, stopped] {
        auto& again = *sim.nodes_[id];
        if (again.state == Simulator::NodeState::down && again.incarnation == stopped) sim.start(id);
      });
    });
    return;
  }
  if (slot.state != Simulator::NodeState::draining) return;
  // Not from inside the node's own handler: the stop destroys the node.
  sim.at(sim.now_ns_, [&sim, id, incarnation] {
    auto& s = *sim.nodes_[id];
    if (s.state == Simulator::NodeState::draining && s.incarnation == incarnation) {
      sim.trace(id, "stop", 1);
      sim.reset_connections_of(id, Simulator::ResetHow::graceful);
      sim.stop(id, CrashDisk::keep_unsynced, /*graceful=*/true);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Faults on paths, clocks and speed

Simulator::PartitionId Simulator::partition(const std::vector<NodeId>& from,
                                            const std::vector<NodeId>& to, bool one_way) {
  Partition p;
  p.from.assign(nodes_.size(), 0);
  p.to.assign(nodes_.size(), 0);
  for (NodeId n : from) {
    MSGSIM_ASSERT_LT(n, nodes_.size());
    p.from[n] = 1;
  }
  for (NodeId n : to) {
    MSGSIM_ASSERT_LT(n, nodes_.size());
    p.to[n] = 1;
  }
  p.one_way = one_way;
  p.active = true;
  partitions_.push_back(std::move(p));
  active_partitions_++;
  const auto id = static_cast<PartitionId>(partitions_.size() - 1);
  trace(kNoNode, "partition", id);
  return id;
}

void Simulator::heal(PartitionId id) {
  MSGSIM_ASSERT_LT(id, partitions_.size());
  Partition& p = partitions_[id];
  if (!p.active) return;
  p.active = false;
  p.from = {};
  p.to = {};
  active_partitions_--;
  trace(kNoNode, "heal", id);
  release_held();
}

bool Simulator::path_cut(NodeId from, NodeId to) const {
  if (nodes_[from]->state == NodeState::host_lost || nodes_[to]->state == NodeState::host_lost) return true;
  if (active_partitions_ == 0) return false;
  for (const Partition& p : partitions_) {
    if (!p.active) continue;
    if (p.from[from] && p.to[to]) return true;
    if (!p.one_way && p.to[from] && p.from[to]) return true;
  }
  return false;
}

void Simulator::set_clock(NodeId id, int64_t skew_ns, int32_t drift_ppm) {
  MSGSIM_ASSERT_LT(id, nodes_.size());
  MSGSIM_ASSERT_GT(drift_ppm, -1'000'000);
  NodeSlot& slot = *nodes_[id];
  slot.clock_offset_ns = skew_ns;
  slot.drift_since_ns = now_ns_;
  slot.drift_ppm = drift_ppm;
  trace(id, "clock", static_cast<uint64_t>(skew_ns) ^ (static_cast<uint64_t>(drift_ppm) << 32));
}

void Simulator::add_latency(NodeId id, int64_t extra_ns) {
  MSGSIM_ASSERT_LT(id, nodes_.size());
  NodeSlot& slot = *nodes_[id];
  slot.extra_latency_ns += extra_ns;
  MSGSIM_ASSERT_GE(slot.extra_latency_ns, 0);
  trace(id, "latency", static_cast<uint64_t>(extra_ns));
}

void Simulator::set_slow(NodeId id, uint32_t factor) {
  MSGSIM_ASSERT_LT(id, nodes_.size());
  MSGSIM_ASSERT_GE(factor, 1u);
  nodes_[id]->slow_factor = factor;
  trace(id, "slow", factor);
}

// ---------------------------------------------------------------------------------------------
// Context operations

ConnId SimContext::connect(NodeId peer) {
  Simulator& sim = sim_;
  MSGSIM_ASSERT_LT(peer, sim.nodes_.size());
  MSGSIM_ASSERT_NE(peer, id_);
  uint32_t slot;
  if (!sim.free_conns_.empty()) {
    slot = sim.free_conns_.back();
    sim.free_conns_.pop_back();
  } else {
    MSGSIM_ASSERT_LT(sim.conns_.size(), size_t{UINT32_MAX - 1});
    slot = static_cast<uint32_t>(sim.conns_.size());
    sim.conns_.emplace_back();
  }
  Simulator::Connection& conn = sim.conns_[slot];
  conn.generation++;
  conn.in_use = true;
  conn.handshake_pending = true;
  conn.end[0] = id_;
  conn.end[1] = peer;
  for (auto& d : conn.dir) {
    MSGSIM_ASSERT(d.empty() && !d.scheduled);
    d.epoch++;
    d.held = false;
    d.last_arrival_ns = 0;
  }
  sim.open_connections_++;
  sim.stats_.connections_opened++;
  sim.attach(slot, 0);
  sim.push_frame(slot, 0, Simulator::FrameKind::syn, {});
  return sim.conn_id(slot);
}

void SimContext::send(ConnId id, Bytes frame) {
  Simulator& sim = sim_;
  MSGSIM_ASSERT_LE(frame.size(), kFrameBytesMax);
  uint32_t slot;
  if (!sim.resolve(id, slot)) return;  // long gone: like writing to a closed socket
  Simulator::Connection& conn = sim.conns_[slot];
  const int side = conn.end[0] == id_ ? 0 : 1;
  MSGSIM_ASSERT_EQ(conn.end[side], id_);
  if (!conn.attached[side]) return;
  sim.stats_.frames_sent++;
  if (sim.frame_observer_) sim.frame_observer_(id_, conn.end[1 - side], frame);
  if (sim.frame_tracer_) sim.frame_tracer_(FrameRecord{sim.now_ns_, id_, conn.end[1 - side], id, frame, false});
  if (sim.connection_watcher_ != nullptr) {
    sim.connection_watcher_->frame(FrameRecord{sim.now_ns_, id_, conn.end[1 - side], id, frame, false},
                                   sim.local_time(*sim.nodes_[id_]));
  }
  sim.push_frame(slot, side, Simulator::FrameKind::data, std::move(frame));
}

void SimContext::close(ConnId id) {
  Simulator& sim = sim_;
  uint32_t slot;
  if (!sim.resolve(id, slot)) return;
  Simulator::Connection& conn = sim.conns_[slot];
  const int side = conn.end[0] == id_ ? 0 : 1;
  MSGSIM_ASSERT_EQ(conn.end[side], id_);
  if (!conn.attached[side]) return;
  sim.detach(slot, side);
  sim.discard(slot, 1 - side);  // nothing more reaches the closer
  if (sim.connection_watcher_ != nullptr) {
    sim.connection_watcher_->ended(ConnectionEnd{sim.now_ns_, sim.local_time(*sim.nodes_[id_]), id_, id, true});
  }
  sim.push_frame(slot, side, Simulator::FrameKind::fin, {});
  sim.maybe_free(slot);
}

TimerId SimContext::set_timer(int64_t delay_ns, uint64_t tag) {
  Simulator& sim = sim_;
  MSGSIM_ASSERT_GE(delay_ns, 0);
  auto& node = *sim.nodes_[id_];
  // The delay is on the node's drifting clock; convert it to true time, rounding up.
  const int128_t scaled = static_cast<int128_t>(delay_ns) * 1'000'000;
  const int128_t rate = 1'000'000 + node.drift_ppm;
  const auto true_delay = static_cast<int64_t>((scaled + rate - 1) / rate);
  uint32_t slot;
  if (!sim.free_timers_.empty()) {
    slot = sim.free_timers_.back();
    sim.free_timers_.pop_back();
  } else {
    slot = static_cast<uint32_t>(sim.timers_.size());
    sim.timers_.emplace_back();
  }
  Simulator::Timer& timer = sim.timers_[slot];
  timer.generation++;
  timer.node = id_;
  timer.incarnation = node.incarnation;
  timer.tag = tag;
  timer.armed = true;
  const uint64_t id = static_cast<uint64_t>(timer.generation) << 32 | slot;
  sim.queue_.push(sim.now_ns_ + true_delay, EventPayload{EventKind::timer, 0, 0, 0, id});
  return id;
}

void SimContext::cancel_timer(TimerId id) {
  Simulator& sim = sim_;
  const auto slot = static_cast<uint32_t>(id & 0xffffffffu);
  if (slot >= sim.timers_.size()) return;
  Simulator::Timer& timer = sim.timers_[slot];
  if (timer.generation != static_cast<uint32_t>(id >> 32) || timer.node != id_) return;
  timer.armed = false;  // the slot is freed when its event comes due
}

sqlite3* SimContext::db() {
  auto& slot = *sim_.nodes_[id_];
  if (slot.db == nullptr) {
    Result<sqlite3*> opened = sim_.disk_->open(id_, "node.db");
    MSGSIM_ASSERT(opened.ok(), "opening the simulated database of " + slot.name + ": " +
                                   (opened.ok() ? std::string() : opened.error().message));
    slot.db = opened.value();
  }
  return slot.db;
}

// ---------------------------------------------------------------------------------------------
// Network

ConnId Simulator::conn_id(uint32_t slot) const {
  return static_cast<uint64_t>(conns_[slot].generation) << 32 | (static_cast<uint64_t>(slot) + 1);
}

bool Simulator::resolve(ConnId id, uint32_t& slot) const {
  const uint64_t low = id & 0xffffffffu;
  if (low == 0 || low > conns_.size()) return false;
  slot = static_cast<uint32_t>(low - 1);
  const Connection& conn = conns_[slot];
  return conn.in_use && conn.generation == static_cast<uint32_t>(id >> 32);
}

int64_t Simulator::sample_latency(NodeId from, NodeId to) {
  const NodeSlot& a = *nodes_[from];
  const NodeSlot& b = *nodes_[to];
  int64_t latency = network_.base_ns[a.region][b.region] + a.extra_latency_ns + b.extra_latency_ns;
  const int64_t mean = network_.jitter_mean_ns[a.region][b.region];
  if (mean > 0) {
    const auto jitter = static_cast<int64_t>(jitter_rng_.exponential(static_cast<double>(mean)));
    latency += std::min(jitter, mean * network_.jitter_cap_factor);
  }
  return latency;
}

void Simulator::push_frame(uint32_t slot, int d, FrameKind kind, Bytes data) {
  Connection& conn = conns_[slot];
  Direction& dir = conn.dir[d];
  const int64_t arrival =
      std::max(now_ns_ + handler_cpu_ns_ + sample_latency(conn.end[d], conn.end[1 - d]), dir.last_arrival_ns);
  dir.last_arrival_ns = arrival;
  dir.frames.push_back(InFlight{arrival, kind, std::move(data)});
  if (!dir.scheduled && !dir.held) schedule_head(slot, d);
}

void Simulator::schedule_head(uint32_t slot, int d) {
  Connection& conn = conns_[slot];
  Direction& dir = conn.dir[d];
  MSGSIM_ASSERT(!dir.empty());
  dir.scheduled = true;
  const int64_t when = std::max(now_ns_, dir.frames[dir.head].arrival_ns);
  queue_.push(when, EventPayload{EventKind::link, static_cast<uint8_t>(d), 0, slot,
                                 conn.generation | static_cast<uint64_t>(dir.epoch) << 32});
}

void Simulator::on_link_event(const EventPayload& event) {
  const uint32_t slot = event.node;
  const int d = event.aux;
  Connection& conn = conns_[slot];
  Direction& dir = conn.dir[d];
  if (!conn.in_use || conn.generation != static_cast<uint32_t>(event.a) ||
      dir.epoch != static_cast<uint32_t>(event.a >> 32)) {
    return;  // the connection or this direction's frames were discarded since
  }
  dir.scheduled = false;
  if (dir.empty()) return;
  if (dir.frames[dir.head].arrival_ns > now_ns_) {
    schedule_head(slot, d);
    return;
  }
  const NodeId from = conn.end[d];
  const NodeId to = conn.end[1 - d];
  if (path_cut(from, to)) {
    // TCP keeps retransmitting; the frame waits for the heal, or the connection times out.
    dir.held = true;
    dir.held_since_ns = now_ns_;
    held_.emplace_back(slot, static_cast<uint8_t>(d));
    queue_.push(now_ns_ + network_.connection_timeout_ns,
                EventPayload{EventKind::link_timeout, static_cast<uint8_t>(d), 0, slot, event.a});
    return;
  }
  if (conn.attached[1 - d] && defer_if_busy(to, event)) {
    dir.scheduled = true;
    return;
  }
  InFlight frame = std::move(dir.frames[dir.head]);
  dir.head++;
  if (dir.empty()) {
    dir.frames.clear();
    dir.head = 0;
    if (dir.frames.capacity() > kIdleFrameCapacityMax) dir.frames.shrink_to_fit();
  } else {
    // A direction that never drains (steady traffic) must not grow without bound: drop the
    // delivered prefix once it is most of the vector.
    if (dir.head >= 64 && dir.head * 2 >= dir.frames.size()) {
      dir.frames.erase(dir.frames.begin(), dir.frames.begin() + dir.head);
      dir.head = 0;
    }
    schedule_head(slot, d);
  }
  deliver(slot, d, std::move(frame));
}

void Simulator::on_link_timeout(const EventPayload& event) {
  const uint32_t slot = event.node;
  const int d = event.aux;
  Connection& conn = conns_[slot];
  if (!conn.in_use || conn.generation != static_cast<uint32_t>(event.a)) return;
  const Direction& dir = conn.dir[d];
  if (dir.epoch != static_cast<uint32_t>(event.a >> 32) || !dir.held) return;
  if (dir.held_since_ns + network_.connection_timeout_ns != now_ns_) return;  // held again later
  break_connection(slot, DisconnectReason::timeout);
}

void Simulator::deliver(uint32_t slot, int d, InFlight frame) {
  Connection& conn = conns_[slot];
  const int r = 1 - d;  // the receiving side
  const NodeId to = conn.end[r];
  const ConnId id = conn_id(slot);
  switch (frame.kind) {
    case FrameKind::syn: {
      MSGSIM_ASSERT_EQ(r, 1);
      conn.handshake_pending = false;
      if (nodes_[to]->state == NodeState::up) {
        attach(slot, 1);
        trace(to, "accept", id);
        const NodeId peer = conn.end[0];
        call(to, [&](Node& n, Context& ctx) { n.on_accept(ctx, id, peer); });
        // The acceptor may have closed it inside on_accept.
        if (conns_[slot].in_use && conns_[slot].attached[1]) push_frame(slot, 1, FrameKind::syn_ack, {});
      } else {
        push_frame(slot, 1, FrameKind::refuse, {});
      }
      return;
    }
    case FrameKind::syn_ack:
      if (!conn.attached[0]) return;
      trace(to, "connected", id);
      call(to, [&](Node& n, Context& ctx) { n.on_connected(ctx, id); });
      return;
    case FrameKind::data: {
      if (!conn.attached[r]) {
        stats_.frames_lost++;
        return;
      }
      stats_.frames_delivered++;
      stats_.bytes_delivered += frame.data.size();
      trace(to, "frame", hash_bytes(frame.data, id));
      const ByteView view(frame.data);
      if (frame_tracer_) frame_tracer_(FrameRecord{now_ns_, conn.end[d], to, id, view, true});
      if (connection_watcher_ != nullptr) {
        connection_watcher_->frame(FrameRecord{now_ns_, conn.end[d], to, id, view, true}, local_time(*nodes_[to]));
      }
      call(to, [&](Node& n, Context& ctx) { n.on_frame(ctx, id, view); });
      return;
    }
    case FrameKind::fin:
    case FrameKind::rst:
    case FrameKind::refuse: {
      if (!conn.attached[r]) {
        maybe_free(slot);
        return;
      }
      const DisconnectReason reason = frame.kind == FrameKind::fin   ? DisconnectReason::closed_by_peer
                                      : frame.kind == FrameKind::rst ? DisconnectReason::reset
                                                                     : DisconnectReason::refused;
      if (reason != DisconnectReason::closed_by_peer) stats_.connections_broken++;
      detach(slot, r);
      discard(slot, r);
      trace(to, "disconnect", static_cast<uint64_t>(reason) ^ id);
      if (connection_watcher_ != nullptr) connection_watcher_->ended(ConnectionEnd{now_ns_, local_time(*nodes_[to]), to, id, false});
      call(to, [&](Node& n, Context& ctx) { n.on_disconnect(ctx, id, reason); });
      maybe_free(slot);
      return;
    }
  }
}

void Simulator::attach(uint32_t slot, int side) {
  Connection& conn = conns_[slot];
  MSGSIM_ASSERT(!conn.attached[side]);
  auto& list = nodes_[conn.end[side]]->conns;
  conn.pos[side] = static_cast<uint32_t>(list.size());
  list.push_back(slot);
  conn.attached[side] = true;
}

void Simulator::detach(uint32_t slot, int side) {
  Connection& conn = conns_[slot];
  MSGSIM_ASSERT(conn.attached[side]);
  const NodeId node = conn.end[side];
  auto& list = nodes_[node]->conns;
  const uint32_t pos = conn.pos[side];
  MSGSIM_ASSERT_LT(pos, list.size());
  MSGSIM_ASSERT_EQ(list[pos], slot);
  const uint32_t moved = list.back();
  list[pos] = moved;
  Connection& other = conns_[moved];
  other.pos[other.end[0] == node ? 0 : 1] = pos;
  list.pop_back();
  conn.attached[side] = false;
}

void Simulator::discard(uint32_t slot, int d) {
  Connection& conn = conns_[slot];
  Direction& dir = conn.dir[d];
  for (uint32_t i = dir.head; i < dir.frames.size(); ++i) {
    if (dir.frames[i].kind == FrameKind::data) stats_.frames_lost++;
    if (dir.frames[i].kind == FrameKind::syn) conn.handshake_pending = false;
  }
  dir.frames.clear();
  dir.frames.shrink_to_fit();
  dir.head = 0;
  dir.epoch++;
  dir.scheduled = false;
  dir.held = false;
}

void Simulator::maybe_free(uint32_t slot) {
  Connection& conn = conns_[slot];
  if (!conn.in_use || conn.attached[0] || conn.attached[1] || conn.handshake_pending) return;
  discard(slot, 0);
  discard(slot, 1);
  conn.in_use = false;
  free_conns_.push_back(slot);
  MSGSIM_ASSERT_GT(open_connections_, 0u);
  open_connections_--;
}

void Simulator::break_connection(uint32_t slot, DisconnectReason reason) {
  Connection& conn = conns_[slot];
  stats_.connections_broken++;
  discard(slot, 0);
  discard(slot, 1);
  const ConnId id = conn_id(slot);
  bool was_attached[2] = {conn.attached[0], conn.attached[1]};
  for (int side = 0; side < 2; ++side) {
    if (was_attached[side]) detach(slot, side);
  }
  for (int side = 0; side < 2; ++side) {
    if (!was_attached[side]) continue;
    const NodeId node = conns_[slot].end[side];
    trace(node, "disconnect", static_cast<uint64_t>(reason) ^ id);
    if (connection_watcher_ != nullptr) connection_watcher_->ended(ConnectionEnd{now_ns_, local_time(*nodes_[node]), node, id, false});
    call(node, [&](Node& n, Context& ctx) { n.on_disconnect(ctx, id, reason); });
  }
  maybe_free(slot);
}

void Simulator::release_held() {
  std::vector<std::pair<uint32_t, uint8_t>> still_held;
  for (const auto& [slot, d] : held_) {
    Connection& conn = conns_[slot];
    Direction& dir = conn.dir[d];
    if (!conn.in_use || !dir.held) continue;
    if (path_cut(conn.end[d], conn.end[1 - d])) {
      still_held.emplace_back(slot, d);
      continue;
    }
    // Retransmission after the heal: every held frame leaves again now.
    dir.held = false;
    dir.last_arrival_ns = 0;
    for (uint32_t i = dir.head; i < dir.frames.size(); ++i) {
      const int64_t arrival = std::max(now_ns_ + sample_latency(conn.end[d], conn.end[1 - d]), dir.last_arrival_ns);
      dir.frames[i].arrival_ns = arrival;
      dir.last_arrival_ns = arrival;
    }
    if (!dir.empty() && !dir.scheduled) schedule_head(slot, d);
  }
  held_ = std::move(still_held);
}

void Simulator::reset_connections_of(NodeId node, ResetHow how) {
  const std::vector<uint32_t> slots = nodes_[node]->conns;
  for (uint32_t slot : slots) {
    Connection& conn = conns_[slot];
    const int side = conn.end[0] == node ? 0 : 1;
    detach(slot, side);
    discard(slot, 1 - side);  // nothing reaches the dead end
    switch (how) {
      case ResetHow::crash:
        discard(slot, side);  // a crash loses what was in flight; the peer's kernel sends RST
        if (conn.attached[1 - side]) push_frame(slot, side, FrameKind::rst, {});
        break;
      case ResetHow::graceful:
        // A clean exit: what the node sent still arrives, then the FIN.
        if (conn.attached[1 - side]) push_frame(slot, side, FrameKind::fin, {});
        break;
      case ResetHow::host_loss:
        discard(slot, side);  // no RST ever comes: peers find out by timing out
        break;
    }
    if (!conn.attached[1 - side]) maybe_free(slot);
  }
  MSGSIM_ASSERT(nodes_[node]->conns.empty());
}

size_t Simulator::connection_bytes() const {
  size_t bytes = conns_.capacity() * sizeof(Connection) + free_conns_.capacity() * sizeof(uint32_t);
  for (const Connection& conn : conns_) {
    for (const Direction& d : conn.dir) bytes += d.frames.capacity() * sizeof(InFlight);
  }
  for (const auto& slot : nodes_) bytes += slot->conns.capacity() * sizeof(uint32_t);
  return bytes;
}

}  // namespace msgsim::sim
