#include "live/live_host.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <charconv>
#include <chrono>
#include <cstring>
#include <deque>
#include <iostream>
#include <sstream>

#include "impl/base/assert.h"
#include "impl/base/sqlite.h"
#include "live/group_commit.h"
#include "live/wal_checkpointer.h"
#include "live/long_poll.h"
#include "live/live_host_test_seam.h"
#include "oracle/event.h"

namespace msgsim::live {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

namespace {

constexpr uint32_t kGoodbyeLength = 0xFFFFFFFFu;
constexpr uint8_t kHelloMagic[4] = {'M', 'S', 'L', '1'};
constexpr uint8_t kHelloAckMagic[4] = {'M', 'S', 'L', 'A'};
// A read buffer that grew past this while a large frame came in is released once idle, so an
// idle connection holds no buffer at all.
constexpr size_t kIdleBufferKeepBytes = 0;
constexpr size_t kReadChunkBytes = 4096;
constexpr size_t kWsWriteBufferBytes = 512;

int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void put_u32(uint8_t* out, uint32_t v) {
  out[0] = static_cast<uint8_t>(v >> 24);
  out[1] = static_cast<uint8_t>(v >> 16);
  out[2] = static_cast<uint8_t>(v >> 8);
  out[3] = static_cast<uint8_t>(v);
}
uint32_t get_u32(const uint8_t* in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) | uint32_t{in[3]};
}

}  // namespace

Result<Directory> parse_directory(std::string_view text) {
  Directory out;
  std::istringstream in{std::string(text)};
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    number++;
    if (line.empty()) continue;
    std::istringstream fields(line);
    uint64_t id = 0, port = 0;
    std::string transport;
    if (!(fields >> id >> port >> transport) || id >= kNoNode || port == 0 || port > 65535 ||
        (transport != "tcp" && transport != "ws")) {
      return make_error(ErrorCode::bad_input, "directory line " + std::to_string(number) +
                                                  ": expected \"<node id> <port> <tcp|ws>\", got \"" + line + "\"");
    }
    out[static_cast<NodeId>(id)] = {static_cast<uint16_t>(port),
                                    transport == "ws" ? Transport::websocket : Transport::tcp_frames};
  }
  return out;
}

std::string format_directory(const Directory& directory) {
  std::string out;
  for (const auto& [id, e] : directory) {
    out += std::to_string(id) + " " + std::to_string(e.port) + (e.transport == Transport::websocket ? " ws\n" : " tcp\n");
  }
  return out;
}

Result<WsUrl> parse_ws_url(std::string_view url) {
  constexpr size_t kUrlBytesMax = 300;
  const std::string shown = url.size() > 80 ? std::string(url.substr(0, 80)) + "..." : std::string(url);
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::bad_input, "\"" + shown + "\" is not a ws://HOST:PORT URL: " + why);
  };
  if (url.size() > kUrlBytesMax) return bad("longer than " + std::to_string(kUrlBytesMax) + " bytes");
  if (url.starts_with("wss://")) return bad("TLS (wss://) is not supported");
  if (!url.starts_with("ws://")) return bad("it must begin with ws://");
  std::string_view rest = url.substr(5);
  if (rest.ends_with("/")) rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return bad("no path after the port (devices open /node/<id>)");
  if (rest.find('@') != std::string_view::npos) return bad("no credentials");
  if (rest.starts_with("[")) return bad("IPv6 addresses are not supported");
  const size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos) return bad("the port is missing");
  const std::string_view host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (host.empty()) return bad("the host is missing");
  if (host.size() > 253) return bad("the host is longer than 253 bytes");
  for (char c : host) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
    if (!allowed) return bad("the host may hold letters, digits, '.' and '-' only");
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos) {
    return bad("the port must be a number from 1 to 65535");
  }
  const uint32_t number = static_cast<uint32_t>(std::stoul(std::string(port)));
  if (number == 0 || number > 65535) return bad("the port must be a number from 1 to 65535");
  return WsUrl{std::string(host), static_cast<uint16_t>(number)};
}

Result<std::string> resolve_ipv4(const std::string& host) {
  error_code ec;
  const auto literal = asio::ip::make_address_v4(host, ec);
  if (!ec) return literal.to_string();
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    return make_error(ErrorCode::bad_input, "cannot resolve " + host + " to an IPv4 address: " + ::gai_strerror(rc));
  }
  const auto* address = reinterpret_cast<const sockaddr_in*>(found->ai_addr);
  const std::string out = asio::ip::address_v4(ntohl(address->sin_addr.s_addr)).to_string();
  ::freeaddrinfo(found);
  return out;
}

bool is_loopback_ipv4(const std::string& address) {
  error_code ec;
  const auto parsed = asio::ip::make_address_v4(address, ec);
  return !ec && parsed.is_loopback();
}

int64_t steady_clock_ns() { return steady_now_ns(); }

// ---------------------------------------------------------------------------------------------
// The host's state and the connection types.

class Conn;
class LpSession;

struct NodeSlot {
  NodeId id = kNoNode;
  std::string name, region;
  NodeFactory factory;
  std::unique_ptr<Node> node;
  std::unique_ptr<Context> ctx;
  bool running = false;
  bool stopping = false;  // exit() was called: no handler runs any more
  bool draining = false;
  uint64_t generation = 0;  // counts starts within this host, so stale timers stay silent
  Prng rng;
  sqlite3* db = nullptr;
  std::map<ConnId, std::shared_ptr<Conn>> conns;  // connections the node may use
  std::map<TimerId, std::unique_ptr<asio::steady_timer>> timers;
  std::unique_ptr<asio::steady_timer> drain_timer;
  std::unique_ptr<tcp::acceptor> acceptor;
};

class LiveHost::Impl {
 public:
  Impl(asio::io_context& io, LiveHostOptions options, Directory directory)
      : io_(io), options_(std::move(options)), directory_(std::move(directory)) {
    if (options_.clock_origin_ns == 0) options_.clock_origin_ns = steady_now_ns();
    lp_tokens_ = Prng(options_.seed).split("long-poll session").split(static_cast<uint64_t>(steady_now_ns()));
  }
  ~Impl() { shutdown(); }

  asio::io_context& io_;
  LiveHostOptions options_;
  Directory directory_;
  // Group commit (live/group_commit.h): the nodes' databases sync in batches off the loop, and
  // every frame a node sends waits in held_ for the batch that covers the commits made before
  // it (tickets only grow, so one FIFO keeps every connection's order). A close waits behind
  // the frames held before it.
  struct HeldSend {
    uint64_t ticket = 0;
    NodeId node = kNoNode;
    std::shared_ptr<Conn> conn;
    Bytes frame;
    bool close = false;
  };
  GroupCommit group_commit_{io_, [this](uint64_t durable) { release_held(durable); },
                            [this](const std::string& what) { sync_failed(what); }};
  // The nodes' checkpoints, mostly on a thread of their own (live/wal_checkpointer.h); every
  // database is detached before it is closed (stop_node).
  WalCheckpointer checkpointer_{io_, kLiveWalCheckpointPages};
  std::deque<HeldSend> held_;
  std::map<NodeId, NodeSlot> slots_;
  // Long-poll sessions of every node here, by token (live/long_poll.h); a session leaves the
  // table when it ends.
  std::map<uint64_t, std::shared_ptr<LpSession>> lp_sessions_;
  Prng lp_tokens_;
  LiveHostStats stats_;
  ConnId next_conn_ = 1;
  TimerId next_timer_ = 1;
  bool in_handler_ = false;
  bool shut_down_ = false;

  int64_t now_ns() const { return steady_now_ns() - options_.clock_origin_ns; }

  void log(NodeId node, LogLevel level, std::string_view message) {
    if (level == LogLevel::debug && !options_.log_debug) return;
    static constexpr const char* kNames[] = {"debug", "info", "warn", "error"};
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "%.3f", static_cast<double>(now_ns()) / 1e9);
    auto it = slots_.find(node);
    const std::string who = it != slots_.end() ? it->second.name : "node " + std::to_string(node);
    std::cerr << "[" << stamp << " " << who << " " << kNames[static_cast<int>(level)] << "] " << message << "\n";
  }

  NodeSlot* slot(NodeId id) {
    auto it = slots_.find(id);
    return it == slots_.end() ? nullptr : &it->second;
  }

  // Runs one node handler; the only way a node is called. Asserts the call-order rule that no
  // handler is entered from inside another.
  template <class F>
  void dispatch(NodeSlot& s, F&& f) {
    if (!s.running || s.stopping || shut_down_) return;
    MSGSIM_ASSERT(!in_handler_, "a node handler was entered from inside another");
    in_handler_ = true;
    f(*s.node, *s.ctx);
    in_handler_ = false;
  }

  // Connection events.
  void opened(Conn& conn);
  void accepted(Conn& conn);
  void frame(Conn& conn, ByteView bytes);
  void broken(Conn& conn, DisconnectReason reason);

  // Context calls.
  ConnId connect(NodeSlot& s, NodeId peer);
  void send(NodeSlot& s, ConnId conn, Bytes frame);
  void close(NodeSlot& s, ConnId conn);
  TimerId set_timer(NodeSlot& s, int64_t delay_ns, uint64_t tag);
  void cancel_timer(NodeSlot& s, TimerId timer);
  sqlite3* db(NodeSlot& s);
  void exit(NodeSlot& s);

  void send_now(NodeId node, const std::shared_ptr<Conn>& conn, Bytes frame);

  // The automatic long-poll fallback (LiveHostOptions::websocket_upgrade_failures_max), per
  // (local node, endpoint). Entries are made only by failed upgrades, so there are at most as
  // many as nodes here times endpoints they dial (the directory and the fallback endpoint).
  struct UpgradeRecord {
    uint32_t failures_in_a_row = 0;
    bool long_poll = false;  // decided: this node reaches this endpoint by long polling
  };
  std::map<std::pair<NodeId, std::string>, UpgradeRecord> upgrades_;
  static std::string endpoint_key(const Endpoint& where) { return where.address + ":" + std::to_string(where.port); }
  bool reaches_by_long_poll(NodeId node, const Endpoint& where) const;
  // An outbound WebSocket upgrade failed after the TCP connect (`declined`: the server answered
  // it with something other than 101). Returns true when the attempt continues over long
  // polling (the connection was replaced under its ConnId); false: the caller fails it.
  bool websocket_upgrade_failed(Conn& conn, const Endpoint& where, bool declined, std::string_view why);
  void websocket_upgraded(NodeId node, const Endpoint& where) { upgrades_.erase({node, endpoint_key(where)}); }
  void release_held(uint64_t durable);
  void sync_failed(const std::string& what);

  void start(NodeId id);
  void stop_node(NodeSlot& s);
  void do_accept(NodeSlot& s);
  void shutdown();
};

