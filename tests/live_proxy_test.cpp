// The live fault proxy over real loopback sockets: echo, delay, cut and heal, long cut resets,
// one-way cuts, the buffer bound, and the hub's partition rules and control protocol.
//
// The proxy and the target servers run on an io_context in a background thread; the test
// thread is the client, with plain blocking sockets (receive timeouts so nothing hangs), and
// reads or changes proxy state only through on_io(), which runs on the io thread.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <type_traits>

#include "live/fault_proxy.h"

namespace msgsim::live {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// A target server on the io thread: echoes what it reads (or only counts it), and records it.
class TargetServer {
 public:
  TargetServer(asio::io_context& io, bool echo) : acceptor_(io, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0)), echo_(echo) {
    do_accept();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  size_t received_bytes() const { return received_bytes_.load(); }
  // Only from the io thread.
  const std::string& received() const { return received_; }
  void stop() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    for (auto& session : sessions_) session->socket.close(ignored);
  }

 private:
  struct Session {
    explicit Session(tcp::socket s) : socket(std::move(s)) {}
    tcp::socket socket;
    std::array<char, 65536> buffer{};
  };
  void do_accept() {
    acceptor_.async_accept([this](boost::system::error_code error, tcp::socket socket) {
      if (error) return;
      auto session = std::make_shared<Session>(std::move(socket));
      sessions_.push_back(session);
      do_read(session);
      do_accept();
    });
  }
  void do_read(std::shared_ptr<Session> session) {
    session->socket.async_read_some(asio::buffer(session->buffer), [this, session](boost::system::error_code error, size_t n) {
      if (error == asio::error::eof) {
        // The client is done: close our side too, as a well-behaved server does.
        boost::system::error_code ignored;
        session->socket.shutdown(tcp::socket::shutdown_send, ignored);
      }
      if (error) return;
      received_.append(session->buffer.data(), n);
      received_bytes_ += n;
      if (!echo_) {
        do_read(session);
        return;
      }
      auto copy = std::make_shared<std::string>(session->buffer.data(), n);
      asio::async_write(session->socket, asio::buffer(*copy), [this, session, copy](boost::system::error_code write_error, size_t) {
        if (!write_error) do_read(session);
      });
    });
  }

