// The lean WebSocket server side (live/lean_websocket.h): WsFrameReader on hand-made client
// frames (masking, lengths, fragments, control frames, every refusal), and LeanWsSession against
// Beast's WebSocket client over loopback (upgrade, messages both ways in order, the peer's close,
// an oversized message, a request that is not an upgrade, a burst of many reads with nothing
// after it, reads held for backpressure and released), each with the sessions on Asio's epoll and
// on an io_uring (LeanWsRing); and on the ring, a fail_count loop that fails each of the ring's
// operations in turn.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "live/lean_websocket.h"

namespace msgsim::live {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

// A client frame: FIN per `fin`, masked with a fixed key.
Bytes client_frame(uint8_t opcode, std::string_view payload, bool fin = true, bool masked = true) {
  Bytes out;
  out.push_back(static_cast<uint8_t>((fin ? 0x80 : 0) | opcode));
  const size_t n = payload.size();
  const uint8_t mask_bit = masked ? 0x80 : 0;
  if (n < 126) {
    out.push_back(static_cast<uint8_t>(mask_bit | n));
  } else if (n <= 0xFFFF) {
    out.push_back(mask_bit | 126);
    out.push_back(static_cast<uint8_t>(n >> 8));
    out.push_back(static_cast<uint8_t>(n));
  } else {
    out.push_back(mask_bit | 127);
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(n) >> shift));
  }
  const uint8_t key[4] = {0x11, 0x22, 0x33, 0x44};
  if (masked) out.insert(out.end(), key, key + 4);
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(payload[i]) ^ (masked ? key[i & 3] : 0));
  return out;
}

struct Parsed {
  std::vector<std::string> events;  // "message abc", "ping x", "pong", "close 1000"
  Result<size_t> parse(WsFrameReader& reader, Bytes& bytes) {
    return reader.parse(bytes, [&](const WsInbound& in) {
      const std::string payload(in.payload.begin(), in.payload.end());
      switch (in.kind) {
        case WsInbound::Kind::message: events.push_back("message " + payload); break;
        case WsInbound::Kind::ping: events.push_back("ping " + payload); break;
        case WsInbound::Kind::pong: events.push_back("pong"); break;
        case WsInbound::Kind::close: events.push_back("close " + std::to_string(in.close_code)); break;
      }
    });
  }
};

TEST(WsFrameReader, ReadsWholeFramesAndLeavesAPartialOne) {
  WsFrameReader reader(1 << 20);
  Bytes bytes = client_frame(0x2, "hello");
  const Bytes second = client_frame(0x2, std::string(300, 'y'));  // 16-bit length
  bytes.insert(bytes.end(), second.begin(), second.end());
  const Bytes third = client_frame(0x2, "tail");
  bytes.insert(bytes.end(), third.begin(), third.end() - 2);  // incomplete
  Parsed parsed;
  auto consumed = parsed.parse(reader, bytes);
  ASSERT_TRUE(consumed.ok());
  EXPECT_EQ(*consumed, bytes.size() - (third.size() - 2));
  ASSERT_EQ(parsed.events.size(), 2u);
  EXPECT_EQ(parsed.events[0], "message hello");
  EXPECT_EQ(parsed.events[1], "message " + std::string(300, 'y'));
}

TEST(WsFrameReader, AssemblesFragmentsAndHandlesControlFramesBetweenThem) {
  WsFrameReader reader(1 << 20);
  Bytes bytes = client_frame(0x2, "ab", false);
  for (const Bytes& more : {client_frame(0x9, "p"), client_frame(0x0, "cd", false), client_frame(0x0, "ef", true),
                            client_frame(0xA, ""), client_frame(0x8, std::string("\x03\xe8", 2))}) {
    bytes.insert(bytes.end(), more.begin(), more.end());
  }
  Parsed parsed;
  auto consumed = parsed.parse(reader, bytes);
  ASSERT_TRUE(consumed.ok());
  EXPECT_EQ(*consumed, bytes.size());
  EXPECT_EQ(parsed.events, (std::vector<std::string>{"ping p", "message abcdef", "pong", "close 1000"}));
}