// One connection of one node. Lives as long as the node holds it (NodeSlot::conns) or an
// asynchronous operation is in flight on it.
class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(LiveHost::Impl& host, NodeId local, bool outbound)
      : host_(host), local_(local), outbound_(outbound), timer_(host.io_) {}
  virtual ~Conn() = default;

  ConnId id = kNoConn;
  NodeId peer = kNoNode;
  bool attached = false;  // in the node's table: events reach the node
  bool established = false;

  NodeId local() const { return local_; }
  bool outbound() const { return outbound_; }

  // Queues a frame; false when the bound on queued bytes was hit (the caller resets the link).
  bool enqueue(Bytes frame) {
    if (dead_ || closing_) return true;
    if (queued_bytes_ + frame.size() > host_.options_.outbound_bytes_max || over_frame_bound()) return false;
    queued_bytes_ += frame.size();
    queue_.push_back(std::move(frame));
    if (ready_to_write_ && !writing_) write_next();
    return true;
  }
  // The local node closed: flush, say goodbye, shut down.
  void close_gracefully() {
    attached = false;
    closing_ = true;
    if (ready_to_write_ && !writing_) write_next();
  }
  // Drops everything at once (the node stopped, a bound was hit).
  void abort() {
    attached = false;
    if (dead_) return;
    dead_ = true;
    timer_.cancel();
    queue_.clear();
    queued_bytes_ = 0;
    close_transport();
  }
  size_t queued_bytes() const { return queued_bytes_; }
  bool dead() const { return dead_; }
  // The frames queued and not yet written, handed to a connection that replaces this one (the
  // long-poll fallback continues an attempt whose WebSocket upgrade failed).
  std::deque<Bytes> take_queue() {
    queued_bytes_ = 0;
    return std::exchange(queue_, {});
  }

  virtual void start_connect(const Endpoint& where) = 0;

 protected:
  // A bound on queued frames beyond the bytes bound (long polling keeps frames until acknowledged).
  virtual bool over_frame_bound() const { return false; }
  virtual void write_next() = 0;
  virtual void close_transport() = 0;

  // The connection failed or ended: tell the node (once) and drop the socket.
  void fail(DisconnectReason reason, std::string_view why, bool rejected = false) {
    if (dead_) return;
    if (rejected) {
      host_.stats_.connections_rejected++;
      host_.log(local_, LogLevel::warn,
                "connection " + std::to_string(id) + " from node " + (peer == kNoNode ? std::string("?") : std::to_string(peer)) +
                    " closed: " + std::string(why));
    } else if (!why.empty()) {
      host_.log(local_, LogLevel::debug, "connection " + std::to_string(id) + ": " + std::string(why));
    }
    if (reason != DisconnectReason::closed_by_peer) host_.stats_.connections_broken++;
    auto self = shared_from_this();
    abort();
    host_.broken(*this, reason);
  }
  // The write of the queue's front frame finished (both transports): drop it, write the next.
  void on_frame_written(error_code ec) {
    writing_ = false;
    if (dead_) return;
    if (ec) return fail(DisconnectReason::reset, "write: " + ec.message());
    queued_bytes_ -= queue_.front().size();
    queue_.pop_front();
    host_.stats_.frames_sent++;
    write_next();
  }
  // A connect that cannot start: refused, from the loop (never inside the connect call).
  void post_refused(std::string why) {
    asio::post(host_.io_, [self = shared_from_this(), why = std::move(why)] { self->fail(DisconnectReason::refused, why); });
  }
  void arm_timer(int64_t delay_ns, std::string what) {
    timer_.expires_after(std::chrono::nanoseconds(delay_ns));
    timer_.async_wait([self = shared_from_this(), what = std::move(what)](error_code ec) {
      if (ec) return;
      self->timed_out(what);
    });
  }
  // The timer armed by arm_timer fired.
  virtual void timed_out(const std::string& what) {
    fail(established ? DisconnectReason::reset : DisconnectReason::refused, what, true);
  }

  LiveHost::Impl& host_;
  NodeId local_;
  bool outbound_;
  asio::steady_timer timer_;
  std::deque<Bytes> queue_;
  size_t queued_bytes_ = 0;
  bool ready_to_write_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool dead_ = false;
};

// A framed TCP link between server nodes.
class FrameConn final : public Conn {
 public:
  FrameConn(LiveHost::Impl& host, NodeId local, bool outbound, tcp::socket socket, beast::flat_buffer buffer)
      : Conn(host, local, outbound), socket_(std::move(socket)), buffer_(std::move(buffer)) {}

  void start_connect(const Endpoint& where) override {
    arm_timer(host_.options_.connect_timeout_ns, "no answer to the connect within the timeout");
    error_code bad_address;
    const auto address = asio::ip::make_address_v4(where.address, bad_address);
    if (bad_address) return post_refused("not an IPv4 address: " + where.address);
    socket_.async_connect(tcp::endpoint(address, where.port),
                          [self = shared_self()](error_code ec) { self->on_connect(ec); });
  }

  // Inbound: the first byte has been read into buffer_ by the sniffer.
  void start_inbound() {
    arm_timer(host_.options_.handshake_timeout_ns, "no hello within the handshake timeout");
    parse_and_read();
  }

 private:
  std::shared_ptr<FrameConn> shared_self() { return std::static_pointer_cast<FrameConn>(shared_from_this()); }

  void on_connect(error_code ec) {
    if (dead_) return;
    if (ec) return fail(DisconnectReason::refused, "connect: " + ec.message());
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    // The hello goes first; frames the node already queued follow it (pipelined behind the
    // handshake; dropped with the connection if the peer refuses).
    Bytes hello(12);
    std::memcpy(hello.data(), kHelloMagic, 4);
    put_u32(hello.data() + 4, local_);
    put_u32(hello.data() + 8, peer);
    queued_bytes_ += hello.size();
    queue_.push_front(std::move(hello));
    ready_to_write_ = true;
    write_next();
    parse_and_read();
  }

