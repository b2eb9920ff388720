// The chat server: holds device connections (the seed's 50-100K each), authenticates them,
// keeps their presence in the connection registry, forwards sends to the queue and acks the
// device only once the queue made the message durable, forwards deliveries and receipts that
// storage routes to devices connected here, and serves sync by asking every storage node.
//
// Ordering rules this node keeps:
//  - A SendAck is sent only after the queue's Produced for it (persist before ack).
//  - Deliver frames of one conversation reach a device in the order storage sent them: one
//    connection per storage node, FIFO, and no reordering here.
//  - A draining server tells every device to go (Drain), answers the load balancer `draining`,
//    keeps each device's connection until the answers to its sends in flight and its sync have
//    gone out (handoff), then closes it and unregisters the device, and exits once every device
//    connection is closed. Planted bug (config.h): drain_drops_buffered (on_drain).
#pragma once

#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "impl/chat/config.h"
#include "impl/chat/protocol.h"

namespace msgsim::chat {

class ChatServerNode final : public Node {
 public:
  explicit ChatServerNode(const ChatConfig& config) : config_(config) {}
  void on_start(Context& ctx) override;
  void on_accept(Context& ctx, ConnId conn, NodeId peer) override;
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override;
  void on_timer(Context& ctx, uint64_t tag) override;
  void on_drain(Context& ctx, int64_t deadline_ns) override;
  std::string describe() const override;

  size_t devices_connected() const { return by_device_.size(); }

 private:
  struct Session {
    std::string user;
    std::string device;
    bool welcomed = false;
  };
  struct PendingProduce {
    ConnId device_conn;
    std::string msg_id;
    std::string conv;
    NodeId queue;
    int64_t sent_at_ns;
    Bytes produce;           // the Produce frame, resent after a NotLeader redirect
    uint32_t redirects = 0;  // bounded by kRedirectsMax; then the device's retry takes over
  };
  static constexpr uint32_t kRedirectsMax = 3;
  // The queue node this server believes leads the partition (queue.h "Failover").
  NodeId queue_leader(uint32_t partition) const;
  void on_not_leader(Context& ctx, const NotLeader& redirect);
  struct PendingSync {
    ConnId device_conn;
    uint32_t storages_left;
    int64_t sent_at_ns;
  };

  void on_device_frame(Context& ctx, ConnId conn, Session& session, Frame& frame);
  void on_server_frame(Context& ctx, ConnId conn, Frame& frame);
  ConnId upstream(Context& ctx, NodeId node);
  void register_device(Context& ctx, const Session& session);
  void expire_pending(Context& ctx);
  void finish_sync(Context& ctx, uint64_t request_id);
  // While draining: closes a device's connection once nothing is owed to it.
  void close_if_handed_off(Context& ctx, ConnId conn);
  // Every session's connection, ascending: the order the sessions are walked in.
  std::vector<ConnId> conns_in_order() const;
  void invariants() const;

  const ChatConfig& config_;
  bool draining_ = false;
  // Device connections, welcomed or not, and the welcomed ones by device id. Hash maps: a
  // server holds the seed's 50,000 connections, and a tree's lookup there was a chain of ~16
  // cache misses per frame (15 % of the full-scale crash's CPU). Never iterated in hash order:
  // what walks the sessions takes them in ConnId order from conns_in_order().
  std::unordered_map<ConnId, Session> sessions_;
  std::unordered_map<std::string, ConnId> by_device_;
  std::map<NodeId, ConnId> upstreams_;           // connections this server opened
  std::map<uint64_t, PendingProduce> produces_;  // request id -> what to answer
  std::map<uint64_t, PendingSync> syncs_;
  uint64_t next_request_id_ = 1;
  std::map<uint32_t, NodeId> queue_leaders_;  // partition -> leader, where it is not the first replica
};

}  // namespace msgsim::chat
