// LiveHost (live/live_host.h): the runtime contract over real loopback sockets. Two test nodes
// over framed TCP and over WebSocket (frames in order, disconnect reasons, refusals, timers),
// and raw sockets that misbehave (malformed hellos and upgrades, oversized frames, slow
// writers, slow readers, abrupt disconnects): each closes only its own connection, with a log
// line, and the node never hears from it.
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "impl/base/sqlite.h"
#include "live/live_host.h"
#include "live/long_poll.h"
#include "tests/scratch_dir_test_support.h"

namespace msgsim::live {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// What a test node saw, as lines: "start", "accept 1 from 0", "connected 1", "frame 1 abc",
// "disconnect 1 closed_by_peer", "timer 7".
struct Probe {
  std::vector<std::string> events;
  std::function<void(Context&)> on_start;
  std::function<void(Context&, ConnId, ByteView)> on_frame;
  std::function<void(Context&, ConnId)> on_connected;
  std::function<void(Context&, ConnId)> on_accept;
  std::function<void(Context&, uint64_t)> on_timer;
  std::function<void(Context&, ConnId, DisconnectReason)> on_disconnect;
  bool in_handler = false;
  bool reentered = false;
  size_t count(std::string_view prefix) const {
    size_t n = 0;
    for (const auto& e : events) n += e.rfind(prefix, 0) == 0;
    return n;
  }
};

class ProbeNode final : public Node {
 public:
  explicit ProbeNode(Probe& probe) : probe_(probe) {}
  void on_start(Context& ctx) override {
    enter();
    probe_.events.push_back("start");
    if (probe_.on_start) probe_.on_start(ctx);
    leave();
  }
  void on_accept(Context& ctx, ConnId conn, NodeId peer) override {
    enter();
    probe_.events.push_back("accept " + std::to_string(conn) + " from " + std::to_string(peer));
    if (probe_.on_accept) probe_.on_accept(ctx, conn);
    leave();
  }
  void on_connected(Context& ctx, ConnId conn) override {
    enter();
    probe_.events.push_back("connected " + std::to_string(conn));
    if (probe_.on_connected) probe_.on_connected(ctx, conn);
    leave();
  }
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override {
    enter();
    probe_.events.push_back("frame " + std::to_string(conn) + " " + std::string(frame.begin(), frame.end()));
    if (probe_.on_frame) probe_.on_frame(ctx, conn, frame);
    leave();
  }
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override {
    enter();
    probe_.events.push_back("disconnect " + std::to_string(conn) + " " + to_string(reason));
    if (probe_.on_disconnect) probe_.on_disconnect(ctx, conn, reason);
    leave();
  }
  void on_timer(Context& ctx, uint64_t tag) override {
    enter();
    probe_.events.push_back("timer " + std::to_string(tag));
    if (probe_.on_timer) probe_.on_timer(ctx, tag);
    leave();
  }

 private:
  void enter() {
    if (probe_.in_handler) probe_.reentered = true;
    probe_.in_handler = true;
  }
  void leave() { probe_.in_handler = false; }
  Probe& probe_;
};

Bytes bytes_of(std::string_view s) { return Bytes(s.begin(), s.end()); }

// Runs the loop until `done` holds or 20 s pass (a guard against hanging on a loaded CI machine).
bool run_until(asio::io_context& io, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.run_for(std::chrono::milliseconds(5));
    io.restart();
  }
  return done();
}

void put_u32(uint8_t* out, uint32_t v) {
  out[0] = static_cast<uint8_t>(v >> 24);
  out[1] = static_cast<uint8_t>(v >> 16);
  out[2] = static_cast<uint8_t>(v >> 8);
  out[3] = static_cast<uint8_t>(v);
}

std::string hello(NodeId from, NodeId to) {
  std::string out(16, '\0');
  put_u32(reinterpret_cast<uint8_t*>(out.data()), 12);
  out.replace(4, 4, "MSL1");
  put_u32(reinterpret_cast<uint8_t*>(out.data()) + 8, from);
  put_u32(reinterpret_cast<uint8_t*>(out.data()) + 12, to);
  return out;
}

// How the test client reaches the server: framed TCP, WebSocket, HTTP long polling (a
// WebSocket endpoint that the client node dials by long polling, live/long_poll.h), or
// WebSocket to a server that refuses upgrades, so the client falls back to long polling.
enum class Mode { tcp, websocket, long_poll, upgrade_refused };

// A server node 1 on its own host, and a client node 0 on another host of the same loop.
struct Pair {
  explicit Pair(Transport transport, LiveHostOptions server_options = {})
      : Pair(transport == Transport::websocket ? Mode::websocket : Mode::tcp, std::move(server_options)) {}
  explicit Pair(Mode mode, LiveHostOptions server_options = {}) {
    const Transport transport = mode == Mode::tcp ? Transport::tcp_frames : Transport::websocket;
    server_options.run_dir = test::scratch_dir("live_host_test");
    if (mode == Mode::upgrade_refused) server_options.refuse_websocket_upgrades = true;
    server = std::make_unique<LiveHost>(io, server_options, Directory{});
    server->add_node(1, "server", "local", [this] { return std::make_unique<ProbeNode>(server_probe); });
    port = *server->listen(1, 0);
    LiveHostOptions client_options;
    client_options.run_dir = test::scratch_dir("live_host_test");
    if (mode == Mode::long_poll) client_options.long_poll_nodes = {0};
    client = std::make_unique<LiveHost>(io, client_options, Directory{{1, {port, transport}}, {9, {1, transport}}});
    client->add_node(0, "client", "local", [this] { return std::make_unique<ProbeNode>(client_probe); });
  }
  ~Pair() {
    client->shutdown();
    server->shutdown();
  }
  asio::io_context io;
  Probe server_probe, client_probe;
  std::unique_ptr<LiveHost> server, client;
  uint16_t port = 0;
};