TEST(WsFrameReader, RefusesWhatTheRfcForbids) {
  const std::vector<std::pair<Bytes, std::string>> cases = {
      {client_frame(0x2, "x", true, false), "unmasked"},
      {client_frame(0x9, std::string(126, 'p')), "control frame"},
      {client_frame(0x9, "p", false), "control frame"},
      {client_frame(0x3, "x"), "unknown opcode"},
      {client_frame(0x0, "x"), "continuation"},
      {client_frame(0x8, "x"), "1-byte"},
  };
  for (const auto& [frame, expected] : cases) {
    WsFrameReader reader(1 << 20);
    Bytes bytes = frame;
    Parsed parsed;
    auto consumed = parsed.parse(reader, bytes);
    ASSERT_FALSE(consumed.ok()) << expected;
    EXPECT_NE(consumed.error().message.find(expected), std::string::npos) << consumed.error().message;
    EXPECT_FALSE(reader.oversized());
  }
  Bytes reserved = client_frame(0x2, "x");
  reserved[0] |= 0x40;
  WsFrameReader reader(1 << 20);
  Parsed parsed;
  EXPECT_FALSE(parsed.parse(reader, reserved).ok());
}

TEST(WsFrameReader, RefusesAnOversizedMessageFromItsHeaderAlone) {
  WsFrameReader reader(100);
  Bytes whole = client_frame(0x2, std::string(70'000, 'z'));  // 64-bit length
  Bytes header_only(whole.begin(), whole.begin() + 14);
  Parsed parsed;
  auto consumed = parsed.parse(reader, header_only);
  ASSERT_FALSE(consumed.ok());
  EXPECT_TRUE(reader.oversized());
  // Fragments count together.
  WsFrameReader fragmented(100);
  Bytes bytes = client_frame(0x2, std::string(60, 'a'), false);
  const Bytes more = client_frame(0x0, std::string(60, 'b'), true);
  bytes.insert(bytes.end(), more.begin(), more.end());
  EXPECT_FALSE(parsed.parse(fragmented, bytes).ok());
  EXPECT_TRUE(fragmented.oversized());
}

// The client's side (WsFramesFrom::server): what append_ws_frame writes reads back whole,
// partial frames wait, a masked frame from a server is refused; and the frames a client writes
// with append_masked_ws_frame read back through the server's reader at every length form.
TEST(WsFrameReader, AClientReadsServerFramesAndAServerReadsMaskedClientFrames) {
  WsFrameReader client_side(1 << 20, WsFramesFrom::server);
  Bytes bytes;
  append_ws_frame(bytes, WsOpcode::binary, ByteView(reinterpret_cast<const uint8_t*>("hello"), 5));
  const std::string long_payload(300, 'y');
  append_ws_frame(bytes, WsOpcode::binary, ByteView(reinterpret_cast<const uint8_t*>(long_payload.data()), long_payload.size()));
  append_ws_frame(bytes, WsOpcode::ping, ByteView(reinterpret_cast<const uint8_t*>("p"), 1));
  const size_t whole = bytes.size();
  append_ws_frame(bytes, WsOpcode::binary, ByteView(reinterpret_cast<const uint8_t*>("tail"), 4));
  bytes.resize(bytes.size() - 2);  // the last frame incomplete
  Parsed parsed;
  auto consumed = parsed.parse(client_side, bytes);
  ASSERT_TRUE(consumed.ok()) << consumed.error().message;
  EXPECT_EQ(*consumed, whole);
  EXPECT_EQ(parsed.events, (std::vector<std::string>{"message hello", "message " + long_payload, "ping p"}));

  Bytes masked = client_frame(0x2, "x");
  WsFrameReader strict(1 << 20, WsFramesFrom::server);
  auto refused = parsed.parse(strict, masked);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("masked WebSocket frame from a server"), std::string::npos) << refused.error().message;

  for (const size_t length : {size_t{0}, size_t{5}, size_t{125}, size_t{126}, size_t{70'000}}) {
    std::string payload(length, 'a');
    for (size_t i = 0; i < length; ++i) payload[i] = static_cast<char>('a' + i % 26);
    Bytes frame;
    append_masked_ws_frame(frame, WsOpcode::binary, ByteView(reinterpret_cast<const uint8_t*>(payload.data()), length), 0x9A3C51E7u);
    // Masked on the wire: the payload's bytes do not appear as they are.
    if (length >= 5) {
      EXPECT_EQ(std::search(frame.begin(), frame.end(), payload.begin(), payload.begin() + 5), frame.end()) << length;
    }
    WsFrameReader server_side(1 << 20);
    Parsed back;
    auto read = back.parse(server_side, frame);
    ASSERT_TRUE(read.ok()) << length << ": " << read.error().message;
    EXPECT_EQ(*read, frame.size());
    EXPECT_EQ(back.events, (std::vector<std::string>{"message " + payload})) << length;
  }
}

// A server of LeanWsSessions on 127.0.0.1 that records what its handler hears.
// With `on_ring`, upgraded sessions run on a LeanWsRing.
struct Server final : LeanWsHandler {
  explicit Server(asio::io_context& io, bool on_ring = false)
      : acceptor(io, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0)) {
    shared.handler = this;
    if (on_ring) {
      auto made = LeanWsRing::make(io);
      EXPECT_TRUE(made.ok()) << made.error().message;
      if (made.ok()) ring = std::move(*made);
      shared.ring = ring.get();
    }
    accept();
  }
  void accept() {
    acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec) return;
      auto session = std::make_shared<LeanWsSession>(shared, std::move(socket));
      session->start();
      accept();
    });
  }
  // No handler runs inside another, and none after the session's on_ws_gone.
  struct Enter {
    explicit Enter(Server& s, const LeanWsSession* session) : server(s) {
      EXPECT_FALSE(server.in_handler) << "a handler inside another";
      EXPECT_EQ(server.gone.count(session), 0u) << "a handler after on_ws_gone";
      server.in_handler = true;
    }
    ~Enter() { server.in_handler = false; }
    Server& server;
  };
  void on_ws_open(LeanWsSession& session, std::string_view target) override {
    Enter enter(*this, &session);
    events.push_back("open " + std::string(target));
    if (keep_sessions) sessions.push_back(session.shared_from_this());
    weak_sessions.push_back(session.weak_from_this());
  }
  void on_ws_message(LeanWsSession& session, ByteView payload) override {
    Enter enter(*this, &session);
    const std::string text(payload.begin(), payload.end());
    events.push_back("message " + text);
    by_session[&session].push_back(text);
    if (text == "echo3") {
      for (const char* reply : {"one", "two", "three"}) session.send(Bytes(reply, reply + std::strlen(reply)));
    }
  }
  void on_ws_gone(LeanWsSession& session, bool closed_by_peer) override {
    Enter enter(*this, &session);
    gone.insert(&session);
    events.push_back(closed_by_peer ? "gone closed_by_peer" : "gone reset");
  }
  void on_ws_rejected(std::string_view why) override {
    EXPECT_FALSE(in_handler) << "a handler inside another";
    events.push_back("rejected " + std::string(why));
  }
  uint16_t port() const { return acceptor.local_endpoint().port(); }
  size_t count(std::string_view prefix) const {
    size_t n = 0;
    for (const auto& e : events) n += e.rfind(prefix, 0) == 0;
    return n;
  }

  tcp::acceptor acceptor;
  LeanWsShared shared;
  std::unique_ptr<LeanWsRing> ring;  // after `shared`: ends before it
  bool keep_sessions = true;
  bool in_handler = false;
  std::set<const LeanWsSession*> gone;
  std::vector<std::weak_ptr<LeanWsSession>> weak_sessions;
  std::vector<std::shared_ptr<LeanWsSession>> sessions;
  std::vector<std::string> events;
  std::map<const LeanWsSession*, std::vector<std::string>> by_session;  // each session's messages
};

