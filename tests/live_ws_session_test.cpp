// LiveHost's WebSocket session without sockets (the developers' guide's fail_count loop): the
// session that serves accepted device connections runs over beast::test::stream through
// live/live_host_test_seam.h, and for n = 0, 1, 2, ... the n-th operation of its stream
// (reading the upgrade, writing the answer, reading or writing a message) fails, until a
// scripted exchange completes without an injected failure. At every n the session must end
// cleanly: the node sees at most one on_accept and exactly as many on_disconnect, no handler
// after it, no handler inside another, and the session object is freed.
#include <gtest/gtest.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/fail_count.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "live/live_host.h"
#include "live/live_host_test_seam.h"
#include "tests/scratch_dir_test_support.h"

namespace msgsim::live {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using error_code = boost::system::error_code;

constexpr NodeId kServer = 1;
constexpr NodeId kDevice = 7;

// The server node: answers every frame with "pong:" and the frame, and records what it saw.
struct Seen {
  std::vector<std::string> events;
  bool in_handler = false;
  bool reentered = false;
  size_t count(std::string_view prefix) const {
    size_t n = 0;
    for (const auto& e : events) n += e.rfind(prefix, 0) == 0;
    return n;
  }
};

class EchoNode final : public Node {
 public:
  explicit EchoNode(Seen& seen) : seen_(seen) {}
  void on_start(Context&) override { record("start"); }
  void on_accept(Context&, ConnId, NodeId peer) override { record("accept from " + std::to_string(peer)); }
  void on_connected(Context&, ConnId) override { record("connected"); }
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override {
    const std::string text(frame.begin(), frame.end());
    record("frame " + text);
    const std::string answer = "pong:" + text;
    ctx.send(conn, Bytes(answer.begin(), answer.end()));
  }
  void on_disconnect(Context&, ConnId, DisconnectReason reason) override {
    record("disconnect " + std::string(to_string(reason)));
  }
  void on_timer(Context&, uint64_t) override { record("timer"); }

 private:
  void record(std::string what) {
    if (seen_.in_handler) seen_.reentered = true;
    seen_.in_handler = true;
    seen_.events.push_back(std::move(what));
    seen_.in_handler = false;
  }
  Seen& seen_;
};

// The device's side of the script, over the other end of the test stream: upgrade to
// /node/7, send "ping", read the answer, close with 1000.
class ScriptedDevice : public std::enable_shared_from_this<ScriptedDevice> {
 public:
  explicit ScriptedDevice(beast::test::stream stream) : ws_(std::move(stream)) {}
  bool done = false;       // the script ended, one way or the other
  bool completed = false;  // every step succeeded
  std::string answer;
  std::string error;

  void start() {
    ws_.binary(true);
    ws_.async_handshake("127.0.0.1", "/node/" + std::to_string(kDevice), [self = shared_from_this()](error_code ec) {
      if (ec) return self->end("handshake", ec);
      self->ws_.async_write(asio::buffer(std::string_view("ping")), [self](error_code ec, size_t) {
        if (ec) return self->end("write", ec);
        self->ws_.async_read(self->buffer_, [self](error_code ec, size_t) {
          if (ec) return self->end("read", ec);
          self->answer = beast::buffers_to_string(self->buffer_.data());
          self->ws_.async_close(websocket::close_code::normal, [self](error_code ec) {
            if (ec) return self->end("close", ec);
            self->completed = true;
            self->done = true;
          });
        });
      });
    });
  }

 private:
  void end(const char* step, error_code ec) {
    error = std::string(step) + ": " + ec.message();
    done = true;
  }
  websocket::stream<beast::test::stream> ws_;
  beast::flat_buffer buffer_;
};

struct Outcome {
  bool completed = false;
  std::string device_error;
  std::string answer;
  std::vector<std::string> events;
  bool reentered = false;
  bool session_freed = false;
  size_t open_connections = 0;
};

Outcome run_with_failure_at(size_t n) {
  asio::io_context io;
  Seen seen;
  LiveHostOptions options;
  options.run_dir = test::scratch_dir("live_ws_session_test");
  LiveHost host(io, options, Directory{});
  host.add_node(kServer, "server", "local", [&] { return std::make_unique<EchoNode>(seen); });
  host.start(kServer);

  beast::test::fail_count failures(n);
  beast::test::stream server_end(io, failures);
  beast::test::stream device_end(io);
  server_end.connect(device_end);
  const std::weak_ptr<void> session = LiveHostTestSeam::accept_websocket(host, kServer, std::move(server_end));
  auto device = std::make_shared<ScriptedDevice>(std::move(device_end));
  device->start();

  // Until the script ended and the session is gone; bounded, so a hang fails the test.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((!device->done || !session.expired()) && std::chrono::steady_clock::now() < deadline) {
    io.run_for(std::chrono::milliseconds(2));
    io.restart();
  }
  Outcome out;
  out.completed = device->completed;
  out.device_error = device->error;
  out.answer = device->answer;
  out.events = seen.events;
  out.reentered = seen.reentered;
  out.session_freed = session.expired();
  out.open_connections = host.open_connections();
  host.shutdown();
  return out;
}

std::string joined(const std::vector<std::string>& events) {
  std::string out;
  for (const auto& e : events) out += e + "; ";
  return out;
}

TEST(LiveWsSession, EveryFailedStreamOperationEndsTheSessionCleanly) {
  constexpr size_t kFailuresMax = 200;  // the script takes a handful of stream operations
  size_t n = 0;
  size_t failed_runs = 0;
  for (; n < kFailuresMax; ++n) {
    const Outcome out = run_with_failure_at(n);
    SCOPED_TRACE("failure at operation " + std::to_string(n) + ": " + joined(out.events) + " device: " +
                 (out.completed ? "completed" : out.device_error));
    ASSERT_FALSE(out.events.empty());
    EXPECT_EQ(out.events.front(), "start");
    const size_t accepts = Seen{out.events}.count("accept"), disconnects = Seen{out.events}.count("disconnect");
    EXPECT_LE(accepts, 1u);
    EXPECT_EQ(disconnects, accepts) << "one on_disconnect for an accepted connection, none for one never accepted";
    if (disconnects == 1) {
      EXPECT_EQ(out.events.back().rfind("disconnect", 0), 0u) << "no handler after on_disconnect";
    }
    if (accepts == 1) {
      EXPECT_EQ(out.events[1], "accept from " + std::to_string(kDevice));
    }
    EXPECT_FALSE(out.reentered);
    EXPECT_TRUE(out.session_freed) << "the session object outlived its end";
    EXPECT_EQ(out.open_connections, 0u);
    if (out.completed) {
      EXPECT_EQ(out.answer, "pong:ping");
    }
    // A failure injected after the device's close completed (the session's teardown read)
    // still ends the session, as a reset; the loop ends at the first n where none reached it.
    if (out.completed && out.events.back() == "disconnect closed_by_peer") {
      // No injected failure reached the session: the whole exchange went through.
      EXPECT_EQ(joined(out.events),
                "start; accept from " + std::to_string(kDevice) + "; frame ping; disconnect closed_by_peer; ");
      break;
    }
    failed_runs++;
  }
  ASSERT_LT(n, kFailuresMax) << "the exchange never completed";
  // Failures were injected at the upgrade, the message read and the answer's write at least.
  EXPECT_GE(failed_runs, 3u);
  std::printf("the exchange completed with the failure at operation %zu (%zu runs ended by a failure)\n", n,
              failed_runs);
}

}  // namespace
}  // namespace msgsim::live
