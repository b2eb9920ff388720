// The live fault proxy: a TCP proxy on one inter-node link (listen 127.0.0.1:A, forward to
// 127.0.0.1:B) that applies the simulator's network faults to real bytes, and a hub that puts
// one proxy on every link of a live run and drives them all from scenario-level faults.
//
// Semantics, matched to sim/simulator.cpp's network model:
//  - Byte order is kept per direction (FIFO): a chunk never leaves before the one read before it,
//    whatever delay each one drew.
//  - Delay: each chunk read waits base + extra + jitter before it is forwarded, jitter drawn
//    from an exponential distribution with the configured mean (a seeded Prng) and capped at
//    jitter_cap_factor times the mean, as the simulator draws it. `extra` is the latency spike.
//  - Cut: a cut direction holds its bytes (as TCP retransmission would) and forwards nothing.
//    Healing forwards the held bytes after a fresh delay. A direction that has held bytes
//    for longer than cut_timeout_ns resets the connection on both sides (TCP RST; the nodes
//    see DisconnectReason::reset or timeout), as the simulator breaks a connection whose
//    frames stay held past the connection timeout. An idle connection under a cut is not
//    reset: nothing is held, exactly as in the simulator.
//  - A source that closes (FIN) closes its direction after its buffered bytes have left; a
//    source that fails (RST, error) resets the other side at once and the bytes in flight
//    are lost, as the simulator loses frames in flight on a broken connection.
//  - Backpressure: each direction of each connection buffers at most
//    direction_buffer_bytes_max bytes; when full, the proxy stops reading from the source,
//    whose kernel send buffer then fills and blocks the sender.
//  Bytes already handed to the kernel before a cut still arrive (up to one socket buffer);
//  the handshake of a new connection completes with the proxy even under a cut, and the
//  first bytes of it are then held (and the connection reset after the timeout).
//
// Threads: a proxy and a hub are single-threaded; every call must come from the thread that
// runs their io_context (use FaultProxyHub::submit from any other thread).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/prng.h"
#include "impl/base/result.h"
#include "impl/runtime.h"

namespace msgsim::live {

// forward: from the connecting side to the target; backward: from the target back.
enum class ProxyDirection : uint8_t { forward = 0, backward = 1 };

// One direction's added one-way delay: base plus exponential jitter of the given mean.
struct ProxyDelay {
  int64_t base_ns = 0;
  int64_t jitter_mean_ns = 0;
};

struct FaultProxyConfig {
  std::string name = "proxy";  // for log lines: "node 3 -> node 5"
  std::string listen_address = "127.0.0.1";
  uint16_t listen_port = 0;  // 0: the kernel picks one; port() says which
  std::string target_address = "127.0.0.1";
  uint16_t target_port = 0;
  size_t direction_buffer_bytes_max = 1 << 20;  // per direction of each connection
  size_t connections_max = 1024;                // more are accepted and closed at once
  int64_t cut_timeout_ns = 10 * kNanosPerSecond;
  int64_t jitter_cap_factor = 20;
  uint64_t seed = 1;
};

struct FaultProxyStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_over_max = 0;     // closed at once: connections_max reached
  uint64_t connections_refused = 0;      // the target did not accept
  uint64_t connections_reset_by_cut = 0; // held past cut_timeout_ns
  uint64_t connections_reset_by_peer = 0;
  uint64_t bytes_forwarded[2] = {0, 0};  // by ProxyDirection
  uint64_t reads_paused_full = 0;        // times a full buffer stopped reading (backpressure)
  size_t direction_buffer_bytes_peak = 0;
};

class FaultProxy {
 public:
  FaultProxy(boost::asio::io_context& io, FaultProxyConfig config);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  // Binds and starts accepting. An error names the address and why (port in use, bad address).
  Status start();
  // Closes the listener and resets every connection.
  void stop();
  uint16_t port() const { return port_; }
  const std::string& name() const { return config_.name; }

  void set_cut(ProxyDirection direction, bool cut);
  bool is_cut(ProxyDirection direction) const { return cut_[index(direction)]; }
  void set_delay(ProxyDirection direction, ProxyDelay delay);
  // A latency spike on top of the delay (0 removes it).
  void set_extra_delay(ProxyDirection direction, int64_t extra_ns);

