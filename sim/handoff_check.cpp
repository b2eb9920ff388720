#include "sim/handoff_check.h"

#include <variant>

#include "impl/chat/protocol.h"

namespace msgsim::sim {

namespace {

// The frame's type byte (protocol.cpp frame_type_name: version, then type), 0 when too short.
uint8_t frame_type(ByteView data) { return data.size() < 2 ? 0 : data[1]; }

std::string ms_text(int64_t ns) { return std::to_string(ns / 1'000'000) + " ms"; }

}  // namespace

HandoffCheck::HandoffCheck(std::vector<bool> is_chat_server, std::vector<bool> is_device, int64_t request_timeout_ns,
                           std::vector<std::string> node_names)
    : is_chat_server_(std::move(is_chat_server)),
      is_device_(std::move(is_device)),
      request_timeout_ns_(request_timeout_ns),
      node_names_(std::move(node_names)) {}

std::string HandoffCheck::name_of(NodeId node) const {
  return node < node_names_.size() ? node_names_[node] : "node " + std::to_string(node);
}

void HandoffCheck::frame(const FrameRecord& r, int64_t local_ns) {
  const bool to_server = r.to < is_chat_server_.size() && is_chat_server_[r.to];
  const bool from_server = r.from < is_chat_server_.size() && is_chat_server_[r.from];
  if (!to_server && !from_server) return;
  const uint8_t type = frame_type(r.data);
  if (r.delivered && to_server) {
    const bool from_device = r.from < is_device_.size() && is_device_[r.from];
    if (from_device && (type == chat::Send::kType || type == chat::GroupOp::kType)) {
      on_device_frame(r.to, r.conn, r.data);
    } else if (type == chat::Produced::kType || type == chat::ProduceRejected::kType ||
               type == chat::ProduceStale::kType || type == chat::NotLeader::kType) {
      on_queue_answer(r.to, r.data);
    }
  } else if (!r.delivered && from_server && type == chat::Produce::kType) {
    upstream_peer_[{r.from, r.conn}] = r.to;
    on_produce(r.from, r.to, r.data, local_ns);
  }
}

void HandoffCheck::on_device_frame(NodeId server, ConnId conn, ByteView data) {
  // Only the id is read (decode_through): a frame whose later fields are bad is refused by the
  // server, which then produces nothing for it, so remembering its id changes no verdict.
  std::string id;
  chat::Send send;
  chat::GroupOp op;
  if (decode_through(data, "msg_id", send)) {
    id = std::move(send.msg_id);
  } else if (decode_through(data, "op_id", op)) {
    id = std::move(op.op_id);
  } else {
    return;  // the server refuses it; nothing is owed
  }
  last_device_frame_[server] = {conn, std::move(id)};
}

void HandoffCheck::on_produce(NodeId server, NodeId queue, ByteView data, int64_t local_ns) {
  // The request id and the entry's msg_id, not the body (decode_through).
  chat::Produce produce_prefix;
  if (!decode_through(data, "msg_id", produce_prefix)) return;
  const chat::Produce* produce = &produce_prefix;
  const RequestKey key{server, produce->request_id};
  auto it = requests_.find(key);
  if (it != requests_.end() && it->second.redirected && it->second.msg_id == produce->entry.msg_id) {
    // The same request sent on to the leader a NotLeader named: still owed, from its first send.
    it->second.redirected = false;
    it->second.queue = queue;
    return;
  }
  const auto last = last_device_frame_.find(server);
  if (last == last_device_frame_.end() || last->second.second != produce->entry.msg_id) return;  // not a device's
  if (it == requests_.end() && requests_.size() >= kRequestsMax) {
    requests_not_followed_++;
    return;
  }
  Request& request = requests_[key];  // a crashed incarnation's request of the same id is gone
  request.device_conn = last->second.first;
  request.msg_id = produce->entry.msg_id;
  request.queue = queue;
  request.first_sent_local_ns = local_ns;
  request.redirected = false;
  requests_followed_++;
}

void HandoffCheck::on_queue_answer(NodeId server, ByteView data) {
  // Every answer starts with the request id; that is all this needs of it (decode_through).
  uint64_t request_id = 0;
  bool redirect = false;
  chat::Produced produced;
  chat::ProduceRejected rejected;
  chat::ProduceStale stale;
  chat::NotLeader not_leader;
  if (decode_through(data, "request_id", produced)) {
    request_id = produced.request_id;
  } else if (decode_through(data, "request_id", rejected)) {
    request_id = rejected.request_id;
  } else if (decode_through(data, "request_id", stale)) {
    request_id = stale.request_id;
  } else if (decode_through(data, "request_id", not_leader)) {
    request_id = not_leader.request_id;
    redirect = true;
  } else {
    return;
  }
  auto it = requests_.find({server, request_id});
  if (it == requests_.end()) return;
  if (redirect) {
    it->second.redirected = true;  // settled, unless the server sends it on (on_produce)
  } else {
    requests_.erase(it);
  }
}

void HandoffCheck::ended(const ConnectionEnd& end) {
  if (end.node < is_device_.size() && is_device_[end.node]) {
    // The device has left this connection; the server may not know yet (ConnIds name a
    // connection at both ends). Its close of it, when it comes, owes the device nothing.
    if (left_by_device_.insert(end.conn).second) left_order_.push_back(end.conn);
    if (left_order_.size() > kLeftConnsMax) {
      left_by_device_.erase(left_order_.front());
      left_order_.pop_front();
    }
    return;
  }
  if (end.node >= is_chat_server_.size() || !is_chat_server_[end.node]) return;
  const NodeId server = end.node;
  const auto peer = upstream_peer_.find({server, end.conn});
  if (peer != upstream_peer_.end()) {
    // The server's connection to a queue node ended: it gives up every request sent there.
    const NodeId queue = peer->second;
    upstream_peer_.erase(peer);
    for (auto it = requests_.lower_bound({server, 0}); it != requests_.end() && it->first.first == server;) {
      it = it->second.queue == queue ? requests_.erase(it) : std::next(it);
    }
    return;
  }
  // A device's connection: judged when the server closes it, unless the device had left it,
  // and forgotten either way.
  const bool device_left = left_by_device_.erase(end.conn) > 0;
  if (end.closed_by_node) closes_judged_++;
  for (auto it = requests_.lower_bound({server, 0}); it != requests_.end() && it->first.first == server;) {
    const Request& request = it->second;
    if (request.device_conn != end.conn) {
      ++it;
      continue;
    }
    const int64_t age_ns = end.local_ns - request.first_sent_local_ns;
    if (end.closed_by_node && !device_left && !request.redirected && age_ns <= request_timeout_ns_) {
      violations_++;
      if (examples_.size() < kExamplesMax) {
        examples_.push_back(name_of(server) + " closed a device connection at " + ms_text(end.time_ns) +
                            " while the queue's answer to message " + request.msg_id + " (produced " +
                            ms_text(age_ns) + " before, to " + name_of(request.queue) + ") was still owed");
      }
    }
    it = requests_.erase(it);
  }
}

std::string HandoffCheck::detail() const {
  if (violations_ == 0) {
    return std::to_string(requests_followed_) + " device requests followed through the chat servers (" +
           std::to_string(requests_not_followed_) + " over the bound, not followed); " +
           std::to_string(closes_judged_) + " device connections the servers closed, none with an answer owed";
  }
  std::string out = std::to_string(violations_) + " answers owed when a server closed the device's connection";
  for (const std::string& e : examples_) out += "; " + e;
  return out;
}

}  // namespace msgsim::sim