  void write_next() override {
    if (dead_ || writing_) return;
    if (queue_.empty()) {
      if (closing_ && !goodbye_sent_) {
        goodbye_sent_ = true;
        put_u32(header_, kGoodbyeLength);
        writing_ = true;
        asio::async_write(socket_, asio::buffer(header_, 4), [self = shared_self()](error_code ec, size_t) {
          self->writing_ = false;
          error_code ignored;
          if (!ec) self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
          // Wait for the peer's end of stream (or a timeout) before closing, so the goodbye
          // is not lost to an RST from unread data.
          if (ec || !self->reading_) self->abort();
          else self->arm_timer(self->host_.options_.handshake_timeout_ns, "peer did not close after the goodbye");
        });
      }
      return;
    }
    put_u32(header_, static_cast<uint32_t>(queue_.front().size()));
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(header_, 4), asio::buffer(queue_.front())};
    writing_ = true;
    asio::async_write(socket_, buffers, [self = shared_self()](error_code ec, size_t) {
      self->on_frame_written(ec);
    });
  }

  void close_transport() override {
    error_code ignored;
    socket_.close(ignored);
  }

  // Delivers every whole frame in the buffer, then waits for more.
  void parse_and_read() {
    const size_t frame_max = host_.options_.frame_bytes_max;
    bool progressed = false;
    while (!dead_) {
      const size_t have = buffer_.size();
      if (have < 4) break;
      const auto* data = static_cast<const uint8_t*>(buffer_.data().data());
      const uint32_t length = get_u32(data);
      if (length == kGoodbyeLength) {
        if (!established) return fail(DisconnectReason::refused, "goodbye before the handshake", true);
        reading_ = false;
        if (closing_) return abort();  // both ends closed
        return fail(DisconnectReason::closed_by_peer, "closed by peer");
      }
      if (length > frame_max) {
        return fail(established ? DisconnectReason::reset : DisconnectReason::refused,
                    "oversized frame: " + std::to_string(length) + " bytes, the bound is " + std::to_string(frame_max),
                    true);
      }
      if (have < 4 + size_t{length}) break;
      const ByteView frame(data + 4, length);
      if (!established) {
        if (!handshake(frame)) return;
      } else if (attached) {
        host_.stats_.frames_delivered++;
        host_.stats_.bytes_delivered += length;
        host_.frame(*this, frame);
      }
      buffer_.consume(4 + size_t{length});
      progressed = true;
    }
    if (dead_) return;
    if (buffer_.size() == 0) {
      // Idle between frames: release the buffer and stop the frame deadline.
      if (buffer_.capacity() > kIdleBufferKeepBytes) buffer_ = beast::flat_buffer();
      if (established && frame_timer_armed_) timer_.cancel();
      frame_timer_armed_ = false;
    } else if (established && (progressed || !frame_timer_armed_)) {
      // A frame has begun: it must be complete within the frame timeout, counted afresh after
      // every whole frame, so a steady stream never trips it but a stalled writer does.
      frame_timer_armed_ = true;
      arm_timer(host_.options_.frame_timeout_ns, "a frame begun and not finished within the frame timeout (slow writer)");
    }
    read_more();
  }

  void read_more() {
    reading_ = true;
    // Waiting for readability needs no buffer, so an idle connection holds none.
    socket_.async_wait(tcp::socket::wait_read, [self = shared_self()](error_code ec) {
      if (self->dead_) return;
      if (ec) return self->fail(DisconnectReason::reset, "wait: " + ec.message());
      error_code read_ec;
      const size_t available = std::max<size_t>(self->socket_.available(read_ec), 1);
      const size_t chunk = std::min<size_t>(std::max<size_t>(available, 64), 64 * kReadChunkBytes);
      const size_t n = self->socket_.read_some(self->buffer_.prepare(chunk), read_ec);
      self->buffer_.commit(n);
      if (read_ec == asio::error::would_block || read_ec == asio::error::try_again) return self->read_more();
      if (read_ec == asio::error::eof) {
        self->reading_ = false;
        if (self->closing_) return self->abort();
        if (!self->established) return self->fail(DisconnectReason::refused, "peer closed before the handshake");
        return self->fail(DisconnectReason::reset, "end of stream without a goodbye (peer crashed)");
      }
      if (read_ec) {
        return self->fail(self->established ? DisconnectReason::reset : DisconnectReason::refused,
                          "read: " + read_ec.message());
      }
      self->parse_and_read();
    });
  }

  // The first frame: for an accepted link the opener's hello, for an opened one the ack.
  bool handshake(ByteView frame) {
    timer_.cancel();
    if (outbound_) {
      if (frame.size() != 4 || std::memcmp(frame.data(), kHelloAckMagic, 4) != 0) {
        fail(DisconnectReason::refused, "bad hello acknowledgement", true);
        return false;
      }
      established = true;
      host_.opened(*this);
      return !dead_;
    }
    if (frame.size() != 12 || std::memcmp(frame.data(), kHelloMagic, 4) != 0) {
      fail(DisconnectReason::refused, "malformed hello", true);
      return false;
    }
    const NodeId from = get_u32(frame.data() + 4);
    const NodeId to = get_u32(frame.data() + 8);
    if (to != local_) {
      fail(DisconnectReason::refused, "hello for node " + std::to_string(to) + " reached node " + std::to_string(local_), true);
      return false;
    }
    peer = from;
    established = true;
    Bytes ack(kHelloAckMagic, kHelloAckMagic + 4);
    queued_bytes_ += ack.size();
    queue_.push_front(std::move(ack));
    ready_to_write_ = true;
    write_next();
    host_.accepted(*this);
    return !dead_;
  }

  tcp::socket socket_;
  beast::flat_buffer buffer_;
  uint8_t header_[4] = {};
  bool reading_ = false;
  bool goodbye_sent_ = false;
  bool frame_timer_armed_ = false;
};

// What a WebSocket session needs of the stream under it, beyond reading and writing.
void set_no_delay(beast::tcp_stream& stream) {
  error_code ignored;
  stream.socket().set_option(tcp::no_delay(true), ignored);
}
void close_stream(beast::tcp_stream& stream) {
  error_code ignored;
  stream.socket().close(ignored);
}
void set_no_delay(beast::test::stream&) {}
void close_stream(beast::test::stream& stream) { stream.close(); }

// A WebSocket connection from a client device (the opener) to a load balancer or chat server.
// Templated on the stream under the WebSocket layer: production uses beast::tcp_stream (WsConn);
// live/live_host_test_seam.h runs the same session over beast::test::stream, whose fail_count
// fails its n-th operation (tests/live_ws_session_test.cpp).
template <class NextLayer>
class BasicWsConn final : public Conn {
 public:
  BasicWsConn(LiveHost::Impl& host, NodeId local, bool outbound, NextLayer next)
      : Conn(host, local, outbound), ws_(std::move(next)) {}

  void start_connect(const Endpoint& where) override {
    host_header_ = (where.host_name.empty() ? where.address : where.host_name) + ":" + std::to_string(where.port);
    where_ = where;
    if constexpr (std::is_same_v<NextLayer, beast::tcp_stream>) {
      arm_timer(host_.options_.connect_timeout_ns, "no answer to the connect within the timeout");
      error_code bad_address;
      const auto address = asio::ip::make_address_v4(where.address, bad_address);
      if (bad_address) return post_refused("not an IPv4 address: " + where.address);
      beast::get_lowest_layer(ws_).socket().async_connect(
          tcp::endpoint(address, where.port), [self = shared_self()](error_code ec) { self->on_connect(ec); });
    } else {
      post_refused("this stream cannot dial " + host_header_);
    }
  }

  // Inbound: the sniffer read the start of an HTTP request into `buffer`.
  void start_inbound(beast::flat_buffer buffer) {
    buffer_ = std::move(buffer);
    arm_timer(host_.options_.handshake_timeout_ns, "no WebSocket upgrade within the handshake timeout");
    parser_ = std::make_unique<http::request_parser<http::empty_body>>();
    parser_->header_limit(8 * 1024);
    parser_->body_limit(0);
    http::async_read(ws_.next_layer(), buffer_, *parser_,
                     [self = shared_self()](error_code ec, size_t) { self->on_request(ec); });
  }

 private:
  std::shared_ptr<BasicWsConn> shared_self() { return std::static_pointer_cast<BasicWsConn>(shared_from_this()); }

  void configure() {
    ws_.binary(true);
    ws_.read_message_max(host_.options_.frame_bytes_max);
    ws_.auto_fragment(false);
    // Beast keeps a write buffer per stream once it has written (4 KB by default): device
    // frames are small, so a smaller one saves memory on every idle connection.
    ws_.write_buffer_bytes(kWsWriteBufferBytes);
    set_no_delay(ws_.next_layer());
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = std::chrono::nanoseconds(host_.options_.handshake_timeout_ns);
    timeouts.idle_timeout = websocket::stream_base::none();
    timeouts.keep_alive_pings = false;
    ws_.set_option(timeouts);
  }

  void on_connect(error_code ec) {
    if (dead_) return;
    if (ec) return fail(DisconnectReason::refused, "connect: " + ec.message());
    tcp_connected_ = true;
    configure();
    ws_.async_handshake(host_header_, "/node/" + std::to_string(local_),
                        [self = shared_self()](error_code ec) {
                          if (self->dead_) return;
                          if (ec) {
                            const std::string why = "WebSocket handshake: " + ec.message();
                            const bool declined = ec == websocket::error::upgrade_declined;
                            if (self->host_.websocket_upgrade_failed(*self, self->where_, declined, why)) return;
                            return self->fail(DisconnectReason::refused, why);
                          }
                          self->host_.websocket_upgraded(self->local(), self->where_);
                          self->timer_.cancel();
                          self->established = true;
                          self->ready_to_write_ = true;
                          self->host_.opened(*self);
                          if (self->dead_) return;
                          self->write_next();
                          self->read_next();
                        });
  }

  // An outbound upgrade that got no answer in time after the TCP connect counts as a failed
  // upgrade for the long-poll fallback.
  void timed_out(const std::string& what) override {
    if (outbound() && tcp_connected_ && !established &&
        host_.websocket_upgrade_failed(*this, where_, false, "WebSocket handshake: " + what)) {
      return;
    }
    Conn::timed_out(what);
  }

  // refuse_websocket_upgrades: a 403 with a line saying why, then the connection ends.
  void refuse_upgrade() {
    host_.stats_.websocket_upgrades_refused++;
    refusal_ = std::make_unique<http::response<http::string_body>>(http::status::forbidden, 11);
    refusal_->set(http::field::content_type, "text/plain");
    refusal_->keep_alive(false);
    refusal_->body() = "WebSocket upgrades are refused here; long polling (/lp/) is served\n";
    refusal_->prepare_payload();
    http::async_write(ws_.next_layer(), *refusal_, [self = shared_self()](error_code, size_t) {
      self->fail(DisconnectReason::refused, "WebSocket upgrade refused (refuse_websocket_upgrades)");
    });
  }

