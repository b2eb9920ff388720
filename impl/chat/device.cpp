#include "impl/chat/device.h"

#include <sodium.h>

#include <algorithm>

#include "oracle/event.h"

namespace msgsim::chat {

namespace {

constexpr int64_t kRetryIntervalNs = 1 * kNanosPerSecond;
constexpr size_t kOutboxPerConversationMax = 64;

history::Event event(history::EventType type, const std::string& user, const std::string& device) {
  history::Event e;
  e.type = type;
  e.user = user;
  e.device = device;
  return e;
}

}  // namespace

std::string body_digest_hex(ByteView bytes) {
  uint8_t digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, bytes.data(), bytes.size());
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(2 * sizeof digest, '0');
  for (size_t i = 0; i < sizeof digest; ++i) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 15];
  }
  return out;
}

DeviceNode::DeviceNode(const ChatConfig& config, uint32_t user_index, uint32_t device_number)
    : config_(config), plan_(config.users.at(user_index)), device_number_(device_number) {
  user_ = plan_.user;
  device_ = user_ + ".d" + std::to_string(device_number);
  for (const std::string& contact : plan_.contacts) {
    Conversation& c = convs_[direct_conversation(user_, contact)];
    c.peer = contact;
  }
  for (const GroupPlan& g : config_.groups) {
    if (std::find(g.members.begin(), g.members.end(), user_) == g.members.end() && g.admin != user_) continue;
    convs_[g.conv].group = true;
  }
}

void DeviceNode::on_start(Context& ctx) {
  // The admin's first device creates its groups and makes their planned membership changes.
  if (device_number_ == 1) {
    for (size_t i = 0; i < config_.groups.size(); ++i) {
      const GroupPlan& g = config_.groups[i];
      if (g.admin != user_) continue;
      enqueue_group_op(ctx, g.conv, EntryKind::join, user_);
      for (const std::string& member : g.members)
        if (member != user_) enqueue_group_op(ctx, g.conv, EntryKind::join, member);
      for (size_t k = 0; k < g.changes.size(); ++k) {
        ctx.set_timer(std::max<int64_t>(0, g.changes[k].at_ns - ctx.now_ns()), kGroupChangeBase + i * 64 + k);
      }
    }
  }
  start_routing(ctx);
  ctx.set_timer(static_cast<int64_t>(ctx.rng().exponential(static_cast<double>(config_.workload.send_interval_mean_ns))),
                kSendTimer);
  ctx.set_timer(config_.tuning.heartbeat_interval_ns, kHeartbeatTimer);
  ctx.set_timer(kRetryIntervalNs, kRetryTimer);
  ctx.set_timer(ctx.rng().range(config_.tuning.resync_interval_ns / 2, config_.tuning.resync_interval_ns), kResyncTimer);
  invariants();
}

void DeviceNode::on_accept(Context& ctx, ConnId conn, NodeId) {
  ctx.log(LogLevel::warn, "a device accepts no connections");
  ctx.close(conn);
}

// ---------------------------------------------------------------------------------------------
// Connection lifecycle: route, connect, welcome, sync, online; on any loss, back off and retry.

void DeviceNode::start_routing(Context& ctx) {
  MSGSIM_ASSERT(!config_.topology.load_balancers.empty());
  phase_ = Phase::routing;
  const auto& lbs = config_.topology.load_balancers;
  const NodeId lb = lbs[hash_string(device_) % lbs.size()];
  lb_conn_ = ctx.connect(lb);
  ctx.send(lb_conn_, encode_as(RouteRequest{user_}));
}

void DeviceNode::reconnect_later(Context& ctx, bool immediately) {
  phase_ = Phase::backoff;
  int64_t delay;
  if (immediately) {
    delay = ctx.rng().range(0, 100 * kNanosPerMilli);
  } else {
    // 1, 2, 4, 8 s ... capped, each with jitter over its upper half, so a crowd of devices that
    // lost the same server spreads its reconnects out.
    const uint32_t doublings = std::min<uint32_t>(backoff_attempt_, 30);
    const int64_t ceiling = std::min(config_.tuning.backoff_max_ns, config_.tuning.backoff_initial_ns << doublings);
    delay = ctx.rng().range(ceiling / 2, ceiling);
    backoff_attempt_++;
  }
  ctx.set_timer(delay, kReconnectTimer);
}

