#include "impl/chat/device.h"

#include <algorithm>

#include "impl/chat/e2ee_client.h"
#include "impl/crypto/primitives.h"
#include "oracle/event.h"

namespace msgsim::chat {

namespace {

constexpr int64_t kRetryIntervalNs = 1 * kNanosPerSecond;
constexpr size_t kOutboxPerConversationMax = 64;
constexpr size_t kShownDigestsMax = 256;
// A group message answered SendStale is sealed again and resent at once this many times; after
// that (a membership that keeps changing) only by the once-a-second retry.
constexpr uint32_t kStaleResendsAtOnceMax = 8;
// Signed prekeys rotate this often (Signal rotates weekly to monthly; the simulated runs are
// minutes to hours, so hourly lets long runs exercise it without a publish storm at scale).
constexpr int64_t kSignedPrekeyRotationNs = 3600 * kNanosPerSecond;

history::Event event(history::EventType type, const std::string& user, const std::string& device) {
  history::Event e;
  e.type = type;
  e.user = user;
  e.device = device;
  return e;
}

}  // namespace

std::string body_digest_hex(ByteView bytes) {
  // Every message is hashed twice (at `send` and at each `deliver`), so this takes the SHA-NI
  // engine where the CPU has it (several times faster than libsodium's portable code).
  const crypto::Key32 digest = crypto::sha256(crypto::ByteSpan(bytes.data(), bytes.size()));
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(2 * digest.size(), '0');
  for (size_t i = 0; i < digest.size(); ++i) {
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
    c.my_turn = user_ < contact;
  }
  for (const GroupPlan& g : config_.groups) {
    if (std::find(g.members.begin(), g.members.end(), user_) == g.members.end() && g.admin != user_) continue;
    convs_[g.conv].group = true;
  }
}

DeviceNode::~DeviceNode() = default;

size_t DeviceNode::e2ee_memory_bytes() const { return e2ee_ ? e2ee_->memory_bytes() : 0; }

void DeviceNode::on_start(Context& ctx) {
  if (config_.workload.e2ee && config_.topology.key_service() != kNoNode) {
    // Keys are made here, inside a handler, so they come from this node's seeded stream.
    e2ee_ = std::make_unique<E2eeClient>(user_, device_);
    publish_keys(ctx);
    ctx.set_timer(kSignedPrekeyRotationNs + ctx.rng().range(0, kSignedPrekeyRotationNs / 10), kSignedPrekeyTimer);
  }
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
  ctx.set_timer(ctx.rng().range(config_.tuning.resync_interval_ns / 2, config_.tuning.resync_interval_ns), kResyncTimer);
  arm_retry_if_needed(ctx);
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
  if (liveness_armed_) ctx.cancel_timer(liveness_timer_);
  liveness_armed_ = false;
  syncing_ = false;
  sync_owed_ = false;
  server_draining_ = false;
  for (auto& [conv, c] : convs_) {
    if (c.outbox_empty()) continue;
    Outgoing& front = c.outbox_front();
    front.sent_at_ns = -1;  // resend on the next connection
    if (front.sealed && c.group && !front.plaintext.empty()) {
      // Sealed again after the next sync, for the members known then.
      front.body = std::move(front.plaintext);
      front.plaintext.clear();
      front.sealed = false;
      front.members_digest = 0;
    }
  }
}

void DeviceNode::on_welcome(Context& ctx) {
  phase_ = Phase::syncing;
  last_online_ns_ = ctx.now_ns();
  backoff_attempt_ = 0;
  ctx.emit(event(history::EventType::online, user_, device_));
  last_sent_ns_ = ctx.now_ns();
  last_ping_ns_ = ctx.now_ns();
  if (liveness_armed_) ctx.cancel_timer(liveness_timer_);
  liveness_timer_ = ctx.set_timer(config_.tuning.heartbeat_interval_ns, kHeartbeatTimer);
  liveness_armed_ = true;
  request_sync(ctx, /*owed=*/true);
}

void DeviceNode::send_to_server(Context& ctx, Bytes frame) {
  ctx.send(conn_, std::move(frame));
  last_sent_ns_ = ctx.now_ns();
}

void DeviceNode::on_liveness_timer(Context& ctx) {
  liveness_armed_ = false;
  if (phase_ != Phase::online && phase_ != Phase::syncing) return;  // armed again by the next Welcome
  const int64_t now = ctx.now_ns();
  const int64_t interval = config_.tuning.heartbeat_interval_ns;
  const int64_t timeout = config_.tuning.heartbeat_timeout_ns;
  if (now - last_heard_ns_ > timeout) {
    ctx.close(conn_);  // the server went quiet: assume it is gone
    go_offline(ctx);
    reconnect_later(ctx, false);
    return;
  }
  // Any frame proves liveness: a Heartbeat goes only when this device has sent nothing for an
  // interval (the server hears from it at least that often), or has heard nothing for one
  // since it last asked (it asks again each interval until the server answers or times out).
  if (now - last_sent_ns_ >= interval || now - std::max(last_heard_ns_, last_ping_ns_) >= interval) {
    send_to_server(ctx, encode_as(Heartbeat{}));
    last_ping_ns_ = now;
  }
  const int64_t next = std::min({last_sent_ns_ + interval, std::max(last_heard_ns_, last_ping_ns_) + interval,
                                 last_heard_ns_ + timeout + 1});
  MSGSIM_ASSERT_GT(next, now);
  liveness_timer_ = ctx.set_timer(next - now, kHeartbeatTimer);
  liveness_armed_ = true;
}

bool DeviceNode::retry_needed() const {
  if (e2ee_ && (publish_request_ != 0 || fetch_request_ != 0 || !keys_published_)) return true;
  for (const auto& [conv, c] : convs_)
    if (!c.outbox_empty() || c.gap_since_ns >= 0) return true;
  return false;
}

void DeviceNode::arm_retry_if_needed(Context& ctx) {
  if (retry_armed_ || !retry_needed()) return;
  ctx.set_timer(kRetryIntervalNs, kRetryTimer);
  retry_armed_ = true;
}

void DeviceNode::request_sync(Context& ctx, bool owed) {
  SyncRequest request;
  for (const auto& [conv, c] : convs_) {
    if (request.cursors.size() >= kCursorsMax) break;
    request.cursors.push_back(Cursor{conv, c.cursor});
  }
  send_to_server(ctx, encode_as(request));
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
    arm_retry_if_needed(ctx);
    invariants();
    return;
  }
  if (conn == key_conn_ && key_conn_ != kNoConn) {
    on_key_frame(ctx, frame);
    arm_retry_if_needed(ctx);
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
  } else if (const auto* stale = std::get_if<SendStale>(&frame)) {
    on_stale(ctx, *stale);
  } else if (const auto* notice = std::get_if<ReceiptNotice>(&frame)) {
    on_receipt(ctx, *notice);
  } else if (std::holds_alternative<Drain>(frame)) {
    // The server is going away and hands off: it sends what it owes us (acks of sends in
    // flight, the rest of a sync), then closes. Send it nothing more; on the close, reconnect
    // elsewhere at once and resend whatever is still unanswered.
    server_draining_ = true;
  } else if (!std::holds_alternative<HeartbeatAck>(frame)) {
    ctx.log(LogLevel::warn, device_ + std::string(": unexpected ") + frame_name(frame));
  }
  arm_retry_if_needed(ctx);
  invariants();
}

