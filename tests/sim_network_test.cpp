// The simulator's network and node lifecycle semantics (DESIGN.md "runtime contract"), one
// test per rule, on scripted nodes.
#include <gtest/gtest.h>

#include "sim/disk.h"
#include "sim/simulator.h"
#include "tests/sim_test_node.h"

namespace msgsim::sim {
namespace {

using testing::Script;
using testing::ScriptNode;
using testing::text_frame;

constexpr int64_t kMs = kNanosPerMilli;
constexpr int64_t kS = kNanosPerSecond;
constexpr int64_t kFarBaseNs = 100 * kMs;
constexpr int64_t kTimeoutNs = 5 * kS;

NetworkConfig two_regions(int64_t jitter_far_ns = 2 * kMs) {
  NetworkConfig net;
  net.regions = {"near", "far"};
  net.base_ns = {{400'000, kFarBaseNs}, {kFarBaseNs, 400'000}};
  net.jitter_mean_ns = {{100'000, jitter_far_ns}, {jitter_far_ns, 100'000}};
  net.connection_timeout_ns = kTimeoutNs;
  return net;
}

struct World {
  explicit World(uint64_t seed = 1, NetworkConfig net = two_regions()) : sim(seed, std::move(net)) {}
  NodeId add(Script& script, uint32_t region = 0) {
    const NodeId id = sim.add_node("n" + std::to_string(sim.node_count()), region,
                                   [&script] { return std::make_unique<ScriptNode>(script); });
    return id;
  }
  Simulator sim;
};

// A client that connects to `server` at start and sends `frames` right away.
void connect_and_send(Script& client, NodeId server, std::vector<std::string> frames, ConnId* conn_out = nullptr) {
  client.on_start = [server, frames, conn_out](Context& ctx) {
    const ConnId conn = ctx.connect(server);
    if (conn_out) *conn_out = conn;
    for (const auto& f : frames) ctx.send(conn, text_frame(f));
  };
}

TEST(Network, FramesArriveInOrderOnceAfterTheOneWayDelay) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 1);
  const NodeId c = w.add(client, 0);
  std::vector<std::string> sent;
  for (int i = 0; i < 500; ++i) sent.push_back("m" + std::to_string(i));
  connect_and_send(client, s, sent);
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(10 * kS);
  EXPECT_EQ(server.frames(), sent);  // in order, once, despite jitter
  const auto* accept = server.find("accept");
  ASSERT_NE(accept, nullptr);
  EXPECT_GE(accept->local_ns, kFarBaseNs);
  EXPECT_LT(accept->local_ns, kFarBaseNs + 100 * kMs);
  const auto* connected = client.find("connected");
  ASSERT_NE(connected, nullptr);
  EXPECT_GE(connected->local_ns, 2 * kFarBaseNs);  // a round trip
  EXPECT_EQ(w.sim.stats().frames_delivered, 500u);
}

TEST(Network, IntraRegionIsSubMillisecond) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 0);
  const NodeId c = w.add(client, 0);
  connect_and_send(client, s, {"hello"});
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(1 * kS);
  ASSERT_NE(server.find("frame"), nullptr);
  EXPECT_LT(server.find("frame")->local_ns, 1 * kMs);
}

TEST(Network, ConnectingToADownNodeIsRefusedAfterARoundTrip) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 1);
  const NodeId c = w.add(client, 0);
  connect_and_send(client, s, {"lost"});
  w.sim.start(c);  // the server never starts
  w.sim.run_until(10 * kS);
  const auto* refused = client.find("disconnect:refused");
  ASSERT_NE(refused, nullptr);
  EXPECT_GE(refused->local_ns, 2 * kFarBaseNs);
  EXPECT_LT(refused->local_ns, 2 * kFarBaseNs + 200 * kMs);
  EXPECT_EQ(server.incarnations, 0);
}

TEST(Network, CrashResetsPeersAfterTheOneWayDelay) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 1);
  const NodeId c = w.add(client, 0);
  connect_and_send(client, s, {"first"});
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(3 * kS);
  ASSERT_EQ(server.frames().size(), 1u);
  w.sim.crash(s, CrashDisk::keep_unsynced);
  const int64_t crash_at = w.sim.now_ns();
  w.sim.run_until(10 * kS);
  const auto* reset = client.find("disconnect:reset");
  ASSERT_NE(reset, nullptr);
  EXPECT_GE(reset->local_ns - crash_at, kFarBaseNs);
  EXPECT_LT(reset->local_ns - crash_at, kFarBaseNs + 100 * kMs);
  EXPECT_FALSE(w.sim.node_up(s));
  EXPECT_EQ(w.sim.open_connections(), 0u);
}