void DeviceNode::go_offline(Context& ctx) {
  if (phase_ == Phase::syncing || phase_ == Phase::online) ctx.emit(event(history::EventType::offline, user_, device_));
  conn_ = kNoConn;
  server_ = kNoNode;
  phase_ = Phase::backoff;
  syncing_ = false;
  sync_owed_ = false;
  for (auto& [conv, c] : convs_)
    if (!c.outbox.empty()) c.outbox.front().sent_at_ns = -1;  // resend on the next connection
}

void DeviceNode::on_welcome(Context& ctx) {
  phase_ = Phase::syncing;
  last_online_ns_ = ctx.now_ns();
  backoff_attempt_ = 0;
  ctx.emit(event(history::EventType::online, user_, device_));
  request_sync(ctx, /*owed=*/true);
}

void DeviceNode::request_sync(Context& ctx, bool owed) {
  SyncRequest request;
  for (const auto& [conv, c] : convs_) {
    if (request.cursors.size() >= kCursorsMax) break;
    request.cursors.push_back(Cursor{conv, c.cursor});
  }
  ctx.send(conn_, encode_as(request));
  ctx.log(LogLevel::debug, device_ + ": sync requested, " + std::to_string(request.cursors.size()) + " cursors");
  syncing_ = true;
  sync_owed_ = owed;
  for (auto& [conv, c] : convs_)
    if (c.gap_since_ns >= 0) c.gap_since_ns = ctx.now_ns();
}

void DeviceNode::on_frame(Context& ctx, ConnId conn, ByteView bytes) {
  Result<Frame> decoded = decode(bytes);
  if (!decoded.ok()) {
    ctx.log(LogLevel::warn, device_ + ": ignoring a bad frame: " + decoded.error().message);
    return;
  }
  Frame& frame = *decoded;
  if (conn == lb_conn_) {
    ctx.close(lb_conn_);
    lb_conn_ = kNoConn;
    const auto* reply = std::get_if<RouteReply>(&frame);
    if (reply == nullptr || !reply->ok) {
      reconnect_later(ctx, false);
    } else {
      phase_ = Phase::connecting;
      server_ = reply->server;
      conn_ = ctx.connect(server_);
      ctx.send(conn_, encode_as(Hello{user_, device_, "token:" + device_}));
    }
    invariants();
    return;
  }
  if (conn != conn_) return;  // a connection this device already gave up on
  last_heard_ns_ = ctx.now_ns();
  if (std::holds_alternative<Welcome>(frame)) {
    on_welcome(ctx);
  } else if (auto* deliver = std::get_if<Deliver>(&frame)) {
    on_deliver(ctx, std::move(deliver->entry));
  } else if (std::holds_alternative<SyncDone>(frame)) {
    ctx.log(LogLevel::debug, device_ + ": sync done");
    syncing_ = false;
    sync_owed_ = false;
    if (phase_ == Phase::syncing) phase_ = Phase::online;
    for (auto& [conv, c] : convs_) send_next(ctx, conv, c);
    flush_receipts(ctx);
  } else if (const auto* ack = std::get_if<SendAck>(&frame)) {
    on_ack(ctx, *ack);
  } else if (const auto* reject = std::get_if<SendReject>(&frame)) {
    on_reject(ctx, *reject);
  } else if (const auto* notice = std::get_if<ReceiptNotice>(&frame)) {
    on_receipt(ctx, *notice);
  } else if (std::holds_alternative<Drain>(frame)) {
    // The server is going away: reconnect elsewhere through the load balancer, at once.
    ctx.close(conn_);
    go_offline(ctx);
    reconnect_later(ctx, true);
  } else if (!std::holds_alternative<HeartbeatAck>(frame)) {
    ctx.log(LogLevel::warn, device_ + std::string(": unexpected ") + frame_name(frame));
  }
  invariants();
}