void DeviceNode::on_disconnect(Context& ctx, ConnId conn, DisconnectReason) {
  if (conn == key_conn_ && key_conn_ != kNoConn) {
    reset_key_connection();  // the retry timer asks again
  } else if (conn == lb_conn_) {
    lb_conn_ = kNoConn;
    if (phase_ == Phase::routing) reconnect_later(ctx, false);
  } else if (conn == conn_) {
    const bool handed_off = server_draining_;
    go_offline(ctx);
    reconnect_later(ctx, /*immediately=*/handed_off);
  }
  arm_retry_if_needed(ctx);
  invariants();
}

// ---------------------------------------------------------------------------------------------
// Sending

std::string DeviceNode::new_uuid(Context& ctx) {
  // A version 7 UUID (RFC 9562): the node's clock in Unix milliseconds (48 bits), the
  // millisecond's fraction in 1/4096ths (12 bits, the RFC's method 3), then 62 bits from the
  // node's rng. Ids made about the same time sort together, so the B-trees keyed by message id
  // (the queue's `produced`, storage's msg_id index) take each commit's new keys in a few
  // leaves at their right edge instead of one random leaf per message (a dirty page and, with
  // 1 KiB pages, a split every few inserts). The rng draws the same 16 bytes as before.
  uint8_t b[16];
  ctx.rng().fill(b);
  const auto now_ns = static_cast<uint64_t>(std::max<int64_t>(ctx.now_ns(), 0));
  constexpr auto kMilli = static_cast<uint64_t>(kNanosPerMilli);
  const uint64_t ms = now_ns / kMilli;
  const uint64_t fraction = now_ns % kMilli * 4096 / kMilli;
  for (int i = 0; i < 6; ++i) b[i] = static_cast<uint8_t>(ms >> (40 - 8 * i));
  b[6] = static_cast<uint8_t>(0x70 | (fraction >> 8));                // version 7
  b[7] = static_cast<uint8_t>(fraction & 0xff);
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);                  // RFC 9562 variant
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
  const uint32_t turn_messages = config_.workload.turn_messages;
  for (const auto& [conv, c] : convs_) {
    if (c.group) groups.push_back(&conv);
    else if (turn_messages == 0 || c.my_turn) directs.push_back(&conv);
  }
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
  if (c.outbox_size() >= kOutboxPerConversationMax) return;  // the user waits for the network

  Outgoing out;
  out.id = new_uuid(ctx);
  const auto size = static_cast<size_t>(ctx.rng().range(config_.workload.body_bytes_min, config_.workload.body_bytes_max));
  out.body.resize(size);
  ctx.rng().fill(out.body);
  if (config_.plaintext_observer != nullptr) config_.plaintext_observer->on_plaintext(out.body);
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
  c.outbox_slots.push_back(std::move(out));
  if (turn_messages != 0 && !c.group && ++c.turn_count >= turn_messages) {
    c.my_turn = false;  // the contact's turn: wait for its messages
    c.turn_count = 0;
  }
  send_next(ctx, conv, c);
}