  void on_request(error_code ec) {
    if (dead_) return;
    if (ec) return fail(DisconnectReason::refused, "bad HTTP upgrade request: " + ec.message(), true);
    const auto& request = parser_->get();
    const std::string_view target(request.target().data(), request.target().size());
    constexpr std::string_view kPrefix = "/node/";
    uint64_t from = kNoNode;
    bool ok = websocket::is_upgrade(request) && target.substr(0, kPrefix.size()) == kPrefix &&
              target.size() > kPrefix.size() && target.size() <= kPrefix.size() + 10;
    if (ok) {
      from = 0;
      for (char c : target.substr(kPrefix.size())) {
        if (c < '0' || c > '9') ok = false;
        else from = from * 10 + static_cast<uint64_t>(c - '0');
      }
      ok = ok && from < kNoNode;
    }
    if (!ok) return fail(DisconnectReason::refused, "not a WebSocket upgrade to /node/<id>: " + std::string(target), true);
    peer = static_cast<NodeId>(from);
    if (host_.options_.refuse_websocket_upgrades) return refuse_upgrade();
    configure();
    ws_.async_accept(request, [self = shared_self()](error_code ec) {
      if (self->dead_) return;
      if (ec) return self->fail(DisconnectReason::refused, "WebSocket accept: " + ec.message(), true);
      self->parser_.reset();
      self->buffer_ = beast::flat_buffer();
      self->timer_.cancel();
      self->established = true;
      self->ready_to_write_ = true;
      self->host_.accepted(*self);
      if (self->dead_) return;
      self->write_next();
      self->read_next();
    });
  }

  void read_next() {
    ws_.async_read(buffer_, [self = shared_self()](error_code ec, size_t) {
      if (self->dead_) return;
      if (ec == websocket::error::closed) {
        if (self->closing_) return self->abort();
        return self->fail(DisconnectReason::closed_by_peer, "closed by peer");
      }
      if (ec == websocket::error::message_too_big) {
        return self->fail(DisconnectReason::reset,
                          "oversized message: more than " + std::to_string(self->host_.options_.frame_bytes_max) + " bytes",
                          true);
      }
      if (ec) {
        const bool protocol = ec == websocket::condition::protocol_violation;
        return self->fail(DisconnectReason::reset, "read: " + ec.message(), protocol);
      }
      if (!self->ws_.got_binary()) {
        return self->fail(DisconnectReason::reset, "a text message where binary frames are expected", true);
      }
      const auto data = self->buffer_.data();
      const ByteView frame(static_cast<const uint8_t*>(data.data()), data.size());
      if (self->attached) {
        self->host_.stats_.frames_delivered++;
        self->host_.stats_.bytes_delivered += frame.size();
        self->host_.frame(*self, frame);
      }
      if (self->dead_) return;
      self->buffer_ = beast::flat_buffer();  // idle connections hold no read buffer
      if (!self->closing_) self->read_next();
    });
  }

  void write_next() override {
    if (dead_ || writing_) return;
    if (queue_.empty()) {
      if (closing_ && !close_sent_) {
        close_sent_ = true;
        writing_ = true;
        ws_.async_close(websocket::close_code::normal, [self = shared_self()](error_code) {
          self->writing_ = false;
          self->abort();
        });
      }
      return;
    }
    writing_ = true;
    ws_.async_write(asio::buffer(queue_.front()), [self = shared_self()](error_code ec, size_t) {
      self->on_frame_written(ec);
    });
  }

  void close_transport() override { close_stream(ws_.next_layer()); }

  websocket::stream<NextLayer> ws_;
  beast::flat_buffer buffer_;
  std::unique_ptr<http::request_parser<http::empty_body>> parser_;
  std::unique_ptr<http::response<http::string_body>> refusal_;  // refuse_upgrade()'s answer, while written
  std::string host_header_;  // the upgrade request's Host: the address (or name) and port dialled
  Endpoint where_;           // outbound: what start_connect dialled (the fallback's key)
  bool tcp_connected_ = false;
  bool close_sent_ = false;
};

using WsConn = BasicWsConn<beast::tcp_stream>;

// ---------------------------------------------------------------------------------------------
// HTTP long polling (live/long_poll.h): a device that cannot open a WebSocket reaches the same
// node on the same port with HTTP/1.1 requests. On the node's side a session (LpSession) is the
// connection the node sees; the HTTP connections (LpHttpConn) that carry its requests come and go.

class LpHttpConn;

// The node's connection to one long-polling device: frames from the device arrive in sends,
// frames to it wait (numbered) until a poll takes them and a later poll acknowledges them.
class LpSession final : public Conn {
 public:
  LpSession(LiveHost::Impl& host, NodeId local, NodeId opener, uint64_t token)
      : Conn(host, local, false), token_(token) {
    peer = opener;
  }

  uint64_t token() const { return token_; }
  void start_connect(const Endpoint&) override {}  // an accepted session never dials

  // The device's open request: the node gets on_accept.
  void open() {
    established = true;
    ready_to_write_ = true;
    touch();
    host_.accepted(*this);
  }

  // A send's frames, numbered from seq: the ones not delivered before go to the node in order.
  Status deliver(uint64_t seq, std::vector<Bytes>& frames) {
    touch();
    Result<size_t> repeated = inbox_.already_delivered(seq, frames.size());
    if (!repeated.ok()) return repeated.error();
    auto self = shared_from_this();
    for (size_t i = *repeated; i < frames.size(); ++i) {
      inbox_.delivered(1);
      if (dead_ || !attached) continue;  // the node closed: later frames are dropped, as on a socket
      host_.stats_.frames_delivered++;
      host_.stats_.bytes_delivered += frames[i].size();
      host_.frame(*this, frames[i]);
    }
    return {};
  }

  // A poll: acknowledges frames up to `after`, then answers at once when frames are pending (or
  // the node closed), else holds the request until frames come or the HTTP side's wait ends.
  Status poll(uint64_t after, const std::shared_ptr<LpHttpConn>& http);
  // The held poll's wait ended (or its connection is going away): answer it with what is pending.
  void release_waiter(const LpHttpConn* http);
  // The device's close request.
  void device_closed() {
    if (closing_) return abort();
    fail(DisconnectReason::closed_by_peer, "closed by the device (long poll)");
  }

 private:
  void touch() { arm_timer(host_.options_.long_poll_idle_expiry_ns, "long-poll session idle past its expiry"); }
  bool over_frame_bound() const override {
    return outbox_.pending_frames() + queue_.size() >= host_.options_.long_poll_pending_frames_max;
  }
  // Frames the node sent move to the outbox (their bytes stay counted in queued_bytes_ until
  // acknowledged); a held poll is answered once per loop turn, so a burst goes in one answer.
  void write_next() override {
    while (!queue_.empty()) {
      outbox_.push(std::move(queue_.front()));
      queue_.pop_front();
    }
    if (waiter_ && !wake_posted_ && (outbox_.pending_frames() > 0 || closing_)) {
      wake_posted_ = true;
      asio::post(host_.io_, [self = std::static_pointer_cast<LpSession>(shared_from_this())] {
        self->wake_posted_ = false;
        if (!self->dead_ && self->waiter_) self->answer_waiter();
      });
    }
  }
  void close_transport() override;
  void answer_waiter();

  uint64_t token_;
  long_poll::Outbox outbox_;
  long_poll::Inbox inbox_;
  std::shared_ptr<LpHttpConn> waiter_;  // the held poll
  bool wake_posted_ = false;
};

// One HTTP/1.1 connection to a node's port carrying long-poll requests (keep-alive). Requests are
// read one at a time with Beast's parser; an idle connection holds no buffer and waits for
// readability; a request begun must be complete within the handshake timeout.
class LpHttpConn final : public std::enable_shared_from_this<LpHttpConn> {
 public:
  LpHttpConn(LiveHost::Impl& host, NodeId local, tcp::socket socket, beast::flat_buffer buffer)
      : host_(host), local_(local), stream_(std::move(socket)), buffer_(std::move(buffer)), timer_(host.io_) {}

  // Reads the first request (its first bytes are in the buffer already).
  void start() { read_request(); }