void DeviceNode::on_disconnect(Context& ctx, ConnId conn, DisconnectReason) {
  if (conn == lb_conn_) {
    lb_conn_ = kNoConn;
    if (phase_ == Phase::routing) reconnect_later(ctx, false);
  } else if (conn == conn_) {
    go_offline(ctx);
    reconnect_later(ctx, false);
  }
  invariants();
}

// ---------------------------------------------------------------------------------------------
// Sending

std::string DeviceNode::new_uuid(Context& ctx) {
  uint8_t b[16];
  ctx.rng().fill(b);
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += hex[b[i] >> 4];
    out += hex[b[i] & 15];
  }
  return out;
}

DeviceNode::Conversation& DeviceNode::conversation(const std::string& conv) {
  auto [it, inserted] = convs_.try_emplace(conv);
  if (inserted) it->second.group = conv.rfind("g:", 0) == 0;
  return it->second;
}

void DeviceNode::create_message(Context& ctx) {
  std::vector<const std::string*> groups, directs;
  for (const auto& [conv, c] : convs_) (c.group ? groups : directs).push_back(&conv);
  std::erase_if(groups, [this](const std::string* conv) { return !convs_.at(*conv).member; });
  const std::string* chosen = nullptr;
  if (!groups.empty() && (directs.empty() || ctx.rng().chance(config_.workload.group_share))) {
    chosen = groups[ctx.rng().below(groups.size())];
  } else if (!directs.empty()) {
    chosen = directs[ctx.rng().below(directs.size())];
  }
  if (chosen == nullptr) return;
  const std::string& conv = *chosen;
  Conversation& c = convs_.at(conv);
  if (c.outbox.size() >= kOutboxPerConversationMax) return;  // the user waits for the network

  Outgoing out;
  out.id = new_uuid(ctx);
  const auto size = static_cast<size_t>(ctx.rng().range(config_.workload.body_bytes_min, config_.workload.body_bytes_max));
  out.body.resize(size);
  ctx.rng().fill(out.body);
  if (ctx.rng().chance(config_.workload.disappearing_share)) {
    if (ctx.rng().chance(0.5)) out.view_once = true;
    else out.expires_at_ns = ctx.now_ns() + config_.workload.disappearing_ttl_ns;
  }
  history::Event e = event(history::EventType::send, user_, device_);
  e.conv = conv;
  e.msg = out.id;
  e.body = body_digest_hex(out.body);
  if (!c.group) e.to = c.peer;
  if (out.expires_at_ns != 0) e.expires_at = out.expires_at_ns;
  e.view_once = out.view_once;
  ctx.emit(e);
  c.outbox.push_back(std::move(out));
  send_next(ctx, conv, c);
}

void DeviceNode::enqueue_group_op(Context& ctx, const std::string& conv, EntryKind kind, const std::string& member) {
  Conversation& c = conversation(conv);
  if (c.outbox.size() >= kOutboxPerConversationMax) return;
  Outgoing op;
  op.group_op = true;
  op.id = new_uuid(ctx);
  op.op_kind = kind;
  op.member = member;
  c.outbox.push_back(std::move(op));
  send_next(ctx, conv, c);
}

void DeviceNode::send_next(Context& ctx, const std::string& conv, Conversation& c) {
  if (phase_ != Phase::online || c.outbox.empty()) return;
  Outgoing& out = c.outbox.front();
  if (out.sent_at_ns >= 0) return;  // in flight: one unanswered send per conversation
  out.sent_at_ns = ctx.now_ns();
  if (out.group_op) {
    ctx.send(conn_, encode_as(GroupOp{out.id, conv, out.op_kind, out.member}));
  } else {
    ctx.send(conn_, encode_as(Send{out.id, conv, c.group ? std::string() : c.peer, out.body, out.expires_at_ns, out.view_once}));
  }
}

void DeviceNode::on_ack(Context& ctx, const SendAck& ack) {
  auto it = convs_.find(ack.conv);
  if (it == convs_.end() || it->second.outbox.empty() || it->second.outbox.front().id != ack.msg_id) return;  // a repeat
  Conversation& c = it->second;
  if (!c.outbox.front().group_op) {
    history::Event e = event(history::EventType::ack, user_, device_);
    e.conv = ack.conv;
    e.msg = ack.msg_id;
    e.seq = static_cast<int64_t>(ack.seq);
    ctx.emit(e);
  }
  c.outbox.erase(c.outbox.begin());
  send_next(ctx, ack.conv, c);
}