class LiveHostTransport : public ::testing::TestWithParam<Mode> {};

TEST_P(LiveHostTransport, FramesArriveInOrderThenClosedByPeer) {
  Pair pair(GetParam());
  ConnId conn = kNoConn;
  pair.client_probe.on_start = [&](Context& ctx) {
    conn = ctx.connect(1);
    // Sent before on_connected: queued behind the handshake.
    for (int i = 0; i < 50; ++i) ctx.send(conn, bytes_of("m" + std::to_string(i)));
  };
  pair.client_probe.on_connected = [&](Context& ctx, ConnId c) {
    for (int i = 50; i < 100; ++i) ctx.send(c, bytes_of("m" + std::to_string(i)));
    ctx.close(c);
    ctx.send(c, bytes_of("after-close"));  // gone: the connection is closed
  };
  pair.server->start(1);
  pair.client->start(0);
  ASSERT_TRUE(run_until(pair.io, [&] { return pair.server_probe.count("disconnect") == 1; }));
  const auto& e = pair.server_probe.events;
  ASSERT_EQ(e.size(), 1u + 1u + 100u + 1u);
  EXPECT_EQ(e[0], "start");
  EXPECT_EQ(e[1].rfind("accept ", 0), 0u);
  EXPECT_NE(e[1].find(" from 0"), std::string::npos);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(e[2 + i].substr(e[2 + i].rfind(' ') + 1), "m" + std::to_string(i));
  EXPECT_NE(e.back().find("closed_by_peer"), std::string::npos);
  // The client closed its end itself: it hears nothing more about it.
  EXPECT_EQ(pair.client_probe.count("disconnect"), 0u);
  EXPECT_EQ(pair.client_probe.count("connected"), 1u);
  EXPECT_FALSE(pair.server_probe.reentered || pair.client_probe.reentered);
}