void DeviceNode::enqueue_group_op(Context& ctx, const std::string& conv, EntryKind kind, const std::string& member) {
  Conversation& c = conversation(conv);
  if (c.outbox_size() >= kOutboxPerConversationMax) return;
  Outgoing op;
  op.group_op = true;
  op.id = new_uuid(ctx);
  op.op_kind = kind;
  op.member = member;
  c.outbox_slots.push_back(std::move(op));
  send_next(ctx, conv, c);
}

void DeviceNode::send_next(Context& ctx, const std::string& conv, Conversation& c) {
  if (phase_ != Phase::online || server_draining_ || c.outbox_empty()) return;
  Outgoing& out = c.outbox_front();
  if (out.sent_at_ns >= 0) return;  // in flight: one unanswered send per conversation
  if (e2ee_ && !out.group_op && !out.sealed && !seal(ctx, conv, c, out)) return;  // waits for keys
  out.sent_at_ns = ctx.now_ns();
  if (out.group_op) {
    Bytes members;
    if (e2ee_ && out.op_kind == EntryKind::join) {
      std::vector<std::string> after = c.members;
      if (std::find(after.begin(), after.end(), out.member) == after.end()) after.push_back(out.member);
      std::sort(after.begin(), after.end());
      members = encode_member_list(after);
    }
    send_to_server(ctx, encode_as(GroupOp{out.id, conv, out.op_kind, out.member, std::move(members)}));
  } else {
    send_to_server(ctx, encode_as(Send{out.id, conv, c.group ? std::string() : c.peer, out.body, out.expires_at_ns,
                                   out.view_once, out.members_digest}));
  }
}