TEST(Network, FramesInFlightAtACrashAreLost) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 1);
  const NodeId c = w.add(client, 0);
  ConnId conn = kNoConn;
  client.on_start = [&](Context& ctx) {
    conn = ctx.connect(s);
    ctx.set_timer(1 * kS, 7);
  };
  client.on_timer = [&](Context& ctx, uint64_t) { ctx.send(conn, text_frame("doomed")); };
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(1 * kS + 10 * kMs);  // the frame is on its way (100 ms one way)
  w.sim.crash(s, CrashDisk::keep_unsynced);
  w.sim.start(s);                       // restarted before the frame would have arrived
  w.sim.run_until(5 * kS);
  EXPECT_TRUE(server.frames().empty());
  EXPECT_EQ(server.incarnations, 2);
  EXPECT_EQ(w.sim.stats().frames_lost, 1u);
  EXPECT_NE(client.find("disconnect:reset"), nullptr);
}

TEST(Network, TimersNeverFireInALaterIncarnation) {
  World w;
  Script node;
  const NodeId n = w.add(node, 0);
  node.on_start = [&](Context& ctx) {
    if (node.incarnations == 1) ctx.set_timer(5 * kS, 1);
  };
  w.sim.start(n);
  w.sim.run_until(1 * kS);
  w.sim.crash(n, CrashDisk::keep_unsynced);
  w.sim.start(n);
  w.sim.run_until(10 * kS);
  EXPECT_EQ(node.count("timer"), 0u);
  EXPECT_EQ(node.count("start"), 2u);
}

TEST(Network, CancelledTimersDoNotFire) {
  World w;
  Script node;
  const NodeId n = w.add(node, 0);
  node.on_start = [&](Context& ctx) {
    const TimerId t = ctx.set_timer(1 * kS, 1);
    ctx.set_timer(2 * kS, 2);
    ctx.cancel_timer(t);
  };
  w.sim.start(n);
  w.sim.run_until(5 * kS);
  ASSERT_EQ(node.count("timer"), 1u);
  EXPECT_EQ(node.find("timer")->data, "2");
}

TEST(Network, PartitionShorterThanTheTimeoutHoldsFramesUntilTheHeal) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 1);
  const NodeId c = w.add(client, 0);
  ConnId conn = kNoConn;
  client.on_start = [&](Context& ctx) {
    conn = ctx.connect(s);
    ctx.set_timer(2 * kS, 1);
  };
  client.on_timer = [&](Context& ctx, uint64_t) { ctx.send(conn, text_frame("held")); };
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(1 * kS);
  const auto cut = w.sim.partition({c}, {s}, /*one_way=*/false);
  w.sim.run_until(4 * kS);
  EXPECT_TRUE(server.frames().empty());
  w.sim.heal(cut);
  w.sim.run_until(6 * kS);
  ASSERT_EQ(server.frames().size(), 1u);
  EXPECT_GE(server.find("frame")->local_ns, 4 * kS + kFarBaseNs);
  EXPECT_EQ(client.count("disconnect:timeout"), 0u);
}

TEST(Network, PartitionPastTheTimeoutBreaksTheConnectionOnBothEnds) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 1);
  const NodeId c = w.add(client, 0);
  ConnId conn = kNoConn;
  client.on_start = [&](Context& ctx) {
    conn = ctx.connect(s);
    ctx.set_timer(2 * kS, 1);
  };
  client.on_timer = [&](Context& ctx, uint64_t) { ctx.send(conn, text_frame("never")); };
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(1 * kS);
  const auto cut = w.sim.partition({c}, {s}, false);
  w.sim.run_until(20 * kS);
  w.sim.heal(cut);
  w.sim.run_until(25 * kS);
  EXPECT_TRUE(server.frames().empty());
  const auto* c_timeout = client.find("disconnect:timeout");
  const auto* s_timeout = server.find("disconnect:timeout");
  ASSERT_NE(c_timeout, nullptr);
  ASSERT_NE(s_timeout, nullptr);
  // Held from the frame's arrival time (sent at 2 s, 100 ms one way), timed out 5 s later.
  EXPECT_GE(c_timeout->local_ns, 2 * kS + kFarBaseNs + kTimeoutNs);
  EXPECT_LT(c_timeout->local_ns, 2 * kS + kFarBaseNs + kTimeoutNs + 100 * kMs);
  EXPECT_EQ(w.sim.open_connections(), 0u);
}