// Group commit (live/group_commit.h): frames a node sends after a commit wait for the batch
// that syncs it; every frame still arrives, in order, and the close after them.
TEST_P(LiveHostTransport, FramesAfterCommitsWaitForTheirSyncAndKeepTheirOrder) {
  Pair pair(GetParam());
  pair.client_probe.on_connected = [&](Context& ctx, ConnId c) {
    sqlite3* db = ctx.db();
    ASSERT_TRUE(sql::configure_durable(db).ok());
    ASSERT_TRUE(sql::exec(db, "CREATE TABLE IF NOT EXISTS log(k INTEGER PRIMARY KEY)").ok());
    for (int i = 0; i < 100; ++i) {
      if (i % 10 == 0) {
        ASSERT_TRUE(sql::exec(db, "INSERT OR REPLACE INTO log(k) VALUES(" + std::to_string(i) + ")").ok());
      }
      ctx.send(c, bytes_of("m" + std::to_string(i)));
    }
    ctx.close(c);
  };
  pair.client_probe.on_start = [&](Context& ctx) { ctx.connect(1); };
  pair.server->start(1);
  pair.client->start(0);
  ASSERT_TRUE(run_until(pair.io, [&] { return pair.server_probe.count("disconnect") == 1; }));
  const auto& e = pair.server_probe.events;
  ASSERT_EQ(e.size(), 1u + 1u + 100u + 1u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(e[2 + i].substr(e[2 + i].rfind(' ') + 1), "m" + std::to_string(i));
  EXPECT_NE(e.back().find("closed_by_peer"), std::string::npos);
  EXPECT_EQ(pair.client->stats().frames_held_for_sync, 100u);  // every frame came after the first commit
}

TEST_P(LiveHostTransport, RepliesFlowBackAndAServerCrashIsAReset) {
  Pair pair(GetParam());
  pair.server_probe.on_frame = [&](Context& ctx, ConnId conn, ByteView frame) {
    Bytes reply(frame.begin(), frame.end());
    reply.push_back('!');
    ctx.send(conn, reply);
  };
  pair.client_probe.on_start = [&](Context& ctx) {
    const ConnId conn = ctx.connect(1);
    ctx.send(conn, bytes_of("ping"));
  };
  pair.server->start(1);
  pair.client->start(0);
  ASSERT_TRUE(run_until(pair.io, [&] { return pair.client_probe.count("frame") == 1; }));
  EXPECT_NE(pair.client_probe.events.back().find("ping!"), std::string::npos);
  // The server's node stops without closing (as a killed process does): the client sees a reset.
  pair.server->shutdown();
  ASSERT_TRUE(run_until(pair.io, [&] { return pair.client_probe.count("disconnect") == 1; }));
  EXPECT_NE(pair.client_probe.events.back().find("reset"), std::string::npos);
}

TEST_P(LiveHostTransport, NothingListeningIsRefusedWithoutConnected) {
  Pair pair(GetParam());
  pair.client_probe.on_start = [&](Context& ctx) {
    const ConnId a = ctx.connect(9);   // the directory says port 1: nothing listens there
    const ConnId b = ctx.connect(42);  // not in the directory at all
    ctx.send(a, bytes_of("lost"));
    ctx.send(b, bytes_of("lost"));
  };
  pair.client->start(0);
  ASSERT_TRUE(run_until(pair.io, [&] { return pair.client_probe.count("disconnect") == 2; }));
  EXPECT_EQ(pair.client_probe.count("connected"), 0u);
  for (const auto& e : pair.client_probe.events)
    if (e.rfind("disconnect", 0) == 0) {
      EXPECT_NE(e.find("refused"), std::string::npos) << e;
    }
}

INSTANTIATE_TEST_SUITE_P(Every, LiveHostTransport,
                         ::testing::Values(Mode::tcp, Mode::websocket, Mode::long_poll, Mode::upgrade_refused),
                         [](const auto& info) {
                           return info.param == Mode::websocket         ? "websocket"
                                  : info.param == Mode::long_poll       ? "long_poll"
                                  : info.param == Mode::upgrade_refused ? "upgrade_refused"
                                                                        : "tcp";
                         });

// The automatic fallback (LiveHostOptions::websocket_upgrade_failures_max): a declined upgrade
// (403) switches the client to long polling for that server at once, within the same attempt,
// and later connects go there by long polling without trying WebSocket again.
TEST(LongPollFallback, ADeclinedUpgradeContinuesOverLongPollingAndSticks) {
  Pair pair(Mode::upgrade_refused);
  pair.server_probe.on_frame = [&](Context& ctx, ConnId conn, ByteView frame) {
    Bytes reply(frame.begin(), frame.end());
    reply.push_back('!');
    ctx.send(conn, reply);
  };
  int opened = 0;
  pair.client_probe.on_start = [&](Context& ctx) { ctx.send(ctx.connect(1), bytes_of("first")); };
  pair.client_probe.on_frame = [&](Context& ctx, ConnId conn, ByteView) {
    ctx.close(conn);
    if (++opened < 3) ctx.send(ctx.connect(1), bytes_of("again"));
  };
  pair.server->start(1);
  pair.client->start(0);
  ASSERT_TRUE(run_until(pair.io, [&] { return pair.client_probe.count("frame") == 3; }));
  EXPECT_EQ(pair.client_probe.count("connected"), 3u);
  EXPECT_EQ(pair.client_probe.count("disconnect"), 0u);  // the node never heard of the refusal
  EXPECT_NE(pair.client_probe.events[2].find("first!"), std::string::npos) << pair.client_probe.events[2];
  EXPECT_EQ(pair.client->stats().long_poll_fallbacks, 1u);
  EXPECT_EQ(pair.server->stats().websocket_upgrades_refused, 1u);  // one upgrade tried, then none
  EXPECT_GT(pair.client->stats().long_poll_requests, 0u);
  EXPECT_FALSE(pair.server_probe.reentered || pair.client_probe.reentered);
}

// A server that accepts TCP and ends every connection without answering: each failed upgrade is
// a refusal to the node until websocket_upgrade_failures_max in a row; that attempt goes on by
// long polling (which fails here too, after its retries). A refused TCP connect never counts.
TEST(LongPollFallback, UpgradesFailingInARowSwitchAfterTheBound) {
  asio::io_context io;
  tcp::acceptor silent(io, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
  size_t accepted = 0;
  std::function<void()> accept_next = [&] {
    silent.async_accept([&](boost::system::error_code ec, tcp::socket socket) {
      if (ec) return;
      accepted++;
      boost::system::error_code ignored;
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      socket.close(ignored);
      accept_next();
    });
  };
  accept_next();
  LiveHostOptions options;
  options.run_dir = test::scratch_dir("live_host_test");
  options.websocket_upgrade_failures_max = 3;
  options.long_poll_retry_delay_ns = 10 * kNanosPerMilli;
  const Transport ws = Transport::websocket;
  LiveHost client(io, options, Directory{{1, {silent.local_endpoint().port(), ws}}, {9, {1, ws}}});
  Probe probe;
  ConnId to_silent = kNoConn;
  int attempts = 0;
  probe.on_start = [&](Context& ctx) {
    ctx.connect(9);  // nothing listens: refused, and not counted
    to_silent = ctx.connect(1);
    attempts = 1;
  };
  probe.on_disconnect = [&](Context& ctx, ConnId conn, DisconnectReason) {
    if (conn != to_silent) return;
    if (attempts == 2) {
      EXPECT_EQ(client.stats().long_poll_fallbacks, 0u);  // two failures: not yet
    }
    if (attempts < 3) {
      to_silent = ctx.connect(1);
      attempts++;
    }
  };
  client.add_node(0, "client", "local", [&] { return std::make_unique<ProbeNode>(probe); });
  client.start(0);
  ASSERT_TRUE(run_until(io, [&] { return probe.count("disconnect") == 4; }));
  EXPECT_EQ(attempts, 3);
  EXPECT_EQ(client.stats().long_poll_fallbacks, 1u);
  // The third attempt went on by long polling: its open, tried 1 + long_poll_retries_max times.
  EXPECT_EQ(client.stats().long_poll_retries, options.long_poll_retries_max);
  EXPECT_EQ(accepted, 3u + 1u + options.long_poll_retries_max);
  EXPECT_EQ(probe.count("connected"), 0u);
  for (const auto& e : probe.events)
    if (e.rfind("disconnect", 0) == 0) {
      EXPECT_NE(e.find("refused"), std::string::npos) << e;
    }
  EXPECT_FALSE(probe.reentered);
  client.shutdown();
}

TEST(LiveHost, TimersFireOnceInOrderAndCancelledOnesNever) {
  asio::io_context io;
  Probe probe;
  LiveHostOptions options;
  options.run_dir = test::scratch_dir("live_host_test");
  LiveHost host(io, options, {});
  host.add_node(0, "n", "local", [&] { return std::make_unique<ProbeNode>(probe); });
  probe.on_start = [&](Context& ctx) {
    ctx.set_timer(30 * kNanosPerMilli, 3);
    const TimerId cancelled = ctx.set_timer(20 * kNanosPerMilli, 2);
    ctx.set_timer(10 * kNanosPerMilli, 1);
    ctx.set_timer(0, 0);
    ctx.cancel_timer(cancelled);
    EXPECT_GE(ctx.now_ns(), 0);
  };
  host.start(0);
  ASSERT_TRUE(run_until(io, [&] { return probe.count("timer") == 3; }));
  io.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(probe.events, (std::vector<std::string>{"start", "timer 0", "timer 1", "timer 3"}));
}

TEST(LiveHost, ExitStopsTheNodeAndItsTimers) {
  asio::io_context io;
  Probe probe;
  LiveHostOptions options;
  options.run_dir = test::scratch_dir("live_host_test");
  bool exited = false;
  options.on_exit = [&](NodeId, bool draining) {
    exited = true;
    EXPECT_FALSE(draining);
  };
  LiveHost host(io, options, {});
  host.add_node(0, "n", "local", [&] { return std::make_unique<ProbeNode>(probe); });
  probe.on_start = [&](Context& ctx) {
    ctx.set_timer(10 * kNanosPerMilli, 1);
    ctx.exit();
  };
  host.start(0);
  ASSERT_TRUE(run_until(io, [&] { return exited; }));
  io.run_for(std::chrono::milliseconds(40));
  EXPECT_EQ(probe.events, (std::vector<std::string>{"start"}));
  EXPECT_FALSE(host.running(0));
}

// ---------------------------------------------------------------------------------------------
// Misbehaving peers on raw sockets: only their own connection closes; a well-behaved client on
// the same server keeps working.

struct Abuse {
  explicit Abuse(LiveHostOptions options = {}) : pair(Transport::tcp_frames, options) {
    pair.server_probe.on_frame = [](Context& ctx, ConnId conn, ByteView frame) { ctx.send(conn, Bytes(frame.begin(), frame.end())); };
    pair.server->start(1);
    run_until(pair.io, [&] { return pair.server_probe.count("start") == 1; });
  }
  tcp::socket raw() {
    tcp::socket s(pair.io);
    s.connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), pair.port));
    return s;
  }
  // The server closed `s`: a read ends (EOF or reset) within the time given.
  bool closed_by_server(tcp::socket& s) {
    bool closed = false;
    auto buffer = std::make_shared<std::array<char, 64 * 1024>>();
    std::function<void()> read = [&] {
      s.async_read_some(asio::buffer(*buffer), [&, buffer](boost::system::error_code ec, size_t) {
        if (ec) closed = true;
        else read();
      });
    };
    read();
    return run_until(pair.io, [&] { return closed; });
  }
  // A well-behaved client still gets its echo.
  void good_client_still_works() {
    pair.client_probe.on_start = [&](Context& ctx) { ctx.send(ctx.connect(1), bytes_of("fine")); };
    pair.client->start(0);
    ASSERT_TRUE(run_until(pair.io, [&] { return pair.client_probe.count("frame") == 1; }));
  }
  Pair pair;
};