void DeviceNode::on_reject(Context& ctx, const SendReject& reject) {
  auto it = convs_.find(reject.conv);
  if (it == convs_.end() || it->second.outbox.empty() || it->second.outbox.front().id != reject.msg_id) return;
  Conversation& c = it->second;
  if (!c.outbox.front().group_op) {
    history::Event e = event(history::EventType::reject, user_, device_);
    e.conv = reject.conv;
    e.msg = reject.msg_id;
    e.reason = reject.reason;
    ctx.emit(e);
  } else {
    ctx.log(LogLevel::info, device_ + ": membership change refused: " + reject.reason);
  }
  c.outbox.erase(c.outbox.begin());
  send_next(ctx, reject.conv, c);
}

// ---------------------------------------------------------------------------------------------
// Receiving: the reorder buffer

void DeviceNode::on_deliver(Context& ctx, Entry entry) {
  const std::string conv = entry.conv;
  Conversation& c = conversation(conv);
  if (config_.bugs.on(Bug::no_reorder_buffer)) {
    if (entry.seq > c.cursor) {
      process(ctx, conv, c, entry);
      c.cursor = entry.seq;
    }
    return;
  }
  if (entry.seq <= c.cursor) {
    // Already processed: a retry or a sync racing a live delivery.
    if (config_.bugs.on(Bug::client_no_dedup) && entry.kind == EntryKind::message && entry.from_device != device_) {
      process(ctx, conv, c, entry);
    }
    return;
  }
  if (c.waiting.size() >= config_.tuning.reorder_buffer_max && !c.waiting.count(entry.seq)) {
    return;  // full: this entry comes again with the next sync
  }
  c.waiting.insert_or_assign(entry.seq, std::move(entry));
  drain_ready(ctx, conv, c);
}

void DeviceNode::drain_ready(Context& ctx, const std::string& conv, Conversation& c) {
  bool progressed = false;
  while (!c.waiting.empty()) {
    auto it = c.waiting.begin();
    if (it->first <= c.cursor) {
      c.waiting.erase(it);
      continue;
    }
    const Entry& e = it->second;
    const bool own_join = e.kind == EntryKind::join && e.member == user_ && !c.member;
    if (it->first != c.cursor + 1 && !own_join) break;
    c.cursor = it->first - 1;  // for an own join, the entries before it were not for this user
    process(ctx, conv, c, e);
    c.cursor = it->first;
    c.waiting.erase(it);
    progressed = true;
  }
  if (c.waiting.empty()) c.gap_since_ns = -1;
  else if (progressed || c.gap_since_ns < 0) c.gap_since_ns = ctx.now_ns();
}

void DeviceNode::process(Context& ctx, const std::string& conv, Conversation& c, const Entry& entry) {
  switch (entry.kind) {
    case EntryKind::message: {
      if (entry.from_device == device_) break;  // this device's own message, echoed
      const int64_t now = ctx.now_ns();
      if (entry.expires_at_ns != 0 && entry.expires_at_ns <= now && !config_.bugs.on(Bug::expiry_ignored)) {
        history::Event e = event(history::EventType::expire, user_, device_);
        e.msg = entry.msg_id;
        ctx.emit(e);  // arrived already expired: never shown
        break;
      }
      history::Event e = event(history::EventType::deliver, user_, device_);
      e.conv = conv;
      e.msg = entry.msg_id;
      e.seq = static_cast<int64_t>(entry.seq);
      e.from = entry.from_user;
      e.body = body_digest_hex(entry.body);
      ctx.emit(e);
      if (!config_.bugs.on(Bug::expiry_ignored)) {
        if (entry.view_once) {
          history::Event x = event(history::EventType::expire, user_, device_);
          x.msg = entry.msg_id;
          ctx.emit(x);
        } else if (entry.expires_at_ns != 0) {
          const uint64_t tag = next_expiry_tag_++;
          expiries_[tag] = {conv, entry.msg_id};
          ctx.set_timer(entry.expires_at_ns - now, tag);
        }
      }
      if (ctx.rng().chance(config_.workload.read_share)) c.read_upto = std::max(c.read_upto, entry.seq);
      break;
    }
    case EntryKind::join:
    case EntryKind::leave: {
      const bool join = entry.kind == EntryKind::join;
      if (entry.member == user_) c.member = join;
      history::Event e = event(join ? history::EventType::join : history::EventType::leave, entry.member, device_);
      e.device.clear();
      e.conv = conv;
      e.seq = static_cast<int64_t>(entry.seq);
      ctx.emit(e);
      break;
    }
  }
  if (!receipt_timer_armed_) {
    receipt_timer_armed_ = true;
    ctx.set_timer(config_.tuning.receipt_batch_ns, kReceiptTimer);
  }
}