// Each test twice: the sessions on Asio's epoll (false) and on an io_uring (true).
class LeanWsSessionTest : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(LeanWsSession, LeanWsSessionTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "OnRing" : "OnEpoll"; });

// The client side runs blocking on its own io_context's socket while the server's loop runs in
// steps; `pump` runs the server until `done` or a deadline.
template <class F>
void pump(asio::io_context& io, F done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(2));
  }
  ASSERT_TRUE(done());
}

TEST_P(LeanWsSessionTest, TalksToBeastsClient) {
  asio::io_context io;
  Server server(io, GetParam());
  asio::io_context client_io;
  beast::websocket::stream<tcp::socket> client(client_io);
  client.next_layer().connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), server.port()));
  bool handshaken = false;
  client.async_handshake("127.0.0.1", "/node/7", [&](boost::system::error_code ec) { handshaken = !ec; });
  pump(io, [&] {
    client_io.restart();
    client_io.poll();
    return handshaken;
  });
  client.binary(true);
  client.write(asio::buffer(std::string("first")));
  client.write(asio::buffer(std::string("echo3")));
  std::vector<std::string> got;
  beast::flat_buffer buffer;
  std::function<void()> read_next = [&] {
    client.async_read(buffer, [&](boost::system::error_code ec, size_t) {
      if (ec) return;
      got.push_back(beast::buffers_to_string(buffer.data()));
      buffer.consume(buffer.size());
      read_next();
    });
  };
  read_next();
  pump(io, [&] {
    client_io.restart();
    client_io.poll();
    return got.size() == 3;
  });
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_TRUE(client.got_binary());
  bool closed = false;
  client.async_close(beast::websocket::close_code::normal, [&](boost::system::error_code) { closed = true; });
  pump(io, [&] {
    client_io.restart();
    client_io.poll();
    return closed && server.count("gone") == 1;
  });
  EXPECT_EQ(server.events, (std::vector<std::string>{"open /node/7", "message first", "message echo3", "gone closed_by_peer"}));
}

