#include "impl/chat/chat_server.h"

#include <algorithm>

namespace msgsim::chat {

namespace {
constexpr uint64_t kRefreshTimer = 1;
constexpr uint64_t kSweepTimer = 2;
constexpr int64_t kSweepIntervalNs = 1 * kNanosPerSecond;

// The stand-in for real authentication: a device proves itself with this token.
std::string expected_token(std::string_view device) { return "token:" + std::string(device); }
}  // namespace

void ChatServerNode::on_start(Context& ctx) {
  ctx.set_timer(config_.tuning.registry_ttl_ns / 3, kRefreshTimer);
  ctx.set_timer(kSweepIntervalNs, kSweepTimer);
  invariants();
}

void ChatServerNode::on_accept(Context& ctx, ConnId conn, NodeId) {
  // Devices, storage nodes and the load balancer all connect in; a device becomes a session
  // with its Hello, the others are known by what they send.
  (void)ctx;
  (void)conn;
}

ConnId ChatServerNode::upstream(Context& ctx, NodeId node) {
  auto it = upstreams_.find(node);
  if (it != upstreams_.end()) return it->second;
  const ConnId conn = ctx.connect(node);
  upstreams_[node] = conn;
  return conn;
}

void ChatServerNode::register_device(Context& ctx, const Session& s) {
  ctx.send(upstream(ctx, config_.topology.registry_of(s.user)),
           encode_as(Register{s.user, s.device, ctx.self(), config_.tuning.registry_ttl_ns}));
}

void ChatServerNode::on_frame(Context& ctx, ConnId conn, ByteView bytes) {
  Result<Frame> decoded = decode(bytes);
  if (!decoded.ok()) {
    ctx.log(LogLevel::warn, "chat: closing a connection that sent a bad frame: " + decoded.error().message);
    on_disconnect(ctx, conn, DisconnectReason::closed_by_peer);
    ctx.close(conn);
    return;
  }
  Frame& frame = *decoded;
  ctx.charge_cpu(config_.cpu_costs.frame_cost_ns(CostRole::chat, frame));
  auto session = sessions_.find(conn);
  if (session != sessions_.end()) {
    on_device_frame(ctx, conn, session->second, frame);
  } else if (std::holds_alternative<Hello>(frame)) {
    const auto& hello = std::get<Hello>(frame);
    const bool names_match = hello.device.size() > hello.user.size() && hello.device.compare(0, hello.user.size(), hello.user) == 0 &&
                             hello.device[hello.user.size()] == '.';
    if (draining_ || !names_match || hello.token != expected_token(hello.device)) {
      ctx.log(LogLevel::warn, "chat: refusing device " + hello.device + (draining_ ? " (draining)" : " (bad credentials)"));
      if (draining_) ctx.send(conn, encode_as(Drain{}));
      ctx.close(conn);
      return;
    }
    if (sessions_.size() >= config_.tuning.server_pending_max) {
      ctx.log(LogLevel::warn, "chat: at the session limit; refusing " + hello.device);
      ctx.close(conn);
      return;
    }
    // A device that reconnects while its old connection lingers replaces it.
    auto old = by_device_.find(hello.device);
    if (old != by_device_.end()) {
      const ConnId stale = old->second;
      sessions_.erase(stale);
      by_device_.erase(old);
      ctx.close(stale);
    }
    Session& s = sessions_[conn];
    s.user = hello.user;
    s.device = hello.device;
    s.welcomed = true;
    by_device_[s.device] = conn;
    register_device(ctx, s);
    ctx.send(conn, encode_as(Welcome{ctx.self()}));
  } else {
    on_server_frame(ctx, conn, frame);
  }
  invariants();
}

void ChatServerNode::on_device_frame(Context& ctx, ConnId conn, Session& s, Frame& frame) {
  if (draining_ && (std::holds_alternative<Send>(frame) || std::holds_alternative<GroupOp>(frame) ||
                    std::holds_alternative<SyncRequest>(frame))) {
    // The device was told to go (Drain) and sent this before it heard: it is still unanswered
    // when the connection closes, so the device sends it again to its next server.
    return;
  }
  if (auto* send = std::get_if<Send>(&frame)) {
    if (produces_.size() >= config_.tuning.server_pending_max) return;  // the device retries
    const uint64_t id = next_request_id_++;
    Produce produce;
    produce.request_id = id;
    produce.entry.kind = EntryKind::message;
    produce.entry.conv = send->conv;
    produce.entry.msg_id = send->msg_id;
    produce.entry.from_user = s.user;
    produce.entry.from_device = s.device;
    produce.entry.to = send->to;
    produce.entry.body = std::move(send->body);
    produce.entry.expires_at_ns = send->expires_at_ns;
    produce.entry.view_once = send->view_once;
    produce.members_digest = send->members_digest;
    const NodeId queue = queue_leader(config_.topology.partition_of(send->conv));
    Bytes frame = encode_as(produce);
    produces_[id] = PendingProduce{conn, send->msg_id, send->conv, queue, ctx.now_ns(), frame};
    ctx.send(upstream(ctx, queue), std::move(frame));
  } else if (auto* op = std::get_if<GroupOp>(&frame)) {
    if (op->kind == EntryKind::message) {
      ctx.log(LogLevel::warn, "chat: a GroupOp that is no join or leave from " + s.device + "; closing");
      on_disconnect(ctx, conn, DisconnectReason::closed_by_peer);
      ctx.close(conn);
      return;
    }
    if (produces_.size() >= config_.tuning.server_pending_max) return;
    const uint64_t id = next_request_id_++;
    Produce produce;
    produce.request_id = id;
    produce.entry.kind = op->kind;
    produce.entry.conv = op->conv;
    produce.entry.msg_id = op->op_id;
    produce.entry.from_user = s.user;
    produce.entry.from_device = s.device;
    produce.entry.member = op->member;
    if (op->kind == EntryKind::join) produce.entry.body = std::move(op->members);  // the member list (E2EE)
    const NodeId queue = queue_leader(config_.topology.partition_of(op->conv));
    Bytes frame = encode_as(produce);
    produces_[id] = PendingProduce{conn, op->op_id, op->conv, queue, ctx.now_ns(), frame};
    ctx.send(upstream(ctx, queue), std::move(frame));
  } else if (auto* sync = std::get_if<SyncRequest>(&frame)) {
    ctx.log(LogLevel::debug, "chat: sync request from " + s.device);
    if (syncs_.size() >= config_.tuning.server_pending_max) return;
    const uint64_t id = next_request_id_++;
    const auto& storages = config_.topology.storages;
    syncs_[id] = PendingSync{conn, static_cast<uint32_t>(storages.size()), ctx.now_ns()};
    const Bytes query = encode_as(SyncQuery{id, s.user, std::move(sync->cursors)});
    for (NodeId storage : storages) ctx.send(upstream(ctx, storage), query);
  } else if (auto* receipt = std::get_if<ReceiptSend>(&frame)) {
    const NodeId storage = config_.topology.storage_of(config_.topology.partition_of(receipt->conv));
    ctx.send(upstream(ctx, storage), encode_as(ReceiptUpdate{receipt->conv, s.user, receipt->kind, receipt->up_to}));
  } else if (std::holds_alternative<Heartbeat>(frame)) {
    ctx.send(conn, encode_as(HeartbeatAck{}));
  } else {
    ctx.log(LogLevel::warn, std::string("chat: unexpected ") + frame_name(frame) + " from device " + s.device + "; closing");
    on_disconnect(ctx, conn, DisconnectReason::closed_by_peer);
    ctx.close(conn);
  }
}

NodeId ChatServerNode::queue_leader(uint32_t partition) const {
  const auto it = queue_leaders_.find(partition);
  return it == queue_leaders_.end() ? config_.topology.queue_of(partition) : it->second;
}

void ChatServerNode::on_not_leader(Context& ctx, const NotLeader& redirect) {
  const ChatTopology& t = config_.topology;
  if (redirect.partition >= t.partitions) return;
  auto it = produces_.find(redirect.request_id);
  const NodeId asked = it == produces_.end() ? queue_leader(redirect.partition) : it->second.queue;
  // The leader it names, or (none known yet) the replica after the one asked.
  NodeId next = redirect.leader;
  if (!t.is_replica(redirect.partition, next)) {
    uint32_t k = 0;
    while (k < t.replicas() && t.replica_of(redirect.partition, k) != asked) ++k;
    next = t.replica_of(redirect.partition, (k + 1) % t.replicas());
  }
  queue_leaders_[redirect.partition] = next;
  if (it == produces_.end()) return;
  if (next == asked || it->second.redirects >= kRedirectsMax) {
    produces_.erase(it);  // the device retries
    return;
  }
  it->second.redirects++;
  it->second.queue = next;
  ctx.send(upstream(ctx, next), it->second.produce);
}

void ChatServerNode::on_server_frame(Context& ctx, ConnId conn, Frame& frame) {
  if (const auto* redirect = std::get_if<NotLeader>(&frame)) {
    on_not_leader(ctx, *redirect);
    return;
  }
  if (const auto* produced = std::get_if<Produced>(&frame)) {
    auto it = produces_.find(produced->request_id);
    if (it == produces_.end()) return;  // timed out meanwhile; the device retries
    const ConnId device = it->second.device_conn;
    if (sessions_.count(device)) ctx.send(device, encode_as(SendAck{produced->msg_id, produced->conv, produced->seq}));
    produces_.erase(it);
    close_if_handed_off(ctx, device);
  } else if (const auto* rejected = std::get_if<ProduceRejected>(&frame)) {
    auto it = produces_.find(rejected->request_id);
    if (it == produces_.end()) return;
    const ConnId device = it->second.device_conn;
    if (sessions_.count(device)) ctx.send(device, encode_as(SendReject{rejected->msg_id, rejected->conv, rejected->reason}));
    produces_.erase(it);
    close_if_handed_off(ctx, device);
  } else if (auto* stale = std::get_if<ProduceStale>(&frame)) {
    // Sealed for an old member list: the device seals again for this one and resends.
    auto it = produces_.find(stale->request_id);
    if (it == produces_.end()) return;
    const ConnId device = it->second.device_conn;
    if (sessions_.count(device)) {
      ctx.send(device, encode_as(SendStale{std::move(stale->msg_id), std::move(stale->conv), std::move(stale->members)}));
    }
    produces_.erase(it);
    close_if_handed_off(ctx, device);
  } else if (auto* result = std::get_if<SyncResult>(&frame)) {
    auto it = syncs_.find(result->request_id);
    if (it == syncs_.end()) return;
    const ConnId device = it->second.device_conn;
    if (sessions_.count(device)) {
      for (Entry& entry : result->entries) {
        Deliver deliver;
        deliver.entry = std::move(entry);
        ctx.send(device, encode_as(deliver));
      }
    }
    if (result->done) {
      MSGSIM_ASSERT_GT(it->second.storages_left, 0u);
      if (--it->second.storages_left == 0) finish_sync(ctx, result->request_id);
    }
  } else if (auto* route = std::get_if<Route>(&frame)) {
    Bytes out = route->is_receipt ? encode_as(route->receipt) : encode_as(Deliver{std::move(route->entry)});
    for (const DeviceAddress& target : route->targets) {
      auto it = by_device_.find(target.device);
      if (it != by_device_.end()) ctx.send(it->second, out);
      // Not here (moved or gone): the device catches up by sync when it comes back.
    }
  } else if (std::holds_alternative<HealthCheck>(frame)) {
    ctx.send(conn, encode_as(Health{draining_ ? HealthStatus::draining : HealthStatus::ok,
                                    static_cast<uint32_t>(by_device_.size())}));
  } else {
    ctx.log(LogLevel::warn, std::string("chat: unexpected ") + frame_name(frame) + " from a server; closing");
    ctx.close(conn);
  }
}

void ChatServerNode::finish_sync(Context& ctx, uint64_t request_id) {
  auto it = syncs_.find(request_id);
  MSGSIM_ASSERT(it != syncs_.end());
  const ConnId device = it->second.device_conn;
  if (sessions_.count(device)) ctx.send(device, encode_as(SyncDone{}));
  syncs_.erase(it);
  close_if_handed_off(ctx, device);
}

void ChatServerNode::close_if_handed_off(Context& ctx, ConnId conn) {
  if (!draining_ || sessions_.count(conn) == 0) return;
  for (const auto& [id, produce] : produces_)
    if (produce.device_conn == conn) return;  // an answer from the queue is still owed
  for (const auto& [id, sync] : syncs_)
    if (sync.device_conn == conn) return;  // a sync is still streaming
  // Everything owed went out before this close, and the device hears closed_by_peer only after
  // it: it moves on with nothing of this server's left in flight but what it sent after Drain.
  on_disconnect(ctx, conn, DisconnectReason::closed_by_peer);
  ctx.close(conn);
}

void ChatServerNode::on_disconnect(Context& ctx, ConnId conn, DisconnectReason) {
  auto session = sessions_.find(conn);
  if (session != sessions_.end()) {
    const Session& s = session->second;
    auto dev = by_device_.find(s.device);
    if (dev != by_device_.end() && dev->second == conn) {
      by_device_.erase(dev);
      ctx.send(upstream(ctx, config_.topology.registry_of(s.user)), encode_as(Unregister{s.user, s.device, ctx.self()}));
    }
    sessions_.erase(session);
    if (draining_ && sessions_.empty()) ctx.exit();
    return;
  }
  // An upstream connection broke: forget it (the next use reconnects). Requests in flight on it
  // are lost; devices retry their sends, and a sync that cannot finish times out.
  for (auto it = upstreams_.begin(); it != upstreams_.end(); ++it) {
    if (it->second != conn) continue;
    const NodeId node = it->first;
    upstreams_.erase(it);
    // A queue node gone: its partitions' next replica is the best guess until a redirect says.
    const ChatTopology& t = config_.topology;
    for (uint32_t p = 0; t.replicas() > 1 && p < t.partitions; ++p) {
      if (queue_leader(p) != node) continue;
      uint32_t k = 0;
      while (k < t.replicas() && t.replica_of(p, k) != node) ++k;
      queue_leaders_[p] = t.replica_of(p, (k + 1) % t.replicas());
    }
    for (auto p = produces_.begin(); p != produces_.end();) {
      p = p->second.queue == node ? produces_.erase(p) : std::next(p);
    }
    break;
  }
  invariants();
}

void ChatServerNode::expire_pending(Context& ctx) {
  const int64_t now = ctx.now_ns();
  const int64_t timeout = config_.tuning.server_request_timeout_ns;
  for (auto it = produces_.begin(); it != produces_.end();) {
    it = now - it->second.sent_at_ns > timeout ? produces_.erase(it) : std::next(it);
  }
  std::vector<uint64_t> overdue;
  for (const auto& [id, sync] : syncs_)
    if (now - sync.sent_at_ns > timeout) overdue.push_back(id);
  // A storage node that does not answer must not hold the device forever: it will see the
  // missing entries as gaps and ask again.
  for (uint64_t id : overdue) finish_sync(ctx, id);
}

void ChatServerNode::on_timer(Context& ctx, uint64_t tag) {
  if (tag == kRefreshTimer) {
    // Presence is soft state with a TTL: refresh every device while it stays.
    for (ConnId conn : conns_in_order()) {
      const Session& s = sessions_.at(conn);
      if (s.welcomed) register_device(ctx, s);
    }
    ctx.set_timer(config_.tuning.registry_ttl_ns / 3, kRefreshTimer);
  } else {
    MSGSIM_ASSERT_EQ(tag, kSweepTimer);
    expire_pending(ctx);
    if (draining_) {
      // Requests that timed out or died with an upstream connection are owed no more.
      for (ConnId conn : conns_in_order()) close_if_handed_off(ctx, conn);
    }
    ctx.set_timer(kSweepIntervalNs, kSweepTimer);
  }
  invariants();
}

void ChatServerNode::on_drain(Context& ctx, int64_t) {
  // Graceful handoff: every device hears Drain (reconnect elsewhere; send nothing more here),
  // and its connection stays until what this server owes it has gone out: the queue's answers
  // to its sends in flight (acks, so it need not send them again) and the sync it asked for.
  // Then the connection closes, and once the last one has, the server exits. What is still
  // owed at the drain deadline the device re-drives: it resends every unanswered send to its
  // next server (the queue answers a retry with the first answer) and syncs from its cursor.
  draining_ = true;
  const Bytes drain = encode_as(Drain{});
  const std::vector<ConnId> conns = conns_in_order();
  const bool close_at_once = config_.bugs.on(Bug::drain_drops_buffered);
  for (ConnId conn : conns) {
    ctx.send(conn, drain);
    if (close_at_once) {
      // The planted bug (a shutdown handler that tells its clients to go and closes their
      // sockets straight away): the answers still owed to the device come after its session
      // is gone and are dropped; the device sends those messages again to its next server.
      on_disconnect(ctx, conn, DisconnectReason::closed_by_peer);
      ctx.close(conn);
    } else {
      close_if_handed_off(ctx, conn);
    }
  }
  if (sessions_.empty()) ctx.exit();
}

std::string ChatServerNode::describe() const {
  return "chat devices=" + std::to_string(by_device_.size()) + " produces=" + std::to_string(produces_.size()) +
         " syncs=" + std::to_string(syncs_.size()) + (draining_ ? " draining" : "");
}

std::vector<ConnId> ChatServerNode::conns_in_order() const {
  std::vector<ConnId> conns;
  conns.reserve(sessions_.size());
  for (const auto& [conn, s] : sessions_) conns.push_back(conn);
  std::sort(conns.begin(), conns.end());
  return conns;
}

void ChatServerNode::invariants() const {
  MSGSIM_ASSERT_LE(by_device_.size(), sessions_.size());
  MSGSIM_ASSERT_LE(produces_.size(), config_.tuning.server_pending_max);
  MSGSIM_ASSERT_LE(syncs_.size(), config_.tuning.server_pending_max);
}

}  // namespace msgsim::chat
