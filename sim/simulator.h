// The deterministic discrete-event simulator: virtual time, one thread, a network of TCP-like
// connections between nodes in regions, node lifecycles (start, crash, restart, graceful
// drain, host loss), clock skew and drift, partitions, latency spikes, slow nodes, a simulated
// disk per node, and a running digest of everything dispatched.
//
// Determinism: every event is ordered by (virtual time, insertion sequence); every random draw
// comes from streams split off the run's seed (network jitter, each node's own stream, each
// node's crypto stream behind libsodium's randombytes); nothing iterates an unordered container
// or orders by address. Same seed, same calls ⇒ the same digest on any machine.
//
// Connection semantics (DESIGN.md "runtime contract"): frames arrive in order, once, while the
// connection lives. A frame's arrival time is the send time plus the one-way latency of the
// pair (base + seeded jitter + active spikes), never earlier than the previous frame of the
// same direction (FIFO). If the path is cut when a frame arrives, the frame is held, as TCP
// retransmission would hold it; the path healing releases held frames after a fresh one-way
// delay; a direction held longer than the connection timeout breaks the connection and both
// ends learn (DisconnectReason::timeout). A crashed node's peers learn after the one-way delay
// (reset), and frames in flight on a broken connection are lost.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "impl/runtime.h"
#include "sim/event_queue.h"

namespace msgsim::sim {

class SimDisk;
class SimContext;
enum class CrashDisk : uint8_t;

struct LinkLatency;  // sim/regions.h (scenario loader); mirrored here to keep this header lean

struct NetworkConfig {
  std::vector<std::string> regions;
  // One-way latency between regions [a][b]: base plus exponential jitter of the given mean.
  std::vector<std::vector<int64_t>> base_ns;
  std::vector<std::vector<int64_t>> jitter_mean_ns;
  int64_t connection_timeout_ns = 10 * kNanosPerSecond;
  // Cap on one jitter draw, as a multiple of its mean, so one draw cannot stall a link.
  int64_t jitter_cap_factor = 20;
};

// What a scenario run reports about traffic and time.
struct SimStats {
  uint64_t events = 0;
  uint64_t frames_sent = 0;
  uint64_t frames_delivered = 0;
  uint64_t frames_lost = 0;        // dropped by a crash, a reset or a timeout
  uint64_t bytes_delivered = 0;
  uint64_t connections_opened = 0;
  uint64_t connections_broken = 0;  // by crash, timeout or refusal
  uint64_t timers_fired = 0;
  uint64_t crashes = 0;
  uint64_t restarts = 0;
  uint64_t fail_stops = 0;  // nodes that stopped themselves (Context::exit while not draining)
};

// One line of the trace (--trace FILE): what was dispatched, to whom, when.
struct TraceRecord {
  int64_t time_ns;
  NodeId node;
  const char* kind;
  uint64_t payload_digest;
  std::string_view detail;
};
using TraceSink = std::function<void(const TraceRecord&)>;
using HistorySink = std::function<void(NodeId, const history::Event&)>;
// Sees every data frame a node sends, with both ends (the E2EE confidentiality check).
using FrameObserver = std::function<void(NodeId from, NodeId to, ByteView frame)>;
// A data frame leaving its sender (delivered false, at the send) or handed to its receiver
// (delivered true): both ends, the connection and the bytes, for the --perfetto timeline. Frames
// of one connection and direction arrive in the order they were sent; frames lost to a crash or
// a reset are sent and never delivered.
struct FrameRecord {
  int64_t time_ns;
  NodeId from;
  NodeId to;
  ConnId conn;
  ByteView data;
  bool delivered;
};
using FrameTracer = std::function<void(const FrameRecord&)>;
// One end of a connection as a node sees it: its own close(), or the on_disconnect it is handed.
struct ConnectionEnd {
  int64_t time_ns;
  int64_t local_ns;  // the node's own clock then
  NodeId node;
  ConnId conn;
  bool closed_by_node;  // the node called close(); false: it heard on_disconnect
};
// Follows connections for the simulator's checks of what nodes owe each other (the chat
// system's handoff check, sim/handoff_check.h): every data frame as it is sent and as it is
// delivered, with the local clock of the node sending or receiving it, and every end a node
// sees of a connection. Called inline, so it must not touch the simulator.
class ConnectionWatcher {
 public:
  virtual ~ConnectionWatcher() = default;
  virtual void frame(const FrameRecord& record, int64_t local_ns) = 0;
  virtual void ended(const ConnectionEnd& end) = 0;
};

class Simulator {
 public:
  Simulator(uint64_t seed, NetworkConfig network);
  ~Simulator();
  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  // --- building the world
  NodeId add_node(std::string name, uint32_t region, NodeFactory factory);
  size_t node_count() const { return nodes_.size(); }
  const std::string& node_name(NodeId node) const;
  uint32_t node_region(NodeId node) const;
  bool node_up(NodeId node) const;
  // The true (run) time at which `node`'s clock reads `local_ns`, under its current skew and
  // drift: for turning the times a node reports into the history's clock.
  int64_t true_time_of(NodeId node, int64_t local_ns) const;
  Node* node_object(NodeId node);  // the live incarnation, or nullptr when down
  void set_trace_sink(TraceSink sink) { trace_sink_ = std::move(sink); }
  void set_history_sink(HistorySink sink) { history_sink_ = std::move(sink); }
  void set_frame_observer(FrameObserver observer) { frame_observer_ = std::move(observer); }
  void set_frame_tracer(FrameTracer tracer) { frame_tracer_ = std::move(tracer); }
  // Not owned; it must outlive the run (or be unset with nullptr).
  void set_connection_watcher(ConnectionWatcher* watcher) { connection_watcher_ = watcher; }
  SimDisk& disk() { return *disk_; }

