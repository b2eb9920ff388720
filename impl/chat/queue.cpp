#include "impl/chat/queue.h"

#include <sqlite3.h>


namespace msgsim::chat {

namespace {

using fast_sql::bind_int;
using fast_sql::bind_text;
using fast_sql::bind_blob;
using fast_sql::next_row;
using fast_sql::run;

constexpr uint64_t kCommitTag = 1;
constexpr uint64_t kCatchUpTag = 2;
constexpr uint64_t kFlushTag = uint64_t{1} << 32;  // | partition

}  // namespace

// ---------------------------------------------------------------------------------------------
// QueueNode

QueueNode::QueueNode(const ChatConfig& config) : config_(config) {}

uint64_t QueueNode::next_offset(uint32_t partition) const {
  const auto it = state_.partitions.find(partition);
  return it == state_.partitions.end() ? 0 : it->second.next_offset;
}

uint64_t QueueNode::next_seq(const std::string& conv) const {
  const auto it = state_.conversations.find(conv);
  return it == state_.conversations.end() ? 1 : it->second.next_seq;
}

void QueueNode::open_database(Context& ctx) {
  db_ = open_entry_database(ctx);
  if (config_.bugs.on(Bug::ack_before_durable)) {
    // The planted bug: commits return before the WAL reaches the disk, so a crash after an ack
    // can lose the acked record.
    const Status off = sql::exec(db_, "PRAGMA synchronous=OFF");
    MSGSIM_ASSERT(off.ok(), off.ok() ? std::string() : off.error().message);
  }
  const Status schema = sql::exec(db_,
      "CREATE TABLE IF NOT EXISTS log (partition INTEGER NOT NULL, offset INTEGER NOT NULL, entry BLOB NOT NULL,"
      " PRIMARY KEY (partition, offset)) WITHOUT ROWID;"
      "CREATE TABLE IF NOT EXISTS conversations (conv TEXT PRIMARY KEY, next_seq INTEGER NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE IF NOT EXISTS members (conv TEXT NOT NULL, user TEXT NOT NULL,"
      " PRIMARY KEY (conv, user)) WITHOUT ROWID;"
      // seq > 0: accepted with that seq; seq = 0: rejected for `reason`.
      "CREATE TABLE IF NOT EXISTS produced (msg_id TEXT PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL,"
      " reason TEXT NOT NULL) WITHOUT ROWID;");
  MSGSIM_ASSERT(schema.ok(), schema.ok() ? std::string() : schema.error().message);
  find_msg_ = must_prepare(db_, "SELECT conv, seq, reason FROM produced WHERE msg_id = ?");
  insert_msg_ = must_prepare(db_, "INSERT OR REPLACE INTO produced (msg_id, conv, seq, reason) VALUES (?, ?, ?, ?)");
  insert_log_ = must_prepare(db_, "INSERT INTO log (partition, offset, entry) VALUES (?, ?, ?)");
  upsert_conv_ = must_prepare(db_,
      "INSERT INTO conversations (conv, next_seq) VALUES (?, ?) ON CONFLICT (conv) DO UPDATE SET next_seq = excluded.next_seq");
  insert_member_ = must_prepare(db_, "INSERT INTO members (conv, user) VALUES (?, ?)");
  delete_member_ = must_prepare(db_, "DELETE FROM members WHERE conv = ? AND user = ?");
  read_log_ = must_prepare(db_,
      "SELECT offset, entry FROM log WHERE partition = ? AND offset >= ? AND offset < ? ORDER BY offset");
  begin_ = must_prepare(db_, "BEGIN");
  commit_ = must_prepare(db_, "COMMIT");
  rollback_ = must_prepare(db_, "ROLLBACK");
}

void QueueNode::recover(Context& ctx) {
  for (uint32_t p = 0; p < config_.topology.partitions; ++p) {
    if (config_.topology.queue_of(p) == ctx.self()) state_.partitions[p] = Partition{};
  }
  {
    sql::Statement stmt = must_prepare(db_, "SELECT conv, next_seq FROM conversations");
    while (next_row(stmt.get()) == 1) {
      state_.conversations[std::string(stmt.column_text(0))].next_seq = static_cast<uint64_t>(stmt.column_int64(1));
    }
  }
  {
    sql::Statement stmt = must_prepare(db_, "SELECT conv, user FROM members");
    while (next_row(stmt.get()) == 1) {
      state_.conversations[std::string(stmt.column_text(0))].members.emplace(stmt.column_text(1));
    }
  }
  {
    sql::Statement stmt = must_prepare(db_, "SELECT partition, max(offset) FROM log GROUP BY partition");
    while (next_row(stmt.get()) == 1) {
      const auto partition = static_cast<uint32_t>(stmt.column_int64(0));
      const auto it = state_.partitions.find(partition);
      // A log of a partition this node no longer leads stays on disk, unused.
      if (it != state_.partitions.end()) {
        it->second.next_offset = static_cast<uint64_t>(stmt.column_int64(1)) + 1;
        it->second.committed_next_offset = it->second.next_offset;
      }
    }
  }
}

void QueueNode::on_start(Context& ctx) {
  self_ = ctx.self();
  open_database(ctx);
  recover(ctx);
  ctx.log(LogLevel::info, "queue: recovered " + describe());
  invariants();
}

void QueueNode::close_bad(Context& ctx, ConnId conn, const std::string& why) {
  ctx.log(LogLevel::warn, "queue: closing a connection: " + why);
  for (auto it = state_.subscriptions.lower_bound({conn, 0}); it != state_.subscriptions.end() && it->first.first == conn;)
    it = state_.subscriptions.erase(it);
  ctx.close(conn);
}

void QueueNode::halt(Context& ctx, const std::string& what) {
  // A write that did not commit may or may not be on disk: the only safe answer is none. The
  // node stops answering (fail-stop); a restart recovers from what the disk kept.
  ctx.log(LogLevel::error, "queue: halting: " + what + ": " + sqlite3_errmsg(db_));
  if (!sqlite3_get_autocommit(db_)) run(rollback_.get());
  state_.halted = true;
}

void QueueNode::on_frame(Context& ctx, ConnId conn, ByteView bytes) {
  if (state_.halted) {
    ctx.close(conn);
    return;
  }
  Result<Frame> decoded = decode(bytes);
  if (!decoded.ok()) {
    close_bad(ctx, conn, "bad frame: " + decoded.error().message);
    return;
  }
  if (auto* produce = std::get_if<Produce>(&*decoded)) {
    on_produce(ctx, conn, *produce);
  } else if (const auto* subscribe = std::get_if<Subscribe>(&*decoded)) {
    on_subscribe(ctx, conn, *subscribe);
  } else {
    close_bad(ctx, conn, std::string("unexpected ") + frame_name(*decoded));
  }
  invariants();
}

std::string QueueNode::check(const Entry& entry) const {
  const std::string_view conv = entry.conv;
  if (starts_with(conv, "g:")) {
    if (conv.size() == 2) return "malformed conversation id";
    const auto it = state_.conversations.find(entry.conv);
    if (it == state_.conversations.end()) {
      // A group is created by its first join, which its creator makes for itself.
      if (entry.kind != EntryKind::join) return "no such group";
      if (entry.member != entry.from_user) return "not a member";
      return {};
    }
    const std::set<std::string>& members = it->second.members;
    if (members.count(entry.from_user) == 0) return "not a member";
    switch (entry.kind) {
      case EntryKind::message: return {};
      case EntryKind::join:
        if (entry.member.empty()) return "no member named";
        return members.count(entry.member) != 0 ? "already a member" : "";
      case EntryKind::leave:
        return members.count(entry.member) == 0 ? "not a member" : "";
    }
    return "unknown entry kind";
  }
  if (starts_with(conv, "dm:")) {
    const std::string_view users = conv.substr(3);
    const size_t colon = users.find(':');
    if (colon == std::string_view::npos) return "malformed conversation id";
    const std::string_view a = users.substr(0, colon);
    const std::string_view b = users.substr(colon + 1);
    if (a.empty() || b.empty() || !(a < b) || b.find(':') != std::string_view::npos) return "malformed conversation id";
    if (entry.kind != EntryKind::message) return "not a group";
    const std::string_view from = entry.from_user;
    const std::string_view to = entry.to;
    if (!((from == a && to == b) || (from == b && to == a))) return "not a member";
    return {};
  }
  return "unknown conversation";
}

void QueueNode::reply(Context& ctx, ConnId conn, Bytes frame) {
  // While a batch is open, every answer waits for its commit: even a duplicate's answer may
  // name a seq that only the open batch holds.
  if (state_.batch_open) {
    state_.replies.emplace_back(conn, std::move(frame));
  } else {
    ctx.send(conn, std::move(frame));
  }
}

bool QueueNode::open_batch(Context& ctx) {
  if (state_.batch_open) return true;
  if (!run(begin_.get())) {
    halt(ctx, "opening a batch");
    return false;
  }
  state_.batch_open = true;
  if (!state_.commit_armed) {
    state_.commit_armed = true;
    ctx.set_timer(kGroupCommitNs, kCommitTag);
  }
  return true;
}

void QueueNode::commit_batch(Context& ctx) {
  if (!state_.batch_open) return;
  for (const std::string& conv : state_.dirty_convs) {
    sqlite3_stmt* upsert = upsert_conv_.get();
    bind_text(upsert, 1, conv);
    bind_int(upsert, 2, static_cast<int64_t>(state_.conversations.at(conv).next_seq));
    if (!run(upsert)) {
      halt(ctx, "writing the next seq of " + conv);
      return;
    }
  }
  state_.dirty_convs.clear();
  if (!run(commit_.get())) {
    halt(ctx, "committing a batch of " + std::to_string(state_.replies.size()) + " answers");
    return;
  }
  // Durable (synced, unless the planted bug is on): now the producers hear, and subscribers
  // get the records.
  state_.batch_open = false;
  for (auto& [partition, record] : state_.committing) {
    Partition& part = state_.partitions.at(partition);
    MSGSIM_ASSERT_EQ(record.offset, part.committed_next_offset);
    part.committed_next_offset = record.offset + 1;
    append_unflushed(ctx, partition, std::move(record));
  }
  state_.committing.clear();
  for (auto& [conn, frame] : state_.replies) ctx.send(conn, std::move(frame));
  state_.replies.clear();
}

void QueueNode::on_produce(Context& ctx, ConnId conn, Produce& produce) {
  Entry& entry = produce.entry;
  if (entry.msg_id.empty() || entry.conv.empty() || entry.from_user.empty()) {
    close_bad(ctx, conn, "Produce without msg_id, conv or from_user");
    return;
  }
  const uint32_t partition = config_.topology.partition_of(entry.conv);
  const auto part = state_.partitions.find(partition);
  if (part == state_.partitions.end()) {
    // Misrouted by the producer: not an answer about the message, so nothing is recorded.
    ctx.log(LogLevel::warn, "queue: Produce for " + entry.conv + " of partition " + std::to_string(partition) +
                                " that this node does not lead");
    reply(ctx, conn, encode(Frame{ProduceRejected{produce.request_id, entry.msg_id, entry.conv, "not the partition leader"}}));
    return;
  }
  // Group commit: this produce's writes join the open batch (a transaction), and its answer
  // waits for the batch's commit. Reads inside the transaction see the batch's own writes, so
  // a retry within the batch is recognised like any other.
  if (!open_batch(ctx)) return;

  // A retry gets the answer the first produce got.
  sqlite3_stmt* find = find_msg_.get();
  bind_text(find, 1, entry.msg_id);
  const int found = next_row(find);
  if (found < 0) {
    sqlite3_reset(find);
    halt(ctx, "reading produced msg_ids");
    return;
  }
  if (found == 1) {
    const auto seq = static_cast<uint64_t>(sqlite3_column_int64(find, 1));
    const bool skip_dedup = seq > 0 && config_.bugs.on(Bug::retry_new_seq);
    if (!skip_dedup) {
      std::string conv(reinterpret_cast<const char*>(sqlite3_column_text(find, 0)),
                       static_cast<size_t>(sqlite3_column_bytes(find, 0)));
      std::string reason(reinterpret_cast<const char*>(sqlite3_column_text(find, 2)),
                         static_cast<size_t>(sqlite3_column_bytes(find, 2)));
      sqlite3_reset(find);
      state_.duplicates++;
      if (seq > 0) {
        reply(ctx, conn, encode(Frame{Produced{produce.request_id, std::move(entry.msg_id), std::move(conv), seq}}));
      } else {
        reply(ctx, conn, encode(Frame{ProduceRejected{produce.request_id, std::move(entry.msg_id), std::move(conv),
                                                      std::move(reason)}}));
      }
      close_batch_if_full(ctx);
      return;
    }
  }
  sqlite3_reset(find);

  std::string reason = check(entry);
  // Bug::reject_after_append: a message that fails the check is appended anyway and refused
  // only afterwards, as code that validates after the write would do.
  const bool append_then_refuse = !reason.empty() && entry.kind == EntryKind::message &&
                                  config_.bugs.on(Bug::reject_after_append);
  if (!reason.empty() && !append_then_refuse) {
    if (!write_rejected(ctx, entry, reason)) return;
    state_.rejected++;
    reply(ctx, conn, encode(Frame{ProduceRejected{produce.request_id, entry.msg_id, entry.conv, std::move(reason)}}));
    close_batch_if_full(ctx);
    return;
  }

  const auto conv_it = state_.conversations.find(entry.conv);
  entry.seq = conv_it == state_.conversations.end() ? 1 : conv_it->second.next_seq;
  const uint64_t offset = part->second.next_offset;
  if (!write_accepted(ctx, partition, entry, offset)) return;

  // Memory follows the batch at once, so later produces of the batch are checked against it;
  // if the batch does not commit, the node halts and a restart recovers from the disk.
  Conversation& conversation = state_.conversations[entry.conv];
  conversation.next_seq = entry.seq + 1;
  if (entry.kind == EntryKind::join) conversation.members.insert(entry.member);
  if (entry.kind == EntryKind::leave) conversation.members.erase(entry.member);
  part->second.next_offset = offset + 1;
  state_.accepted++;
  if (append_then_refuse) {
    reply(ctx, conn, encode(Frame{ProduceRejected{produce.request_id, entry.msg_id, entry.conv, std::move(reason)}}));
  } else {
    reply(ctx, conn, encode(Frame{Produced{produce.request_id, entry.msg_id, entry.conv, entry.seq}}));
  }
  state_.committing.emplace_back(partition, RecordAt{offset, std::move(entry)});
  close_batch_if_full(ctx);
}

void QueueNode::close_batch_if_full(Context& ctx) {
  if (state_.replies.size() >= kBatchMax) commit_batch(ctx);
}

bool QueueNode::write_accepted(Context& ctx, uint32_t partition, const Entry& entry, uint64_t offset) {
  Bytes& blob = scratch_;
  encode_entry(entry, blob);
  const bool group = starts_with(entry.conv, "g:");
  bool ok = true;
  {
    sqlite3_stmt* log = insert_log_.get();
    bind_int(log, 1, static_cast<int64_t>(partition));
    bind_int(log, 2, static_cast<int64_t>(offset));
    bind_blob(log, 3, blob);
    ok = run(log);
  }
  // The conversation's next seq is written once per batch, at its commit (dirty_convs).
  if (ok) state_.dirty_convs.insert(entry.conv);
  if (ok && group && entry.kind != EntryKind::message) {
    sqlite3_stmt* member = entry.kind == EntryKind::join ? insert_member_.get() : delete_member_.get();
    bind_text(member, 1, entry.conv);
    bind_text(member, 2, entry.member);
    ok = run(member);
  }
  if (ok) {
    sqlite3_stmt* msg = insert_msg_.get();
    bind_text(msg, 1, entry.msg_id);
    bind_text(msg, 2, entry.conv);
    bind_int(msg, 3, static_cast<int64_t>(entry.seq));
    bind_text(msg, 4, std::string_view());
    ok = run(msg);
  }
  if (!ok) halt(ctx, "appending " + entry.msg_id + " to partition " + std::to_string(partition));
  return ok;
}

bool QueueNode::write_rejected(Context& ctx, const Entry& entry, const std::string& reason) {
  sqlite3_stmt* msg = insert_msg_.get();
  bind_text(msg, 1, entry.msg_id);
  bind_text(msg, 2, entry.conv);
  bind_int(msg, 3, int64_t{0});
  bind_text(msg, 4, reason);
  const bool ok = run(msg);
  if (!ok) halt(ctx, "recording the rejection of " + entry.msg_id);
  return ok;
}

void QueueNode::append_unflushed(Context& ctx, uint32_t partition, RecordAt record) {
  Partition& part = state_.partitions.at(partition);
  const size_t bytes = entry_bytes_max(record.entry) + 10;
  if (part.unflushed.size() == kEntriesPerFrameMax || part.unflushed_bytes + bytes > kFrameBytesBudget) {
    flush(ctx, partition);
  }
  part.unflushed.push_back(std::move(record));
  part.unflushed_bytes += bytes;
  if (!part.flush_armed) {
    part.flush_armed = true;
    ctx.set_timer(kLingerNs, kFlushTag | partition);
  }
}

void QueueNode::flush(Context& ctx, uint32_t partition) {
  Partition& part = state_.partitions.at(partition);
  if (part.unflushed.empty()) return;
  const uint64_t first = part.unflushed.front().offset;
  // Not part.next_offset: a record being appended may already count there but not be buffered.
  const uint64_t end = part.unflushed.back().offset + 1;
  Bytes whole;  // the frame of the whole buffer, encoded once for every subscriber that wants it all
  for (auto& [key, sub] : state_.subscriptions) {
    if (key.second != partition || !sub.caught_up) continue;
    if (sub.next_offset <= first) {
      if (whole.empty()) whole = encode(Frame{Records{partition, part.unflushed}});
      ctx.send(key.first, whole);
    } else if (sub.next_offset < end) {
      // It read part of the buffer from the log during catch-up: send it only the rest.
      Records rest{partition, {}};
      for (const RecordAt& record : part.unflushed)
        if (record.offset >= sub.next_offset) rest.records.push_back(record);
      ctx.send(key.first, encode(Frame{std::move(rest)}));
    }
    sub.next_offset = std::max(sub.next_offset, end);
  }
  part.unflushed.clear();
  part.unflushed_bytes = 0;
}

void QueueNode::on_subscribe(Context& ctx, ConnId conn, const Subscribe& subscribe) {
  const auto part = state_.partitions.find(subscribe.partition);
  if (part == state_.partitions.end()) {
    close_bad(ctx, conn, "Subscribe to partition " + std::to_string(subscribe.partition) + " that this node does not lead");
    return;
  }
  const std::pair<ConnId, uint32_t> key{conn, subscribe.partition};
  if (state_.subscriptions.count(key) == 0 && state_.subscriptions.size() >= kSubscriptionsMax) {
    close_bad(ctx, conn, "over kSubscriptionsMax subscriptions");
    return;
  }
  Subscription& sub = state_.subscriptions[key];  // a second Subscribe replaces the first
  sub.next_offset = std::max<uint64_t>(subscribe.from_offset, 1);
  // It is caught up once it has every committed record; from then on every commit sends it
  // the new records.
  sub.caught_up = sub.next_offset >= part->second.committed_next_offset;
  if (!sub.caught_up) catch_up(ctx);
}

void QueueNode::catch_up(Context& ctx) {
  bool more = false;
  for (auto& [key, sub] : state_.subscriptions) {
    if (sub.caught_up) continue;
    const uint32_t partition = key.second;
    // Only committed records: the open batch's rows are visible to this connection, but a crash
    // could still take them back.
    const uint64_t end = state_.partitions.at(partition).committed_next_offset;
    sqlite3_stmt* read = read_log_.get();
    bind_int(read, 1, static_cast<int64_t>(partition));
    bind_int(read, 2, static_cast<int64_t>(sub.next_offset));
    bind_int(read, 3, static_cast<int64_t>(end));
    Records frame{partition, {}};
    size_t frame_bytes = 0;
    size_t frames = 0;
    int row = 0;
    while (frames < kCatchUpFramesPerTurn && (row = next_row(read)) == 1) {
      RecordAt record;
      record.offset = static_cast<uint64_t>(sqlite3_column_int64(read, 0));
      const auto* data = static_cast<const uint8_t*>(sqlite3_column_blob(read, 1));
      const ByteView blob(data, static_cast<size_t>(sqlite3_column_bytes(read, 1)));
      // Our own log, written by this code: an entry that does not decode is corruption.
      MSGSIM_ASSERT(decode_entry(blob, record.entry), "queue: undecodable log record at offset " +
                                                          std::to_string(record.offset));
      const size_t bytes = entry_bytes_max(record.entry) + 10;
      if (frame.records.size() == kEntriesPerFrameMax || frame_bytes + bytes > kFrameBytesBudget) {
        sub.next_offset = frame.records.back().offset + 1;
        ctx.send(key.first, encode(Frame{std::move(frame)}));
        frame = Records{partition, {}};
        frame_bytes = 0;
        frames++;
      }
      frame.records.push_back(std::move(record));
      frame_bytes += bytes;
    }
    sqlite3_reset(read);
    if (row < 0) {
      halt(ctx, "reading partition " + std::to_string(partition));
      return;
    }
    if (!frame.records.empty()) {
      // A record read but not yet sent (the turn's frames ran out) is read again next turn.
      if (frames < kCatchUpFramesPerTurn) {
        sub.next_offset = frame.records.back().offset + 1;
        ctx.send(key.first, encode(Frame{std::move(frame)}));
      }
    }
    if (row == 0 && frames < kCatchUpFramesPerTurn) {
      sub.next_offset = std::max(sub.next_offset, end);
      sub.caught_up = true;
    } else {
      more = true;
    }
  }
  if (more && !state_.catch_up_armed) {
    state_.catch_up_armed = true;
    ctx.set_timer(kCatchUpStepNs, kCatchUpTag);
  }
}

void QueueNode::on_disconnect(Context&, ConnId conn, DisconnectReason) {
  for (auto it = state_.subscriptions.lower_bound({conn, 0}); it != state_.subscriptions.end() && it->first.first == conn;)
    it = state_.subscriptions.erase(it);
  invariants();
}

void QueueNode::on_timer(Context& ctx, uint64_t tag) {
  if (state_.halted) return;
  if (tag == kCatchUpTag) {
    state_.catch_up_armed = false;
    catch_up(ctx);
  } else if (tag == kCommitTag) {
    state_.commit_armed = false;
    commit_batch(ctx);
  } else if ((tag & ~uint64_t{UINT32_MAX}) == kFlushTag) {
    const auto partition = static_cast<uint32_t>(tag & UINT32_MAX);
    state_.partitions.at(partition).flush_armed = false;
    flush(ctx, partition);
  } else {
    MSGSIM_UNREACHABLE("queue: unknown timer tag " + std::to_string(tag));
  }
  invariants();
}

std::string QueueNode::describe() const {
  std::string out = "queue partitions=" + std::to_string(state_.partitions.size()) +
                    " conversations=" + std::to_string(state_.conversations.size()) +
                    " subscriptions=" + std::to_string(state_.subscriptions.size()) +
                    " accepted=" + std::to_string(state_.accepted) + " rejected=" + std::to_string(state_.rejected) +
                    " duplicates=" + std::to_string(state_.duplicates) +
                    (state_.batch_open ? " batch=" + std::to_string(state_.replies.size()) : std::string()) +
                    (state_.halted ? " HALTED" : "");
  for (const auto& [p, part] : state_.partitions) {
    out += " p" + std::to_string(p) + ":next=" + std::to_string(part.next_offset);
    if (part.committed_next_offset != part.next_offset) out += ",committed=" + std::to_string(part.committed_next_offset);
  }
  return out;
}

void QueueNode::invariants() const {
  MSGSIM_ASSERT_LE(state_.subscriptions.size(), kSubscriptionsMax);
  MSGSIM_ASSERT_LE(state_.conversations.size(), kConversationsMax);
  MSGSIM_ASSERT_LE(state_.replies.size(), kBatchMax);
  if (state_.halted) return;  // memory may be ahead of the disk; nothing is answered any more
  MSGSIM_ASSERT(state_.batch_open || (state_.replies.empty() && state_.committing.empty() && state_.dirty_convs.empty()),
                "answers or records waiting without an open batch");
  MSGSIM_ASSERT(!state_.batch_open || state_.commit_armed, "an open batch without a commit timer");
  for (const auto& [p, part] : state_.partitions) {
    MSGSIM_ASSERT_EQ(config_.topology.queue_of(p), self_);
    MSGSIM_ASSERT_GE(part.committed_next_offset, uint64_t{1});
    MSGSIM_ASSERT_LE(part.committed_next_offset, part.next_offset);
    MSGSIM_ASSERT_LE(part.unflushed.size(), kEntriesPerFrameMax);
    MSGSIM_ASSERT(part.unflushed.empty() || part.flush_armed, "unsent records without a flush timer");
    if (!part.unflushed.empty()) MSGSIM_ASSERT_EQ(part.unflushed.back().offset + 1, part.committed_next_offset);
    if (!state_.batch_open) MSGSIM_ASSERT_EQ(part.committed_next_offset, part.next_offset);
  }
  for (const auto& [key, sub] : state_.subscriptions) {
    MSGSIM_ASSERT(state_.partitions.count(key.second) == 1, "a subscription to a partition not led here");
    if (sub.caught_up) {
      const Partition& part = state_.partitions.at(key.second);
      MSGSIM_ASSERT_GE(sub.next_offset, part.unflushed.empty() ? part.committed_next_offset : part.unflushed.front().offset);
    }
  }
}

}  // namespace msgsim::chat
