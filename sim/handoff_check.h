// The handoff check (DESIGN.md "Oracle": what only the simulator can see): a chat server closes
// a device's connection only when it owes that device no answer it can still give. Histories
// cannot show a server that closes early: the device re-drives what was owed (it resends every
// unanswered send to its next server, which the queue answers with the first answer, and syncs
// from its cursor), so nothing is lost or shown twice; the cost is the duplicate work and the
// latency of the acks that were dropped, and the handoff a drain promises (issue 6) is broken.
//
// What is owed, as the network shows it (frames and connection ends, sim/simulator.h
// ConnectionWatcher): a Send or GroupOp a device's connection delivered to a chat server, which
// the server forwarded to the queue as a Produce. The request is settled when the queue's
// answer (Produced, ProduceRejected, ProduceStale, or a NotLeader the server does not follow
// with the same request to another queue node) is delivered to the server. It stops being owed
// when the answer can no longer come: the server hears its connection to that queue node end,
// the device's connection ends on either side (the device closed it or heard it break: it reads
// only its current connection, so an answer on this one reaches nobody, even while the server
// has not heard the end yet, e.g. across a partition), or the server's own request timeout has
// passed on the server's clock since its first Produce of the request (the server forgets such
// requests; the device retries). A server that closes a device's connection while one of that
// connection's requests is still owed fails the check.
//
// Syncs under way are owed too, but a sync's answer is streamed from every storage node and
// cut short by the server's timeout; this check covers the sends, which every drain with
// traffic has in flight.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "sim/simulator.h"

namespace msgsim::sim {

class HandoffCheck final : public ConnectionWatcher {
 public:
  // `is_chat_server` and `is_device` are indexed by node id; `request_timeout_ns` is the chat
  // servers' (ChatTuning::server_request_timeout_ns); `node_names` names nodes in the detail.
  HandoffCheck(std::vector<bool> is_chat_server, std::vector<bool> is_device, int64_t request_timeout_ns,
               std::vector<std::string> node_names);

  void frame(const FrameRecord& record, int64_t local_ns) override;
  void ended(const ConnectionEnd& end) override;

  bool passed() const { return violations_ == 0; }
  // What was checked, or the first violations with server, device, message id and age.
  std::string detail() const;

  uint64_t requests_followed() const { return requests_followed_; }
  uint64_t violations() const { return violations_; }

 private:
  struct Request {
    ConnId device_conn = 0;
    std::string msg_id;
    NodeId queue = 0;              // where the latest Produce of it went
    int64_t first_sent_local_ns = 0;  // the server's clock at its first Produce
    bool redirected = false;       // a NotLeader came; settled unless the server sends it again
  };
  using RequestKey = std::pair<NodeId, uint64_t>;  // (chat server, request id)

  void on_device_frame(NodeId server, ConnId conn, ByteView data);
  void on_produce(NodeId server, NodeId queue, ByteView data, int64_t local_ns);
  void on_queue_answer(NodeId server, ByteView data);
  std::string name_of(NodeId node) const;

  // Bounds the followed requests (a crashed server's requests stay until their ids come round
  // again): past it, new requests are not followed, which can only miss a violation.
  static constexpr size_t kRequestsMax = 1 << 16;
  // Bounds the connections remembered as left by their device (most are never closed by a chat
  // server: connections to the load balancer, or ends the server closed first): past it the
  // oldest is forgotten, which could only report a close as a violation had the server still
  // not closed it after kLeftConnsMax later device ends.
  static constexpr size_t kLeftConnsMax = 1 << 16;
  static constexpr size_t kExamplesMax = 5;

  std::vector<bool> is_chat_server_;
  std::vector<bool> is_device_;
  int64_t request_timeout_ns_;
  std::vector<std::string> node_names_;
  // Per chat server: the latest Send or GroupOp a device delivered to it (the server forwards it
  // in the same handler, so the Produce that follows is for that connection).
  std::map<NodeId, std::pair<ConnId, std::string>> last_device_frame_;
  std::map<RequestKey, Request> requests_;
  std::map<std::pair<NodeId, ConnId>, NodeId> upstream_peer_;  // (server, conn) -> queue node
  // Connections whose device end has ended, while the server's may still be open, and the order
  // they were added in (for the bound; ids erased from the set may stay in the deque).
  std::set<ConnId> left_by_device_;
  std::deque<ConnId> left_order_;
  uint64_t requests_followed_ = 0, requests_not_followed_ = 0, closes_judged_ = 0, violations_ = 0;
  std::vector<std::string> examples_;
};

}  // namespace msgsim::sim