TEST_P(LeanWsSessionTest, AnOversizedMessageClosesOnlyItsConnectionWith1009) {
  asio::io_context io;
  Server server(io, GetParam());
  server.shared.message_bytes_max = 1000;
  asio::io_context client_io;
  beast::websocket::stream<tcp::socket> big(client_io), small(client_io);
  int handshaken = 0;
  for (auto* client : {&big, &small}) {
    client->next_layer().connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), server.port()));
    client->async_handshake("127.0.0.1", "/", [&](boost::system::error_code ec) { handshaken += ec ? 0 : 1; });
  }
  pump(io, [&] {
    client_io.restart();
    client_io.poll();
    return handshaken == 2;
  });
  big.binary(true);
  small.binary(true);
  big.write(asio::buffer(std::string(5000, 'x')));
  small.write(asio::buffer(std::string("fine")));
  boost::system::error_code read_error;
  beast::flat_buffer buffer;
  bool read_done = false;
  big.async_read(buffer, [&](boost::system::error_code ec, size_t) {
    read_error = ec;
    read_done = true;
  });
  pump(io, [&] {
    client_io.restart();
    client_io.poll();
    return read_done && server.count("message fine") == 1;
  });
  EXPECT_EQ(read_error, beast::websocket::error::closed);
  EXPECT_EQ(big.reason().code, beast::websocket::close_code::too_big);
  EXPECT_EQ(server.count("rejected WebSocket message of"), 1u);
  EXPECT_EQ(server.count("gone reset"), 1u);
  EXPECT_EQ(server.count("open"), 2u);
}

// A Beast client connected and upgraded to `server`, binary.
void connect_client(asio::io_context& io, Server& server, asio::io_context& client_io, beast::websocket::stream<tcp::socket>& client) {
  client.next_layer().connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), server.port()));
  // Every write goes out at once (no Nagle): a burst is in the server's socket before it reads.
  client.next_layer().set_option(tcp::no_delay(true));
  bool handshaken = false;
  client.async_handshake("127.0.0.1", "/", [&](boost::system::error_code ec) { handshaken = !ec; });
  pump(io, [&] {
    client_io.restart();
    client_io.poll();
    return handshaken;
  });
  client.binary(true);
}

std::string numbered(size_t i) {
  std::string text = "m" + std::to_string(i);
  text.resize(100, '.');
  return text;
}

// Every message of a burst many reads long arrives, in order, though nothing comes after it:
// frames straddle the 1 KB reads (their starts kept as the partial frame), and the session goes
// on reading what is still in its socket.
TEST_P(LeanWsSessionTest, ReadsAllOfABurstLargerThanOneRead) {
  asio::io_context io;
  Server server(io, GetParam());
  server.shared.read_chunk_bytes = 1024;
  asio::io_context client_io;
  beast::websocket::stream<tcp::socket> client(client_io);
  connect_client(io, server, client_io, client);
  constexpr size_t kMessages = 300;  // about 32 KB: 32 reads of 1 KB
  for (size_t i = 0; i < kMessages; ++i) client.write(asio::buffer(numbered(i)));
  pump(io, [&] { return server.count("message") == kMessages; });
  ASSERT_EQ(server.events.size(), kMessages + 1);
  for (size_t i = 0; i < kMessages; ++i) EXPECT_EQ(server.events[i + 1], "message " + numbered(i));
}