  // A poll's answer: frames numbered from `first` (the body), and whether the node closed after them.
  void answer_poll(uint64_t first, std::string body, bool closed) {
    timer_.cancel();
    http::response<http::string_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "application/octet-stream");
    res.set(long_poll::kFirstHeader, std::to_string(first));
    if (closed) res.set(long_poll::kClosedHeader, "1");
    res.body() = std::move(body);
    respond(std::move(res));
  }
  void answer(http::status status, std::string text = {}) {
    timer_.cancel();
    http::response<http::string_body> res{status, 11};
    if (!text.empty()) res.set(http::field::content_type, "text/plain");
    res.body() = std::move(text);
    respond(std::move(res));
  }

 private:
  void close() {
    error_code ignored;
    timer_.cancel();
    stream_.socket().close(ignored);
  }

  // Waits for the next request without a buffer (at most the idle expiry), then reads it.
  void wait_for_request() {
    timer_.expires_after(std::chrono::nanoseconds(host_.options_.long_poll_idle_expiry_ns));
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->close();
    });
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
      self->timer_.cancel();
      if (ec || self->host_.shut_down_) return self->close();
      self->read_request();
    });
  }

  void read_request() {
    parser_.emplace();
    parser_->header_limit(8 * 1024);
    parser_->body_limit(host_.options_.long_poll_body_bytes_max);
    stream_.expires_after(std::chrono::nanoseconds(host_.options_.handshake_timeout_ns));
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      self->on_request(ec);
    });
  }

  void on_request(error_code ec) {
    stream_.expires_never();
    if (ec == http::error::end_of_stream) return close();
    if (ec) {
      host_.stats_.connections_rejected++;
      host_.log(local_, LogLevel::warn, "long-poll connection closed: bad or slow request: " + ec.message());
      if (ec == http::error::body_limit) return answer_then_close(http::status::payload_too_large, "body too large");
      return close();
    }
    request_ = parser_->release();
    parser_.reset();
    requests_++;
    keep_alive_ = request_.keep_alive();
    host_.stats_.long_poll_requests++;
    const std::string_view target(request_.target().data(), request_.target().size());
    Result<long_poll::Target> parsed = long_poll::parse_target(target);
    if (!parsed.ok()) return answer(http::status::bad_request, parsed.error().message);
    const long_poll::Target& t = *parsed;
    const bool get = t.verb == long_poll::Verb::poll;
    if (request_.method() != (get ? http::verb::get : http::verb::post)) {
      return answer(http::status::method_not_allowed, get ? "poll is a GET" : "open, send and close are POSTs");
    }
    NodeSlot* s = host_.slot(local_);
    if (s == nullptr || !s->running || s->stopping) return answer(http::status::service_unavailable, "the node is not running");

    if (t.verb == long_poll::Verb::open) {
      if (host_.lp_sessions_.size() >= host_.options_.long_poll_sessions_max) {
        return answer(http::status::service_unavailable, "too many long-poll sessions");
      }
      uint64_t token = 0;
      while (token == 0 || host_.lp_sessions_.count(token) != 0) token = host_.lp_tokens_.next_u64();
      auto session = std::make_shared<LpSession>(host_, local_, t.opener, token);
      session->id = host_.next_conn_++;
      host_.lp_sessions_[token] = session;
      session->open();
      if (session->dead()) return answer(http::status::service_unavailable, "the node is not running");
      http::response<http::string_body> res{http::status::ok, 11};
      res.set(long_poll::kSessionHeader, long_poll::format_session(token));
      return respond(std::move(res));
    }

    auto found = host_.lp_sessions_.find(t.session);
    if (found == host_.lp_sessions_.end() || found->second->local() != local_ || found->second->peer != t.opener) {
      return answer(http::status::not_found, "no such long-poll session");
    }
    std::shared_ptr<LpSession> session = found->second;
    switch (t.verb) {
      case long_poll::Verb::send: {
        Result<std::vector<Bytes>> frames = long_poll::decode_frames(
            request_.body(), host_.options_.frame_bytes_max, host_.options_.long_poll_pending_frames_max);
        if (!frames.ok()) {
          return answer(frames.error().code == ErrorCode::too_large ? http::status::payload_too_large
                                                                      : http::status::bad_request,
                        frames.error().message);
        }
        const Status delivered = session->deliver(t.number, *frames);
        if (!delivered.ok()) return answer(http::status::conflict, delivered.error().message);
        return answer(http::status::ok);
      }
      case long_poll::Verb::poll: {
        const Status polled = session->poll(t.number, shared_from_this());
        if (!polled.ok()) return answer(http::status::bad_request, polled.error().message);
        if (!answered_) {
          // Held: answered by the session when frames come, or empty when the wait ends.
          timer_.expires_after(std::chrono::nanoseconds(host_.options_.long_poll_wait_ns));
          timer_.async_wait([self = shared_from_this(), weak = std::weak_ptr<LpSession>(session),
                             request = requests_](error_code ec) {
            if (ec || self->requests_ != request || self->answered_) return;  // answered meanwhile
            if (auto held = weak.lock()) held->release_waiter(self.get());
            if (!self->answered_) self->answer(http::status::gone, "the long-poll session ended");
          });
        }
        return;
      }
      case long_poll::Verb::close:
        session->device_closed();
        return answer(http::status::ok);
      case long_poll::Verb::open:
        break;
    }
  }

  void answer_then_close(http::status status, std::string text) {
    keep_alive_ = false;
    answer(status, std::move(text));
  }

  void respond(http::response<http::string_body> res) {
    answered_ = true;
    response_ = std::move(res);
    response_.keep_alive(keep_alive_);
    response_.prepare_payload();
    stream_.expires_after(std::chrono::nanoseconds(host_.options_.frame_timeout_ns));
    http::async_write(stream_, response_, [self = shared_from_this()](error_code ec, size_t) {
      self->stream_.expires_never();
      self->response_ = {};
      self->request_ = {};
      self->answered_ = false;
      if (ec || !self->keep_alive_ || self->host_.shut_down_) return self->close();
      if (self->buffer_.size() > 0) return self->read_request();  // pipelined: already here
      self->buffer_ = beast::flat_buffer();                        // idle: hold no buffer
      self->wait_for_request();
    });
  }

  LiveHost::Impl& host_;
  NodeId local_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  asio::steady_timer timer_;  // a held poll's wait, or the idle wait for the next request
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  bool keep_alive_ = true;
  bool answered_ = false;
  uint64_t requests_ = 0;  // counts requests, so a held poll's timer knows its own
};

Status LpSession::poll(uint64_t after, const std::shared_ptr<LpHttpConn>& http) {
  touch();
  const size_t before = outbox_.pending_frames();
  Result<size_t> freed = outbox_.acknowledge(after);
  if (!freed.ok()) return freed.error();
  queued_bytes_ -= *freed;
  host_.stats_.frames_sent += before - outbox_.pending_frames();
  if (waiter_) {
    // A newer poll replaces a held one (whose answer the device no longer waits for).
    std::shared_ptr<LpHttpConn> old = std::move(waiter_);
    old->answer_poll(outbox_.first_number(), std::string(), false);
  }
  waiter_ = http;
  if (outbox_.pending_frames() > 0 || closing_) answer_waiter();
  return {};
}

void LpSession::answer_waiter() {
  std::shared_ptr<LpHttpConn> http = std::move(waiter_);
  uint64_t first = 0;
  std::string body = outbox_.answer(host_.options_.long_poll_body_bytes_max, first);
  size_t in_body = 0;
  for (size_t at = 0; at + 4 <= body.size(); in_body++) {
    const auto* p = reinterpret_cast<const uint8_t*>(body.data() + at);
    at += 4 + ((size_t{p[0]} << 24) | (size_t{p[1]} << 16) | (size_t{p[2]} << 8) | size_t{p[3]});
  }
  // The node closed and every pending frame is in this answer: the device learns it with them,
  // and the session ends (a lost answer then reads as a reset: the device's next poll gets 404).
  const bool closed = closing_ && in_body == outbox_.pending_frames();
  http->answer_poll(first, std::move(body), closed);
  if (closed) abort();
}

void LpSession::release_waiter(const LpHttpConn* http) {
  if (waiter_.get() != http) return;
  std::shared_ptr<LpHttpConn> held = std::move(waiter_);
  held->answer_poll(outbox_.first_number(), std::string(), false);
}

void LpSession::close_transport() {
  auto self = shared_from_this();
  host_.lp_sessions_.erase(token_);
  if (waiter_) {
    std::shared_ptr<LpHttpConn> held = std::move(waiter_);
    held->answer(http::status::gone, "the long-poll session ended");
  }
}

// A device's connection to a node by long polling: two HTTP/1.1 connections, one for sends and
// one for the held poll. A request whose connection fails is repeated on a new one (at most
// long_poll_retries_max times): the frame numbers make a repeat harmless in both directions.
class LpClientConn final : public Conn {
 public:
  LpClientConn(LiveHost::Impl& host, NodeId local) : Conn(host, local, true), send_(host.io_), poll_(host.io_) {}

  void start_connect(const Endpoint& where) override {
    host_header_ = (where.host_name.empty() ? where.address : where.host_name) + ":" + std::to_string(where.port);
    arm_timer(host_.options_.connect_timeout_ns, "no answer to the long-poll open within the timeout");
    error_code bad_address;
    address_ = asio::ip::make_address_v4(where.address, bad_address);
    if (bad_address) return post_refused("not an IPv4 address: " + where.address);
    port_ = where.port;
    exchange(send_, http::verb::post, long_poll::format_target({local_, long_poll::Verb::open, 0, 0}), {},
             host_.options_.connect_timeout_ns, [this](error_code ec, const Response& res) { on_open(ec, res); });
  }

 private:
  using Response = http::response<http::string_body>;
  struct Channel {
    explicit Channel(asio::io_context& io) : retry_timer(io) {}
    std::unique_ptr<beast::tcp_stream> stream;
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    std::optional<http::response_parser<http::string_body>> parser;
    asio::steady_timer retry_timer;
    uint32_t attempts = 0;
    int64_t timeout_ns = 0;
    std::function<void(error_code, const Response&)> done;
  };
  std::shared_ptr<LpClientConn> shared_self() { return std::static_pointer_cast<LpClientConn>(shared_from_this()); }

  // One request and its response on `ch`, repeated on a new connection after a failure. `done`
  // runs once (not after the connection is dropped); it may capture `this`, as the channel's
  // handlers keep the connection alive.
  void exchange(Channel& ch, http::verb verb, const std::string& target, std::string body, int64_t timeout_ns,
                std::function<void(error_code, const Response&)> done) {
    ch.request = {verb, target, 11};
    ch.request.set(http::field::host, host_header_);
    ch.request.keep_alive(true);
    if (verb == http::verb::post) ch.request.set(http::field::content_type, "application/octet-stream");
    ch.request.body() = std::move(body);
    ch.request.prepare_payload();
    ch.attempts = 0;
    ch.timeout_ns = timeout_ns;
    ch.done = std::move(done);
    attempt(ch);
  }

  void attempt(Channel& ch) {
    if (ch.stream && ch.stream->socket().is_open()) return write_request(ch);
    ch.stream = std::make_unique<beast::tcp_stream>(host_.io_);
    ch.buffer = beast::flat_buffer();
    ch.stream->expires_after(std::chrono::nanoseconds(host_.options_.connect_timeout_ns));
    ch.stream->async_connect(tcp::endpoint(address_, port_), [self = shared_self(), &ch](error_code ec) {
      if (self->dead_) return;
      if (ec) return self->retry_or_fail(ch, ec);
      error_code ignored;
      ch.stream->socket().set_option(tcp::no_delay(true), ignored);
      self->write_request(ch);
    });
  }

