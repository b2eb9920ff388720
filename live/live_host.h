// The live runtime: the runtime contract (impl/runtime.h) over Boost.Asio, real sockets, real
// SQLite files. A LiveHost runs one or many nodes on one io_context in one thread (a server
// process hosts one node; the load process hosts every client device).
//
// Transports (live/README.md):
//  - Between server nodes: TCP with length-prefixed frames (4-byte big-endian length, then the
//    frame). The first frame of a link is a hello that names the opener and the node it meant
//    to reach, so on_accept gets `peer`. A length of 0xFFFFFFFF is the goodbye: the opener
//    called close(), every frame before it was delivered (closed_by_peer); an end of stream
//    without it is a crash (reset).
//  - From client devices to load balancers and chat servers: WebSocket (Boost.Beast), binary
//    messages, one frame per message; the URL path /node/<id> names the opener. A close frame
//    with code 1000 is closed_by_peer; anything else ending the stream is a reset.
//  - The devices' fallback: HTTP long polling (live/long_poll.h), HTTP/1.1 requests under /lp/
//    to the same port; a session is the node's connection (LiveHostOptions::long_poll_nodes
//    picks the devices that dial this way).
//  A node listens on one port for all: a connection that starts "GET /lp/" or "P" (a POST) is
//  long polling, any other 'G' (an HTTP GET) a WebSocket upgrade, anything else a framed TCP link.
//
// Call order (impl/runtime.h): every handler runs from a completion handler of the io_context,
// never from inside a Context call; sends, connects and timers only start asynchronous work;
// after close(conn) or on_disconnect(conn) nothing more is delivered on conn; a node that exit()s
// gets no further call, and its connections are reset.
//
// Bounds, each of which closes only the offending connection with a log line: an inbound frame
// larger than frame_bytes_max; an outbound queue beyond outbound_bytes_max (a slow reader); a
// hello or WebSocket upgrade not finished within handshake_timeout_ns, or a frame begun and not
// finished within frame_timeout_ns (slow writers, slowloris); a bad hello or upgrade.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "impl/base/result.h"
#include "impl/runtime.h"

namespace msgsim::live {

enum class Transport : uint8_t { tcp_frames, websocket };

// Where this host dials a node: address:port (a node's own port, or a fault proxy's), and how.
// The address is 127.0.0.1 except in a conformance run (`live run --target`), whose devices dial
// the address the user gave.
struct Endpoint {
  uint16_t port = 0;
  Transport transport = Transport::tcp_frames;
  std::string address = "127.0.0.1";  // an IPv4 literal (names are resolved by the caller)
  std::string host_name{};             // the WebSocket upgrade's Host header; empty: the address
};
using Directory = std::map<NodeId, Endpoint>;

// Reads a directory file: one "<node id> <port> <tcp|ws>" line per node.
Result<Directory> parse_directory(std::string_view text);
std::string format_directory(const Directory& directory);

// A `ws://HOST:PORT` URL as `live run --target` takes it: HOST a name or an IPv4 address (no
// IPv6, no credentials), PORT 1..65535, no path (devices choose /node/<id> themselves), no TLS.
struct WsUrl {
  std::string host;
  uint16_t port = 0;
};
Result<WsUrl> parse_ws_url(std::string_view url);
// The first IPv4 address of `host` (a literal, or a name through the resolver), as a literal.
Result<std::string> resolve_ipv4(const std::string& host);
// Whether an IPv4 literal is in 127.0.0.0/8.
bool is_loopback_ipv4(const std::string& address);
// steady_clock in nanoseconds: what LiveHostOptions::clock_origin_ns is measured in.
int64_t steady_clock_ns();

struct LiveHostOptions {
  std::string run_dir = ".";  // each node's database is <run_dir>/node-<id>.db
  uint64_t seed = 1;          // node id's stream: Prng(seed).split("node").split(id).split(incarnation)
  uint64_t incarnation = 0;   // which start of the node this is (the supervisor counts restarts)
  size_t frame_bytes_max = 1 << 20;
  size_t outbound_bytes_max = 8 << 20;  // per connection
  int64_t handshake_timeout_ns = 5 * kNanosPerSecond;
  int64_t frame_timeout_ns = 10 * kNanosPerSecond;
  int64_t connect_timeout_ns = 3 * kNanosPerSecond;
  // The origin of now_ns(): nanoseconds of steady_clock at which the run started (0: at
  // construction). Every host of a run given the same origin shares one clock.
  int64_t clock_origin_ns = 0;
  // Where emit() goes (client devices); events arrive with t = now_ns().
  std::function<void(NodeId, const history::Event&)> history_sink;
  // Called (from the loop) when a node calls exit(); `draining` says whether it was asked to.
  std::function<void(NodeId, bool draining)> on_exit;
  // Sees every frame a node of this host sends (as it is handed to the runtime) and every frame
  // delivered to one (before on_frame): a live run's devices host scans them for plaintexts.
  std::function<void(NodeId node, ByteView frame)> frame_observer;
  bool log_debug = false;
  // Where a node without a directory entry is dialled (none: such a connect is refused). A
  // conformance run's devices dial chat servers by the number a third-party load balancer
  // answers, which the scenario cannot list in advance.
  std::optional<Endpoint> fallback_endpoint;