TEST(LiveHostAbuse, MalformedHelloClosesOnlyThatConnection) {
  Abuse abuse;
  tcp::socket s = abuse.raw();
  asio::write(s, asio::buffer(std::string("\x00\x00\x00\x05hello", 9)));
  EXPECT_TRUE(abuse.closed_by_server(s));
  EXPECT_EQ(abuse.pair.server_probe.count("accept"), 0u);
  EXPECT_EQ(abuse.pair.server->stats().connections_rejected, 1u);
  abuse.good_client_still_works();
}

TEST(LiveHostAbuse, OversizedFrameClosesOnlyThatConnection) {
  LiveHostOptions options;
  options.frame_bytes_max = 1024;
  Abuse abuse(options);
  tcp::socket s = abuse.raw();
  std::string data = hello(7, 1);
  std::string header(4, '\0');
  put_u32(reinterpret_cast<uint8_t*>(header.data()), 1'000'000);
  data += header + "xxxx";
  asio::write(s, asio::buffer(data));
  EXPECT_TRUE(abuse.closed_by_server(s));
  // The node saw the link open and then break; it never saw a frame of it.
  EXPECT_EQ(abuse.pair.server_probe.count("frame"), 0u);
  EXPECT_EQ(abuse.pair.server_probe.count("disconnect"), 1u);
  abuse.good_client_still_works();
}

TEST(LiveHostAbuse, SlowWriterIsClosedAfterTheFrameTimeout) {
  LiveHostOptions options;
  options.frame_timeout_ns = 200 * kNanosPerMilli;
  // The good client must finish its handshake within this after being accepted, so it is long
  // enough for a loaded 2-core machine; the silent socket is closed after it all the same.
  options.handshake_timeout_ns = 2000 * kNanosPerMilli;
  Abuse abuse(options);
  tcp::socket slow = abuse.raw();
  std::string data = hello(7, 1);
  std::string header(4, '\0');
  put_u32(reinterpret_cast<uint8_t*>(header.data()), 100);
  data += header + "only part of it";
  asio::write(slow, asio::buffer(data));
  tcp::socket silent = abuse.raw();  // never says anything: the handshake timeout
  EXPECT_TRUE(abuse.closed_by_server(slow));
  EXPECT_TRUE(abuse.closed_by_server(silent));
  EXPECT_EQ(abuse.pair.server_probe.count("frame"), 0u);
  abuse.good_client_still_works();
}