void DeviceNode::on_ack(Context& ctx, const SendAck& ack) {
  auto it = convs_.find(ack.conv);
  if (it == convs_.end() || it->second.outbox_empty() || it->second.outbox_front().id != ack.msg_id) return;  // a repeat
  Conversation& c = it->second;
  if (c.outbox_front().group_op && e2ee_) {
    // The change is committed: this device's member list follows at once, so that its next
    // change lists the members right (its echo, processed later, changes nothing more).
    Entry change;
    change.kind = c.outbox_front().op_kind;
    change.member = c.outbox_front().member;
    apply_membership(ack.conv, c, change);
  }
  if (!c.outbox_front().group_op) {
    history::Event e = event(history::EventType::ack, user_, device_);
    e.conv = ack.conv;
    e.msg = ack.msg_id;
    e.seq = static_cast<int64_t>(ack.seq);
    ctx.emit(e);
  }
  drop_front_of_outbox(c);
  send_next(ctx, ack.conv, c);
}

void DeviceNode::drop_front_of_outbox(Conversation& c) {
  MSGSIM_ASSERT(!c.outbox_empty(), "dropping the front of an empty outbox");
  c.outbox_slots[c.outbox_head] = Outgoing{};  // its id and body go now, not at the next erase
  c.outbox_head++;
  if (c.outbox_empty()) {
    // An empty outbox gives its capacity back: most conversations wait minutes between
    // messages with nothing to send, and 150,000 devices each kept room for a 168-byte
    // Outgoing or two (~350 bytes a device at the full run length). The next message
    // allocates again.
    c.outbox_slots.clear();
    c.outbox_slots.shrink_to_fit();
    c.outbox_head = 0;
  } else if (2 * size_t{c.outbox_head} >= c.outbox_slots.size()) {
    // The answered slots are half the vector: erase them, moving the (fewer) waiting ones, so
    // each pop pays O(1) amortised and the vector holds at most twice the waiting messages.
    c.outbox_slots.erase(c.outbox_slots.begin(), c.outbox_slots.begin() + c.outbox_head);
    c.outbox_head = 0;
  }
}

void DeviceNode::on_reject(Context& ctx, const SendReject& reject) {
  auto it = convs_.find(reject.conv);
  if (it == convs_.end() || it->second.outbox_empty() || it->second.outbox_front().id != reject.msg_id) return;
  Conversation& c = it->second;
  if (!c.outbox_front().group_op) {
    history::Event e = event(history::EventType::reject, user_, device_);
    e.conv = reject.conv;
    e.msg = reject.msg_id;
    e.reason = reject.reason;
    ctx.emit(e);
    // Its sender key distribution never reached anyone: the next group message starts afresh.
    if (e2ee_ && c.group) e2ee_->rotate_group_key(reject.conv);
  } else {
    ctx.log(LogLevel::info, device_ + ": membership change refused: " + reject.reason);
  }
  drop_front_of_outbox(c);
  send_next(ctx, reject.conv, c);
}