  void write_request(Channel& ch) {
    ch.stream->expires_after(std::chrono::nanoseconds(ch.timeout_ns));
    http::async_write(*ch.stream, ch.request, [self = shared_self(), &ch](error_code ec, size_t) {
      if (self->dead_) return;
      if (ec) return self->retry_or_fail(ch, ec);
      ch.parser.emplace();
      ch.parser->header_limit(8 * 1024);
      ch.parser->body_limit(self->host_.options_.long_poll_body_bytes_max);
      http::async_read(*ch.stream, ch.buffer, *ch.parser, [self, &ch](error_code ec, size_t) {
        if (self->dead_) return;
        if (ec) return self->retry_or_fail(ch, ec);
        ch.stream->expires_never();
        Response res = ch.parser->release();
        ch.parser.reset();
        if (!res.keep_alive()) close_channel(ch);
        if (ch.buffer.size() == 0) ch.buffer = beast::flat_buffer();
        self->host_.stats_.long_poll_requests++;
        auto done = std::move(ch.done);
        ch.done = nullptr;
        done(error_code{}, res);
      });
    });
  }

  void retry_or_fail(Channel& ch, error_code ec) {
    close_channel(ch);
    if (++ch.attempts > host_.options_.long_poll_retries_max) {
      auto done = std::move(ch.done);
      ch.done = nullptr;
      if (done) done(ec, Response{});
      return;
    }
    host_.stats_.long_poll_retries++;
    ch.retry_timer.expires_after(std::chrono::nanoseconds(host_.options_.long_poll_retry_delay_ns));
    ch.retry_timer.async_wait([self = shared_self(), &ch](error_code wait_ec) {
      if (wait_ec || self->dead_) return;
      self->attempt(ch);
    });
  }

  static void close_channel(Channel& ch) {
    if (!ch.stream) return;
    error_code ignored;
    ch.stream->socket().close(ignored);
  }

  void on_open(error_code ec, const Response& res) {
    if (dead_) return;
    if (ec) return fail(DisconnectReason::refused, "long-poll open: " + ec.message());
    if (res.result() != http::status::ok) {
      return fail(DisconnectReason::refused, "long-poll open answered " + std::to_string(res.result_int()));
    }
    const auto header = res.find(long_poll::kSessionHeader);
    Result<uint64_t> session = header == res.end()
                                   ? Result<uint64_t>(make_error(ErrorCode::bad_input, "no session header"))
                                   : long_poll::parse_session(std::string_view(header->value().data(), header->value().size()));
    if (!session.ok()) return fail(DisconnectReason::refused, "long-poll open: " + session.error().message, true);
    session_ = *session;
    timer_.cancel();
    established = true;
    ready_to_write_ = true;
    host_.opened(*this);
    if (dead_) return;
    write_next();
    poll_next();
  }

  void write_next() override {
    if (dead_ || writing_ || !ready_to_write_) return;
    if (queue_.empty()) {
      if (closing_ && !close_sent_) {
        close_sent_ = true;
        writing_ = true;
        exchange(send_, http::verb::post, long_poll::format_target({local_, long_poll::Verb::close, session_, 0}), {},
                 host_.options_.frame_timeout_ns, [this](error_code, const Response&) {
                   writing_ = false;
                   abort();
                 });
      }
      return;
    }
    std::string body;
    size_t count = 0;
    for (const Bytes& frame : queue_) {
      if (count > 0 && body.size() + 4 + frame.size() > host_.options_.long_poll_body_bytes_max) break;
      long_poll::append_frame(body, frame);
      count++;
    }
    writing_ = true;
    exchange(send_, http::verb::post, long_poll::format_target({local_, long_poll::Verb::send, session_, next_seq_}),
             std::move(body), host_.options_.frame_timeout_ns, [this, count](error_code ec, const Response& res) {
               writing_ = false;
               if (dead_) return;
               if (ec) return fail(DisconnectReason::reset, "long-poll send: " + ec.message());
               if (res.result() != http::status::ok) {
                 return fail(DisconnectReason::reset, "long-poll send answered " + std::to_string(res.result_int()) +
                                                          ": " + res.body());
               }
               for (size_t i = 0; i < count; ++i) {
                 queued_bytes_ -= queue_.front().size();
                 queue_.pop_front();
                 host_.stats_.frames_sent++;
               }
               next_seq_ += count;
               write_next();
             });
  }

  void poll_next() {
    if (dead_ || closing_) return;
    exchange(poll_, http::verb::get, long_poll::format_target({local_, long_poll::Verb::poll, session_, after_}), {},
             host_.options_.long_poll_wait_ns + host_.options_.frame_timeout_ns,
             [this](error_code ec, const Response& res) { on_poll(ec, res); });
  }

  void on_poll(error_code ec, const Response& res) {
    if (dead_ || closing_) return;  // closing: the close request ends it
    if (ec) return fail(DisconnectReason::reset, "long-poll poll: " + ec.message());
    if (res.result() != http::status::ok) {
      return fail(DisconnectReason::reset, "long-poll poll answered " + std::to_string(res.result_int()) + ": " + res.body());
    }
    const auto first_header = res.find(long_poll::kFirstHeader);
    uint64_t first = 0;
    const std::string_view first_text =
        first_header == res.end() ? std::string_view() : std::string_view(first_header->value().data(), first_header->value().size());
    const auto [end, parse_ec] = std::from_chars(first_text.data(), first_text.data() + first_text.size(), first);
    if (first_text.empty() || parse_ec != std::errc() || end != first_text.data() + first_text.size() || first == 0) {
      return fail(DisconnectReason::reset, "long-poll answer without a valid first frame number", true);
    }
    Result<std::vector<Bytes>> frames =
        long_poll::decode_frames(res.body(), host_.options_.frame_bytes_max, host_.options_.long_poll_pending_frames_max);
    if (!frames.ok()) return fail(DisconnectReason::reset, frames.error().message, true);
    if (!frames->empty() && first > after_ + 1) {
      return fail(DisconnectReason::reset, "long-poll answer skipped frames " + std::to_string(after_ + 1) + ".." +
                                               std::to_string(first - 1), true);
    }
    const bool closed = res.find(long_poll::kClosedHeader) != res.end();
    auto self = shared_from_this();
    for (size_t i = 0; i < frames->size(); ++i) {
      const uint64_t number = first + i;
      if (number <= after_) continue;  // a repeated answer: delivered already
      after_ = number;
      if (!attached) continue;
      host_.stats_.frames_delivered++;
      host_.stats_.bytes_delivered += (*frames)[i].size();
      host_.frame(*this, (*frames)[i]);
      if (dead_ || closing_) return;
    }
    if (closed) return fail(DisconnectReason::closed_by_peer, "closed by peer (long poll)");
    poll_next();
  }

  void close_transport() override {
    close_channel(send_);
    close_channel(poll_);
    send_.retry_timer.cancel();
    poll_.retry_timer.cancel();
    // The callbacks hold no reference, but drop them so nothing runs after the end.
    send_.done = nullptr;
    poll_.done = nullptr;
  }

  Channel send_, poll_;
  asio::ip::address_v4 address_;
  uint16_t port_ = 0;
  std::string host_header_;
  uint64_t session_ = 0;
  uint64_t next_seq_ = 1;  // the number of queue_.front() in the device's sends
  uint64_t after_ = 0;     // the last frame from the node delivered
  bool close_sent_ = false;
};

// Reads the first bytes of an accepted connection and hands it to the transport they name.
class Sniffer : public std::enable_shared_from_this<Sniffer> {
 public:
  Sniffer(LiveHost::Impl& host, NodeId local, tcp::socket socket)
      : host_(host), local_(local), socket_(std::move(socket)), timer_(host.io_) {}

  void start() {
    timer_.expires_after(std::chrono::nanoseconds(host_.options_.handshake_timeout_ns));
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->handed_over_) return;
      self->host_.stats_.connections_rejected++;
      self->host_.log(self->local_, LogLevel::warn, "accepted connection closed: silent past the handshake timeout");
      error_code ignored;
      self->socket_.close(ignored);
    });
    read_first();
  }

 private:
  static constexpr std::string_view kLongPollGet = "GET /lp/";

  void read_first() {
    socket_.async_read_some(buffer_.prepare(512), [self = shared_from_this()](error_code ec, size_t n) {
      if (ec) {
        self->timer_.cancel();
        return;  // gone before saying anything: nothing to tell the node
      }
      self->buffer_.commit(n);
      // A GET is a WebSocket upgrade unless its target is /lp/ (a long poll): read on until the
      // request line says which (within the handshake timeout).
      const std::string_view seen(static_cast<const char*>(self->buffer_.data().data()), self->buffer_.size());
      if (seen.size() < kLongPollGet.size() && kLongPollGet.starts_with(seen)) return self->read_first();
      self->timer_.cancel();
      self->handed_over_ = true;
      self->hand_over();
    });
  }

  void hand_over() {
    const auto* first = static_cast<const uint8_t*>(buffer_.data().data());
    const std::string_view seen(reinterpret_cast<const char*>(first), buffer_.size());
    if (first[0] == 'P' || seen.starts_with(kLongPollGet)) {
      // HTTP long polling: the requests of a session (live/long_poll.h), not a connection itself.
      std::make_shared<LpHttpConn>(host_, local_, std::move(socket_), std::move(buffer_))->start();
      return;
    }
    const ConnId id = host_.next_conn_++;
    if (first[0] == 'G') {
      auto conn = std::make_shared<WsConn>(host_, local_, false, beast::tcp_stream(std::move(socket_)));
      conn->id = id;
      conn->start_inbound(std::move(buffer_));
    } else {
      auto conn = std::make_shared<FrameConn>(host_, local_, false, std::move(socket_), std::move(buffer_));
      conn->id = id;
      conn->start_inbound();
    }
  }

  LiveHost::Impl& host_;
  NodeId local_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  asio::steady_timer timer_;
  bool handed_over_ = false;
};