TEST(LiveHostAbuse, SlowReaderIsResetWhenItsQueuePassesTheBound) {
  LiveHostOptions options;
  options.outbound_bytes_max = 256 * 1024;
  Abuse abuse(options);
  ConnId accepted = kNoConn;
  abuse.pair.server_probe.on_accept = [&](Context&, ConnId conn) {
    if (accepted == kNoConn) accepted = conn;  // the raw reader; the good client comes later
  };
  tcp::socket reader = abuse.raw();
  asio::write(reader, asio::buffer(hello(7, 1)));
  ASSERT_TRUE(run_until(abuse.pair.io, [&] { return accepted != kNoConn; }));
  // Whenever anything arrives from the good client, the server's node floods the raw peer,
  // which never reads: the kernel buffers fill, then the outbound queue passes its bound.
  abuse.pair.server_probe.on_frame = [&](Context& ctx, ConnId, ByteView) {
    for (int i = 0; i < 64; ++i) ctx.send(accepted, Bytes(16 * 1024, 'x'));
  };
  abuse.pair.client_probe.on_start = [&](Context& ctx) {
    const ConnId c = ctx.connect(1);
    for (int i = 0; i < 40; ++i) ctx.send(c, bytes_of("go"));
  };
  abuse.pair.client->start(0);
  ASSERT_TRUE(run_until(abuse.pair.io, [&] { return abuse.pair.server_probe.count("disconnect " + std::to_string(accepted)) == 1; }));
  EXPECT_EQ(abuse.pair.server_probe.count("disconnect " + std::to_string(accepted) + " reset"), 1u);
  EXPECT_GE(abuse.pair.server->stats().connections_rejected, 1u);
  // The good client's connection was not touched.
  EXPECT_EQ(abuse.pair.server_probe.count("disconnect"), 1u);
  EXPECT_TRUE(abuse.closed_by_server(reader));
}

TEST(LiveHostAbuse, BadWebSocketUpgradeAndTextMessagesCloseOnlyThatConnection) {
  Abuse abuse;
  tcp::socket s = abuse.raw();
  asio::write(s, asio::buffer(std::string("GET /somewhere-else HTTP/1.1\r\nHost: x\r\n\r\n")));
  EXPECT_TRUE(abuse.closed_by_server(s));
  tcp::socket garbage = abuse.raw();
  asio::write(garbage, asio::buffer(std::string("GARBAGE\r\n\r\n")));
  EXPECT_TRUE(abuse.closed_by_server(garbage));
  EXPECT_EQ(abuse.pair.server_probe.count("accept"), 0u);
  EXPECT_EQ(abuse.pair.server->stats().connections_rejected, 2u);
  abuse.good_client_still_works();
}

TEST(LiveHostAbuse, AbruptDisconnectIsAResetToTheNode) {
  Abuse abuse;
  {
    tcp::socket s = abuse.raw();
    asio::write(s, asio::buffer(hello(7, 1)));
    ASSERT_TRUE(run_until(abuse.pair.io, [&] { return abuse.pair.server_probe.count("accept") == 1; }));
  }  // closed without a goodbye
  ASSERT_TRUE(run_until(abuse.pair.io, [&] { return abuse.pair.server_probe.count("disconnect") == 1; }));
  EXPECT_NE(abuse.pair.server_probe.events.back().find("reset"), std::string::npos);
  abuse.good_client_still_works();
}

// Resident memory of this process, in bytes (VmRSS).
size_t resident_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// Idle WebSocket connections release their read buffers: the memory of an idle connection,
// both ends together (client and server session, node bookkeeping), stays a few KB. The
// issue's bar is 3 KB per idle connection on the server; this prints the measured figure.
TEST(LiveHost, IdleWebSocketConnectionsHoldLittleMemory) {
  constexpr NodeId kClients = 500;
  asio::io_context io;
  Probe server_probe;
  LiveHostOptions options;
  options.run_dir = test::scratch_dir("live_host_test");
  LiveHost server(io, options, {});
  server.add_node(kClients, "server", "local", [&] { return std::make_unique<ProbeNode>(server_probe); });
  const uint16_t port = *server.listen(kClients, 0);
  server.start(kClients);
  LiveHost clients(io, options, Directory{{kClients, {port, Transport::websocket}}});
  std::vector<std::unique_ptr<Probe>> probes;
  for (NodeId id = 0; id < kClients; ++id) {
    probes.push_back(std::make_unique<Probe>());
    probes.back()->on_start = [](Context& ctx) { ctx.send(ctx.connect(kClients), bytes_of("hello")); };
    clients.add_node(id, "c" + std::to_string(id), "local", [p = probes.back().get()] { return std::make_unique<ProbeNode>(*p); });
  }
  // Warm up allocator pools with a first half, measure the second.
  for (NodeId id = 0; id < kClients / 2; ++id) clients.start(id);
  ASSERT_TRUE(run_until(io, [&] { return server_probe.count("frame") == kClients / 2; }));
  const size_t before = resident_bytes();
  for (NodeId id = kClients / 2; id < kClients; ++id) clients.start(id);
  ASSERT_TRUE(run_until(io, [&] { return server_probe.count("frame") == kClients; }));
  io.run_for(std::chrono::milliseconds(100));
  const size_t after = resident_bytes();
  const double per_connection = static_cast<double>(after - std::min(after, before)) / (kClients / 2);
  std::printf("idle WebSocket connection, both ends in one process: %.0f bytes RSS each (%u connections)\n",
              per_connection, kClients / 2);
  EXPECT_LT(per_connection, 32 * 1024);
  clients.shutdown();
  server.shutdown();
}

TEST(LiveHost, DirectoryFilesRoundTripAndBadLinesAreErrors) {
  const Directory d{{1, {4000, Transport::tcp_frames}}, {7, {4001, Transport::websocket}}};
  Result<Directory> back = parse_directory(format_directory(d));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->size(), 2u);
  EXPECT_EQ(back->at(7).port, 4001);
  EXPECT_EQ(back->at(7).transport, Transport::websocket);
  Result<Directory> bad = parse_directory("1 4000 tcp\n2 notaport ws\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("line 2"), std::string::npos);
}