  // --- running
  int64_t now_ns() const { return now_ns_; }
  // Runs a closure at virtual time `time_ns` (>= now), ordered with every other event.
  void at(int64_t time_ns, std::function<void()> action);
  // Dispatches one event; false when nothing is pending.
  bool step();
  // Dispatches every event up to and including `time_ns`, then sets the clock to it.
  void run_until(int64_t time_ns);
  bool idle() const { return queue_.empty(); }
  size_t pending_events() const { return queue_.size(); }

  // A node that stops itself (Context::exit outside a drain: fail-stop after an I/O error) is
  // restarted this long after, as a process supervisor would.
  static constexpr int64_t kFailStopRestartNs = 1'000'000'000;

  // --- node lifecycle and faults (all take effect at now_ns())
  void start(NodeId node);                          // first boot, or restart after a crash
  void crash(NodeId node, CrashDisk disk_mode);     // process gone, connections reset
  void shutdown(NodeId node, int64_t drain_ns);     // on_drain, then stop at exit() or deadline
  void lose_host(NodeId node);                      // crash + disk gone + unreachable (no RST)
  void replace_host(NodeId node);                   // a fresh empty host at the same address
  using PartitionId = uint32_t;
  // Cuts every path from a node in `from` to a node in `to` (and back unless one_way).
  PartitionId partition(const std::vector<NodeId>& from, const std::vector<NodeId>& to, bool one_way);
  void heal(PartitionId partition);
  bool path_cut(NodeId from, NodeId to) const;
  void set_clock(NodeId node, int64_t skew_ns, int32_t drift_ppm);
  void add_latency(NodeId node, int64_t extra_ns);  // negative to remove a spike
  void set_slow(NodeId node, uint32_t factor);      // >= 1; each event costs (factor-1) x 100 us
  // The cost model (Context::charge_cpu): how many handlers of the node may run at once. One
  // by default; with N, up to N charged handlers overlap and the (N+1)th waits for a core.
  void set_cores(NodeId node, uint32_t cores);

  // --- observation
  const SimStats& stats() const { return stats_; }
  std::string digest_hex() const { return digest_.hex(); }
  uint64_t digest() const { return digest_.value(); }
  size_t open_connections() const { return open_connections_; }
  // Bytes held by the network's per-connection state (for the memory bar).
  size_t connection_bytes() const;
  size_t connection_slots() const { return conns_.size(); }

 private:
  friend class SimContext;