TEST(Network, OneWayPartitionCutsOnlyOneDirection) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 0);
  const NodeId c = w.add(client, 0);
  ConnId conn = kNoConn;
  client.on_start = [&](Context& ctx) {
    conn = ctx.connect(s);
    ctx.set_timer(1 * kS, 1);
  };
  client.on_timer = [&](Context& ctx, uint64_t) { ctx.send(conn, text_frame("up")); };
  server.on_accept = [&](Context& ctx, ConnId accepted, NodeId) {
    ctx.set_timer(1 * kS, 2);
    server.on_timer = [accepted](Context& c2, uint64_t) { c2.send(accepted, text_frame("down")); };
  };
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(500 * kMs);
  const auto cut = w.sim.partition({c}, {s}, /*one_way=*/true);  // client -> server cut
  w.sim.run_until(3 * kS);
  EXPECT_TRUE(server.frames().empty());
  EXPECT_EQ(client.frames(), std::vector<std::string>{"down"});
  w.sim.heal(cut);
  w.sim.run_until(4 * kS);
  EXPECT_EQ(server.frames(), std::vector<std::string>{"up"});
}

TEST(Network, IsolationAndRegionSplitAreSetPartitions) {
  World w;
  Script a, b, far;
  const NodeId na = w.add(a, 0), nb = w.add(b, 0), nf = w.add(far, 1);
  EXPECT_FALSE(w.sim.path_cut(na, nf));
  const auto isolate = w.sim.partition({na}, {nb, nf}, false);
  EXPECT_TRUE(w.sim.path_cut(na, nb));
  EXPECT_TRUE(w.sim.path_cut(nf, na));
  EXPECT_FALSE(w.sim.path_cut(nb, nf));
  w.sim.heal(isolate);
  const auto split = w.sim.partition({na, nb}, {nf}, false);
  EXPECT_TRUE(w.sim.path_cut(nb, nf));
  EXPECT_TRUE(w.sim.path_cut(nf, na));
  EXPECT_FALSE(w.sim.path_cut(na, nb));
  w.sim.heal(split);
  EXPECT_FALSE(w.sim.path_cut(na, nf));
}

TEST(Network, LatencySpikeDelaysFrames) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 0);
  const NodeId c = w.add(client, 0);
  w.sim.add_latency(s, 300 * kMs);
  connect_and_send(client, s, {"slow"});
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(2 * kS);
  ASSERT_NE(server.find("frame"), nullptr);
  EXPECT_GE(server.find("frame")->local_ns, 300 * kMs);
  w.sim.add_latency(s, -300 * kMs);
}

TEST(Network, CloseDeliversWhatWasSentThenTellsThePeer) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 1);
  const NodeId c = w.add(client, 0);
  client.on_start = [&](Context& ctx) {
    const ConnId conn = ctx.connect(s);
    ctx.send(conn, text_frame("a"));
    ctx.send(conn, text_frame("b"));
    ctx.close(conn);
  };
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(2 * kS);
  EXPECT_EQ(server.frames(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(server.count("disconnect:closed_by_peer"), 1u);
  EXPECT_EQ(client.count("disconnect:closed_by_peer"), 0u);  // the closer is not told
  EXPECT_EQ(w.sim.open_connections(), 0u);
}

TEST(Network, HostLossGivesPeersATimeoutNotAReset) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 1);
  const NodeId c = w.add(client, 0);
  ConnId conn = kNoConn;
  client.on_start = [&](Context& ctx) {
    conn = ctx.connect(s);
    ctx.set_timer(2 * kS, 1);
  };
  client.on_timer = [&](Context& ctx, uint64_t) { ctx.send(conn, text_frame("anyone?")); };
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(1 * kS);
  w.sim.lose_host(s);
  w.sim.run_until(20 * kS);
  EXPECT_EQ(client.count("disconnect:reset"), 0u);
  EXPECT_EQ(client.count("disconnect:timeout"), 1u);
  w.sim.replace_host(s);
  EXPECT_TRUE(w.sim.node_up(s));
}

