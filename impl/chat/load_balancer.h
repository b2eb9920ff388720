// The L4 load balancer: tells each device which chat server to use, sticky by user id
// (rendezvous hashing over the healthy servers, so a server's loss moves only its own users),
// and health-checks every chat server every 5 s (the seed's figure). A server that misses a
// check, or answers that it is draining, gets no new devices until it answers `ok` again.
//
// Modelling note: a real L4 balancer forwards the TCP stream; here it answers a RouteRequest
// and the device connects to the server directly. The reconnect storm after a server crash
// reaches the balancer the same way (one request per reconnecting device), which is what the
// scenarios measure, and it saves a hop per frame.
#pragma once

#include <map>
#include <vector>

#include "impl/chat/config.h"
#include "impl/chat/protocol.h"

namespace msgsim::chat {

struct BalancerStats {
  uint64_t routed = 0;
  uint64_t refused = 0;  // no healthy server
  // Route requests per second of this node's clock, for the reconnect-storm report.
  std::map<int64_t, uint64_t> routed_per_second;
};

class LoadBalancerNode final : public Node {
 public:
  LoadBalancerNode(const ChatConfig& config, BalancerStats& stats) : config_(config), stats_(stats) {}
  void on_start(Context& ctx) override;
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override;
  void on_timer(Context& ctx, uint64_t tag) override;
  std::string describe() const override;

  // The server for `user` among the healthy ones, or kNoNode.
  NodeId choose(std::string_view user) const;
  size_t healthy_count() const;

 private:
  struct Backend {
    NodeId node = kNoNode;
    ConnId conn = kNoConn;
    bool healthy = true;        // optimistic at start: the first check settles it
    bool answered = false;      // since the last check went out
  };
  void check_all(Context& ctx);
  void invariants() const;

  const ChatConfig& config_;
  BalancerStats& stats_;  // the observer's, survives restarts
  std::vector<Backend> backends_;  // one per chat server, in topology order
};

}  // namespace msgsim::chat