  // HTTP long polling (live/long_poll.h), the devices' fallback transport. A node in this set
  // dials every WebSocket endpoint by long polling instead (a device option).
  std::set<NodeId> long_poll_nodes;
  // Server side: a poll with nothing pending is held this long, then answered empty.
  int64_t long_poll_wait_ns = 25 * kNanosPerSecond;
  // Server side: a session without any request for this long is gone (the node gets
  // on_disconnect(reset)); longer than the wait, so a device that keeps polling never expires.
  int64_t long_poll_idle_expiry_ns = 35 * kNanosPerSecond;
  size_t long_poll_sessions_max = 20000;       // per host: an open beyond it is answered 503
  size_t long_poll_pending_frames_max = 4096;  // unacknowledged frames to one device: reset beyond
  size_t long_poll_body_bytes_max = 2 << 20;   // a request's or a poll answer's body
  // Device side: a request whose connection failed or timed out is repeated on a new connection
  // this many times (the numbering makes a repeat harmless), then the connection is reset.
  uint32_t long_poll_retries_max = 3;
  int64_t long_poll_retry_delay_ns = 200 * kNanosPerMilli;
  // Device side, the automatic fallback: a node whose WebSocket upgrade to an endpoint is declined
  // (the server answered the upgrade request with anything but 101), or that fails this many
  // upgrades in a row there after the TCP connect succeeded (reset, end of stream or timeout
  // during the upgrade), reaches that endpoint by long polling from then on; the attempt that
  // decides it continues over long polling, so the node sees no refusal for it.
  uint32_t websocket_upgrade_failures_max = 3;
  // Server side: answer every WebSocket upgrade request with 403 (long polling still works): a
  // deployment behind a proxy that blocks upgrades, and the fallback's tests.
  bool refuse_websocket_upgrades = false;
};

struct LiveHostStats {
  uint64_t frames_sent = 0;
  uint64_t frames_delivered = 0;
  uint64_t bytes_delivered = 0;
  uint64_t connections_opened = 0;   // by connect() or accepted
  uint64_t connections_broken = 0;   // reset, refused, or closed by a bound
  uint64_t connections_rejected = 0; // closed by a bound or bad input (oversized, slow, bad hello)
  uint64_t timers_fired = 0;
  uint64_t frames_held_for_sync = 0;  // sent after a commit, held until its group commit batch synced
  uint64_t long_poll_requests = 0;    // HTTP long-poll requests answered (server) or made (device)
  uint64_t long_poll_retries = 0;     // device requests repeated after a failed connection
  uint64_t long_poll_fallbacks = 0;   // (device, endpoint) pairs switched to long polling after failed upgrades
  uint64_t websocket_upgrades_refused = 0;  // upgrade requests answered 403 (refuse_websocket_upgrades)
};

class LiveHost {
 public:
  LiveHost(boost::asio::io_context& io, LiveHostOptions options, Directory directory);
  ~LiveHost();
  LiveHost(const LiveHost&) = delete;
  LiveHost& operator=(const LiveHost&) = delete;

  // A node hosted here, not yet started.
  void add_node(NodeId id, std::string name, std::string region, NodeFactory factory);
  // Accepts connections for `id` on 127.0.0.1:port (0: any); returns the port.
  Result<uint16_t> listen(NodeId id, uint16_t port);
  // The same on a listening socket handed over by a supervisor.
  Status listen_on_fd(NodeId id, int fd);
  // Calls on_start (from the loop).
  void start(NodeId id);
  // Asks for a graceful shutdown: on_drain(now + drain_ns); at the deadline the node stops.
  void drain(NodeId id, int64_t drain_ns);
  // Stops every node and closes every socket (no further handler runs).
  void shutdown();

  Node* node(NodeId id);
  bool running(NodeId id) const;
  int64_t now_ns() const;
  const LiveHostStats& stats() const;
  size_t open_connections() const;

  class Impl;

 private:
  friend struct LiveHostTestSeam;  // live/live_host_test_seam.h
  std::unique_ptr<Impl> impl_;
};

}  // namespace msgsim::live