void DeviceNode::on_receipt(Context& ctx, const ReceiptNotice& notice) {
  if (notice.reader == user_) return;
  uint64_t& known = receipts_known_[{notice.conv, notice.reader, notice.kind}];
  if (notice.up_to <= known) return;  // nothing new: receipts only rise
  known = notice.up_to;
  history::Event e = event(history::EventType::receipt, user_, device_);
  e.user.clear();
  e.conv = notice.conv;
  e.reader = notice.reader;
  e.kind = notice.kind == ReceiptKind::read ? history::ReceiptKind::read : history::ReceiptKind::delivered;
  e.up_to = static_cast<int64_t>(notice.up_to);
  ctx.emit(e);
}

void DeviceNode::flush_receipts(Context& ctx) {
  if (phase_ != Phase::online) return;  // sent after the next sync
  for (auto& [conv, c] : convs_) {
    if (c.cursor > c.delivered_sent) {
      ctx.send(conn_, encode_as(ReceiptSend{conv, ReceiptKind::delivered, c.cursor}));
      c.delivered_sent = c.cursor;
    }
    if (c.read_upto > c.read_sent) {
      history::Event e = event(history::EventType::read, user_, device_);
      e.conv = conv;
      e.up_to = static_cast<int64_t>(c.read_upto);
      ctx.emit(e);
      uint64_t up_to = c.read_upto;
      if (config_.bugs.on(Bug::read_before_display) && !c.waiting.empty()) up_to = c.waiting.rbegin()->first;
      ctx.send(conn_, encode_as(ReceiptSend{conv, ReceiptKind::read, up_to}));
      c.read_sent = c.read_upto;
    }
  }
}

void DeviceNode::check_gaps(Context& ctx) {
  const int64_t now = ctx.now_ns();
  bool stale_gap = false;
  for (auto& [conv, c] : convs_) {
    if (c.gap_since_ns < 0 || now - c.gap_since_ns < config_.tuning.gap_timeout_ns) continue;
    if (config_.bugs.on(Bug::gap_skip)) {
      c.cursor = c.waiting.begin()->first - 1;  // give up on what is missing
      drain_ready(ctx, conv, c);
    } else {
      stale_gap = true;
    }
  }
  if (stale_gap && phase_ == Phase::online && !syncing_) request_sync(ctx, /*owed=*/true);
}

// ---------------------------------------------------------------------------------------------
// Timers