TEST(LiveHost, WsUrlsAreCheckedAndNamedInErrors) {
  Result<WsUrl> good = parse_ws_url("ws://127.0.0.1:8080");
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_EQ(good->host, "127.0.0.1");
  EXPECT_EQ(good->port, 8080);
  Result<WsUrl> named = parse_ws_url("ws://chat.example-1.org:1/");
  ASSERT_TRUE(named.ok()) << named.error().message;
  EXPECT_EQ(named->host, "chat.example-1.org");
  EXPECT_EQ(named->port, 1);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "must begin with ws://"},         {"http://h:1", "must begin with ws://"},
      {"wss://h:1", "TLS"},                  {"ws://h", "port is missing"},
      {"ws://:80", "host is missing"},       {"ws://h:0", "from 1 to 65535"},
      {"ws://h:65536", "from 1 to 65535"},   {"ws://h:8x", "from 1 to 65535"},
      {"ws://h:80/chat", "no path"},         {"ws://u@h:80", "no credentials"},
      {"ws://[::1]:80", "IPv6"},             {"ws://h_1:80", "letters, digits"},
      {"ws://" + std::string(400, 'a') + ":1", "longer than"}};
  for (const auto& [url, why] : bad) {
    Result<WsUrl> parsed = parse_ws_url(url);
    ASSERT_FALSE(parsed.ok()) << url;
    EXPECT_NE(parsed.error().message.find(why), std::string::npos) << url << ": " << parsed.error().message;
  }
  EXPECT_EQ(*resolve_ipv4("127.0.0.5"), "127.0.0.5");
  EXPECT_EQ(*resolve_ipv4("localhost"), "127.0.0.1");
  EXPECT_TRUE(is_loopback_ipv4("127.200.0.1"));
  EXPECT_FALSE(is_loopback_ipv4("10.0.0.1"));
  EXPECT_FALSE(is_loopback_ipv4("not an address"));
}

// A conformance run's devices dial chat server numbers the scenario cannot list: a node
// without a directory entry goes to the fallback endpoint, or is refused when there is none.
TEST(LiveHost, NodesWithoutADirectoryEntryAreDialledAtTheFallbackOrRefused) {
  asio::io_context io;
  Probe server_probe, client_probe, lonely_probe;
  LiveHostOptions server_options;
  server_options.run_dir = test::scratch_dir("live_host_test");
  LiveHost server(io, server_options, Directory{});
  server.add_node(1, "server", "local", [&] { return std::make_unique<ProbeNode>(server_probe); });
  const uint16_t port = *server.listen(1, 0);

  LiveHostOptions client_options;
  client_options.run_dir = test::scratch_dir("live_host_test");
  Endpoint fallback;
  fallback.port = port;
  fallback.transport = Transport::websocket;
  fallback.host_name = "localhost";
  client_options.fallback_endpoint = fallback;
  LiveHost client(io, client_options, Directory{});
  client.add_node(0, "client", "local", [&] { return std::make_unique<ProbeNode>(client_probe); });
  client_probe.on_start = [](Context& ctx) { ctx.send(ctx.connect(42), bytes_of("hi")); };

  Endpoint unroutable;
  unroutable.port = port;
  unroutable.transport = Transport::websocket;
  unroutable.address = "not-an-address";
  LiveHost lonely(io, client_options, Directory{{7, unroutable}});
  lonely.add_node(5, "lonely", "local", [&] { return std::make_unique<ProbeNode>(lonely_probe); });
  lonely_probe.on_start = [](Context& ctx) { ctx.connect(7); };

  LiveHostOptions no_fallback_options;
  no_fallback_options.run_dir = test::scratch_dir("live_host_test");
  Probe unlisted_probe;
  LiveHost unlisted(io, no_fallback_options, Directory{});
  unlisted.add_node(6, "unlisted", "local", [&] { return std::make_unique<ProbeNode>(unlisted_probe); });
  unlisted_probe.on_start = [](Context& ctx) { ctx.connect(42); };

  server.start(1);
  client.start(0);
  lonely.start(5);
  unlisted.start(6);
  ASSERT_TRUE(run_until(io, [&] {
    return server_probe.count("frame") == 1 && lonely_probe.count("disconnect") == 1 &&
           unlisted_probe.count("disconnect") == 1;
  }));
  EXPECT_EQ(client_probe.count("connected"), 1u);
  EXPECT_EQ(server_probe.count("accept 1 from 0"), 1u);
  EXPECT_EQ(server_probe.events.back(), "frame 1 hi");
  EXPECT_EQ(lonely_probe.events.back(), "disconnect 1 refused");
  EXPECT_EQ(unlisted_probe.events.back(), "disconnect 1 refused");
  client.shutdown();
  lonely.shutdown();
  unlisted.shutdown();
  server.shutdown();
}

// ---------------------------------------------------------------------------------------------
// HTTP long polling (live/long_poll.h) from a scripted device: the server side's numbering,
// bounds and expiry, request by request.

namespace http = boost::beast::http;
using Response = http::response<http::string_body>;

struct LongPollDevice {
  explicit LongPollDevice(LiveHostOptions options = {}) : pair(Mode::long_poll, options) {
    // The server node answers every frame with the frame and a '!'.
    pair.server_probe.on_frame = [](Context& ctx, ConnId conn, ByteView frame) {
      Bytes reply(frame.begin(), frame.end());
      reply.push_back('!');
      ctx.send(conn, reply);
    };
    pair.server->start(1);
    run_until(pair.io, [&] { return pair.server_probe.count("start") == 1; });
  }
  // One request on a fresh connection; a response with status 0 when the connection ended first.
  Response exchange(http::verb verb, const std::string& target, const std::string& body = {}) {
    tcp::socket s(pair.io);
    s.connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), pair.port));
    http::request<http::string_body> request{verb, target, 11};
    request.set(http::field::host, "test");
    request.body() = body;
    request.prepare_payload();
    http::write(s, request);
    boost::beast::flat_buffer buffer;
    Response response;
    bool done = false;
    http::async_read(s, buffer, response, [&](boost::system::error_code ec, size_t) {
      if (ec) response.result(0);
      done = true;
    });
    EXPECT_TRUE(run_until(pair.io, [&] { return done; })) << target;
    return response;
  }
  std::string open() {
    const Response r = exchange(http::verb::post, "/lp/7/open");
    EXPECT_EQ(r.result_int(), 200u);
    return std::string(r[long_poll::kSessionHeader]);
  }
  static std::string frames(std::initializer_list<std::string_view> list) {
    std::string body;
    for (std::string_view f : list) long_poll::append_frame(body, ByteView(reinterpret_cast<const uint8_t*>(f.data()), f.size()));
    return body;
  }
  static std::vector<std::string> decoded(const Response& r) {
    std::vector<std::string> out;
    auto frames = long_poll::decode_frames(r.body(), 1 << 20, 100);
    EXPECT_TRUE(frames.ok());
    if (frames.ok())
      for (const Bytes& f : *frames) out.emplace_back(f.begin(), f.end());
    return out;
  }
  Pair pair;
};