void DeviceNode::on_stale(Context& ctx, const SendStale& stale) {
  auto it = convs_.find(stale.conv);
  if (it == convs_.end() || it->second.outbox_empty() || it->second.outbox_front().id != stale.msg_id) return;
  Conversation& c = it->second;
  Outgoing& out = c.outbox_front();
  if (!e2ee_ || !c.group || out.group_op || !out.sealed || out.plaintext.empty()) return;
  // The membership changed since this device last looked (or it learnt the list wrong). The
  // queue's list is the group's now, perhaps ahead of the entries this device has processed:
  // seal for it (a new sender key if someone left, the current key for whoever joined) and send
  // the same msg_id again. The entries still to process apply their changes on top of this
  // list; those it already holds change nothing, and by the queue's position the two agree.
  c.members = decode_member_list(stale.members);
  out.body = std::move(out.plaintext);
  out.plaintext.clear();
  out.sealed = false;
  out.members_digest = 0;
  out.sent_at_ns = -1;
  out.stale_answers++;
  ctx.log(LogLevel::debug, device_ + ": " + out.id + " in " + stale.conv + " was sealed for an old member list; sealing again");
  // Past the bound, the retry timer sends it (once a second) instead.
  if (out.stale_answers <= kStaleResendsAtOnceMax) send_next(ctx, stale.conv, c);
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
      if (entry.from_device == device_) {
        // This device's own message, echoed. For a group, the log now holds its sender key
        // distributions: the devices they address need no more.
        if (e2ee_ && c.group) e2ee_->note_own_echo(conv, entry.body);
        break;
      }
      const int64_t now = ctx.now_ns();
      std::string digest;
      if (e2ee_) {
        // Opened before anything else, even a message that arrived expired: a group message
        // may carry a sender key that later messages need. Duplicates were dropped by seq
        // before this point; a repeat under another seq opens as a duplicate, with no state
        // change, and is not shown again.
        const bool bug_repeat = config_.bugs.on(Bug::client_no_dedup) && entry.seq <= c.cursor;
        if (bug_repeat) {
          auto cached = shown_digests_.find(entry.msg_id);
          if (cached == shown_digests_.end()) break;
          digest = cached->second;
        } else {
          Result<E2eeClient::Opened> opened = e2ee_->open(conv, entry.from_device, entry.body);
          if (!opened.ok()) {
            history::Event x = event(history::EventType::decrypt_error, user_, device_);
            x.conv = conv;
            x.msg = entry.msg_id;
            x.reason = opened.error().message.substr(0, kReasonMax);
            ctx.emit(x);
            ctx.log(LogLevel::warn, device_ + ": cannot decrypt " + entry.msg_id + " in " + conv + ": " + opened.error().message);
            break;
          }
          if (opened->duplicate) break;
          if (opened->used_one_time_prekey && publish_request_ == 0 && keys_published_) {
            // Someone fetched one of this device's one-time prekeys: ask how many are left.
            PublishKeys query;
            query.user = user_;
            query.device = device_;
            key_request(ctx, query);
          }
          digest = body_digest_hex(opened->plaintext);
          if (config_.bugs.on(Bug::client_no_dedup)) {
            if (shown_digests_.size() >= kShownDigestsMax) shown_digests_.erase(shown_digests_.begin());
            shown_digests_[entry.msg_id] = digest;
          }
        }
      } else {
        digest = body_digest_hex(entry.body);
      }
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
      e.body = std::move(digest);
      ctx.emit(e);
      const uint32_t turn_messages = config_.workload.turn_messages;
      if (turn_messages != 0 && !c.group && !c.my_turn && entry.from_user == c.peer &&
          ++c.turn_count >= turn_messages) {
        c.my_turn = true;  // the contact's turn is over
        c.turn_count = 0;
      }
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
      if (e2ee_) apply_membership(conv, c, entry);
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

uint64_t& DeviceNode::receipt_known(const std::string& conv, const std::string& reader, ReceiptKind kind) {
  auto held = convs_.find(conv);
  if (held == convs_.end()) return receipts_known_elsewhere_[{conv, reader, kind}];
  std::vector<Conversation::ReceiptKnown>& known = held->second.receipts_known;
  for (Conversation::ReceiptKnown& k : known) {
    if (k.kind == kind && k.reader == reader) return k.up_to;
  }
  uint64_t up_to = 0;
  if (!receipts_known_elsewhere_.empty()) {
    auto earlier = receipts_known_elsewhere_.find({conv, reader, kind});
    if (earlier != receipts_known_elsewhere_.end()) {
      up_to = earlier->second;
      receipts_known_elsewhere_.erase(earlier);
    }
  }
  return known.emplace_back(Conversation::ReceiptKnown{reader, kind, up_to}).up_to;
}

void DeviceNode::on_receipt(Context& ctx, const ReceiptNotice& notice) {
  if (notice.reader == user_) return;
  uint64_t& known = receipt_known(notice.conv, notice.reader, notice.kind);
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
      send_to_server(ctx, encode_as(ReceiptSend{conv, ReceiptKind::delivered, c.cursor}));
      c.delivered_sent = c.cursor;
    }
    if (c.read_upto > c.read_sent) {
      history::Event e = event(history::EventType::read, user_, device_);
      e.conv = conv;
      e.up_to = static_cast<int64_t>(c.read_upto);
      ctx.emit(e);
      uint64_t up_to = c.read_upto;
      if (config_.bugs.on(Bug::read_before_display) && !c.waiting.empty()) up_to = c.waiting.rbegin()->first;
      send_to_server(ctx, encode_as(ReceiptSend{conv, ReceiptKind::read, up_to}));
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
// E2EE: membership, sealing, the key service

void DeviceNode::apply_membership(const std::string& conv, Conversation& c, const Entry& entry) {
  if (!c.group) return;
  if (entry.kind == EntryKind::join) {
    if (entry.member == user_ && !entry.body.empty() && c.members.empty()) {
      // The join's body lists the members after it: a new member learns them here.
      c.members = decode_member_list(entry.body);
    }
    auto at = std::lower_bound(c.members.begin(), c.members.end(), entry.member);
    if (at == c.members.end() || *at != entry.member) c.members.insert(at, entry.member);
    return;
  }
  std::erase(c.members, entry.member);
  if (entry.member == user_) {
    // Out of the group: if this user comes back, it starts with a new sender key distributed to
    // everyone then (spec: a joiner gets current keys; the others made new ones meanwhile).
    c.members.clear();
    e2ee_->rotate_group_key(conv);
    return;
  }
  // Another member left. This device's own key, if it reached the leaver, is replaced before
  // the next group message: seal_group sees a device outside the members. The leaver's sender
  // key is kept: the queue takes no message from a non-member, and a member that leaves and
  // comes back may send under its old key before its device has processed its own leave (the
  // member list is the same again, so the queue's check passes), which the others must open.
  // The device's own change is applied on its ack, before the entries ahead of it are
  // processed: those may still be messages of the leaver.
}

uint32_t DeviceNode::device_count(const std::string& user) const {
  // The plan is the user service's device list.
  const UserPlan* plan = plan_at_named_index(config_, user);
  return plan != nullptr ? plan->devices : plan_.devices;
}

std::vector<std::string> DeviceNode::recipients_of(const Conversation& c) const {
  std::vector<std::string> out;
  auto add_user = [&](const std::string& user) {
    for (std::string& d : devices_of(user, device_count(user)))
      if (d != device_) out.push_back(std::move(d));
  };
  if (c.group) {
    for (const std::string& member : c.members) add_user(member);
  } else {
    add_user(c.peer);
    add_user(user_);  // this user's other devices show what it sent
  }
  return out;
}

bool DeviceNode::seal(Context& ctx, const std::string& conv, Conversation& c, Outgoing& out) {
  const std::vector<std::string> recipients = recipients_of(c);
  std::vector<std::string> missing_users;
  for (const std::string& d : recipients) {
    if (e2ee_->has_session(d)) continue;
    const std::string user = d.substr(0, d.rfind(".d"));
    if (std::find(missing_users.begin(), missing_users.end(), user) == missing_users.end()) missing_users.push_back(user);
  }
  if (!missing_users.empty()) {
    fetch_bundles(ctx, std::move(missing_users));
    return false;
  }
  Result<Bytes> body = c.group ? e2ee_->seal_group(conv, out.body, recipients) : e2ee_->seal_direct(out.body, recipients);
  if (!body.ok()) {
    // Not reachable with keys this device checked; if it happens the message cannot go out.
    ctx.log(LogLevel::error, device_ + ": cannot seal " + out.id + " in " + conv + ": " + body.error().message);
    return false;
  }
  if (config_.bugs.on(Bug::server_sees_plaintext)) {
    // The planted bug: a "debug copy" of the plaintext as one more envelope, addressed to no
    // device, which every server on the path stores and forwards.
    Bytes& b = *body;
    const size_t count = (size_t{b[2]} << 8 | b[3]) + 1;
    b[2] = static_cast<uint8_t>(count >> 8);
    b[3] = static_cast<uint8_t>(count);
    Bytes copy{0};
    for (int shift = 24; shift >= 0; shift -= 8) copy.push_back(static_cast<uint8_t>(out.body.size() >> shift));
    copy.insert(copy.end(), out.body.begin(), out.body.end());
    b.insert(b.begin() + 4, copy.begin(), copy.end());
  }
  if (c.group) {
    out.members_digest = members_digest(encode_member_list(c.members));
    out.plaintext = std::move(out.body);
  }
  out.body = std::move(*body);
  out.sealed = true;
  return true;
}

void DeviceNode::key_request(Context& ctx, Frame frame) {
  const uint64_t id = next_key_request_++;
  if (auto* publish = std::get_if<PublishKeys>(&frame)) {
    publish->request_id = id;
    publish_request_ = id;
  } else if (auto* fetch = std::get_if<FetchBundles>(&frame)) {
    fetch->request_id = id;
    fetch_request_ = id;
  }
  if (key_conn_ == kNoConn) key_conn_ = ctx.connect(config_.topology.key_service());
  key_request_sent_ns_ = ctx.now_ns();
  ctx.send(key_conn_, encode(frame));
}

void DeviceNode::reset_key_connection() {
  key_conn_ = kNoConn;
  publish_request_ = 0;
  fetch_request_ = 0;
}

void DeviceNode::publish_keys(Context& ctx) {
  if (publish_request_ != 0) return;
  key_request(ctx, e2ee_->initial_publish(0));
}

void DeviceNode::fetch_bundles(Context& ctx, std::vector<std::string> users) {
  if (fetch_request_ != 0) return;  // one at a time; what is still missing is asked next
  FetchBundles fetch;
  for (std::string& user : users) {
    if (fetch.users.size() >= kUsersPerLookupMax) break;
    fetch.users.push_back(UserRef{std::move(user)});
  }
  key_request(ctx, fetch);
}

void DeviceNode::on_key_frame(Context& ctx, Frame& frame) {
  if (const auto* published = std::get_if<KeysPublished>(&frame)) {
    if (published->request_id != publish_request_) return;
    publish_request_ = 0;
    keys_published_ = true;
    if (published->opks_available < E2eeClient::kReplenishBelow) {
      PublishKeys more = e2ee_->replenish(0);
      if (!more.opks.empty()) key_request(ctx, more);
    }
  } else if (const auto* bundles = std::get_if<Bundles>(&frame)) {
    if (bundles->request_id != fetch_request_) return;
    fetch_request_ = 0;
    for (const DeviceBundle& bundle : bundles->bundles) {
      Status added = e2ee_->add_bundle(bundle);
      // A bundle whose signature does not verify is refused (spec: abort X3DH); messages for
      // that device wait, and the fetch is retried, until the key service hands out good keys.
      if (!added.ok()) ctx.log(LogLevel::error, device_ + ": " + added.error().message);
    }
    for (auto& [conv, c] : convs_) send_next(ctx, conv, c);
  } else if (const auto* failed = std::get_if<KeyRequestFailed>(&frame)) {
    ctx.log(LogLevel::warn, device_ + ": key service refused request " + std::to_string(failed->request_id) + ": " + failed->reason);
    if (failed->request_id == publish_request_) publish_request_ = 0;
    if (failed->request_id == fetch_request_) fetch_request_ = 0;
  } else {
    ctx.log(LogLevel::warn, device_ + std::string(": unexpected ") + frame_name(frame) + " from the key service");
  }
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
        on_liveness_timer(ctx);
        break;
      case kResyncTimer:
        if (phase_ == Phase::online && !syncing_) request_sync(ctx, /*owed=*/false);
        ctx.set_timer(ctx.rng().range(config_.tuning.resync_interval_ns / 2, config_.tuning.resync_interval_ns),
                      kResyncTimer);
        break;
      case kSignedPrekeyTimer:
        // The new key is published like the first: until the key service has it, bundles
        // still name the previous one, which this device keeps accepting.
        keys_published_ = false;
        if (publish_request_ == 0) key_request(ctx, e2ee_->rotate_signed_prekey(0));
        ctx.set_timer(kSignedPrekeyRotationNs, kSignedPrekeyTimer);
        break;
      case kReceiptTimer:
        receipt_timer_armed_ = false;
        flush_receipts(ctx);
        break;
      case kRetryTimer: {
        // Armed (arm_retry_if_needed) only while something waits: a send or group change for
        // its answer or for keys, a key request, the key publish, or a gap.
        retry_armed_ = false;
        const int64_t now = ctx.now_ns();
        if (phase_ == Phase::online) {
          for (auto& [conv, c] : convs_) {
            if (!c.outbox_empty() && c.outbox_front().sent_at_ns >= 0 &&
                now - c.outbox_front().sent_at_ns > config_.tuning.send_timeout_ns) {
              c.outbox_front().sent_at_ns = -1;  // no answer: send the same id again
              send_next(ctx, conv, c);
            }
          }
        }
        if (e2ee_) {
          // A key request unanswered for too long: the key service is gone or cut off.
          if ((publish_request_ != 0 || fetch_request_ != 0) &&
              now - key_request_sent_ns_ > config_.tuning.server_request_timeout_ns) {
            ctx.close(key_conn_);
            reset_key_connection();
          }
          if (!keys_published_) publish_keys(ctx);
          // Messages waiting for keys (a device that had not published yet): ask again.
          if (phase_ == Phase::online) {
            for (auto& [conv, c] : convs_)
              if (!c.outbox_empty() && !c.outbox_front().sealed && !c.outbox_front().group_op) send_next(ctx, conv, c);
          }
        }
        check_gaps(ctx);
        break;
      }
      default: MSGSIM_UNREACHABLE("unknown device timer");
    }
  }
  arm_retry_if_needed(ctx);
  invariants();
}

