// A device's heartbeats and its heartbeat timeout (impl/chat/device.h), against a scripted load
// balancer and a scripted chat server: a Heartbeat goes only when the connection is idle (any
// frame proves liveness), at least once per interval then, and a server that goes quiet is
// given up after heartbeat_timeout_ns, however busy the device is sending.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "impl/chat/device.h"
#include "sim/simulator.h"
#include "tests/chat_test_support.h"
#include "tests/sim_test_node.h"

namespace msgsim::chat {
namespace {

using test_support::decoded;
using test_support::one_region;
using testing::Script;
using testing::ScriptNode;

constexpr int64_t kS = kNanosPerSecond;

struct DeviceRig {
  // `sending`: the device's user writes a message every `send_interval_ns` on average.
  DeviceRig(bool sending, int64_t send_interval_ns) : sim(3, one_region()) {
    lb_id = sim.add_node("lb", 0, [this] { return std::make_unique<ScriptNode>(lb); });
    server_id = sim.add_node("chat", 0, [this] { return std::make_unique<ScriptNode>(server); });
    device_id = sim.add_node("device", 0, [this] { return std::make_unique<DeviceNode>(config, 0, 1); });
    config.topology.load_balancers = {lb_id};
    config.topology.chat_servers = {server_id};
    config.users = {UserPlan{"u1", 1, {"u2"}}};
    config.workload.sending = sending;
    config.workload.send_interval_mean_ns = send_interval_ns;
    config.workload.group_share = 0;
    lb.on_frame = [this](Context& ctx, ConnId conn, const std::string&) {
      ctx.send(conn, encode_as(RouteReply{true, server_id}));
    };
    server.on_frame = [this](Context& ctx, ConnId conn, const std::string& text) {
      if (!answering) return;
      Frame frame = decoded(text);
      if (std::holds_alternative<Hello>(frame)) {
        ctx.send(conn, encode_as(Welcome{server_id}));
      } else if (std::holds_alternative<SyncRequest>(frame)) {
        ctx.send(conn, encode_as(SyncDone{}));
      } else if (std::holds_alternative<Heartbeat>(frame)) {
        ctx.send(conn, encode_as(HeartbeatAck{}));
      } else if (const auto* send = std::get_if<Send>(&frame)) {
        ctx.send(conn, encode_as(SendAck{send->msg_id, send->conv, ++seq}));
      } else {
        return;  // receipts need no answer
      }
      last_answer_ns = ctx.now_ns();
    };
    sim.start(lb_id);
    sim.start(server_id);
    sim.start(device_id);
  }

  // Times (virtual ns) at which the server received a frame of type T (any type: Frame).
  template <typename T>
  std::vector<int64_t> arrivals(int64_t from_ns, int64_t to_ns) const {
    std::vector<int64_t> out;
    for (const testing::Observed& o : server.log) {
      if (o.what != "frame" || o.local_ns < from_ns || o.local_ns >= to_ns) continue;
      if constexpr (std::is_same_v<T, Frame>) out.push_back(o.local_ns);
      else if (std::holds_alternative<T>(decoded(o.data))) out.push_back(o.local_ns);
    }
    return out;
  }
  size_t disconnects() const {
    size_t n = 0;
    for (const testing::Observed& o : server.log) n += o.what.rfind("disconnect:", 0) == 0;
    return n;
  }

  ChatConfig config;
  sim::Simulator sim;
  Script lb, server;
  NodeId lb_id = 0, server_id = 0, device_id = 0;
  bool answering = true;
  int64_t last_answer_ns = 0;
  uint64_t seq = 0;
};

TEST(Heartbeat, AnIdleDeviceSendsOneEveryIntervalAndNoMore) {
  DeviceRig rig(/*sending=*/false, 10 * kS);
  rig.sim.run_until(91 * kS);
  const int64_t interval = rig.config.tuning.heartbeat_interval_ns;
  const int64_t slack = 5 * kNanosPerMilli;  // network jitter between two frames
  const std::vector<int64_t> frames = rig.arrivals<Frame>(0, 91 * kS);
  const std::vector<int64_t> beats = rig.arrivals<Heartbeat>(0, 91 * kS);
  // Its periodic syncs (every 15-30 s) are its only other frames: about 15 heartbeats in 90 s.
  EXPECT_GE(beats.size(), 12u);
  EXPECT_LE(beats.size(), 18u);
  // The server hears from it at least once an interval, and a heartbeat never follows another
  // frame of the device's sooner than an interval.
  for (size_t i = 1; i < frames.size(); ++i) EXPECT_LE(frames[i] - frames[i - 1], interval + slack) << i;
  for (int64_t beat : beats) {
    auto it = std::lower_bound(frames.begin(), frames.end(), beat);
    ASSERT_NE(it, frames.begin());
    EXPECT_GE(beat - *std::prev(it), interval - slack) << "a heartbeat at " << beat << " ns on a busy connection";
  }
  EXPECT_EQ(rig.lb.count("frame"), 1u);  // routed once: the server kept answering
}

TEST(Heartbeat, ADeviceWithTrafficBothWaysSendsNone) {
  // A message a second on average, each answered: the connection is never idle for 5 s (the
  // odds of a 5 s gap between two sends are e^-5 per gap, so a handful in the run at most).
  DeviceRig rig(/*sending=*/true, 1 * kS);
  rig.sim.run_until(61 * kS);
  const size_t sends = rig.arrivals<Send>(0, 61 * kS).size();
  const size_t beats = rig.arrivals<Heartbeat>(0, 61 * kS).size();
  EXPECT_GE(sends, 40u);
  EXPECT_LE(beats, 2u) << "heartbeats on a connection that carried " << sends << " sends";
}

TEST(Heartbeat, AServerThatGoesQuietIsGivenUpAfterTheTimeoutEvenWhileTheDeviceSends) {
  for (const bool sending : {false, true}) {
    DeviceRig rig(sending, 1 * kS);
    rig.sim.run_until(20 * kS);
    ASSERT_EQ(rig.lb.count("frame"), 1u);
    rig.answering = false;  // the server takes frames and says nothing from here on
    const int64_t quiet_from = rig.sim.now_ns();
    const int64_t heard = rig.last_answer_ns;  // the last frame the device heard
    const int64_t timeout = rig.config.tuning.heartbeat_timeout_ns;
    rig.sim.run_until(heard + timeout - 100 * kNanosPerMilli);
    EXPECT_EQ(rig.lb.count("frame"), 1u) << "gave up before the timeout (sending " << sending << ")";
    EXPECT_EQ(rig.disconnects(), 0u) << "sending " << sending;
    // Still asking while it waits: a heartbeat each interval of silence.
    EXPECT_GE(rig.arrivals<Heartbeat>(quiet_from, rig.sim.now_ns()).size(), 2u) << "sending " << sending;
    // Given up at the timeout, then a reconnect after 0.5-1 s of backoff.
    rig.sim.run_until(heard + timeout + 1100 * kNanosPerMilli);
    EXPECT_EQ(rig.disconnects(), 1u) << "sending " << sending;
    EXPECT_EQ(rig.lb.count("frame"), 2u) << "no reconnect after the timeout (sending " << sending << ")";
  }
}

}  // namespace
}  // namespace msgsim::chat