  const FaultProxyStats& stats() const { return stats_; }
  size_t connection_count() const { return links_.size(); }
  // Bytes currently buffered in one direction, summed over connections.
  size_t buffered_bytes(ProxyDirection direction) const;

 private:
  struct Link;
  friend struct Link;
  static size_t index(ProxyDirection direction) { return static_cast<size_t>(direction); }
  void do_accept();
  void on_accept(boost::system::error_code error, boost::asio::ip::tcp::socket socket);
  int64_t sample_delay_ns(ProxyDirection direction);
  void forget(uint64_t link_id);

  boost::asio::io_context& io_;
  FaultProxyConfig config_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::endpoint target_;
  uint16_t port_ = 0;
  bool running_ = false;
  bool cut_[2] = {false, false};
  ProxyDelay delay_[2];
  int64_t extra_ns_[2] = {0, 0};
  Prng jitter_rng_;
  uint64_t next_link_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Link>> links_;
  FaultProxyStats stats_;
};

// The one-way delay between two regions for a proxy: sim/regions.h's built-in table when both
// are built-in regions and differ, zero otherwise (same region: loopback is the network).
ProxyDelay cross_region_delay(std::string_view region_a, std::string_view region_b);

struct FaultProxyHubConfig {
  size_t direction_buffer_bytes_max = 1 << 20;
  size_t connections_max_per_link = 1024;
  int64_t cut_timeout_ns = 10 * kNanosPerSecond;
  uint64_t seed = 1;
  size_t control_line_bytes_max = 4096;
  size_t control_connections_max = 8;
};

// Every proxied link of a live run, and the scenario's network faults applied to them with
// the simulator's rules (Simulator::path_cut, add_latency): a partition cuts every path from
// a node in `from` to a node in `to`, and back unless one_way; isolation and a region split
// are partitions (see sim/world.cpp); a node's latency spike adds to every path into and out
// of it.
class FaultProxyHub {
 public:
  FaultProxyHub(boost::asio::io_context& io, FaultProxyHubConfig config);
  ~FaultProxyHub();

  // Starts a proxy for node `from`'s connections to node `to`, which listens on
  // 127.0.0.1:target_port. Returns the proxy's port: `from` must dial it to reach `to`.
  Result<uint16_t> add_link(NodeId from, NodeId to, uint16_t target_port, ProxyDelay delay_there,
                            ProxyDelay delay_back);
  FaultProxy* link(NodeId from, NodeId to);

  using PartitionId = uint32_t;
  PartitionId partition(std::vector<NodeId> from, std::vector<NodeId> to, bool one_way);
  // Unknown or already healed ids are bad input.
  Status heal(PartitionId id);
  void heal_all();
  // Adds (or with a negative value removes) a latency spike on every path into and out of node.
  Status add_latency(NodeId node, int64_t extra_ns);
  bool path_cut(NodeId from, NodeId to) const;

  // The control line protocol (live/README.md, "Fault proxy"): one command per line, one reply
  // line, "ok ..." or "error <what>".
  std::string execute(std::string_view line);
  // From any thread: runs execute() on the hub's io_context thread.
  std::future<std::string> submit(std::string line);
  // Serves the line protocol on 127.0.0.1:port (0: any port); returns the port.
  Result<uint16_t> start_control(uint16_t port);
  void stop();

  size_t link_count() const { return links_.size(); }

 private:
  struct Partition {
    std::vector<NodeId> from, to;  // sorted
    bool one_way = false;
    bool active = false;
  };
  class ControlSession;
  void apply();
  void do_control_accept();

  boost::asio::io_context& io_;
  FaultProxyHubConfig config_;
  std::map<std::pair<NodeId, NodeId>, std::unique_ptr<FaultProxy>> links_;
  std::vector<Partition> partitions_;
  std::map<NodeId, int64_t> extra_latency_ns_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> control_;
  std::vector<std::weak_ptr<ControlSession>> control_sessions_;
};

}  // namespace msgsim::live