  enum class FrameKind : uint8_t { syn, syn_ack, data, fin, rst, refuse };
  struct InFlight {
    int64_t arrival_ns;
    FrameKind kind;
    Bytes data;
  };
  // One direction of a connection: frames from end[d] to end[1-d], FIFO.
  struct Direction {
    std::vector<InFlight> frames;
    uint32_t head = 0;
    uint32_t epoch = 0;          // bumped when the frames are discarded: stale events skip
    bool scheduled = false;      // an event for the head is pending
    bool held = false;           // the head is waiting for the path to heal
    int64_t last_arrival_ns = 0;
    int64_t held_since_ns = 0;
    bool empty() const { return head == frames.size(); }
  };
  struct Connection {
    NodeId end[2] = {kNoNode, kNoNode};  // [0] connected, [1] accepted
    uint32_t pos[2] = {0, 0};            // index in each end's node's conns list
    uint32_t generation = 0;
    bool attached[2] = {false, false};   // that end still gets callbacks for it
    bool in_use = false;
    bool handshake_pending = false;      // the SYN is on its way: the acceptor may still attach
    Direction dir[2];
  };
  struct Partition {
    std::vector<uint8_t> from, to;  // membership by node id
    bool one_way = false;
    bool active = false;
  };
  struct Timer {
    uint32_t generation = 0;
    NodeId node = kNoNode;
    uint32_t incarnation = 0;
    uint64_t tag = 0;
    bool armed = false;
  };
  enum class NodeState : uint8_t { down, up, draining, host_lost };
  struct NodeSlot;

  // network
  ConnId conn_id(uint32_t slot) const;
  bool resolve(ConnId id, uint32_t& slot) const;
  int64_t sample_latency(NodeId from, NodeId to);
  void push_frame(uint32_t slot, int d, FrameKind kind, Bytes data);
  void schedule_head(uint32_t slot, int d);
  void on_link_event(const EventPayload& event);
  void on_link_timeout(const EventPayload& event);
  void deliver(uint32_t slot, int d, InFlight frame);
  void attach(uint32_t slot, int side);
  void detach(uint32_t slot, int side);
  void discard(uint32_t slot, int d);
  void maybe_free(uint32_t slot);
  void break_connection(uint32_t slot, DisconnectReason reason);
  void release_held();
  enum class ResetHow : uint8_t { crash, graceful, host_loss };
  void reset_connections_of(NodeId node, ResetHow how);

  // nodes
  void dispatch(const EventPayload& event, int64_t time_ns);
  bool defer_if_busy(NodeId node, const EventPayload& event);
  void stop(NodeId node, CrashDisk disk_mode, bool graceful);
  void occupy_cpu(NodeSlot& slot, int64_t cost_ns);
  void schedule_resume(NodeId node);
  void resume(NodeId node);
  static constexpr size_t kRunQueueMax = 50'000'000;  // events one node may have waiting
  int64_t local_time(const NodeSlot& slot) const;
  void trace(NodeId node, const char* kind, uint64_t payload_digest, std::string_view detail = {});
  template <typename F>
  void call(NodeId node, F&& handler);

  NetworkConfig network_;
  Prng root_;
  Prng jitter_rng_;
  EventQueue queue_;
  int64_t now_ns_ = 0;
  Digest digest_;
  SimStats stats_;
  std::vector<std::unique_ptr<NodeSlot>> nodes_;
  std::vector<Connection> conns_;
  std::vector<uint32_t> free_conns_;
  size_t open_connections_ = 0;
  std::vector<Timer> timers_;
  std::vector<uint32_t> free_timers_;
  std::vector<std::function<void()>> controls_;
  std::vector<uint32_t> free_controls_;
  std::vector<Partition> partitions_;
  size_t active_partitions_ = 0;
  std::vector<std::pair<uint32_t, uint8_t>> held_;  // (connection slot, direction) held by a cut
  std::unique_ptr<SimDisk> disk_;
  TraceSink trace_sink_;
  HistorySink history_sink_;
  FrameObserver frame_observer_;
  FrameTracer frame_tracer_;
  ConnectionWatcher* connection_watcher_ = nullptr;
  bool in_handler_ = false;
  int64_t handler_cpu_ns_ = 0;  // CPU the running handler charged so far: its sends leave after it
};

}  // namespace msgsim::sim