bool DeviceNode::settled() const {
  if (phase_ != Phase::online || sync_owed_) return false;
  for (const auto& [conv, c] : convs_) {
    if (!c.outbox_empty() || !c.waiting.empty() || c.delivered_sent != c.cursor || c.read_sent < c.read_upto) return false;
  }
  return true;
}

std::string DeviceNode::describe() const {
  static constexpr const char* phases[] = {"backoff", "routing", "connecting", "syncing", "online"};
  std::string out = device_ + " " + phases[static_cast<int>(phase_)] +
                    (syncing_ ? (sync_owed_ ? " (owed sync out)" : " (periodic sync out)") : "");
  for (const auto& [conv, c] : convs_) {
    if (c.outbox_empty() && c.waiting.empty() && c.delivered_sent == c.cursor && c.read_sent >= c.read_upto) continue;
    out += " | " + conv + " cursor " + std::to_string(c.cursor) + " delivered-sent " + std::to_string(c.delivered_sent);
    if (!c.outbox_empty()) {
      out += " outbox " + std::to_string(c.outbox_size()) + (c.outbox_front().group_op ? " (group op)" : "") +
             (c.outbox_front().sent_at_ns >= 0 ? " in flight" : "");
    }
    if (!c.waiting.empty()) out += " waiting " + std::to_string(c.waiting.begin()->first) + ".." + std::to_string(c.waiting.rbegin()->first);
  }
  return out;
}

void DeviceNode::invariants() const {
  MSGSIM_ASSERT(phase_ != Phase::online || conn_ != kNoConn);
  MSGSIM_ASSERT(phase_ != Phase::routing || lb_conn_ != kNoConn);
  for (const auto& [conv, c] : convs_) {
    MSGSIM_ASSERT_LE(c.outbox_size(), kOutboxPerConversationMax);
    MSGSIM_ASSERT_LE(size_t{c.outbox_head}, c.outbox_slots.size());
    MSGSIM_ASSERT_LE(c.outbox_slots.size(), 2 * kOutboxPerConversationMax);
    MSGSIM_ASSERT_LE(c.waiting.size(), config_.tuning.reorder_buffer_max);
    MSGSIM_ASSERT(c.waiting.empty() || c.waiting.begin()->first > c.cursor + 1);
  }
}

}  // namespace msgsim::chat