// ---------------------------------------------------------------------------------------------
// Context for one node.

class SlotContext final : public Context {
 public:
  SlotContext(LiveHost::Impl& host, NodeSlot& slot) : host_(host), slot_(slot) {}
  int64_t now_ns() const override { return host_.now_ns(); }
  NodeId self() const override { return slot_.id; }
  std::string_view region() const override { return slot_.region; }
  ConnId connect(NodeId peer) override { return host_.connect(slot_, peer); }
  void send(ConnId conn, Bytes frame) override { host_.send(slot_, conn, std::move(frame)); }
  void close(ConnId conn) override { host_.close(slot_, conn); }
  TimerId set_timer(int64_t delay_ns, uint64_t tag) override { return host_.set_timer(slot_, delay_ns, tag); }
  void cancel_timer(TimerId timer) override { host_.cancel_timer(slot_, timer); }
  Prng& rng() override { return slot_.rng; }
  sqlite3* db() override { return host_.db(slot_); }
  void emit(const history::Event& event) override {
    if (host_.options_.history_sink) host_.options_.history_sink(slot_.id, event);
  }
  void log(LogLevel level, std::string_view message) override { host_.log(slot_.id, level, message); }
  void charge_cpu(int64_t) override {}
  void exit() override { host_.exit(slot_); }

 private:
  LiveHost::Impl& host_;
  NodeSlot& slot_;
};

// ---------------------------------------------------------------------------------------------
// Impl

void LiveHost::Impl::opened(Conn& conn) {
  NodeSlot* s = slot(conn.local());
  if (s == nullptr || !conn.attached) return;
  stats_.connections_opened++;
  dispatch(*s, [&](Node& n, Context& c) { n.on_connected(c, conn.id); });
}

void LiveHost::Impl::accepted(Conn& conn) {
  NodeSlot* s = slot(conn.local());
  if (s == nullptr || !s->running) {
    conn.abort();
    return;
  }
  stats_.connections_opened++;
  conn.attached = true;
  s->conns[conn.id] = conn.shared_from_this();
  dispatch(*s, [&](Node& n, Context& c) { n.on_accept(c, conn.id, conn.peer); });
}

void LiveHost::Impl::frame(Conn& conn, ByteView bytes) {
  NodeSlot* s = slot(conn.local());
  if (s == nullptr || !conn.attached) return;
  if (options_.frame_observer) options_.frame_observer(s->id, bytes);
  dispatch(*s, [&](Node& n, Context& c) { n.on_frame(c, conn.id, bytes); });
}

void LiveHost::Impl::broken(Conn& conn, DisconnectReason reason) {
  NodeSlot* s = slot(conn.local());
  if (s == nullptr) return;
  auto it = s->conns.find(conn.id);
  if (it == s->conns.end()) return;  // closed by this node already: nothing more to say
  s->conns.erase(it);
  dispatch(*s, [&](Node& n, Context& c) { n.on_disconnect(c, conn.id, reason); });
}

ConnId LiveHost::Impl::connect(NodeSlot& s, NodeId peer) {
  const ConnId id = next_conn_++;
  auto listed = directory_.find(peer);
  const Endpoint* where = listed != directory_.end()            ? &listed->second
                          : options_.fallback_endpoint.has_value() ? &*options_.fallback_endpoint
                                                                   : nullptr;
  std::shared_ptr<Conn> conn;
  if (where != nullptr && where->transport == Transport::websocket &&
      (options_.long_poll_nodes.count(s.id) != 0 || reaches_by_long_poll(s.id, *where))) {
    conn = std::make_shared<LpClientConn>(*this, s.id);
  } else if (where != nullptr && where->transport == Transport::websocket) {
    conn = std::make_shared<WsConn>(*this, s.id, true, beast::tcp_stream(tcp::socket(io_)));
  } else {
    conn = std::make_shared<FrameConn>(*this, s.id, true, tcp::socket(io_), beast::flat_buffer());
  }
  conn->id = id;
  conn->peer = peer;
  conn->attached = true;
  s.conns[id] = conn;
  if (where == nullptr) {
    log(s.id, LogLevel::warn, "connect to node " + std::to_string(peer) + ": not in the directory");
    // Refused, from the loop (never inside the connect call).
    asio::post(io_, [this, conn] {
      NodeSlot* owner = slot(conn->local());
      if (owner == nullptr || owner->conns.erase(conn->id) == 0) return;
      stats_.connections_broken++;
      dispatch(*owner, [&](Node& n, Context& c) { n.on_disconnect(c, conn->id, DisconnectReason::refused); });
    });
  } else {
    conn->start_connect(*where);
  }
  return id;
}

void LiveHost::Impl::send(NodeSlot& s, ConnId id, Bytes frame) {
  auto it = s.conns.find(id);
  if (it == s.conns.end()) return;  // closed or broken: frames to it are gone
  if (options_.frame_observer) options_.frame_observer(s.id, frame);
  const uint64_t ticket = group_commit_.sync_point();
  if (!held_.empty() || ticket > group_commit_.durable()) {
    held_.push_back(HeldSend{ticket, s.id, it->second, std::move(frame), false});
    stats_.frames_held_for_sync++;
    return;
  }
  send_now(s.id, it->second, std::move(frame));
}

void LiveHost::Impl::send_now(NodeId node, const std::shared_ptr<Conn>& conn, Bytes frame) {
  if (conn->enqueue(std::move(frame))) return;
  // A slow reader: its queue passed the bound. Reset only this connection, and tell the node
  // from the loop.
  stats_.connections_rejected++;
  stats_.connections_broken++;
  log(node, LogLevel::warn,
      "connection " + std::to_string(conn->id) + " to node " + std::to_string(conn->peer) +
          " reset: slow reader, outbound queue passed " + std::to_string(options_.outbound_bytes_max) + " bytes");
  conn->abort();
  asio::post(io_, [this, conn] {
    NodeSlot* owner = slot(conn->local());
    if (owner == nullptr || owner->conns.erase(conn->id) == 0) return;
    dispatch(*owner, [&](Node& n, Context& c) { n.on_disconnect(c, conn->id, DisconnectReason::reset); });
  });
}

bool LiveHost::Impl::reaches_by_long_poll(NodeId node, const Endpoint& where) const {
  auto it = upgrades_.find({node, endpoint_key(where)});
  return it != upgrades_.end() && it->second.long_poll;
}

bool LiveHost::Impl::websocket_upgrade_failed(Conn& conn, const Endpoint& where, bool declined, std::string_view why) {
  NodeSlot* s = slot(conn.local());
  if (s == nullptr || shut_down_) return false;
  auto current = s->conns.find(conn.id);
  if (current == s->conns.end() || current->second.get() != &conn) return false;  // the node closed it
  const std::string key = endpoint_key(where);
  UpgradeRecord& record = upgrades_[{conn.local(), key}];
  record.failures_in_a_row++;
  if (!declined && record.failures_in_a_row < options_.websocket_upgrade_failures_max) return false;
  record.long_poll = true;
  stats_.long_poll_fallbacks++;
  log(conn.local(), LogLevel::info,
      "WebSocket upgrade to " + key + " failed (" + std::string(why) + (declined ? "" : ", " + std::to_string(record.failures_in_a_row) + " in a row") +
          "): long polling there from now on");
  // The attempt continues over long polling under the same ConnId, with the frames the node
  // pipelined behind the handshake: the node hears on_connected (or a refusal) from the
  // replacement and nothing from this connection.
  auto replacement = std::make_shared<LpClientConn>(*this, conn.local());
  replacement->id = conn.id;
  replacement->peer = conn.peer;
  replacement->attached = true;
  for (Bytes& frame : conn.take_queue()) {
    if (!replacement->enqueue(std::move(frame))) return false;  // past long polling's bounds: refused
  }
  auto keep_alive = conn.shared_from_this();
  current->second = replacement;
  conn.abort();
  replacement->start_connect(where);
  return true;
}

void LiveHost::Impl::release_held(uint64_t durable) {
  while (!held_.empty() && held_.front().ticket <= durable) {
    HeldSend held = std::move(held_.front());
    held_.pop_front();
    // A connection replaced by the long-poll fallback: its frames go to the replacement.
    if (held.conn->dead()) {
      if (NodeSlot* owner = slot(held.node)) {
        auto it = owner->conns.find(held.conn->id);
        if (it != owner->conns.end()) held.conn = it->second;
      }
    }
    if (held.close) held.conn->close_gracefully();
    else send_now(held.node, held.conn, std::move(held.frame));  // dropped if the conn died meanwhile
  }
}

// What the nodes took for committed may not be on the disk: they stop, as a node does when its
// own commit fails (fail-stop), and the supervisor restarts them from what the disk kept.
void LiveHost::Impl::sync_failed(const std::string& what) {
  held_.clear();
  for (auto& [id, s] : slots_) {
    if (!s.running) continue;
    log(id, LogLevel::error, "group commit: " + what + "; stopping");
    stop_node(s);
    if (options_.on_exit) options_.on_exit(id, false);
  }
}