  tcp::acceptor acceptor_;
  bool echo_;
  std::string received_;
  std::atomic<size_t> received_bytes_{0};
  std::vector<std::shared_ptr<Session>> sessions_;
};

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    echo_ = std::make_unique<TargetServer>(io_, true);
    work_.emplace(asio::make_work_guard(io_));
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    on_io([this] {
      if (proxy_) proxy_->stop();
      echo_->stop();
      if (sink_) sink_->stop();
    });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  template <typename F>
  std::invoke_result_t<F> on_io(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto future = task.get_future();
    asio::post(io_, [&task] { task(); });
    return future.get();
  }

  uint16_t start_proxy(uint16_t target_port, FaultProxyConfig config = {}) {
    config.target_port = target_port;
    config.name = "test";
    return on_io([&] {
      proxy_ = std::make_unique<FaultProxy>(io_, config);
      const auto started = proxy_->start();
      EXPECT_TRUE(started.ok()) << (started.ok() ? "" : started.error().message);
      return proxy_->port();
    });
  }

  // Waits until `done` holds, polling: proxy and target state changes on the io thread, after
  // the socket operations the test thread sees. The deadline only turns a hang into a failure;
  // it is generous because CI runs this beside other tests and fuzzers on 2 cores.
  template <typename Predicate>
  static bool wait_until(Predicate done) {
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (!done()) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  // Receives wait up to kReceiveTimeoutMs for bytes that must arrive (a guard against hanging,
  // not a speed bound); tests of held bytes pass a short timeout to see that nothing arrives.
  static constexpr int kReceiveTimeoutMs = 10000;

  static int dial(uint16_t port, int receive_timeout_ms = kReceiveTimeoutMs) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0) << std::strerror(errno);
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_receive_timeout(fd, receive_timeout_ms);
    return fd;
  }
  static void set_receive_timeout(int fd, int ms) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  static void send_all(int fd, const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      ASSERT_GT(n, 0) << std::strerror(errno);
      sent += static_cast<size_t>(n);
    }
  }
  // Reads exactly `size` bytes, or fewer if the receive timeout or the end comes first.
  static std::string receive(int fd, size_t size) {
    std::string out(size, '\0');
    size_t got = 0;
    while (got < size) {
      const ssize_t n = ::recv(fd, out.data() + got, size - got, 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    out.resize(got);
    return out;
  }
  static double elapsed_ms(Clock::time_point since) {
    return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
  }

  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::unique_ptr<TargetServer> echo_;
  std::unique_ptr<TargetServer> sink_;
  std::unique_ptr<FaultProxy> proxy_;
};

TEST_F(ProxyTest, EchoKeepsByteOrderOverManyConnections) {
  const uint16_t port = start_proxy(echo_->port());
  std::vector<int> fds;
  for (int c = 0; c < 5; ++c) fds.push_back(dial(port));
  std::string expected[5];
  for (int round = 0; round < 50; ++round) {
    for (int c = 0; c < 5; ++c) {
      const std::string message = "conn " + std::to_string(c) + " message " + std::to_string(round) + ";";
      send_all(fds[c], message);
      expected[c] += message;
    }
  }
  for (int c = 0; c < 5; ++c) {
    EXPECT_EQ(receive(fds[c], expected[c].size()), expected[c]);
    ::close(fds[c]);
  }
  size_t total = 0;
  for (const auto& e : expected) total += e.size();
  // The client can read the last echoed bytes before the proxy's io thread runs the write's
  // completion handler, which is where they are counted: wait for the count, with a deadline.
  wait_until([&] { return on_io([this] { return proxy_->stats(); }).bytes_forwarded[1] >= total; });
  const auto stats = on_io([this] { return proxy_->stats(); });
  EXPECT_EQ(stats.connections_accepted, 5u);
  EXPECT_EQ(stats.bytes_forwarded[0], total);
  EXPECT_EQ(stats.bytes_forwarded[1], total);
}

TEST_F(ProxyTest, RefusedTargetResetsTheClient) {
  // A port with nothing listening: bind one, note it, close it.
  uint16_t dead_port = on_io([this] {
    tcp::acceptor a(io_, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
    return a.local_endpoint().port();
  });
  const uint16_t port = start_proxy(dead_port);
  const int fd = dial(port);
  char byte;
  const ssize_t n = ::recv(fd, &byte, 1, 0);
  EXPECT_LT(n, 0);
  EXPECT_EQ(errno, ECONNRESET);
  ::close(fd);
  EXPECT_EQ(on_io([this] { return proxy_->stats().connections_refused; }), 1u);
}

TEST_F(ProxyTest, DelayIsAddedOneWayWithinBounds) {
  const uint16_t port = start_proxy(echo_->port());
  on_io([this] { proxy_->set_delay(ProxyDirection::forward, {30 * kNanosPerMilli, 0}); });
  const int fd = dial(port);
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    send_all(fd, "ping");
    EXPECT_EQ(receive(fd, 4), "ping");
    const double rtt_ms = elapsed_ms(start);
    // Only a lower bound: an upper one would assert the machine's speed, and CI's 2 cores are
    // shared with other tests and fuzzers (a 70 ms bound failed under load).
    EXPECT_GE(rtt_ms, 30.0);
  }
  // Jitter and a spike: base 10 ms + 20 ms extra + jitter of mean 2 ms capped at 20 x 2 ms.
  on_io([this] {
    proxy_->set_delay(ProxyDirection::forward, {10 * kNanosPerMilli, 2 * kNanosPerMilli});
    proxy_->set_extra_delay(ProxyDirection::backward, 20 * kNanosPerMilli);
  });
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    send_all(fd, "pong");
    EXPECT_EQ(receive(fd, 4), "pong");
    const double rtt_ms = elapsed_ms(start);
    EXPECT_GE(rtt_ms, 30.0);
  }
  ::close(fd);
}