void DeviceNode::on_timer(Context& ctx, uint64_t tag) {
  if (tag >= kExpiryBase) {
    auto it = expiries_.find(tag);
    MSGSIM_ASSERT(it != expiries_.end());
    history::Event e = event(history::EventType::expire, user_, device_);
    e.msg = it->second.second;
    ctx.emit(e);
    expiries_.erase(it);
  } else if (tag >= kGroupChangeBase) {
    const uint64_t index = tag - kGroupChangeBase;
    const GroupPlan& g = config_.groups.at(index / 64);
    const GroupPlan::Change& change = g.changes.at(index % 64);
    enqueue_group_op(ctx, g.conv, change.join ? EntryKind::join : EntryKind::leave, change.user);
  } else {
    switch (tag) {
      case kReconnectTimer:
        if (phase_ == Phase::backoff) start_routing(ctx);
        break;
      case kSendTimer:
        if (config_.workload.sending) create_message(ctx);
        ctx.set_timer(std::max<int64_t>(1, static_cast<int64_t>(ctx.rng().exponential(
                                               static_cast<double>(config_.workload.send_interval_mean_ns)))),
                      kSendTimer);
        break;
      case kHeartbeatTimer:
        if (phase_ == Phase::online || phase_ == Phase::syncing) ctx.send(conn_, encode_as(Heartbeat{}));
        ctx.set_timer(config_.tuning.heartbeat_interval_ns, kHeartbeatTimer);
        break;
      case kResyncTimer:
        if (phase_ == Phase::online && !syncing_) request_sync(ctx, /*owed=*/false);
        ctx.set_timer(ctx.rng().range(config_.tuning.resync_interval_ns / 2, config_.tuning.resync_interval_ns),
                      kResyncTimer);
        break;
      case kReceiptTimer:
        receipt_timer_armed_ = false;
        flush_receipts(ctx);
        break;
      case kRetryTimer: {
        const int64_t now = ctx.now_ns();
        if ((phase_ == Phase::online || phase_ == Phase::syncing) &&
            now - last_heard_ns_ > config_.tuning.heartbeat_timeout_ns) {
          ctx.close(conn_);  // the server went quiet: assume it is gone
          go_offline(ctx);
          reconnect_later(ctx, false);
        }
        if (phase_ == Phase::online) {
          for (auto& [conv, c] : convs_) {
            if (!c.outbox.empty() && c.outbox.front().sent_at_ns >= 0 &&
                now - c.outbox.front().sent_at_ns > config_.tuning.send_timeout_ns) {
              c.outbox.front().sent_at_ns = -1;  // no answer: send the same id again
              send_next(ctx, conv, c);
            }
          }
        }
        check_gaps(ctx);
        ctx.set_timer(kRetryIntervalNs, kRetryTimer);
        break;
      }
      default: MSGSIM_UNREACHABLE("unknown device timer");
    }
  }
  invariants();
}

bool DeviceNode::settled() const {
  if (phase_ != Phase::online || sync_owed_) return false;
  for (const auto& [conv, c] : convs_) {
    if (!c.outbox.empty() || !c.waiting.empty() || c.delivered_sent != c.cursor || c.read_sent < c.read_upto) return false;
  }
  return true;
}

std::string DeviceNode::describe() const {
  static constexpr const char* phases[] = {"backoff", "routing", "connecting", "syncing", "online"};
  std::string out = device_ + " " + phases[static_cast<int>(phase_)] +
                    (syncing_ ? (sync_owed_ ? " (owed sync out)" : " (periodic sync out)") : "");
  for (const auto& [conv, c] : convs_) {
    if (c.outbox.empty() && c.waiting.empty() && c.delivered_sent == c.cursor && c.read_sent >= c.read_upto) continue;
    out += " | " + conv + " cursor " + std::to_string(c.cursor) + " delivered-sent " + std::to_string(c.delivered_sent);
    if (!c.outbox.empty()) {
      out += " outbox " + std::to_string(c.outbox.size()) + (c.outbox.front().group_op ? " (group op)" : "") +
             (c.outbox.front().sent_at_ns >= 0 ? " in flight" : "");
    }
    if (!c.waiting.empty()) out += " waiting " + std::to_string(c.waiting.begin()->first) + ".." + std::to_string(c.waiting.rbegin()->first);
  }
  return out;
}

void DeviceNode::invariants() const {
  MSGSIM_ASSERT(phase_ != Phase::online || conn_ != kNoConn);
  MSGSIM_ASSERT(phase_ != Phase::routing || lb_conn_ != kNoConn);
  for (const auto& [conv, c] : convs_) {
    MSGSIM_ASSERT_LE(c.outbox.size(), kOutboxPerConversationMax);
    MSGSIM_ASSERT_LE(c.waiting.size(), config_.tuning.reorder_buffer_max);
    MSGSIM_ASSERT(c.waiting.empty() || c.waiting.begin()->first > c.cursor + 1);
  }
}

}  // namespace msgsim::chat
