#include "live/fault_proxy.h"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <deque>
#include <sstream>

#include "impl/base/assert.h"
#include "sim/regions.h"

namespace msgsim::live {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The most one read takes from a socket: small enough that a direction's buffer bound is kept
// to the byte, large enough that a busy link needs few system calls.
constexpr size_t kReadChunkBytesMax = 64 * 1024;

// Closes a socket so that the peer sees a TCP RST, not a FIN.
void reset_socket(tcp::socket& socket) {
  if (!socket.is_open()) return;
  error_code ignored;
  socket.set_option(asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

}  // namespace

// One accepted connection and its upstream twin: two pipes, forward (downstream -> upstream)
// and backward (upstream -> downstream).
struct FaultProxy::Link : std::enable_shared_from_this<FaultProxy::Link> {
  struct Chunk {
    int64_t due_ns = 0;
    std::vector<uint8_t> bytes;  // empty with eof: the source closed
    bool eof = false;
  };
  struct Pipe {
    explicit Pipe(asio::io_context& io) : due_timer(io), hold_timer(io) {}
    std::deque<Chunk> chunks;
    size_t buffered_bytes = 0;
    int64_t last_due_ns = 0;
    bool reading = false;
    bool writing = false;
    bool eof_received = false;
    bool eof_sent = false;
    bool held = false;
    bool paused = false;  // reading stopped by a full buffer
    std::vector<uint8_t> read_buffer;
    asio::steady_timer due_timer;
    asio::steady_timer hold_timer;
  };

  Link(FaultProxy& proxy, uint64_t id, tcp::socket downstream)
      : proxy(proxy),
        id(id),
        downstream(std::move(downstream)),
        upstream(proxy.io_),
        pipes{Pipe(proxy.io_), Pipe(proxy.io_)} {}

  FaultProxy& proxy;
  const uint64_t id;
  tcp::socket downstream;
  tcp::socket upstream;
  bool upstream_connected = false;
  bool closed = false;
  Pipe pipes[2];

  tcp::socket& source(size_t d) { return d == 0 ? downstream : upstream; }
  tcp::socket& sink(size_t d) { return d == 0 ? upstream : downstream; }

  void start() {
    auto self = shared_from_this();
    upstream.async_connect(proxy.target_, [self](error_code error) { self->on_connected(error); });
    start_read(0);  // bytes sent before the target answers wait in the forward buffer
  }

  void on_connected(error_code error) {
    if (closed) return;
    if (error) {
      proxy.stats_.connections_refused++;
      std::fprintf(stderr, "fault proxy %s: target refused (%s); resetting the connection\n",
                   proxy.config_.name.c_str(), error.message().c_str());
      close(true);
      return;
    }
    error_code ignored;
    upstream.set_option(tcp::no_delay(true), ignored);
    upstream_connected = true;
    start_read(1);
    pump(0);
  }

  void start_read(size_t d) {
    Pipe& pipe = pipes[d];
    if (closed || pipe.reading || pipe.eof_received) return;
    const size_t room = proxy.config_.direction_buffer_bytes_max - pipe.buffered_bytes;
    if (room == 0) {
      if (!pipe.paused) proxy.stats_.reads_paused_full++;
      pipe.paused = true;
      return;
    }
    pipe.paused = false;
    pipe.reading = true;
    pipe.read_buffer.resize(std::min(room, kReadChunkBytesMax));
    auto self = shared_from_this();
    source(d).async_read_some(asio::buffer(pipe.read_buffer),
                              [self, d](error_code error, size_t n) { self->on_read(d, error, n); });
  }

  void on_read(size_t d, error_code error, size_t n) {
    Pipe& pipe = pipes[d];
    pipe.reading = false;
    if (closed) return;
    if (error == asio::error::eof) {
      pipe.eof_received = true;
      push(d, Chunk{0, {}, true});
      pipe.read_buffer = {};
      pump(d);
      return;
    }
    if (error) {
      // The source crashed or reset: the sink learns at once, bytes in flight are lost.
      proxy.stats_.connections_reset_by_peer++;
      close(true);
      return;
    }
    push(d, Chunk{0, std::vector<uint8_t>(pipe.read_buffer.begin(), pipe.read_buffer.begin() + n), false});
    pipe.buffered_bytes += n;
    proxy.stats_.direction_buffer_bytes_peak =
        std::max(proxy.stats_.direction_buffer_bytes_peak, pipe.buffered_bytes);
    pump(d);
    start_read(d);
  }

  void push(size_t d, Chunk chunk) {
    Pipe& pipe = pipes[d];
    chunk.due_ns = std::max(steady_now_ns() + proxy.sample_delay_ns(static_cast<ProxyDirection>(d)),
                            pipe.last_due_ns);
    pipe.last_due_ns = chunk.due_ns;
    pipe.chunks.push_back(std::move(chunk));
  }

  // Forwards what is due, unless the direction is cut (then the bytes are held).
  void pump(size_t d) {
    Pipe& pipe = pipes[d];
    if (closed || pipe.writing || pipe.chunks.empty()) return;
    if (d == 0 && !upstream_connected) return;
    if (proxy.cut_[d]) {
      hold(d);
      return;
    }
    Chunk& head = pipe.chunks.front();
    const int64_t now = steady_now_ns();
    if (head.due_ns > now) {
      pipe.due_timer.expires_after(std::chrono::nanoseconds(head.due_ns - now));
      auto self = shared_from_this();
      pipe.due_timer.async_wait([self, d](error_code error) {
        if (!error) self->pump(d);
      });
      return;
    }
    if (head.eof) {
      pipe.chunks.pop_front();
      pipe.eof_sent = true;
      error_code ignored;
      sink(d).shutdown(tcp::socket::shutdown_send, ignored);
      if (pipes[0].eof_sent && pipes[1].eof_sent) close(false);
      return;
    }
    pipe.writing = true;
    auto self = shared_from_this();
    asio::async_write(sink(d), asio::buffer(head.bytes),
                      [self, d](error_code error, size_t n) { self->on_written(d, error, n); });
  }

  void on_written(size_t d, error_code error, size_t n) {
    Pipe& pipe = pipes[d];
    pipe.writing = false;
    // A completed write forwarded its bytes even when the connection closed meanwhile (the peer
    // may read them and hang up before this handler runs), so count them first.
    if (!error) proxy.stats_.bytes_forwarded[d] += n;
    if (closed) return;
    if (error) {
      proxy.stats_.connections_reset_by_peer++;
      close(true);
      return;
    }
    pipe.buffered_bytes -= pipe.chunks.front().bytes.size();
    pipe.chunks.pop_front();
    start_read(d);
    pump(d);
  }

  // Bytes wait in a cut direction; if they still wait after the timeout, the connection breaks.
  void hold(size_t d) {
    Pipe& pipe = pipes[d];
    pipe.due_timer.cancel();
    if (pipe.held) return;
    pipe.held = true;
    pipe.hold_timer.expires_after(std::chrono::nanoseconds(proxy.config_.cut_timeout_ns));
    auto self = shared_from_this();
    pipe.hold_timer.async_wait([self, d](error_code error) {
      if (error || self->closed || !self->pipes[d].held) return;
      self->proxy.stats_.connections_reset_by_cut++;
      std::fprintf(stderr, "fault proxy %s: bytes held past the cut timeout; resetting the connection\n",
                   self->proxy.config_.name.c_str());
      self->close(true);
    });
  }

  // The direction was healed: held bytes leave after a fresh delay, as retransmissions would.
  void release(size_t d) {
    Pipe& pipe = pipes[d];
    if (closed) return;
    if (pipe.held) {
      pipe.held = false;
      pipe.hold_timer.cancel();
      pipe.last_due_ns = 0;
      for (Chunk& chunk : pipe.chunks) {
        chunk.due_ns = std::max(steady_now_ns() + proxy.sample_delay_ns(static_cast<ProxyDirection>(d)),
                                pipe.last_due_ns);
        pipe.last_due_ns = chunk.due_ns;
      }
    }
    pump(d);
  }

  void close(bool reset) {
    if (closed) return;
    closed = true;
    for (Pipe& pipe : pipes) {
      pipe.due_timer.cancel();
      pipe.hold_timer.cancel();
      pipe.chunks.clear();
      pipe.buffered_bytes = 0;
    }
    if (reset) {
      reset_socket(downstream);
      reset_socket(upstream);
    } else {
      error_code ignored;
      downstream.close(ignored);
      upstream.close(ignored);
    }
    proxy.forget(id);
  }
};

FaultProxy::FaultProxy(asio::io_context& io, FaultProxyConfig config)
    : io_(io), config_(std::move(config)), acceptor_(io), jitter_rng_(config_.seed) {
  MSGSIM_ASSERT_GT(config_.direction_buffer_bytes_max, size_t{0});
  MSGSIM_ASSERT_GT(config_.cut_timeout_ns, int64_t{0});
}

FaultProxy::~FaultProxy() { stop(); }

Status FaultProxy::start() {
  error_code error;
  const auto listen_ip = asio::ip::make_address(config_.listen_address, error);
  if (error) return make_error(ErrorCode::bad_input, "fault proxy " + config_.name + ": listen address '" + config_.listen_address + "': " + error.message());
  const auto target_ip = asio::ip::make_address(config_.target_address, error);
  if (error) return make_error(ErrorCode::bad_input, "fault proxy " + config_.name + ": target address '" + config_.target_address + "': " + error.message());
  if (config_.target_port == 0) return make_error(ErrorCode::bad_input, "fault proxy " + config_.name + ": target port 0");
  target_ = tcp::endpoint(target_ip, config_.target_port);
  const tcp::endpoint listen(listen_ip, config_.listen_port);
  acceptor_.open(listen.protocol(), error);
  if (!error) acceptor_.set_option(tcp::acceptor::reuse_address(true), error);
  if (!error) acceptor_.bind(listen, error);
  if (!error) acceptor_.listen(asio::socket_base::max_listen_connections, error);
  if (error) {
    error_code ignored;
    acceptor_.close(ignored);
    return make_error(ErrorCode::unavailable, "fault proxy " + config_.name + ": cannot listen on " +
                                                  config_.listen_address + ":" + std::to_string(config_.listen_port) + ": " + error.message());
  }
  port_ = acceptor_.local_endpoint().port();
  running_ = true;
  do_accept();
  return {};
}

void FaultProxy::stop() {
  running_ = false;
  error_code ignored;
  acceptor_.close(ignored);
  // close() removes the link from links_, so walk a copy.
  std::vector<std::shared_ptr<Link>> links;
  for (auto& [id, link] : links_) links.push_back(link);
  for (auto& link : links) link->close(true);
  links_.clear();
}

void FaultProxy::do_accept() {
  acceptor_.async_accept([this](error_code error, tcp::socket socket) { on_accept(error, std::move(socket)); });
}

void FaultProxy::on_accept(error_code error, tcp::socket socket) {
  if (!running_ || error == asio::error::operation_aborted) return;
  if (!error) {
    if (links_.size() >= config_.connections_max) {
      stats_.connections_over_max++;
      std::fprintf(stderr, "fault proxy %s: %zu connections already; closing a new one\n",
                   config_.name.c_str(), links_.size());
      reset_socket(socket);
    } else {
      stats_.connections_accepted++;
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      const uint64_t id = next_link_id_++;
      auto link = std::make_shared<Link>(*this, id, std::move(socket));
      links_.emplace(id, link);
      link->start();
    }
  }
  do_accept();
}

void FaultProxy::forget(uint64_t link_id) { links_.erase(link_id); }

int64_t FaultProxy::sample_delay_ns(ProxyDirection direction) {
  const size_t d = index(direction);
  int64_t delay = delay_[d].base_ns + extra_ns_[d];
  const int64_t mean = delay_[d].jitter_mean_ns;
  if (mean > 0) {
    const auto jitter = static_cast<int64_t>(jitter_rng_.exponential(static_cast<double>(mean)));
    delay += std::min(jitter, mean * config_.jitter_cap_factor);
  }
  return delay;
}

void FaultProxy::set_cut(ProxyDirection direction, bool cut) {
  const size_t d = index(direction);
  if (cut_[d] == cut) return;
  cut_[d] = cut;
  std::vector<std::shared_ptr<Link>> links;
  for (auto& [id, link] : links_) links.push_back(link);
  for (auto& link : links) {
    if (cut) {
      if (!link->pipes[d].chunks.empty() && !(d == 0 && !link->upstream_connected)) link->hold(d);
    } else {
      link->release(d);
    }
  }
}

void FaultProxy::set_delay(ProxyDirection direction, ProxyDelay delay) {
  MSGSIM_ASSERT_GE(delay.base_ns, int64_t{0});
  MSGSIM_ASSERT_GE(delay.jitter_mean_ns, int64_t{0});
  delay_[index(direction)] = delay;
}

void FaultProxy::set_extra_delay(ProxyDirection direction, int64_t extra_ns) {
  MSGSIM_ASSERT_GE(extra_ns, int64_t{0});
  extra_ns_[index(direction)] = extra_ns;
}

size_t FaultProxy::buffered_bytes(ProxyDirection direction) const {
  size_t total = 0;
  for (const auto& [id, link] : links_) total += link->pipes[index(direction)].buffered_bytes;
  return total;
}

ProxyDelay cross_region_delay(std::string_view region_a, std::string_view region_b) {
  const auto latency = sim::builtin_latency(region_a, region_b);
  if (!latency) return {};
  return ProxyDelay{latency->base_ns, latency->jitter_mean_ns};
}

// ---------------------------------------------------------------------------------------------
// The hub

// One control connection: reads lines, answers each with one line.
class FaultProxyHub::ControlSession : public std::enable_shared_from_this<ControlSession> {
 public:
  ControlSession(FaultProxyHub& hub, tcp::socket socket)
      : hub_(hub), socket_(std::move(socket)), input_(hub.config_.control_line_bytes_max) {}

  void start() { do_read(); }
  void stop() {
    error_code ignored;
    socket_.close(ignored);
  }

 private:
  void do_read() {
    auto self = shared_from_this();
    asio::async_read_until(socket_, input_, '\n', [self](error_code error, size_t n) { self->on_read(error, n); });
  }
  void on_read(error_code error, size_t n) {
    if (error == asio::error::not_found) {
      reply_ = "error line longer than " + std::to_string(hub_.config_.control_line_bytes_max) + " bytes\n";
      auto self = shared_from_this();
      asio::async_write(socket_, asio::buffer(reply_), [self](error_code, size_t) { self->stop(); });
      return;
    }
    if (error) return;
    std::string line(asio::buffers_begin(input_.data()), asio::buffers_begin(input_.data()) + static_cast<std::ptrdiff_t>(n));
    input_.consume(n);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    reply_ = hub_.execute(line) + "\n";
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(reply_), [self](error_code write_error, size_t) {
      if (!write_error) self->do_read();
    });
  }

  FaultProxyHub& hub_;
  tcp::socket socket_;
  asio::streambuf input_;
  std::string reply_;
};

FaultProxyHub::FaultProxyHub(asio::io_context& io, FaultProxyHubConfig config)
    : io_(io), config_(config) {}

FaultProxyHub::~FaultProxyHub() { stop(); }

Result<uint16_t> FaultProxyHub::add_link(NodeId from, NodeId to, uint16_t target_port,
                                         ProxyDelay delay_there, ProxyDelay delay_back) {
  const auto key = std::make_pair(from, to);
  if (links_.contains(key)) {
    return make_error(ErrorCode::bad_input, "fault proxy hub: link node " + std::to_string(from) + " -> node " +
                                                std::to_string(to) + " added twice");
  }
  FaultProxyConfig config;
  config.name = "node " + std::to_string(from) + " -> node " + std::to_string(to);
  config.target_port = target_port;
  config.direction_buffer_bytes_max = config_.direction_buffer_bytes_max;
  config.connections_max = config_.connections_max_per_link;
  config.cut_timeout_ns = config_.cut_timeout_ns;
  Prng seeds(config_.seed);
  config.seed = seeds.split("link " + std::to_string(from) + " " + std::to_string(to)).next_u64();
  auto proxy = std::make_unique<FaultProxy>(io_, config);
  if (auto started = proxy->start(); !started.ok()) return started.error();
  proxy->set_delay(ProxyDirection::forward, delay_there);
  proxy->set_delay(ProxyDirection::backward, delay_back);
  const uint16_t port = proxy->port();
  links_.emplace(key, std::move(proxy));
  apply();
  return port;
}

FaultProxy* FaultProxyHub::link(NodeId from, NodeId to) {
  const auto it = links_.find({from, to});
  return it == links_.end() ? nullptr : it->second.get();
}

FaultProxyHub::PartitionId FaultProxyHub::partition(std::vector<NodeId> from, std::vector<NodeId> to, bool one_way) {
  std::sort(from.begin(), from.end());
  std::sort(to.begin(), to.end());
  partitions_.push_back(Partition{std::move(from), std::move(to), one_way, true});
  apply();
  return static_cast<PartitionId>(partitions_.size() - 1);
}

Status FaultProxyHub::heal(PartitionId id) {
  if (id >= partitions_.size() || !partitions_[id].active) {
    return make_error(ErrorCode::bad_input, "fault proxy hub: no active partition " + std::to_string(id));
  }
  partitions_[id].active = false;
  apply();
  return {};
}

void FaultProxyHub::heal_all() {
  for (Partition& p : partitions_) p.active = false;
  apply();
}

Status FaultProxyHub::add_latency(NodeId node, int64_t extra_ns) {
  int64_t& extra = extra_latency_ns_[node];
  if (extra + extra_ns < 0) {
    return make_error(ErrorCode::bad_input, "fault proxy hub: node " + std::to_string(node) + " has " +
                                                std::to_string(extra) + " ns of added latency, cannot remove " +
                                                std::to_string(-extra_ns));
  }
  extra += extra_ns;
  apply();
  return {};
}

bool FaultProxyHub::path_cut(NodeId from, NodeId to) const {
  for (const Partition& p : partitions_) {
    if (!p.active) continue;
    const bool from_in_from = std::binary_search(p.from.begin(), p.from.end(), from);
    const bool to_in_to = std::binary_search(p.to.begin(), p.to.end(), to);
    if (from_in_from && to_in_to) return true;
    if (!p.one_way && std::binary_search(p.to.begin(), p.to.end(), from) &&
        std::binary_search(p.from.begin(), p.from.end(), to)) {
      return true;
    }
  }
  return false;
}

void FaultProxyHub::apply() {
  auto extra_of = [this](NodeId node) {
    const auto it = extra_latency_ns_.find(node);
    return it == extra_latency_ns_.end() ? int64_t{0} : it->second;
  };
  for (auto& [key, proxy] : links_) {
    const auto [from, to] = key;
    const int64_t extra = extra_of(from) + extra_of(to);
    proxy->set_extra_delay(ProxyDirection::forward, extra);
    proxy->set_extra_delay(ProxyDirection::backward, extra);
    proxy->set_cut(ProxyDirection::forward, path_cut(from, to));
    proxy->set_cut(ProxyDirection::backward, path_cut(to, from));
  }
}

namespace {

std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

template <typename T>
std::optional<T> parse_number(std::string_view text) {
  T value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// "1,2,3" -> {1, 2, 3}; nullopt on anything else (empty items, non-numbers).
std::optional<std::vector<NodeId>> parse_node_list(std::string_view text) {
  std::vector<NodeId> nodes;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const auto item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    const auto node = parse_number<NodeId>(item);
    if (!node) return std::nullopt;
    nodes.push_back(*node);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return nodes;
}

}  // namespace

std::string FaultProxyHub::execute(std::string_view line) {
  const auto words = split_words(line);
  if (words.empty()) return "error empty command";
  const std::string_view command = words[0];
  if (command == "partition") {
    // partition FROM TO [one-way]
    if (words.size() < 3 || words.size() > 4 || (words.size() == 4 && words[3] != "one-way")) {
      return "error usage: partition NODE,NODE.. NODE,NODE.. [one-way]";
    }
    const auto from = parse_node_list(words[1]);
    if (!from) return "error partition: bad node list '" + std::string(words[1]) + "'";
    const auto to = parse_node_list(words[2]);
    if (!to) return "error partition: bad node list '" + std::string(words[2]) + "'";
    return "ok " + std::to_string(partition(*from, *to, words.size() == 4));
  }
  if (command == "heal") {
    if (words.size() != 2) return "error usage: heal ID|all";
    if (words[1] == "all") {
      heal_all();
      return "ok";
    }
    const auto id = parse_number<PartitionId>(words[1]);
    if (!id) return "error heal: bad partition id '" + std::string(words[1]) + "'";
    const auto healed = heal(*id);
    return healed.ok() ? "ok" : "error " + healed.error().message;
  }
  if (command == "latency") {
    // latency NODE EXTRA_US (negative removes)
    if (words.size() != 3) return "error usage: latency NODE EXTRA_US";
    const auto node = parse_number<NodeId>(words[1]);
    if (!node) return "error latency: bad node '" + std::string(words[1]) + "'";
    const auto extra_us = parse_number<int64_t>(words[2]);
    if (!extra_us || *extra_us > 3'600'000'000 || *extra_us < -3'600'000'000) {
      return "error latency: bad microseconds '" + std::string(words[2]) + "'";
    }
    const auto added = add_latency(*node, *extra_us * kNanosPerMicro);
    return added.ok() ? "ok" : "error " + added.error().message;
  }
  if (command == "status") {
    size_t cut_directions = 0, connections = 0;
    uint64_t resets = 0, forwarded = 0;
    for (const auto& [key, proxy] : links_) {
      cut_directions += proxy->is_cut(ProxyDirection::forward) + proxy->is_cut(ProxyDirection::backward);
      connections += proxy->connection_count();
      resets += proxy->stats().connections_reset_by_cut;
      forwarded += proxy->stats().bytes_forwarded[0] + proxy->stats().bytes_forwarded[1];
    }
    std::ostringstream out;
    out << "ok links=" << links_.size() << " cut_directions=" << cut_directions << " connections=" << connections
        << " reset_by_cut=" << resets << " bytes_forwarded=" << forwarded;
    return out.str();
  }
  if (command == "cut?") {
    if (words.size() != 3) return "error usage: cut? FROM TO";
    const auto from = parse_number<NodeId>(words[1]);
    const auto to = parse_number<NodeId>(words[2]);
    if (!from || !to) return "error cut?: bad node";
    return path_cut(*from, *to) ? "ok cut" : "ok open";
  }
  return "error unknown command '" + std::string(command) + "' (partition, heal, latency, status, cut?)";
}

std::future<std::string> FaultProxyHub::submit(std::string line) {
  auto promise = std::make_shared<std::promise<std::string>>();
  auto future = promise->get_future();
  asio::post(io_, [this, promise, line = std::move(line)] { promise->set_value(execute(line)); });
  return future;
}

Result<uint16_t> FaultProxyHub::start_control(uint16_t port) {
  error_code error;
  auto acceptor = std::make_unique<tcp::acceptor>(io_);
  const tcp::endpoint endpoint(asio::ip::make_address_v4("127.0.0.1"), port);
  acceptor->open(endpoint.protocol(), error);
  if (!error) acceptor->set_option(tcp::acceptor::reuse_address(true), error);
  if (!error) acceptor->bind(endpoint, error);
  if (!error) acceptor->listen(8, error);
  if (error) {
    return make_error(ErrorCode::unavailable,
                      "fault proxy hub: cannot listen for control on 127.0.0.1:" + std::to_string(port) + ": " + error.message());
  }
  const uint16_t bound = acceptor->local_endpoint().port();
  control_ = std::move(acceptor);
  do_control_accept();
  return bound;
}

void FaultProxyHub::do_control_accept() {
  control_->async_accept([this](error_code error, tcp::socket socket) {
    if (error == asio::error::operation_aborted || !control_ || !control_->is_open()) return;
    if (!error) {
      std::erase_if(control_sessions_, [](const auto& s) { return s.expired(); });
      if (control_sessions_.size() >= config_.control_connections_max) {
        error_code ignored;
        socket.close(ignored);
      } else {
        auto session = std::make_shared<ControlSession>(*this, std::move(socket));
        control_sessions_.push_back(session);
        session->start();
      }
    }
    do_control_accept();
  });
}

void FaultProxyHub::stop() {
  if (control_) {
    error_code ignored;
    control_->close(ignored);
  }
  for (auto& weak : control_sessions_) {
    if (auto session = weak.lock()) session->stop();
  }
  control_sessions_.clear();
  for (auto& [key, proxy] : links_) proxy->stop();
}

}  // namespace msgsim::live