TEST(Network, GracefulShutdownDrainsThenClosesConnectionsCleanly) {
  World w;
  Script server, client;
  const NodeId s = w.add(server, 0);
  const NodeId c = w.add(client, 0);
  server.on_accept = [&](Context& ctx, ConnId conn, NodeId) { ctx.send(conn, text_frame("bye-soon")); };
  connect_and_send(client, s, {"hi"});
  w.sim.start(s);
  w.sim.start(c);
  w.sim.run_until(1 * kS);
  w.sim.shutdown(s, 5 * kS);
  w.sim.run_until(2 * kS);
  EXPECT_EQ(server.count("drain"), 1u);
  EXPECT_FALSE(w.sim.node_up(s));  // it called exit() in on_drain
  EXPECT_EQ(client.count("disconnect:closed_by_peer"), 1u);
  EXPECT_EQ(client.frames(), std::vector<std::string>{"bye-soon"});
}

TEST(Network, ClockSkewAndDriftShapeLocalTimeAndTimers) {
  World w;
  Script node;
  const NodeId n = w.add(node, 0);
  int64_t local_at_fire = 0;
  node.on_start = [](Context& ctx) { ctx.set_timer(0, 0); };
  node.on_timer = [&](Context& ctx, uint64_t tag) {
    if (tag == 1) local_at_fire = ctx.now_ns();
  };
  w.sim.start(n);
  w.sim.run_until(1 * kS);
  w.sim.set_clock(n, 500 * kMs, 100'000);  // from now: 0.5 s ahead, running 10% fast
  // A timer of 1.1 s on a 10% fast clock fires after 1 s of true time.
  w.sim.at(1 * kS, [] {});
  node.on_frame = nullptr;
  Script trigger;
  const NodeId t = w.add(trigger, 0);
  trigger.on_start = [n](Context& ctx) { ctx.send(ctx.connect(n), text_frame("arm")); };
  node.on_frame = [](Context& ctx, ConnId, const std::string&) { ctx.set_timer(1'100 * kMs, 1); };
  w.sim.start(t);
  w.sim.run_until(3 * kS);
  const auto* armed = node.find("frame");
  ASSERT_NE(armed, nullptr);
  ASSERT_NE(local_at_fire, 0);
  // Local time is true + 0.5 s + (true - 1 s) / 10; the timer spans 1.1 s of it.
  EXPECT_NEAR(static_cast<double>(local_at_fire - armed->local_ns), 1.1e9, 2.0);
  const int64_t true_fire = (local_at_fire - 500 * kMs + kS / 10) * 10 / 11;
  EXPECT_GT(true_fire, 1 * kS);
  EXPECT_EQ(node.count("timer"), 2u);
}

TEST(Network, IdleConnectionsStayUnder512Bytes) {
  World w;
  Script server;
  std::vector<Script> clients(200);
  const NodeId s = w.add(server, 0);
  for (auto& cl : clients) {
    const NodeId c = w.add(cl, 0);
    (void)c;
    connect_and_send(cl, s, {"x", "y"});
  }
  server.on_frame = [](Context& ctx, ConnId conn, const std::string&) { ctx.send(conn, text_frame("ok")); };
  w.sim.start(s);
  for (NodeId c = 1; c <= 200; ++c) w.sim.start(c);
  w.sim.run_until(5 * kS);
  ASSERT_EQ(w.sim.open_connections(), 200u);
  const double per_connection = static_cast<double>(w.sim.connection_bytes()) / 200.0;
  RecordProperty("bytes_per_idle_connection", std::to_string(per_connection));
  EXPECT_LE(per_connection, 512.0);
}

// A digest of a fixed little world, run with a seed.
std::string run_world(uint64_t seed) {
  World w(seed);
  Script server;
  std::vector<Script> clients(20);
  const NodeId s = w.add(server, 1);
  server.on_frame = [](Context& ctx, ConnId conn, const std::string& f) { ctx.send(conn, text_frame("re:" + f)); };
  for (auto& cl : clients) {
    w.add(cl, 0);
    cl.on_start = [&cl, s](Context& ctx) {
      const ConnId conn = ctx.connect(s);
      for (int i = 0; i < 10; ++i) ctx.send(conn, text_frame(std::to_string(ctx.rng().below(1000))));
      (void)cl;
    };
  }
  w.sim.start(s);
  for (NodeId c = 1; c <= 20; ++c) w.sim.start(c);
  w.sim.run_until(3 * kS);
  w.sim.crash(s, CrashDisk::keep_unsynced);
  w.sim.run_until(4 * kS);
  return w.sim.digest_hex();
}

TEST(Determinism, SameSeedSameDigestDifferentSeedDifferentDigest) {
  EXPECT_EQ(run_world(5), run_world(5));
  EXPECT_NE(run_world(5), run_world(6));
}

}  // namespace
}  // namespace msgsim::sim