// While the handler holds reads, readable sessions read nothing and wait in held_readers; once
// released, every message arrives, in order.
TEST_P(LeanWsSessionTest, HeldReadsStayInTheKernelUntilReleased) {
  asio::io_context io;
  Server server(io, GetParam());
  asio::io_context client_io;
  beast::websocket::stream<tcp::socket> first(client_io), second(client_io);
  connect_client(io, server, client_io, first);
  connect_client(io, server, client_io, second);
  server.shared.reads_held = true;
  constexpr size_t kMessages = 50;
  for (size_t i = 0; i < kMessages; ++i) {
    first.write(asio::buffer(numbered(i)));
    second.write(asio::buffer(numbered(i)));
  }
  pump(io, [&] { return server.shared.held_readers.size() == 2; });
  EXPECT_EQ(server.count("message"), 0u);
  server.shared.release_reads();
  EXPECT_FALSE(server.shared.reads_held);
  EXPECT_TRUE(server.shared.held_readers.empty());
  pump(io, [&] { return server.count("message") == 2 * kMessages; });
  std::vector<std::string> sent;
  for (size_t i = 0; i < kMessages; ++i) sent.push_back(numbered(i));
  ASSERT_EQ(server.by_session.size(), 2u);
  for (const auto& [session, got] : server.by_session) EXPECT_EQ(got, sent);
}

TEST_P(LeanWsSessionTest, ARequestThatIsNotAnUpgradeIsRefused) {
  asio::io_context io;
  Server server(io, GetParam());
  tcp::socket raw(io);
  raw.connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), server.port()));
  const std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  asio::write(raw, asio::buffer(request));
  pump(io, [&] { return server.count("rejected") == 1; });
  EXPECT_EQ(server.count("open"), 0u);
  EXPECT_NE(server.events[0].find("not a WebSocket upgrade"), std::string::npos);
}

// The scripted exchange of the fail_count loops: upgrade to /node/7, "echo3" (the server answers
// "one", "two", "three"), then the client's close. Returns the messages the client read; ends
// when the client's last operation has finished, ok or not, and the server's ring holds no
// descriptor.
std::vector<std::string> scripted_exchange(asio::io_context& io, Server& server) {
  asio::io_context client_io;
  beast::websocket::stream<tcp::socket> client(client_io);
  client.next_layer().connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), server.port()));
  std::vector<std::string> got;
  beast::flat_buffer buffer;
  bool client_done = false;
  std::function<void()> read_next = [&] {
    client.async_read(buffer, [&](boost::system::error_code ec, size_t) {
      if (ec) {
        client_done = true;
        return;
      }
      got.push_back(beast::buffers_to_string(buffer.data()));
      buffer.consume(buffer.size());
      if (got.size() < 3) return read_next();
      client.async_close(beast::websocket::close_code::normal, [&](boost::system::error_code) { client_done = true; });
    });
  };
  client.async_handshake("127.0.0.1", "/node/7", [&](boost::system::error_code ec) {
    if (ec) {
      client_done = true;
      return;
    }
    client.binary(true);
    client.async_write(asio::buffer(std::string("echo3")), [&](boost::system::error_code write_ec, size_t) {
      if (write_ec) {
        client_done = true;
        return;
      }
      read_next();
    });
  });
  pump(io, [&] {
    client_io.restart();
    client_io.poll();
    return client_done && server.ring->sessions() == 0;
  });
  // A client left waiting on a connection the server has ended gets its error at once.
  boost::system::error_code ignored;
  client.next_layer().close(ignored);
  return got;
}