void LiveHost::Impl::close(NodeSlot& s, ConnId id) {
  auto it = s.conns.find(id);
  if (it == s.conns.end()) return;
  std::shared_ptr<Conn> conn = it->second;
  s.conns.erase(it);
  if (!held_.empty()) {
    held_.push_back(HeldSend{0, s.id, std::move(conn), {}, true});  // after the frames held before it
    return;
  }
  conn->close_gracefully();
}

TimerId LiveHost::Impl::set_timer(NodeSlot& s, int64_t delay_ns, uint64_t tag) {
  const TimerId id = next_timer_++;
  auto timer = std::make_unique<asio::steady_timer>(io_);
  timer->expires_after(std::chrono::nanoseconds(std::max<int64_t>(0, delay_ns)));
  timer->async_wait([this, node = s.id, generation = s.generation, id, tag](error_code ec) {
    if (ec) return;  // cancelled
    NodeSlot* owner = slot(node);
    if (owner == nullptr || owner->generation != generation || owner->timers.erase(id) == 0) return;
    stats_.timers_fired++;
    dispatch(*owner, [&](Node& n, Context& c) { n.on_timer(c, tag); });
  });
  s.timers[id] = std::move(timer);
  return id;
}

void LiveHost::Impl::cancel_timer(NodeSlot& s, TimerId id) { s.timers.erase(id); }

sqlite3* LiveHost::Impl::db(NodeSlot& s) {
  if (s.db != nullptr) return s.db;
  const std::string path = options_.run_dir + "/node-" + std::to_string(s.id) + ".db";
  // Through the group commit shim: synchronous=FULL commits sync in batches off the loop, and
  // the node's frames wait for them (send).
  Result<sqlite3*> opened = group_commit_.open(path);
  MSGSIM_ASSERT(opened.ok(), opened.ok() ? std::string() : opened.error().message);
  sqlite3* db = *opened;
  const Status configured = sql::configure_durable(db);
  MSGSIM_ASSERT(configured.ok(), "cannot configure " + path + ": " + configured.error().message);
  // Checkpoints at 8,000 log pages, the bulk of each on the checkpointer's thread and its tail
  // on the loop (live/wal_checkpointer.h).
  const Status attached = checkpointer_.attach(db, path);
  MSGSIM_ASSERT(attached.ok(), "cannot watch " + path + ": " + (attached.ok() ? std::string() : attached.error().message));
  s.db = db;
  return db;
}

void LiveHost::Impl::exit(NodeSlot& s) {
  if (!s.running) return;
  const bool draining = s.draining;
  log(s.id, LogLevel::info, draining ? "drained, stopping" : "fail-stop: the node asked to stop");
  s.stopping = true;
  // The node's handler is still on the stack: stop it from the loop.
  asio::post(io_, [this, id = s.id, draining] {
    NodeSlot* owner = slot(id);
    if (owner == nullptr || !owner->running) return;
    stop_node(*owner);
    if (options_.on_exit) options_.on_exit(id, draining);
  });
  s.draining = false;
}

void LiveHost::Impl::start(NodeId id) {
  NodeSlot* s = slot(id);
  MSGSIM_ASSERT(s != nullptr, "start of a node this host does not hold: " + std::to_string(id));
  if (s->running) return;
  s->generation++;
  s->rng = Prng(options_.seed).split("node").split(id).split(options_.incarnation * 1000 + s->generation);
  s->node = s->factory();
  s->ctx = std::make_unique<SlotContext>(*this, *s);
  s->running = true;
  s->stopping = false;
  s->draining = false;
  asio::post(io_, [this, id, generation = s->generation] {
    NodeSlot* owner = slot(id);
    if (owner == nullptr || owner->generation != generation) return;
    dispatch(*owner, [&](Node& n, Context& c) { n.on_start(c); });
  });
}

void LiveHost::Impl::stop_node(NodeSlot& s) {
  s.running = false;
  s.draining = false;
  for (auto& [id, conn] : s.conns) conn->abort();
  s.conns.clear();
  s.timers.clear();
  s.drain_timer.reset();
  s.node.reset();
  s.ctx.reset();
  if (s.db != nullptr) {
    checkpointer_.detach(s.db);
    sqlite3_close_v2(s.db);
    s.db = nullptr;
  }
}

void LiveHost::Impl::do_accept(NodeSlot& s) {
  s.acceptor->async_accept([this, id = s.id](error_code ec, tcp::socket socket) {
    NodeSlot* owner = slot(id);
    if (owner == nullptr || !owner->acceptor || shut_down_) return;
    if (ec == asio::error::operation_aborted) return;
    if (!ec) std::make_shared<Sniffer>(*this, id, std::move(socket))->start();
    else log(id, LogLevel::warn, "accept: " + ec.message());
    do_accept(*owner);
  });
}

void LiveHost::Impl::shutdown() {
  if (shut_down_) return;
  for (auto& [id, s] : slots_) {
    if (s.acceptor) {
      error_code ignored;
      s.acceptor->close(ignored);
    }
    stop_node(s);
  }
  shut_down_ = true;
}

// ---------------------------------------------------------------------------------------------
// LiveHost

std::weak_ptr<void> LiveHostTestSeam::accept_websocket(LiveHost& host, NodeId id, beast::test::stream stream) {
  LiveHost::Impl& impl = *host.impl_;
  auto conn = std::make_shared<BasicWsConn<beast::test::stream>>(impl, id, false, std::move(stream));
  conn->id = impl.next_conn_++;
  conn->start_inbound(beast::flat_buffer());
  return conn;
}

LiveHost::LiveHost(asio::io_context& io, LiveHostOptions options, Directory directory)
    : impl_(std::make_unique<Impl>(io, std::move(options), std::move(directory))) {}

LiveHost::~LiveHost() = default;

void LiveHost::add_node(NodeId id, std::string name, std::string region, NodeFactory factory) {
  NodeSlot& s = impl_->slots_[id];
  MSGSIM_ASSERT(!s.factory, "node added twice: " + std::to_string(id));
  s.id = id;
  s.name = std::move(name);
  s.region = std::move(region);
  s.factory = std::move(factory);
}

Result<uint16_t> LiveHost::listen(NodeId id, uint16_t port) {
  NodeSlot* s = impl_->slot(id);
  MSGSIM_ASSERT(s != nullptr, "listen for a node this host does not hold");
  auto acceptor = std::make_unique<tcp::acceptor>(impl_->io_);
  error_code ec;
  const tcp::endpoint endpoint(asio::ip::make_address_v4("127.0.0.1"), port);
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return make_error(ErrorCode::io_error, "listen on 127.0.0.1:" + std::to_string(port) + ": " + ec.message());
  const uint16_t bound = acceptor->local_endpoint().port();
  s->acceptor = std::move(acceptor);
  impl_->do_accept(*s);
  return bound;
}

Status LiveHost::listen_on_fd(NodeId id, int fd) {
  NodeSlot* s = impl_->slot(id);
  MSGSIM_ASSERT(s != nullptr, "listen for a node this host does not hold");
  auto acceptor = std::make_unique<tcp::acceptor>(impl_->io_);
  error_code ec;
  acceptor->assign(tcp::v4(), fd, ec);
  if (ec) return make_error(ErrorCode::io_error, "listening socket " + std::to_string(fd) + ": " + ec.message());
  s->acceptor = std::move(acceptor);
  impl_->do_accept(*s);
  return {};
}

void LiveHost::start(NodeId id) { impl_->start(id); }

void LiveHost::drain(NodeId id, int64_t drain_ns) {
  NodeSlot* s = impl_->slot(id);
  if (s == nullptr || !s->running) return;
  s->draining = true;
  const int64_t deadline = impl_->now_ns() + drain_ns;
  s->drain_timer = std::make_unique<asio::steady_timer>(impl_->io_);
  s->drain_timer->expires_after(std::chrono::nanoseconds(drain_ns));
  s->drain_timer->async_wait([impl = impl_.get(), id, generation = s->generation](error_code ec) {
    if (ec) return;
    NodeSlot* owner = impl->slot(id);
    if (owner == nullptr || owner->generation != generation || !owner->running) return;
    impl->log(id, LogLevel::warn, "drain deadline passed: stopping");
    impl->stop_node(*owner);
    if (impl->options_.on_exit) impl->options_.on_exit(id, true);
  });
  asio::post(impl_->io_, [impl = impl_.get(), id, deadline] {
    NodeSlot* owner = impl->slot(id);
    if (owner == nullptr) return;
    impl->dispatch(*owner, [&](Node& n, Context& c) { n.on_drain(c, deadline); });
  });
}

void LiveHost::shutdown() { impl_->shutdown(); }

Node* LiveHost::node(NodeId id) {
  NodeSlot* s = impl_->slot(id);
  return s != nullptr && s->running ? s->node.get() : nullptr;
}

bool LiveHost::running(NodeId id) const {
  auto it = impl_->slots_.find(id);
  return it != impl_->slots_.end() && it->second.running;
}

int64_t LiveHost::now_ns() const { return impl_->now_ns(); }

const LiveHostStats& LiveHost::stats() const { return impl_->stats_; }

size_t LiveHost::open_connections() const {
  size_t n = 0;
  for (const auto& [id, s] : impl_->slots_) n += s.conns.size();
  return n;
}

}  // namespace msgsim::live