TEST(LongPoll, RepeatedSendsAndPollsNeitherLoseNorDuplicate) {
  LiveHostOptions options;
  options.long_poll_wait_ns = 200 * kNanosPerMilli;
  LongPollDevice device(options);
  const std::string session = device.open();
  ASSERT_EQ(session.size(), 16u);
  ASSERT_EQ(device.pair.server_probe.count("accept"), 1u);
  EXPECT_NE(device.pair.server_probe.events.back().find(" from 7"), std::string::npos);
  const std::string send = "/lp/7/send?session=" + session + "&seq=";
  EXPECT_EQ(device.exchange(http::verb::post, send + "1", LongPollDevice::frames({"a", "b"})).result_int(), 200u);
  // The answer to that send was "lost": the device sends again, with one more frame.
  EXPECT_EQ(device.exchange(http::verb::post, send + "1", LongPollDevice::frames({"a", "b", "c"})).result_int(), 200u);
  EXPECT_EQ(device.exchange(http::verb::post, send + "9", LongPollDevice::frames({"z"})).result_int(), 409u);  // a gap
  EXPECT_EQ(device.pair.server_probe.count("frame"), 3u);

  const std::string poll = "/lp/7/poll?session=" + session + "&after=";
  Response first = device.exchange(http::verb::get, poll + "0");
  ASSERT_EQ(first.result_int(), 200u);
  EXPECT_EQ(first[long_poll::kFirstHeader], "1");
  EXPECT_EQ(LongPollDevice::decoded(first), (std::vector<std::string>{"a!", "b!", "c!"}));
  // That answer was "lost" too: the same poll gets the same frames.
  Response again = device.exchange(http::verb::get, poll + "0");
  EXPECT_EQ(LongPollDevice::decoded(again), (std::vector<std::string>{"a!", "b!", "c!"}));
  // Acknowledging 2 leaves 3.
  Response rest = device.exchange(http::verb::get, poll + "2");
  EXPECT_EQ(rest[long_poll::kFirstHeader], "3");
  EXPECT_EQ(LongPollDevice::decoded(rest), (std::vector<std::string>{"c!"}));
  // Everything acknowledged: held for the wait, then answered empty.
  Response empty = device.exchange(http::verb::get, poll + "3");
  EXPECT_EQ(empty.result_int(), 200u);
  EXPECT_TRUE(empty.body().empty());
  EXPECT_EQ(empty[long_poll::kFirstHeader], "4");
  EXPECT_EQ(device.exchange(http::verb::get, poll + "9").result_int(), 400u);  // frames it cannot have
  EXPECT_EQ(device.pair.server->stats().frames_sent, 3u);

  EXPECT_EQ(device.exchange(http::verb::post, "/lp/7/close?session=" + session).result_int(), 200u);
  ASSERT_TRUE(run_until(device.pair.io, [&] { return device.pair.server_probe.count("disconnect") == 1; }));
  EXPECT_NE(device.pair.server_probe.events.back().find("closed_by_peer"), std::string::npos);
  EXPECT_EQ(device.exchange(http::verb::get, poll + "3").result_int(), 404u);
  EXPECT_FALSE(device.pair.server_probe.reentered);
}

TEST(LongPoll, AHeldPollIsAnsweredWhenTheNodeSendsAndAtItsClose) {
  LongPollDevice device;
  ConnId conn = kNoConn;
  // The node sends 100 ms after the accept, and closes: the poll below is held until then (the
  // default wait is 25 s).
  device.pair.server_probe.on_accept = [&](Context& ctx, ConnId c) {
    conn = c;
    ctx.set_timer(100 * kNanosPerMilli, 5);
  };
  device.pair.server_probe.on_timer = [&](Context& ctx, uint64_t) {
    ctx.send(conn, bytes_of("late"));
    ctx.close(conn);
  };
  const std::string session = device.open();
  const std::string poll = "/lp/7/poll?session=" + session + "&after=0";
  const auto asked = std::chrono::steady_clock::now();
  Response answer = device.exchange(http::verb::get, poll);
  EXPECT_GE(std::chrono::steady_clock::now() - asked, std::chrono::milliseconds(50));
  EXPECT_EQ(LongPollDevice::decoded(answer), (std::vector<std::string>{"late"}));
  EXPECT_EQ(answer[long_poll::kClosedHeader], "1");  // the node closed after it
  EXPECT_EQ(device.exchange(http::verb::get, "/lp/7/poll?session=" + session + "&after=1").result_int(), 404u);
  EXPECT_EQ(device.pair.server_probe.count("disconnect"), 0u);  // the node closed it itself
}

TEST(LongPoll, AnIdleSessionExpiresAsAReset) {
  LiveHostOptions options;
  options.long_poll_idle_expiry_ns = 300 * kNanosPerMilli;
  LongPollDevice device(options);
  device.open();
  ASSERT_TRUE(run_until(device.pair.io, [&] { return device.pair.server_probe.count("disconnect") == 1; }));
  EXPECT_NE(device.pair.server_probe.events.back().find("reset"), std::string::npos);
}