TEST_F(ProxyTest, DelayedChunksKeepFifoOrderDespiteJitter) {
  const uint16_t port = start_proxy(echo_->port());
  // Jitter far larger than the gap between sends: later chunks often draw shorter delays.
  on_io([this] { proxy_->set_delay(ProxyDirection::forward, {1 * kNanosPerMilli, 5 * kNanosPerMilli}); });
  const int fd = dial(port);
  std::string expected;
  for (int i = 0; i < 100; ++i) {
    const std::string part = std::to_string(i) + ",";
    send_all(fd, part);
    expected += part;
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  EXPECT_EQ(receive(fd, expected.size()), expected);
  ::close(fd);
}

TEST_F(ProxyTest, CutHoldsBytesAndHealDeliversThem) {
  const uint16_t port = start_proxy(echo_->port());
  const int fd = dial(port, 300);
  send_all(fd, "before;");
  EXPECT_EQ(receive(fd, 7), "before;");
  on_io([this] {
    proxy_->set_cut(ProxyDirection::forward, true);
    proxy_->set_cut(ProxyDirection::backward, true);
  });
  send_all(fd, "held;");
  EXPECT_EQ(receive(fd, 5), "");  // times out after 300 ms: nothing passes
  EXPECT_EQ(echo_->received_bytes(), 7u);
  EXPECT_TRUE(wait_until([this] { return on_io([this] { return proxy_->buffered_bytes(ProxyDirection::forward); }) == 5u; }));
  on_io([this] {
    proxy_->set_cut(ProxyDirection::forward, false);
    proxy_->set_cut(ProxyDirection::backward, false);
  });
  set_receive_timeout(fd, kReceiveTimeoutMs);
  EXPECT_EQ(receive(fd, 5), "held;");
  EXPECT_EQ(on_io([this] { return proxy_->stats().connections_reset_by_cut; }), 0u);
  ::close(fd);
}

TEST_F(ProxyTest, CutLongerThanTheTimeoutResetsBothSides) {
  FaultProxyConfig config;
  config.cut_timeout_ns = 300 * kNanosPerMilli;
  const uint16_t port = start_proxy(echo_->port(), config);
  const int idle = dial(port);
  const int busy = dial(port);
  send_all(busy, "x");
  EXPECT_EQ(receive(busy, 1), "x");
  send_all(idle, "y");
  EXPECT_EQ(receive(idle, 1), "y");
  on_io([this] { proxy_->set_cut(ProxyDirection::forward, true); });
  const auto start = Clock::now();
  send_all(busy, "lost");
  char byte;
  const ssize_t n = ::recv(busy, &byte, 1, 0);
  const double waited_ms = elapsed_ms(start);
  EXPECT_LT(n, 0);
  EXPECT_EQ(errno, ECONNRESET);
  EXPECT_GE(waited_ms, 290.0);  // no upper bound: it would assert the machine's speed
  ::close(busy);
  // The idle connection held nothing, so it survives the cut, as in the simulator.
  on_io([this] { proxy_->set_cut(ProxyDirection::forward, false); });
  send_all(idle, "alive");
  EXPECT_EQ(receive(idle, 5), "alive");
  ::close(idle);
  const auto stats = on_io([this] { return proxy_->stats(); });
  EXPECT_EQ(stats.connections_reset_by_cut, 1u);
  EXPECT_EQ(echo_->received_bytes(), 1u + 1u + 5u);  // "lost" never reached the target
}

TEST_F(ProxyTest, OneWayCutHoldsOnlyThatDirection) {
  const uint16_t port = start_proxy(echo_->port());
  const int fd = dial(port, 300);
  on_io([this] { proxy_->set_cut(ProxyDirection::backward, true); });
  send_all(fd, "ping");
  EXPECT_EQ(receive(fd, 4), "");  // the reply is held
  EXPECT_TRUE(wait_until([this] { return echo_->received_bytes() == 4u; }));  // but the request went through
  EXPECT_TRUE(wait_until([this] { return on_io([this] { return proxy_->buffered_bytes(ProxyDirection::backward); }) == 4u; }));
  on_io([this] { proxy_->set_cut(ProxyDirection::backward, false); });
  set_receive_timeout(fd, kReceiveTimeoutMs);
  EXPECT_EQ(receive(fd, 4), "ping");
  // The other way round: requests held, nothing reaches the target.
  on_io([this] { proxy_->set_cut(ProxyDirection::forward, true); });
  send_all(fd, "pong");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(echo_->received_bytes(), 4u);
  on_io([this] { proxy_->set_cut(ProxyDirection::forward, false); });
  EXPECT_EQ(receive(fd, 4), "pong");
  ::close(fd);
}

TEST_F(ProxyTest, BufferBoundStopsReadingAndLosesNothing) {
  sink_ = std::make_unique<TargetServer>(io_, false);
  FaultProxyConfig config;
  config.direction_buffer_bytes_max = 100 * 1000;
  const uint16_t port = start_proxy(on_io([this] { return sink_->port(); }), config);
  const int fd = dial(port);
  // Let the connection to the target complete first, then cut, so the bytes pile up.
  send_all(fd, "0");
  ASSERT_TRUE(wait_until([this] { return sink_->received_bytes() >= 1; }));
  on_io([this] { proxy_->set_cut(ProxyDirection::forward, true); });
  // Write until the kernel buffers and the proxy's buffer are full and sending would block.
  std::string expected = "0";
  std::string block(4096, '\0');
  size_t counter = 0;
  int stalls = 0;
  while (stalls < 20) {
    for (char& c : block) c = static_cast<char>('a' + (counter++ % 26));
    const ssize_t n = ::send(fd, block.data(), block.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      expected.append(block.data(), static_cast<size_t>(n));
      counter -= block.size() - static_cast<size_t>(n);
      stalls = 0;
    } else {
      ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << std::strerror(errno);
      ++stalls;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  // The client's sends would block once the kernel buffers are full, which can happen before
  // a starved io thread has read the proxy's buffer full: wait for the proxy to catch up.
  wait_until([&] { return on_io([this] { return proxy_->buffered_bytes(ProxyDirection::forward); }) >= config.direction_buffer_bytes_max; });
  const auto [buffered, stats] = on_io([this] { return std::make_pair(proxy_->buffered_bytes(ProxyDirection::forward), proxy_->stats()); });
  EXPECT_EQ(buffered, config.direction_buffer_bytes_max);  // full, to the byte
  EXPECT_LE(stats.direction_buffer_bytes_peak, config.direction_buffer_bytes_max);
  EXPECT_GE(stats.reads_paused_full, 1u);
  EXPECT_GT(expected.size(), config.direction_buffer_bytes_max);  // the rest waits in the kernel
  EXPECT_EQ(sink_->received_bytes(), 1u);
  on_io([this] { proxy_->set_cut(ProxyDirection::forward, false); });
  wait_until([&] { return sink_->received_bytes() >= expected.size(); });
  EXPECT_EQ(on_io([this] { return sink_->received(); }), expected);
  ::close(fd);
}

TEST_F(ProxyTest, SourceCloseIsForwardedAfterTheBufferedBytes) {
  const uint16_t port = start_proxy(echo_->port());
  on_io([this] { proxy_->set_delay(ProxyDirection::backward, {20 * kNanosPerMilli, 0}); });
  const int fd = dial(port);
  send_all(fd, "last words");
  ::shutdown(fd, SHUT_WR);
  EXPECT_EQ(receive(fd, 10), "last words");
  char byte;
  EXPECT_EQ(::recv(fd, &byte, 1, 0), 0);  // then the end, once the echo server closes too
  ::close(fd);
}

// The hub: partition rules as the simulator's, applied to every link's proxy.
TEST(FaultProxyHub, PartitionRulesMatchTheSimulator) {
  asio::io_context io;
  FaultProxyHub hub(io, {});
  // Symmetric: {0,1} | {2}.
  const auto symmetric = hub.partition({1, 0}, {2}, false);
  EXPECT_TRUE(hub.path_cut(0, 2));
  EXPECT_TRUE(hub.path_cut(2, 1));
  EXPECT_FALSE(hub.path_cut(0, 1));
  EXPECT_FALSE(hub.path_cut(2, 3));
  ASSERT_TRUE(hub.heal(symmetric).ok());
  EXPECT_FALSE(hub.path_cut(0, 2));
  EXPECT_FALSE(hub.heal(symmetric).ok());  // healed already: bad input, not a crash
  // One way: 3 -> 4 only.
  hub.partition({3}, {4}, true);
  EXPECT_TRUE(hub.path_cut(3, 4));
  EXPECT_FALSE(hub.path_cut(4, 3));
  hub.heal_all();
  EXPECT_FALSE(hub.path_cut(3, 4));
}

TEST_F(ProxyTest, HubAppliesPartitionsAndSpikesToLinksAndServesTheLineProtocol) {
  FaultProxyHubConfig config;
  auto hub = std::make_unique<FaultProxyHub>(io_, config);
  // Node 1 -> node 2 goes through the hub's proxy to the echo server.
  const uint16_t port = on_io([&] {
    const auto added = hub->add_link(1, 2, echo_->port(), {}, {});
    EXPECT_TRUE(added.ok());
    return added.ok() ? *added : uint16_t{0};
  });
  const uint16_t control_port = on_io([&] { return *hub->start_control(0); });
  const int control = dial(control_port);
  auto command = [&](const std::string& line) {
    send_all(control, line + "\n");
    std::string reply;
    char c;
    while (::recv(control, &c, 1, 0) == 1 && c != '\n') reply += c;
    return reply;
  };
  EXPECT_EQ(command("partition 2 1,3 one-way"), "ok 0");
  EXPECT_EQ(on_io([&] { return std::make_pair(hub->link(1, 2)->is_cut(ProxyDirection::forward),
                                              hub->link(1, 2)->is_cut(ProxyDirection::backward)); }),
            std::make_pair(false, true));
  const int fd = dial(port, 300);
  send_all(fd, "ping");
  EXPECT_EQ(receive(fd, 4), "");  // 2 -> 1 is cut: the echo is held
  EXPECT_EQ(command("heal 0"), "ok");
  set_receive_timeout(fd, kReceiveTimeoutMs);
  EXPECT_EQ(receive(fd, 4), "ping");
  EXPECT_EQ(command("latency 2 25000"), "ok");  // a 25 ms spike on node 2: both ways
  const auto start = Clock::now();
  send_all(fd, "pong");
  EXPECT_EQ(receive(fd, 4), "pong");
  EXPECT_GE(elapsed_ms(start), 50.0);
  EXPECT_EQ(command("latency 2 -25000"), "ok");
  EXPECT_EQ(command("heal 0"), "error fault proxy hub: no active partition 0");
  EXPECT_EQ(command("latency 2 -1"), "error fault proxy hub: node 2 has 0 ns of added latency, cannot remove 1000");
  EXPECT_EQ(command("partition 1,x 2"), "error partition: bad node list '1,x'");
  EXPECT_EQ(command("bogus"), "error unknown command 'bogus' (partition, heal, latency, status, cut?)");
  EXPECT_EQ(command("cut? 1 2"), "ok open");
  EXPECT_EQ(hub->submit("status").get().rfind("ok links=1 cut_directions=0 connections=1", 0), 0u);
  ::close(fd);
  ::close(control);
  on_io([&] { hub.reset(); });
}

}  // namespace
}  // namespace msgsim::live