// Every operation the ring does for a session (its upgrade answer's send, every recv, every
// send) fails in turn, n = 0, 1, 2, ... until the injected failure is never reached. At every n:
// at most one on_ws_open and as many on_ws_gone, nothing after it, no handler inside another,
// the descriptor closed, the session object freed.
TEST(LeanWsSession, OnTheRingEveryFailedOperationEndsOnlyItsConnectionCleanly) {
  size_t n = 0;
  for (;; ++n) {
    ASSERT_LT(n, 64u) << "the exchange never ran out of operations to fail";
    asio::io_context io;
    Server server(io, true);
    ASSERT_NE(server.ring, nullptr);
    server.keep_sessions = false;
    server.ring->fail_operation(n, ECONNRESET);
    const std::vector<std::string> got = scripted_exchange(io, server);
    const bool reached = !server.ring->failure_pending();
    SCOPED_TRACE("n = " + std::to_string(n));
    EXPECT_LE(server.count("open"), 1u);
    EXPECT_EQ(server.count("gone"), server.count("open"));
    if (!server.events.empty() && server.count("open") == 1) {
      EXPECT_EQ(server.events.back().rfind("gone", 0), 0u);
    }
    for (auto& weak : server.weak_sessions) {
      pump(io, [&] { return weak.expired(); });  // its hold on itself is dropped from the loop
    }
    EXPECT_EQ(server.ring->sessions(), 0u);
    if (!reached) {
      // Nothing failed: the whole exchange, as on epoll.
      EXPECT_EQ(got, (std::vector<std::string>{"one", "two", "three"}));
      EXPECT_EQ(server.events, (std::vector<std::string>{"open /node/7", "message echo3", "gone closed_by_peer"}));
      break;
    }
    EXPECT_EQ(server.count("gone closed_by_peer") + server.count("gone reset"), server.count("open"));
  }
  EXPECT_GE(n, 5u);  // the upgrade answer, two recvs, the answers' send, the close echo at least
}

// A recv that finds no provided buffer free (ENOBUFS) read nothing: the session posts it again
// and the exchange completes as if nothing happened, for every recv in turn.
TEST(LeanWsSession, OnTheRingARecvWithoutABufferIsPostedAgain) {
  size_t n = 0;
  for (;; ++n) {
    ASSERT_LT(n, 64u) << "the exchange never ran out of recvs to fail";
    asio::io_context io;
    Server server(io, true);
    ASSERT_NE(server.ring, nullptr);
    server.keep_sessions = false;
    server.ring->fail_operation(n, ENOBUFS);
    const std::vector<std::string> got = scripted_exchange(io, server);
    SCOPED_TRACE("n = " + std::to_string(n));
    EXPECT_EQ(got, (std::vector<std::string>{"one", "two", "three"}));
    EXPECT_EQ(server.events, (std::vector<std::string>{"open /node/7", "message echo3", "gone closed_by_peer"}));
    if (server.ring->failure_pending()) break;
  }
  EXPECT_GE(n, 2u);
}

// Many connections on one ring with few provided buffers and a completion queue shorter than
// the recvs that complete at once (8 entries, 16 connections: the rest wait in the kernel's
// overflow list): every message arrives, in order, and an idle connection holds no buffer.
TEST(LeanWsSession, OnTheRingMoreConnectionsThanBuffersAndCompletionSlots) {
  asio::io_context io;
  Server server(io, false);
  auto made = LeanWsRing::make(io, LeanWsRing::Options{.entries = 2, .buffers = 4, .buffer_bytes = 512});
  ASSERT_TRUE(made.ok()) << made.error().message;
  server.ring = std::move(*made);
  server.shared.ring = server.ring.get();
  asio::io_context client_io;
  std::vector<std::unique_ptr<beast::websocket::stream<tcp::socket>>> clients;
  for (int i = 0; i < 16; ++i) {
    clients.push_back(std::make_unique<beast::websocket::stream<tcp::socket>>(client_io));
    connect_client(io, server, client_io, *clients.back());
  }
  EXPECT_EQ(server.ring->sessions(), 16u);
  constexpr size_t kMessages = 40;
  for (size_t i = 0; i < kMessages; ++i) {
    for (auto& client : clients) client->write(asio::buffer(numbered(i)));
  }
  pump(io, [&] { return server.count("message") == 16 * kMessages; });
  std::vector<std::string> sent;
  for (size_t i = 0; i < kMessages; ++i) sent.push_back(numbered(i));
  ASSERT_EQ(server.by_session.size(), 16u);
  for (const auto& [session, got] : server.by_session) EXPECT_EQ(got, sent);
}

}  // namespace
}  // namespace msgsim::live