TEST(LongPoll, ADeviceThatNeverPollsIsResetAtThePendingBound) {
  LiveHostOptions options;
  options.long_poll_pending_frames_max = 8;
  LongPollDevice device(options);
  ConnId conn = kNoConn;
  device.pair.server_probe.on_accept = [&](Context& ctx, ConnId c) {
    conn = c;
    ctx.set_timer(0, 1);
  };
  device.pair.server_probe.on_timer = [&](Context& ctx, uint64_t) {
    for (int i = 0; i < 20; ++i) ctx.send(conn, bytes_of("f" + std::to_string(i)));
  };
  device.open();
  ASSERT_TRUE(run_until(device.pair.io, [&] { return device.pair.server_probe.count("disconnect") == 1; }));
  EXPECT_NE(device.pair.server_probe.events.back().find("reset"), std::string::npos);
  EXPECT_EQ(device.pair.server->stats().connections_rejected, 1u);
}

TEST(LongPoll, BadRequestsAreAnsweredWithErrorsAndTheNodeNeverHears) {
  LiveHostOptions options;
  options.long_poll_body_bytes_max = 1024;
  LongPollDevice device(options);
  EXPECT_EQ(device.exchange(http::verb::post, "/lp/7/launch").result_int(), 400u);
  EXPECT_EQ(device.exchange(http::verb::post, "/lp/x/open").result_int(), 400u);
  EXPECT_EQ(device.exchange(http::verb::get, "/lp/7/open").result_int(), 405u);
  EXPECT_EQ(device.exchange(http::verb::get, "/lp/7/poll?session=00000000000000aa&after=0").result_int(), 404u);
  EXPECT_EQ(device.exchange(http::verb::post, "/lp/7/send?session=00000000000000aa&seq=1", std::string(2000, 'x'))
                .result_int(),
            413u);
  const std::string session = device.open();
  // A body that is not length-prefixed frames, and a session of another opener.
  EXPECT_EQ(device.exchange(http::verb::post, "/lp/7/send?session=" + session + "&seq=1", std::string("\x00\x00\x00\x09short", 9))
                .result_int(),
            400u);
  EXPECT_EQ(device.exchange(http::verb::get, "/lp/8/poll?session=" + session + "&after=0").result_int(), 404u);
  EXPECT_EQ(device.pair.server_probe.count("frame"), 0u);
  EXPECT_EQ(device.pair.server_probe.count("accept"), 1u);
}

TEST(LongPoll, TargetsRoundTripAndBadOnesNameTheProblem) {
  const long_poll::Target t{12, long_poll::Verb::send, 0xabcdefull, 5};
  const std::string text = long_poll::format_target(t);
  EXPECT_EQ(text, "/lp/12/send?session=0000000000abcdef&seq=5");
  auto parsed = long_poll::parse_target(text);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->opener, 12u);
  EXPECT_EQ(parsed->session, 0xabcdefull);
  EXPECT_EQ(parsed->number, 5u);
  for (const char* bad : {"/node/1", "/lp/1", "/lp/1/poll?session=0000000000abcdef", "/lp/1/send?session=0000000000abcdef&seq=0",
                          "/lp/1/poll?after=1", "/lp/1/open?session=0000000000abcdef", "/lp/1/close?session=zz",
                          "/lp/1/close?session=0000000000000000", "/lp/99999999999/open",
                          "/lp/1/poll?session=0000000000abcdef&after=1&after=2"}) {
    auto r = long_poll::parse_target(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.error().message.find("long-poll target"), std::string::npos);
    }
  }
}

TEST(LongPoll, BodiesOfFramesAreBounded) {
  const std::string body = LongPollDevice::frames({"one", "", "three"});
  auto frames = long_poll::decode_frames(body, 16, 3);
  ASSERT_TRUE(frames.ok());
  ASSERT_EQ(frames->size(), 3u);
  EXPECT_EQ(std::string((*frames)[2].begin(), (*frames)[2].end()), "three");
  EXPECT_EQ(long_poll::decode_frames(body, 4, 3).error().code, ErrorCode::too_large);   // "three" > 4 bytes
  EXPECT_EQ(long_poll::decode_frames(body, 16, 2).error().code, ErrorCode::too_large);  // 3 frames > 2
  EXPECT_EQ(long_poll::decode_frames(body.substr(0, body.size() - 1), 16, 3).error().code, ErrorCode::bad_input);
  EXPECT_EQ(long_poll::decode_frames(body.substr(0, 2), 16, 3).error().code, ErrorCode::bad_input);
}

TEST(LongPoll, OutboxAndInboxNumberFrames) {
  long_poll::Outbox out;
  out.push(bytes_of("a"));
  out.push(bytes_of("bb"));
  out.push(bytes_of("ccc"));
  uint64_t first = 0;
  EXPECT_EQ(out.answer(1 << 20, first).size(), 3u * 4u + 6u);
  EXPECT_EQ(first, 1u);
  EXPECT_EQ(out.answer(6, first).size(), 5u);  // at least one frame, then the bound
  EXPECT_EQ(*out.acknowledge(2), 3u);
  EXPECT_EQ(*out.acknowledge(1), 0u);  // an old acknowledgement frees nothing
  EXPECT_EQ(out.first_number(), 3u);
  EXPECT_FALSE(out.acknowledge(4).ok());
  long_poll::Inbox in;
  EXPECT_EQ(*in.already_delivered(1, 2), 0u);
  in.delivered(2);
  EXPECT_EQ(*in.already_delivered(1, 3), 2u);
  EXPECT_EQ(*in.already_delivered(3, 1), 0u);
  EXPECT_FALSE(in.already_delivered(4, 1).ok());
}

}  // namespace
}  // namespace msgsim::live
