#include "impl/chat/queue.h"

#include <sqlite3.h>

#include <algorithm>
#include <bit>

#include "impl/base/hash.h"


namespace msgsim::chat {

namespace {

using fast_sql::bind_int;
using fast_sql::bind_text;
using fast_sql::bind_blob;
using fast_sql::next_row;
using fast_sql::run;

constexpr uint64_t kCommitTag = 1;
constexpr uint64_t kCatchUpTag = 2;
constexpr uint64_t kHeartbeatTag = 3;
constexpr uint64_t kFlushTag = uint64_t{1} << 32;  // | partition
constexpr uint64_t kPeerTag = uint64_t{2} << 32;   // | follower node: reconnect to it
constexpr uint32_t kNoPartition = UINT32_MAX;

// A log row's records (queue.h "Log batches"): each is its epoch (8 bytes), its entry's size (4)
// and the entry, little-endian.
constexpr size_t kLogRecordHeaderBytes = 12;

void append_log_record(Bytes& out, uint64_t epoch, ByteView entry) {
  MSGSIM_ASSERT(entry.size() <= UINT32_MAX, "queue: a log entry of " + std::to_string(entry.size()) + " bytes");
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(epoch >> (8 * i)));
  const auto size = static_cast<uint32_t>(entry.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(size >> (8 * i)));
  out.insert(out.end(), entry.begin(), entry.end());
}

// Reads the record at `pos` and moves `pos` past it; false if the bytes there are not one.
bool next_log_record(ByteView records, size_t& pos, uint64_t& epoch, ByteView& entry) {
  if (records.size() - pos < kLogRecordHeaderBytes) return false;
  epoch = 0;
  for (int i = 7; i >= 0; --i) epoch = (epoch << 8) | records[pos + static_cast<size_t>(i)];
  uint32_t size = 0;
  for (int i = 3; i >= 0; --i) size = (size << 8) | records[pos + 8 + static_cast<size_t>(i)];
  pos += kLogRecordHeaderBytes;
  if (records.size() - pos < size) return false;
  entry = records.subspan(pos, size);
  pos += size;
  return true;
}

ByteView column_blob(sqlite3_stmt* stmt, int column) {
  const auto* data = static_cast<const uint8_t*>(sqlite3_column_blob(stmt, column));
  return ByteView(data, static_cast<size_t>(sqlite3_column_bytes(stmt, column)));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// MsgIdFilter

bool MsgIdFilter::may_contain(uint64_t hash) const {
  if (saturated_) return true;
  if (slots_.empty()) return false;
  const uint64_t key = stored(hash);
  const size_t mask = slots_.size() - 1;
  for (size_t i = home(key);; i = (i + 1) & mask) {
    if (slots_[i] == key) return true;
    if (slots_[i] == 0) return false;
  }
}

void MsgIdFilter::add(uint64_t hash) {
  if (saturated_) return;
  if ((used_ + 1) * 2 > slots_.size()) {
    if (used_ + 1 > kHashesMax) {
      // Over the bound: answer "maybe" from now on, and give the memory back.
      saturated_ = true;
      std::vector<uint64_t>().swap(slots_);
      return;
    }
    grow();
  }
  const uint64_t key = stored(hash);
  const size_t mask = slots_.size() - 1;
  for (size_t i = home(key);; i = (i + 1) & mask) {
    if (slots_[i] == key) return;
    if (slots_[i] == 0) {
      slots_[i] = key;
      used_++;
      return;
    }
  }
}

void MsgIdFilter::grow() {
  std::vector<uint64_t> old = std::move(slots_);
  slots_.assign(old.empty() ? 1024 : old.size() * 2, 0);
  shift_ = 64 - static_cast<unsigned>(std::countr_zero(slots_.size()));
  const size_t mask = slots_.size() - 1;
  for (const uint64_t key : old) {
    if (key == 0) continue;
    size_t i = home(key);
    while (slots_[i] != 0) i = (i + 1) & mask;
    slots_[i] = key;
  }
}

// ---------------------------------------------------------------------------------------------
// QueueNode

QueueNode::QueueNode(const ChatConfig& config) : config_(config) {}

uint64_t QueueNode::next_offset(uint32_t partition) const {
  const auto it = state_.partitions.find(partition);
  return it == state_.partitions.end() ? 0 : it->second.next_offset;
}

uint64_t QueueNode::high_watermark(uint32_t partition) const {
  const auto it = state_.partitions.find(partition);
  return it == state_.partitions.end() ? 0 : it->second.committed_next_offset;
}

uint64_t QueueNode::log_start(uint32_t partition) const {
  const auto it = state_.partitions.find(partition);
  return it == state_.partitions.end() ? 0 : it->second.log_start;
}

bool QueueNode::leads(uint32_t partition) const {
  const auto it = state_.partitions.find(partition);
  return it != state_.partitions.end() && it->second.leader;
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
      // The log, one row per batch of a partition's records (queue.h "Log batches"). A rowid
      // table appended in write order with (partition, base_offset) as a unique index, rather
      // than WITHOUT ROWID keyed by it: the partitions' rows interleave, so keyed by partition
      // every row went to its partition's tail leaf, which split every few inserts (1 KiB
      // pages); appended, the bytes go to the table's end and only ~10-byte index cells to the
      // tails (BM_MessagePath, bench/README.md).
      "CREATE TABLE IF NOT EXISTS log_batches (id INTEGER PRIMARY KEY, partition INTEGER NOT NULL,"
      " base_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL, records BLOB NOT NULL,"
      " UNIQUE (partition, base_offset));"
      "CREATE TABLE IF NOT EXISTS conversations (conv TEXT PRIMARY KEY, next_seq INTEGER NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE IF NOT EXISTS members (conv TEXT NOT NULL, user TEXT NOT NULL,"
      " PRIMARY KEY (conv, user)) WITHOUT ROWID;"
      // seq > 0: accepted with that seq; seq = 0: rejected for `reason`.
      "CREATE TABLE IF NOT EXISTS produced (msg_id TEXT PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL,"
      " reason TEXT NOT NULL) WITHOUT ROWID;"
      // Replication: the high watermark as last written (it may lag), and the highest leader
      // epoch this replica has seen, which fences older leaders across restarts.
      "CREATE TABLE IF NOT EXISTS high_watermarks (partition INTEGER PRIMARY KEY, hw INTEGER NOT NULL);"
      "CREATE TABLE IF NOT EXISTS epochs (partition INTEGER PRIMARY KEY, epoch INTEGER NOT NULL);"
      // `conversations` reflects every record of the partition below `offset` (queue.h "Next seqs").
      "CREATE TABLE IF NOT EXISTS seqs_cover (partition INTEGER PRIMARY KEY, offset INTEGER NOT NULL);"
      // The controller state (every queue node keeps the newest it has), and this node's part in
      // electing the controller: its term, its vote in that term, the term and version of
      // `control` (one row, id 0).
      "CREATE TABLE IF NOT EXISTS control (partition INTEGER PRIMARY KEY, epoch INTEGER NOT NULL,"
      " leader INTEGER NOT NULL, isr_mask INTEGER NOT NULL);"
      "CREATE TABLE IF NOT EXISTS controller (id INTEGER PRIMARY KEY, term INTEGER NOT NULL, voted_for INTEGER NOT NULL,"
      " state_term INTEGER NOT NULL, version INTEGER NOT NULL);");
  MSGSIM_ASSERT(schema.ok(), schema.ok() ? std::string() : schema.error().message);
  find_msg_ = must_prepare(db_, "SELECT conv, seq, reason FROM produced WHERE msg_id = ?");
  insert_msg_ = must_prepare(db_, "INSERT OR REPLACE INTO produced (msg_id, conv, seq, reason) VALUES (?, ?, ?, ?)");
  insert_log_ = must_prepare(db_,
      "INSERT INTO log_batches (partition, base_offset, last_offset, records) VALUES (?, ?, ?, ?)");
  upsert_conv_ = must_prepare(db_,
      "INSERT INTO conversations (conv, next_seq) VALUES (?, ?) ON CONFLICT (conv) DO UPDATE SET next_seq = excluded.next_seq");
  insert_member_ = must_prepare(db_, "INSERT INTO members (conv, user) VALUES (?, ?)");
  delete_member_ = must_prepare(db_, "DELETE FROM members WHERE conv = ? AND user = ?");
  // From the row holding `from` (the last one starting at or before it), or the first row.
  read_log_ = must_prepare(db_,
      "SELECT base_offset, last_offset, records FROM log_batches WHERE partition = ?1 AND base_offset >="
      " coalesce((SELECT max(base_offset) FROM log_batches WHERE partition = ?1 AND base_offset <= ?2), 0)"
      " AND base_offset < ?3 ORDER BY base_offset");
  // The row that would hold `offset`.
  read_epoch_ = must_prepare(db_,
      "SELECT base_offset, last_offset, records FROM log_batches WHERE partition = ? AND base_offset <= ?"
      " ORDER BY base_offset DESC LIMIT 1");
  upsert_hw_ = must_prepare(db_,
      "INSERT INTO high_watermarks (partition, hw) VALUES (?, ?) ON CONFLICT (partition) DO UPDATE SET hw = excluded.hw");
  upsert_seqs_cover_ = must_prepare(db_,
      "INSERT INTO seqs_cover (partition, offset) VALUES (?, ?) ON CONFLICT (partition) DO UPDATE SET offset = excluded.offset");
  upsert_epoch_ = must_prepare(db_,
      "INSERT INTO epochs (partition, epoch) VALUES (?, ?) ON CONFLICT (partition) DO UPDATE SET epoch = excluded.epoch");
  delete_msg_ = must_prepare(db_, "DELETE FROM produced WHERE msg_id = ?");
  delete_conv_ = must_prepare(db_, "DELETE FROM conversations WHERE conv = ?");
  truncate_log_ = must_prepare(db_, "DELETE FROM log_batches WHERE partition = ? AND base_offset >= ?");
  // Whole rows below the bound only.
  delete_log_range_ = must_prepare(db_,
      "DELETE FROM log_batches WHERE partition = ?1 AND base_offset < ?2 AND last_offset < ?2");
  rewrite_log_batch_ = must_prepare(db_,
      "UPDATE log_batches SET last_offset = ?, records = ? WHERE partition = ? AND base_offset = ?");
  begin_ = must_prepare(db_, "BEGIN");
  commit_ = must_prepare(db_, "COMMIT");
  rollback_ = must_prepare(db_, "ROLLBACK");
}

bool QueueNode::recover(Context& ctx) {
  const ChatTopology& t = config_.topology;
  for (uint32_t p = 0; p < t.partitions; ++p) {
    if (!t.is_replica(p, ctx.self())) continue;
    // With copies, a replica leads only once the controller says so (on_start asks).
    state_.partitions[p].leader = t.replicas() == 1;
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
    sql::Statement stmt = must_prepare(db_, "SELECT msg_id FROM produced");
    while (next_row(stmt.get()) == 1) state_.produced_ids.add(hash_string(stmt.column_text(0)));
  }
  {
    sql::Statement stmt = must_prepare(db_, "SELECT partition, epoch FROM epochs");
    while (next_row(stmt.get()) == 1) {
      const auto it = state_.partitions.find(static_cast<uint32_t>(stmt.column_int64(0)));
      if (it != state_.partitions.end()) it->second.epoch = static_cast<uint64_t>(stmt.column_int64(1));
    }
  }
  {
    sql::Statement stmt = must_prepare(db_, "SELECT partition, min(base_offset), max(last_offset) FROM log_batches GROUP BY partition");
    while (next_row(stmt.get()) == 1) {
      const auto partition = static_cast<uint32_t>(stmt.column_int64(0));
      const auto it = state_.partitions.find(partition);
      // A log of a partition this node no longer holds stays on disk, unused.
      if (it != state_.partitions.end()) {
        it->second.log_start = static_cast<uint64_t>(stmt.column_int64(1));  // retention deleted the rows before
        it->second.next_offset = static_cast<uint64_t>(stmt.column_int64(2)) + 1;
        it->second.log_end = it->second.next_offset;
      }
    }
  }
  // The next seqs on disk lag the log: replay the records they do not reflect yet.
  {
    std::map<uint32_t, uint64_t> covered;
    sql::Statement stmt = must_prepare(db_, "SELECT partition, offset FROM seqs_cover");
    while (next_row(stmt.get()) == 1)
      covered[static_cast<uint32_t>(stmt.column_int64(0))] = static_cast<uint64_t>(stmt.column_int64(1));
    std::vector<ReplicaRecord> records;
    for (auto& [p, part] : state_.partitions) {
      const auto it = covered.find(p);
      part.seqs_cover = it == covered.end() ? 1 : it->second;
      // Retention deletes only below the cover, so every record to replay is still there.
      MSGSIM_ASSERT(part.seqs_cover >= part.log_start || part.log_start == 1,
                    "queue: partition " + std::to_string(p) + " deleted records its next seqs do not reflect");
      for (uint64_t from = part.seqs_cover; from < part.next_offset; from = records.back().offset + 1) {
        records.clear();
        if (!read_records(p, from, part.next_offset, records) || records.empty()) {
          halt(ctx, "replaying partition " + std::to_string(p) + " from offset " + std::to_string(from));
          return false;
        }
        for (const ReplicaRecord& r : records) {
          state_.conversations[r.entry.conv].next_seq = r.entry.seq + 1;
          state_.dirty_convs.insert(r.entry.conv);
        }
      }
    }
  }
  // What the replay learned goes to disk before anything else: the next write of `seqs_cover`
  // moves every partition's cover past the replayed records, so a conversation left out of that
  // batch would come back from the next restart with the stale next seq of its row, and its next
  // message would get a seq already given (ci-nemesis seed 60: a quiet conversation across two
  // restarts of a queue node). Writing here also keeps dirty_convs within kDirtyConvsMax.
  if (!state_.dirty_convs.empty()) {
    if (!run(begin_.get())) {
      halt(ctx, "opening the transaction of the replayed next seqs");
      return false;
    }
    if (!write_seqs(ctx)) return false;
    if (!run(commit_.get())) {
      halt(ctx, "committing the replayed next seqs");
      return false;
    }
  }
  // With one copy, whatever is synced is committed. With more, only what the HW covered when it
  // was last written: the records above it wait for the followers again.
  for (auto& [p, part] : state_.partitions) {
    if (!replicated()) part.committed_next_offset = part.log_end;
  }
  {
    sql::Statement stmt = must_prepare(db_, "SELECT partition, hw FROM high_watermarks");
    while (next_row(stmt.get()) == 1) {
      const auto it = state_.partitions.find(static_cast<uint32_t>(stmt.column_int64(0)));
      if (it == state_.partitions.end() || !replicated()) continue;
      it->second.committed_next_offset = std::min(it->second.log_end, static_cast<uint64_t>(stmt.column_int64(1)));
    }
  }
  return true;
}

void QueueNode::on_start(Context& ctx) {
  self_ = ctx.self();
  open_database(ctx);
  if (!make_recovered_state_durable(db_)) {
    halt(ctx, "syncing the recovered log");
    return;
  }
  if (!recover(ctx)) return;
  ctx.log(LogLevel::info, "queue: recovered " + describe());
  if (replicated()) {
    load_controller_state();
    // A node that has never known a controller starts its election clock as if the last one
    // went silent kControllerDeadNs ago: the first queue node stands at once, the next one a
    // heartbeat later, and so on. After a restart it first listens for a full timeout.
    state_.ctl.heard_ns = ctx.now_ns() - (state_.ctl.term == 0 ? kControllerDeadNs : 0);
    heartbeat(ctx);
  }
  invariants();
}

void QueueNode::close_bad(Context& ctx, ConnId conn, const std::string& why) {
  ctx.log(LogLevel::warn, "queue: closing a connection: " + why);
  on_disconnect(ctx, conn, DisconnectReason::closed_by_peer);
  for (auto it = state_.subscriptions.lower_bound({conn, 0}); it != state_.subscriptions.end() && it->first.first == conn;)
    it = state_.subscriptions.erase(it);
  ctx.close(conn);
}

void QueueNode::halt(Context& ctx, const std::string& what) {
  // A write that did not commit may or may not be on disk: the only safe answer is none. The
  // node stops answering and stops itself (fail-stop, ctx.exit); its supervisor restarts it,
  // and the restart recovers from what the disk kept.
  ctx.log(LogLevel::error, "queue: halting: " + what + ": " + sqlite3_errmsg(db_));
  if (!sqlite3_get_autocommit(db_)) run(rollback_.get());
  open_log_.clear();  // the rolled-back transaction's
  state_.halted = true;
  ctx.exit();
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
  ctx.charge_cpu(config_.cpu_costs.frame_cost_ns(CostRole::queue, *decoded));
  if (auto* produce = std::get_if<Produce>(&*decoded)) {
    on_produce(ctx, conn, *produce);
  } else if (const auto* subscribe = std::get_if<Subscribe>(&*decoded)) {
    on_subscribe(ctx, conn, *subscribe);
  } else if (auto* replicate = std::get_if<Replicate>(&*decoded)) {
    on_replicate(ctx, conn, *replicate);
  } else if (const auto* ack = std::get_if<ReplicaAck>(&*decoded)) {
    on_replica_ack(ctx, conn, *ack);
  } else if (const auto* commit = std::get_if<OffsetCommit>(&*decoded)) {
    on_offset_commit(ctx, conn, *commit);
  } else if (std::holds_alternative<ControllerVote>(*decoded) || std::holds_alternative<ControllerVoteAck>(*decoded) ||
             std::holds_alternative<ControllerSync>(*decoded) || std::holds_alternative<ControllerSyncAck>(*decoded)) {
    // Between queue nodes, on either end of a connection: the peer is who opened it (accepted)
    // or whom this node opened it to (peers).
    NodeId from = kNoNode;
    if (const auto it = accepted_from_.find(conn); it != accepted_from_.end()) from = it->second;
    for (const auto& [node, c] : state_.peers)
      if (c == conn) from = node;
    const auto& queues = config_.topology.queues;
    if (!replicated() || from == self_ || std::find(queues.begin(), queues.end(), from) == queues.end()) {
      close_bad(ctx, conn, std::string(frame_name(*decoded)) + " from a node that is no other queue");
      return;
    }
    if (const auto* vote = std::get_if<ControllerVote>(&*decoded)) on_controller_vote(ctx, conn, from, *vote);
    if (const auto* ack = std::get_if<ControllerVoteAck>(&*decoded)) on_controller_vote_ack(ctx, from, *ack);
    if (const auto* sync = std::get_if<ControllerSync>(&*decoded)) on_controller_sync(ctx, conn, from, *sync);
    if (const auto* ack = std::get_if<ControllerSyncAck>(&*decoded)) on_controller_sync_ack(ctx, from, *ack);
  } else if (std::holds_alternative<QueueHeartbeat>(*decoded) && state_.ctl.role == CtlRole::controller) {
    const auto from = accepted_from_.find(conn);
    const auto& queues = config_.topology.queues;
    if (from == accepted_from_.end() || std::find(queues.begin(), queues.end(), from->second) == queues.end()) {
      close_bad(ctx, conn, "QueueHeartbeat from a node that is no queue");
      return;
    }
    on_heartbeat(ctx, conn, from->second);
  } else if (const auto* alter = std::get_if<AlterIsr>(&*decoded); alter != nullptr && state_.ctl.role == CtlRole::controller) {
    const auto from = state_.heartbeat_conns.find(conn);
    if (from == state_.heartbeat_conns.end()) {
      close_bad(ctx, conn, "AlterIsr before any QueueHeartbeat");
      return;
    }
    on_alter_isr(ctx, from->second, *alter);
  } else if (const auto* states = std::get_if<PartitionStates>(&*decoded); states != nullptr && conn == state_.to_controller) {
    for (const PartitionState& state : states->states) apply_state(ctx, state);
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

void QueueNode::reply(Context& ctx, ConnId conn, Bytes frame, uint32_t partition, uint64_t until) {
  // While a batch is open, every answer waits for its commit: even a duplicate's answer may
  // name a seq that only the open batch holds.
  if (state_.batch_open) {
    state_.replies.push_back(PendingReply{conn, partition, until, std::move(frame)});
    return;
  }
  if (partition != kNoPartition) {
    Partition& part = state_.partitions.at(partition);
    if (!part.leader) return;  // stepped down meanwhile: the producer retries with the new leader
    // Bug::leader_ack_before_replication: the answer goes out once the leader synced, whether
    // or not the followers have the record.
    if (part.committed_next_offset < until && !config_.bugs.on(Bug::leader_ack_before_replication)) {
      part.waiting.push_back(PendingReply{conn, partition, until, std::move(frame)});
      return;
    }
  }
  ctx.send(conn, std::move(frame));
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
    ctx.set_timer(config_.tuning.queue_commit_window_ns, kCommitTag);
  }
  return true;
}

bool QueueNode::write_seqs(Context& ctx) {
  for (const std::string& conv : state_.dirty_convs) {
    const auto it = state_.conversations.find(conv);
    // A truncation may have undone a conversation's every record: then its row goes.
    sqlite3_stmt* write = it == state_.conversations.end() ? delete_conv_.get() : upsert_conv_.get();
    bind_text(write, 1, conv);
    if (it != state_.conversations.end()) bind_int(write, 2, static_cast<int64_t>(it->second.next_seq));
    if (!run(write)) {
      halt(ctx, "writing the next seq of " + conv);
      return false;
    }
  }
  state_.dirty_convs.clear();
  // Every record below next_offset, the open batch's too, is reflected now (same transaction).
  for (auto& [p, part] : state_.partitions) {
    sqlite3_stmt* write = upsert_seqs_cover_.get();
    bind_int(write, 1, static_cast<int64_t>(p));
    bind_int(write, 2, static_cast<int64_t>(part.next_offset));
    if (!run(write)) {
      halt(ctx, "writing where the next seqs of partition " + std::to_string(p) + " stand");
      return false;
    }
    part.seqs_cover = part.next_offset;
  }
  state_.batches_since_seqs = 0;
  return true;
}

void QueueNode::commit_batch(Context& ctx) {
  if (!state_.batch_open) return;
  // The batch's records, one row per partition, in the transaction that commits their offsets.
  if (!write_log_batch(kNoPartition)) {
    halt(ctx, "writing the log rows of a batch");
    return;
  }
  if (++state_.batches_since_seqs >= kSeqsEveryBatches && !write_seqs(ctx)) return;
  for (auto& [p, part] : state_.partitions) {
    if (!part.hw_dirty) continue;
    sqlite3_stmt* write = upsert_hw_.get();
    bind_int(write, 1, static_cast<int64_t>(p));
    bind_int(write, 2, static_cast<int64_t>(part.committed_next_offset));
    if (!run(write)) {
      halt(ctx, "writing the high watermark of partition " + std::to_string(p));
      return;
    }
    part.hw_dirty = false;
  }
  if (!retain(ctx)) return;
  if (!run(commit_.get())) {
    halt(ctx, "committing a batch of " + std::to_string(state_.replies.size()) + " answers");
    return;
  }
  // Durable (synced, unless the planted bug is on): the records count as this replica's log,
  // and wait for the followers (if any) before producers and subscribers hear of them.
  state_.batch_open = false;
  std::set<uint32_t> grown;
  for (auto& [p, part] : state_.partitions) {
    if (part.log_end != part.next_offset) grown.insert(p);
    part.log_end = part.next_offset;
  }
  for (auto& [partition, record] : state_.committing) {
    Partition& part = state_.partitions.at(partition);
    MSGSIM_ASSERT(part.uncommitted.empty() ? record.offset == part.committed_next_offset
                                           : record.offset == part.uncommitted.back().offset + 1,
                  "queue: a committed record out of order in partition " + std::to_string(partition));
    part.uncommitted.push_back(std::move(record));
  }
  state_.committing.clear();
  std::vector<PendingReply> replies = std::move(state_.replies);
  state_.replies.clear();
  for (PendingReply& r : replies) reply(ctx, r.conn, std::move(r.frame), r.partition, r.until);
  for (uint32_t p : grown) {
    if (!state_.partitions.at(p).leader) continue;
    advance_hw(ctx, p);
    replicate_all(ctx, p);
  }
}

bool QueueNode::retain(Context& ctx) {
  for (auto& [p, part] : state_.partitions) {
    if (part.leader) {
      // Every replica, in the ISR or not, and the consumer must have it; and it is committed.
      uint64_t floor = std::min(part.consumed_end, part.committed_next_offset);
      for (const auto& [node, f] : part.followers) floor = std::min(floor, f.match_end);
      part.retain_floor = std::max(part.retain_floor, floor);
    }
    if (part.retain_floor <= 1 || part.log_end <= 1) continue;
    // The record before the floor stays (the leader's prev_offset for a follower at the floor),
    // and so does the last synced one (recovery reads max(offset)).
    if (part.committed_next_offset <= 1) continue;
    // The record at the new log start is committed too, so no truncation ever reaches it.
    const uint64_t below = std::min({part.retain_floor - 1, part.committed_next_offset - 1, part.seqs_cover,
                                     part.log_end - 1, part.log_start + kRetainPerBatchMax});
    if (below <= part.log_start) continue;
    // Whole rows below `below` go; a row holding `below` - 1 stays until a later batch.
    sqlite3_stmt* del = delete_log_range_.get();
    bind_int(del, 1, static_cast<int64_t>(p));
    bind_int(del, 2, static_cast<int64_t>(below));
    if (!run(del)) {
      halt(ctx, "deleting records below offset " + std::to_string(below) + " of partition " + std::to_string(p));
      return false;
    }
    part.log_start = below;
  }
  return true;
}

void QueueNode::on_offset_commit(Context& ctx, ConnId conn, const OffsetCommit& commit) {
  const auto part = state_.partitions.find(commit.partition);
  const auto from = accepted_from_.find(conn);
  if (part == state_.partitions.end() || from == accepted_from_.end() ||
      config_.topology.storage_of(commit.partition) != from->second) {
    close_bad(ctx, conn, "OffsetCommit of partition " + std::to_string(commit.partition) +
                             " from a node that is not its consumer here");
    return;
  }
  // A hint: it only ever raises what retention may delete, and the HW and the replicas bound it.
  const uint64_t end = commit.offset == UINT64_MAX ? UINT64_MAX : commit.offset + 1;
  part->second.consumed_end = std::max(part->second.consumed_end, end);
}

void QueueNode::on_produce(Context& ctx, ConnId conn, Produce& produce) {
  Entry& entry = produce.entry;
  if (entry.msg_id.empty() || entry.conv.empty() || entry.from_user.empty()) {
    close_bad(ctx, conn, "Produce without msg_id, conv or from_user");
    return;
  }
  const uint32_t partition = config_.topology.partition_of(entry.conv);
  const auto part = state_.partitions.find(partition);
  if (part != state_.partitions.end() && !part->second.leader) {
    ctx.send(conn, encode(Frame{NotLeader{produce.request_id, partition, part->second.epoch, part->second.leader_node}}));
    return;
  }
  if (part == state_.partitions.end()) {
    // Misrouted by the producer: not an answer about the message, so nothing is recorded.
    ctx.log(LogLevel::warn, "queue: Produce for " + entry.conv + " of partition " + std::to_string(partition) +
                                " that this node does not lead");
    reply(ctx, conn, encode(Frame{ProduceRejected{produce.request_id, entry.msg_id, entry.conv, "not the partition leader"}}));
    return;
  }
  if (part->second.uncommitted.size() >= kUncommittedMax || part->second.waiting.size() >= kWaitingMax) {
    // The followers lag far behind: no answer, so the producer retries later.
    ctx.log(LogLevel::warn, "queue: partition " + std::to_string(partition) + " is full, dropping a Produce");
    return;
  }
  // Group commit: this produce's writes join the open batch (a transaction), and its answer
  // waits for the batch's commit. Reads inside the transaction see the batch's own writes, so
  // a retry within the batch is recognised like any other.
  if (!open_batch(ctx)) return;

  // A retry gets the answer the first produce got. The filter says for sure when the msg_id is
  // new, and then SQLite is not asked.
  const uint64_t msg_hash = hash_string(entry.msg_id);
  sqlite3_stmt* find = find_msg_.get();
  int found = 0;
  if (state_.produced_ids.may_contain(msg_hash)) {
    bind_text(find, 1, entry.msg_id);
    found = next_row(find);
  }
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
      // The first answer may name a record the followers do not have yet: wait for all of it.
      const uint64_t until = part->second.next_offset;
      if (seq > 0) {
        reply(ctx, conn, encode(Frame{Produced{produce.request_id, std::move(entry.msg_id), std::move(conv), seq}}),
              partition, until);
      } else {
        reply(ctx, conn, encode(Frame{ProduceRejected{produce.request_id, std::move(entry.msg_id), std::move(conv),
                                                      std::move(reason)}}), partition, until);
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
    // Decided against state that may hold unreplicated records: answered once they are safe.
    reply(ctx, conn, encode(Frame{ProduceRejected{produce.request_id, entry.msg_id, entry.conv, std::move(reason)}}),
          partition, part->second.next_offset);
    close_batch_if_full(ctx);
    return;
  }

  const auto conv_it = state_.conversations.find(entry.conv);
  if (reason.empty() && produce.members_digest != 0 && entry.kind == EntryKind::message &&
      conv_it != state_.conversations.end() && starts_with(entry.conv, "g:")) {
    // The E2EE ordering rule (queue.h): sealed for the members before this seq, or sealed again.
    Conversation& conversation = conv_it->second;
    if (conversation.members_digest == 0) conversation.members_digest = members_digest(encode_member_list(conversation.members));
    if (conversation.members_digest != produce.members_digest) {
      state_.stale++;
      // Like a rejection, decided against state that may hold unreplicated records.
      reply(ctx, conn, encode(Frame{ProduceStale{produce.request_id, entry.msg_id, entry.conv,
                                                 encode_member_list(conversation.members)}}),
            partition, part->second.next_offset);
      close_batch_if_full(ctx);
      return;
    }
  }
  entry.seq = conv_it == state_.conversations.end() ? 1 : conv_it->second.next_seq;
  const uint64_t offset = part->second.next_offset;
  if (!apply_record(ctx, partition, offset, part->second.epoch, entry)) return;
  state_.accepted++;
  if (append_then_refuse) {
    reply(ctx, conn, encode(Frame{ProduceRejected{produce.request_id, entry.msg_id, entry.conv, std::move(reason)}}),
          partition, offset + 1);
  } else {
    reply(ctx, conn, encode(Frame{Produced{produce.request_id, entry.msg_id, entry.conv, entry.seq}}), partition,
          offset + 1);
  }
  state_.committing.emplace_back(partition, RecordAt{offset, std::move(entry)});
  close_batch_if_full(ctx);
}

void QueueNode::close_batch_if_full(Context& ctx) {
  if (state_.replies.size() >= kBatchMax) commit_batch(ctx);
}

bool QueueNode::apply_record(Context& ctx, uint32_t partition, uint64_t offset, uint64_t epoch, const Entry& entry) {
  Bytes& blob = scratch_;
  encode_entry(entry, blob);
  const bool group = starts_with(entry.conv, "g:");
  bool ok = true;
  {
    // Into the partition's open log batch, written as one row at the commit (queue.h "Log batches").
    LogBatch& batch = open_log_[partition];
    if (!batch.epochs.empty() &&
        (batch.base_offset + batch.epochs.size() != offset ||
         batch.records.size() + kLogRecordHeaderBytes + blob.size() > kLogBatchBytesMax)) {
      ok = write_log_batch(partition);
    }
    if (ok) {
      if (batch.epochs.empty()) batch.base_offset = offset;
      append_log_record(batch.records, epoch, blob);
      batch.epochs.push_back(epoch);
    }
  }
  // The conversation's next seq is written later (queue.h "Next seqs"); a restart replays it.
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
  if (ok) state_.produced_ids.add(hash_string(entry.msg_id));
  if (!ok) {
    halt(ctx, "appending " + entry.msg_id + " to partition " + std::to_string(partition));
    return false;
  }
  // Memory follows the batch at once, so later produces of the batch are checked against it;
  // if the batch does not commit, the node halts and a restart recovers from the disk.
  if (state_.conversations.count(entry.conv) == 0 && state_.conversations.size() >= kConversationsMax) {
    halt(ctx, "over kConversationsMax conversations");
    return false;
  }
  Conversation& conversation = state_.conversations[entry.conv];
  conversation.next_seq = entry.seq + 1;
  if (entry.kind == EntryKind::join) conversation.members.insert(entry.member);
  if (entry.kind == EntryKind::leave) conversation.members.erase(entry.member);
  if (entry.kind != EntryKind::message) conversation.members_digest = 0;
  state_.partitions.at(partition).next_offset = offset + 1;
  // Memory and the open transaction agree again: the waiting next seqs may be written now.
  return state_.dirty_convs.size() < kDirtyConvsMax || write_seqs(ctx);
}

bool QueueNode::write_rejected(Context& ctx, const Entry& entry, const std::string& reason) {
  sqlite3_stmt* msg = insert_msg_.get();
  bind_text(msg, 1, entry.msg_id);
  bind_text(msg, 2, entry.conv);
  bind_int(msg, 3, int64_t{0});
  bind_text(msg, 4, reason);
  const bool ok = run(msg);
  if (ok) state_.produced_ids.add(hash_string(entry.msg_id));
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
    ctx.set_timer(config_.tuning.queue_linger_ns, kFlushTag | partition);
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
    close_bad(ctx, conn, "Subscribe to partition " + std::to_string(subscribe.partition) + " that this node does not hold");
    return;
  }
  const std::pair<ConnId, uint32_t> key{conn, subscribe.partition};
  if (state_.subscriptions.count(key) == 0 && state_.subscriptions.size() >= kSubscriptionsMax) {
    close_bad(ctx, conn, "over kSubscriptionsMax subscriptions");
    return;
  }
  Subscription& sub = state_.subscriptions[key];  // a second Subscribe replaces the first
  sub.next_offset = std::max<uint64_t>(subscribe.from_offset, 1);
  if (sub.next_offset < part->second.log_start) {
    // Retention deleted what it asks for, which it said it had stored (queue.h "Retention"):
    // it gets the log from its start.
    ctx.log(LogLevel::warn, "queue: a subscriber of partition " + std::to_string(subscribe.partition) + " asks from offset " +
                                std::to_string(sub.next_offset) + ", below the log start " +
                                std::to_string(part->second.log_start));
  }
  // It is caught up once it has every committed record; from then on every commit sends it
  // the new records.
  // A replica that does not lead keeps the subscription and serves it once it leads.
  sub.caught_up = part->second.leader && sub.next_offset >= part->second.committed_next_offset;
  if (!sub.caught_up) catch_up(ctx);
}

void QueueNode::catch_up(Context& ctx) {
  bool more = false;
  // References, not a structured binding: the scan's lambda captures them, which clang 14 (the
  // fuzz build's compiler) does not allow for structured bindings.
  for (auto& subscription : state_.subscriptions) {
    const auto& key = subscription.first;
    auto& sub = subscription.second;
    if (sub.caught_up || !state_.partitions.at(key.second).leader) continue;
    const uint32_t partition = key.second;
    // Only committed records: the open batch's rows are visible to this connection, but a crash
    // could still take them back.
    const uint64_t end = state_.partitions.at(partition).committed_next_offset;
    Records frame{partition, {}};
    size_t frame_bytes = 0;
    size_t frames = 0;
    // 1: stopped with the turn's frames used up; 0: every record read.
    const int row = scan_log(partition, sub.next_offset, end, [&](uint64_t offset, uint64_t, ByteView blob) {
      RecordAt record;
      record.offset = offset;
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
      return frames < kCatchUpFramesPerTurn;
    });
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

void QueueNode::on_disconnect(Context& ctx, ConnId conn, DisconnectReason) {
  for (auto it = state_.subscriptions.lower_bound({conn, 0}); it != state_.subscriptions.end() && it->first.first == conn;)
    it = state_.subscriptions.erase(it);
  accepted_from_.erase(conn);
  state_.heartbeat_conns.erase(conn);
  if (conn == state_.to_controller) {
    state_.to_controller = kNoConn;  // the next heartbeat reconnects
    state_.to_controller_node = kNoNode;
  }
  for (auto it = state_.peers.begin(); it != state_.peers.end(); ++it) {
    if (it->second != conn) continue;
    // A follower link broke: what was in flight is gone. Reconnect after a pause and probe
    // again; until then the follower's log end is what it last acked.
    const NodeId node = it->first;
    state_.peers.erase(it);
    for (auto& [p, part] : state_.partitions) {
      const auto f = part.followers.find(node);
      if (f != part.followers.end()) f->second.inflight = false;
    }
    if (!state_.halted && state_.peer_retry_armed.insert(node).second) ctx.set_timer(kPeerRetryNs, kPeerTag | node);
    break;
  }
}

ConnId QueueNode::peer_conn(Context& ctx, NodeId node) {
  const auto it = state_.peers.find(node);
  if (it != state_.peers.end()) return it->second;
  if (state_.peer_retry_armed.count(node) != 0) return kNoConn;  // a reconnect waits
  const ConnId conn = ctx.connect(node);
  state_.peers[node] = conn;
  return conn;
}

bool QueueNode::write_log_batch(uint32_t partition) {
  for (auto& [p, batch] : open_log_) {
    if ((partition != kNoPartition && p != partition) || batch.epochs.empty()) continue;
    sqlite3_stmt* insert = insert_log_.get();
    bind_int(insert, 1, static_cast<int64_t>(p));
    bind_int(insert, 2, static_cast<int64_t>(batch.base_offset));
    bind_int(insert, 3, static_cast<int64_t>(batch.base_offset + batch.epochs.size() - 1));
    bind_blob(insert, 4, batch.records);
    if (!run(insert)) return false;
    // Cleared, not erased: apply_record holds a reference, and the buffers keep their capacity.
    batch.epochs.clear();
    batch.records.clear();
  }
  return true;
}

template <class Visit>
int QueueNode::scan_log(uint32_t partition, uint64_t from, uint64_t end, Visit visit) {
  if (from >= end) return 0;
  if (!write_log_batch(partition)) return -1;
  sqlite3_stmt* read = read_log_.get();
  bind_int(read, 1, static_cast<int64_t>(partition));
  bind_int(read, 2, static_cast<int64_t>(from));
  bind_int(read, 3, static_cast<int64_t>(end));
  int row = 0;
  bool stopped = false;
  while (!stopped && (row = next_row(read)) == 1) {
    const auto base = static_cast<uint64_t>(sqlite3_column_int64(read, 0));
    const auto last = static_cast<uint64_t>(sqlite3_column_int64(read, 1));
    const ByteView records = column_blob(read, 2);
    size_t pos = 0;
    for (uint64_t offset = base; offset <= last && offset < end; ++offset) {
      uint64_t epoch = 0;
      ByteView entry;
      // Our own log, written by this code: a row that does not parse is corruption.
      MSGSIM_ASSERT(next_log_record(records, pos, epoch, entry),
                    "queue: a log row of partition " + std::to_string(partition) + " from offset " +
                        std::to_string(base) + " to " + std::to_string(last) + " breaks at offset " +
                        std::to_string(offset));
      if (offset < from) continue;
      if (!visit(offset, epoch, entry)) {
        stopped = true;
        break;
      }
    }
  }
  sqlite3_reset(read);
  return row < 0 ? -1 : stopped ? 1 : 0;
}

int64_t QueueNode::epoch_at(uint32_t partition, uint64_t offset) {
  // The open transaction's records are not in a row yet (queue.h "Log batches").
  const auto open = open_log_.find(partition);
  if (open != open_log_.end() && offset >= open->second.base_offset &&
      offset - open->second.base_offset < open->second.epochs.size()) {
    return static_cast<int64_t>(open->second.epochs[offset - open->second.base_offset]);
  }
  sqlite3_stmt* read = read_epoch_.get();
  bind_int(read, 1, static_cast<int64_t>(partition));
  bind_int(read, 2, static_cast<int64_t>(offset));
  const int row = next_row(read);
  int64_t epoch = row == 0 ? 0 : -1;
  if (row == 1 && static_cast<uint64_t>(sqlite3_column_int64(read, 1)) < offset) epoch = 0;  // past the row
  if (row == 1 && static_cast<uint64_t>(sqlite3_column_int64(read, 1)) >= offset) {
    const auto base = static_cast<uint64_t>(sqlite3_column_int64(read, 0));
    const ByteView records = column_blob(read, 2);
    size_t pos = 0;
    uint64_t at_epoch = 0;
    ByteView entry;
    for (uint64_t at = base; at <= offset; ++at) {
      MSGSIM_ASSERT(next_log_record(records, pos, at_epoch, entry),
                    "queue: a log row of partition " + std::to_string(partition) + " from offset " +
                        std::to_string(base) + " breaks at offset " + std::to_string(at));
    }
    epoch = static_cast<int64_t>(at_epoch);
  }
  sqlite3_reset(read);
  return epoch;
}

bool QueueNode::read_records(uint32_t partition, uint64_t from, uint64_t end, std::vector<ReplicaRecord>& out) {
  size_t bytes = 0;
  if (out.size() >= kEntriesPerFrameMax) return true;
  const int row = scan_log(partition, from, end, [&](uint64_t offset, uint64_t epoch, ByteView blob) {
    ReplicaRecord record;
    record.offset = offset;
    MSGSIM_ASSERT(decode_entry(blob, record.entry), "queue: undecodable log record at offset " +
                                                        std::to_string(record.offset));
    record.epoch = epoch;
    const size_t size = entry_bytes_max(record.entry) + 30;
    if (!out.empty() && bytes + size > kFrameBytesBudget) return false;
    bytes += size;
    out.push_back(std::move(record));
    return out.size() < kEntriesPerFrameMax;
  });
  return row >= 0;
}

void QueueNode::replicate_all(Context& ctx, uint32_t partition) {
  Partition& part = state_.partitions.at(partition);
  for (auto& [node, follower] : part.followers) replicate_to(ctx, partition, node);
}

void QueueNode::replicate_to(Context& ctx, uint32_t partition, NodeId node) {
  Partition& part = state_.partitions.at(partition);
  FollowerProgress& f = part.followers.at(node);
  if (f.inflight || state_.halted || f.needs_deleted) return;
  // Nothing to send and its log end confirmed: idle.
  if (f.send_next >= part.log_end && f.match_end == part.log_end) return;
  const ConnId conn = peer_conn(ctx, node);
  if (conn == kNoConn) return;
  Replicate frame;
  frame.partition = partition;
  frame.epoch = part.epoch;
  frame.high_watermark = part.committed_next_offset;
  frame.retain_below = part.retain_floor;
  // The record at prev_offset must still be here: at or after the log start (queue.h "Retention").
  f.send_next = std::clamp<uint64_t>(f.send_next, part.log_start == 1 ? 1 : part.log_start + 1, part.log_end);
  frame.prev_offset = f.send_next - 1;
  if (frame.prev_offset > 0) {
    const int64_t prev_epoch = epoch_at(partition, frame.prev_offset);
    if (prev_epoch <= 0) {
      halt(ctx, "reading the epoch at offset " + std::to_string(frame.prev_offset) + " of partition " +
                    std::to_string(partition));
      return;
    }
    frame.prev_epoch = static_cast<uint64_t>(prev_epoch);
  }
  if (!read_records(partition, f.send_next, part.log_end, frame.records)) {
    halt(ctx, "reading partition " + std::to_string(partition) + " for a follower");
    return;
  }
  frame.to_end = (frame.records.empty() ? f.send_next : frame.records.back().offset + 1) == part.log_end;
  f.inflight = true;
  ctx.send(conn, encode(Frame{std::move(frame)}));
}

void QueueNode::on_replica_ack(Context& ctx, ConnId conn, const ReplicaAck& ack) {
  const auto part_it = state_.partitions.find(ack.partition);
  NodeId node = kNoNode;
  for (const auto& [n, c] : state_.peers)
    if (c == conn) node = n;
  if (part_it == state_.partitions.end() || !part_it->second.leader || node == kNoNode ||
      part_it->second.followers.count(node) == 0) {
    close_bad(ctx, conn, "ReplicaAck of partition " + std::to_string(ack.partition) + " from a node not its follower");
    return;
  }
  Partition& part = part_it->second;
  FollowerProgress& f = part.followers.at(node);
  f.inflight = false;
  if (ack.epoch > part.epoch && (!ack.ok || !config_.bugs.on(Bug::no_epoch_fencing))) {
    // A newer leader exists: this one must not count the ack. (Failover: see the coordinator.)
    ctx.log(LogLevel::warn, "queue: follower " + std::to_string(node) + " of partition " +
                                std::to_string(ack.partition) + " knows epoch " + std::to_string(ack.epoch));
    return;
  }
  const uint64_t end = std::min(ack.log_end, part.log_end);
  if (ack.ok) {
    f.match_end = end;
    f.send_next = end;
    if (end == part.log_end) f.behind_since_ns = -1;
    advance_hw(ctx, ack.partition);
  } else {
    // Its log is shorter, or did not match at prev_offset and was cut there: back off.
    f.match_end = 0;
    if (part.log_start > 1 && ack.log_end <= part.log_start) {
      // It needs records retention deleted here, which the floor says cannot happen unless its
      // disk lost synced data: without a snapshot to send it, it is not served (queue.h).
      ctx.log(LogLevel::error, "queue: follower " + std::to_string(node) + " of partition " + std::to_string(ack.partition) +
                                   " needs offset " + std::to_string(ack.log_end) + ", below the log start " +
                                   std::to_string(part.log_start));
      f.needs_deleted = true;
      return;
    }
    f.send_next = std::max<uint64_t>(1, std::min(end, f.send_next > 1 ? f.send_next - 1 : 1));
    if (ack.log_end < f.send_next) f.send_next = std::max<uint64_t>(1, ack.log_end);
  }
  replicate_to(ctx, ack.partition, node);
}

void QueueNode::advance_hw(Context& ctx, uint32_t partition) {
  Partition& part = state_.partitions.at(partition);
  MSGSIM_ASSERT(part.leader, "advance_hw on a follower");
  uint64_t hw = part.log_end;
  const uint64_t counted = hw_mask(part);
  for (const auto& [node, f] : part.followers) {
    if ((counted >> replica_index(partition, node)) & 1) hw = std::min(hw, f.match_end);
  }
  if (hw > part.committed_next_offset) {
    part.committed_next_offset = hw;
    part.hw_dirty = true;
    while (!part.uncommitted.empty() && part.uncommitted.front().offset < hw) {
      RecordAt record = std::move(part.uncommitted.front());
      part.uncommitted.pop_front();
      append_unflushed(ctx, partition, std::move(record));
    }
  }
  while (!part.waiting.empty() && part.waiting.front().until <= part.committed_next_offset) {
    ctx.send(part.waiting.front().conn, std::move(part.waiting.front().frame));
    part.waiting.pop_front();
  }
}

void QueueNode::on_replicate(Context& ctx, ConnId conn, Replicate& replicate) {
  const auto part_it = state_.partitions.find(replicate.partition);
  if (part_it == state_.partitions.end()) {
    close_bad(ctx, conn, "Replicate of partition " + std::to_string(replicate.partition) + " this node does not hold");
    return;
  }
  Partition& part = part_it->second;
  const uint32_t partition = replicate.partition;
  auto answer = [&](bool ok) {
    reply(ctx, conn, encode(Frame{ReplicaAck{partition, part.epoch, ok, part.next_offset}}));
  };
  // Bug::no_epoch_fencing: epochs are not compared; whoever sends records is followed, even by
  // a leader, so a deposed leader that still reaches the replicas keeps writing through them.
  const bool fencing = !config_.bugs.on(Bug::no_epoch_fencing);
  if (!fencing && part.leader) {
    step_down(ctx, partition);
    part.state_known = false;  // the controller's word counts again
  }
  if (replicate.epoch < part.epoch && fencing) {
    answer(false);  // a stale leader: it learns the newer epoch from the answer
    return;
  }
  if (part.leader && replicate.epoch == part.epoch) {
    close_bad(ctx, conn, "Replicate of partition " + std::to_string(partition) + " from another leader of epoch " +
                             std::to_string(part.epoch));
    return;
  }
  if (replicate.epoch > part.epoch && part.leader) step_down(ctx, partition);
  if (!open_batch(ctx)) return;
  // A leader of this epoch or a newer one: what it says of the replicas is true (queue.h "Retention").
  part.retain_floor = std::max(part.retain_floor, replicate.retain_below);
  if (replicate.epoch > part.epoch) {
    part.epoch = replicate.epoch;
    part.state_known = false;  // the controller's state for it has not arrived yet
    const auto from = accepted_from_.find(conn);
    part.leader_node = from == accepted_from_.end() ? kNoNode : from->second;
    sqlite3_stmt* write = upsert_epoch_.get();
    bind_int(write, 1, static_cast<int64_t>(partition));
    bind_int(write, 2, static_cast<int64_t>(part.epoch));
    if (!run(write)) {
      halt(ctx, "writing the epoch of partition " + std::to_string(partition));
      return;
    }
  }
  // The consistency check: this log must hold the leader's record at prev_offset.
  if (replicate.prev_offset >= part.next_offset) {
    answer(false);
    return;
  }
  // Below the log start it matches: retention deleted only committed records every replica holds.
  if (replicate.prev_offset >= part.log_start) {
    const int64_t epoch = epoch_at(partition, replicate.prev_offset);
    if (epoch < 0) {
      halt(ctx, "reading partition " + std::to_string(partition));
      return;
    }
    if (static_cast<uint64_t>(epoch) != replicate.prev_epoch) {
      // Diverged at prev_offset: that record and everything after it never committed.
      if (!truncate_from(ctx, partition, replicate.prev_offset)) return;
      answer(false);
      return;
    }
  }
  uint64_t expected = replicate.prev_offset + 1;
  for (ReplicaRecord& record : replicate.records) {
    if (record.offset != expected || record.epoch == 0 || record.epoch > replicate.epoch ||
        config_.topology.partition_of(record.entry.conv) != partition || record.entry.seq == 0) {
      close_bad(ctx, conn, "Replicate of partition " + std::to_string(partition) + " with a bad record at offset " +
                               std::to_string(record.offset));
      return;
    }
    expected++;
    if (record.offset < part.log_start) continue;  // had it, committed, and deleted it
    if (record.offset < part.next_offset) {
      const int64_t epoch = epoch_at(partition, record.offset);
      if (epoch < 0) {
        halt(ctx, "reading partition " + std::to_string(partition));
        return;
      }
      if (static_cast<uint64_t>(epoch) == record.epoch) continue;  // has it already
      if (!truncate_from(ctx, partition, record.offset)) return;
    }
    if (!apply_record(ctx, partition, record.offset, record.epoch, record.entry)) return;
  }
  // Records past the leader's log end are an older leader's that never committed.
  if (replicate.to_end && expected < part.next_offset && !truncate_from(ctx, partition, expected)) return;
  const uint64_t hw = std::min(replicate.high_watermark, part.next_offset);
  if (hw > part.committed_next_offset) {
    part.committed_next_offset = hw;
    part.hw_dirty = true;
  }
  answer(true);  // sent at the batch's commit: after the records are synced
}

bool QueueNode::truncate_from(Context& ctx, uint32_t partition, uint64_t from) {
  Partition& part = state_.partitions.at(partition);
  if (from >= part.next_offset) return true;
  if (part.log_start > 1 && from <= part.log_start) {
    // Retention deleted only committed records, which no leader ever takes back.
    halt(ctx, "asked to drop partition " + std::to_string(partition) + " from offset " + std::to_string(from) +
                  ", below the log start " + std::to_string(part.log_start));
    return false;
  }
  // Read a frame's worth at a time into `chunk`: read_records adds nothing to a vector that
  // already holds kEntriesPerFrameMax records, so reading straight into `records` halted the
  // node on any truncation longer than that.
  std::vector<ReplicaRecord> records, chunk;
  for (uint64_t at = from; at < part.next_offset; at = records.back().offset + 1) {
    chunk.clear();
    if (!read_records(partition, at, part.next_offset, chunk) || chunk.empty()) {
      halt(ctx, "reading partition " + std::to_string(partition) + " to truncate it");
      return false;
    }
    records.insert(records.end(), std::make_move_iterator(chunk.begin()), std::make_move_iterator(chunk.end()));
  }
  ctx.log(LogLevel::info, "queue: partition " + std::to_string(partition) + " drops " + std::to_string(records.size()) +
                              " records from offset " + std::to_string(from));
  // Undo newest first: each record's seq becomes its conversation's next seq again, a join is
  // unmade, a leave restored, its msg_id forgotten (a retry may then be appended again).
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    const Entry& entry = it->entry;
    const auto conv = state_.conversations.find(entry.conv);
    if (conv != state_.conversations.end()) {
      conv->second.next_seq = entry.seq;
      if (entry.kind == EntryKind::join) conv->second.members.erase(entry.member);
      if (entry.kind == EntryKind::leave) conv->second.members.insert(entry.member);
      if (entry.kind != EntryKind::message) conv->second.members_digest = 0;
      bool ok = true;
      if (starts_with(entry.conv, "g:") && entry.kind != EntryKind::message) {
        sqlite3_stmt* member = entry.kind == EntryKind::join ? delete_member_.get() : insert_member_.get();
        bind_text(member, 1, entry.conv);
        bind_text(member, 2, entry.member);
        ok = run(member);
      }
      if (ok && conv->second.next_seq <= 1 && conv->second.members.empty()) state_.conversations.erase(conv);
      state_.dirty_convs.insert(entry.conv);
      if (!ok) {
        halt(ctx, "undoing a membership change in " + entry.conv);
        return false;
      }
    }
    sqlite3_stmt* forget = delete_msg_.get();
    bind_text(forget, 1, entry.msg_id);
    if (!run(forget)) {
      halt(ctx, "forgetting " + entry.msg_id);
      return false;
    }
  }
  // A row holding `from` after its first record keeps its prefix (queue.h "Log batches"); the
  // rows from `from` on go. The reads above wrote the open batch, so the rows hold every record.
  if (!write_log_batch(partition)) {
    halt(ctx, "writing the log row of partition " + std::to_string(partition) + " to truncate it");
    return false;
  }
  {
    sqlite3_stmt* read = read_epoch_.get();
    bind_int(read, 1, static_cast<int64_t>(partition));
    bind_int(read, 2, static_cast<int64_t>(from));
    int row = next_row(read);
    Bytes prefix;
    uint64_t base = 0;
    if (row == 1) {
      base = static_cast<uint64_t>(sqlite3_column_int64(read, 0));
      const auto last = static_cast<uint64_t>(sqlite3_column_int64(read, 1));
      if (base < from && last >= from) {
        const ByteView records = column_blob(read, 2);
        size_t pos = 0;
        uint64_t epoch = 0;
        ByteView entry;
        for (uint64_t at = base; at < from; ++at) {
          MSGSIM_ASSERT(next_log_record(records, pos, epoch, entry),
                        "queue: a log row of partition " + std::to_string(partition) + " from offset " +
                            std::to_string(base) + " breaks at offset " + std::to_string(at));
        }
        prefix.assign(records.begin(), records.begin() + static_cast<std::ptrdiff_t>(pos));
      }
    }
    sqlite3_reset(read);
    if (row == 1 && !prefix.empty()) {
      sqlite3_stmt* rewrite = rewrite_log_batch_.get();
      bind_int(rewrite, 1, static_cast<int64_t>(from - 1));
      bind_blob(rewrite, 2, prefix);
      bind_int(rewrite, 3, static_cast<int64_t>(partition));
      bind_int(rewrite, 4, static_cast<int64_t>(base));
      if (!run(rewrite)) row = -1;
    }
    if (row < 0) {
      halt(ctx, "cutting the log row of partition " + std::to_string(partition) + " at offset " + std::to_string(from));
      return false;
    }
  }
  sqlite3_stmt* cut = truncate_log_.get();
  bind_int(cut, 1, static_cast<int64_t>(partition));
  bind_int(cut, 2, static_cast<int64_t>(from));
  if (!run(cut)) {
    halt(ctx, "truncating partition " + std::to_string(partition));
    return false;
  }
  part.next_offset = from;
  part.log_end = std::min(part.log_end, from);  // what stays below is still synced
  // Replay at a restart only adds: the undone seqs go to disk with the truncation.
  if (!write_seqs(ctx)) return false;
  if (part.committed_next_offset > from) part.committed_next_offset = from;  // never for a committed record
  std::erase_if(state_.committing, [&](const auto& c) { return c.first == partition && c.second.offset >= from; });
  while (!part.uncommitted.empty() && part.uncommitted.back().offset >= from) part.uncommitted.pop_back();
  return true;
}

void QueueNode::on_timer(Context& ctx, uint64_t tag) {
  if (state_.halted) return;
  if (tag == kCatchUpTag) {
    state_.catch_up_armed = false;
    catch_up(ctx);
  } else if (tag == kCommitTag) {
    state_.commit_armed = false;
    commit_batch(ctx);
  } else if (tag == kHeartbeatTag) {
    heartbeat(ctx);
  } else if ((tag & ~uint64_t{UINT32_MAX}) == kPeerTag) {
    const auto node = static_cast<NodeId>(tag & UINT32_MAX);
    state_.peer_retry_armed.erase(node);
    for (auto& [p, part] : state_.partitions)
      if (part.leader && part.followers.count(node) != 0) replicate_to(ctx, p, node);
  } else if ((tag & ~uint64_t{UINT32_MAX}) == kFlushTag) {
    const auto partition = static_cast<uint32_t>(tag & UINT32_MAX);
    state_.partitions.at(partition).flush_armed = false;
    flush(ctx, partition);
  } else {
    MSGSIM_UNREACHABLE("queue: unknown timer tag " + std::to_string(tag));
  }
  invariants();
}

uint64_t QueueNode::hw_mask(const Partition& part) {
  return part.isr_mask | (part.isr_adding_epoch == part.epoch ? part.isr_adding_mask : 0);
}

uint32_t QueueNode::replica_index(uint32_t partition, NodeId node) const {
  for (uint32_t k = 0; k < config_.topology.replicas(); ++k)
    if (config_.topology.replica_of(partition, k) == node) return k;
  MSGSIM_UNREACHABLE("queue: node " + std::to_string(node) + " holds no copy of partition " + std::to_string(partition));
}

void QueueNode::heartbeat(Context& ctx) {
  if (state_.halted) return;
  controller_tick(ctx);
  if (state_.halted) return;
  if (controls()) {
    control_tick(ctx);
  } else {
    heartbeat_controller(ctx);
  }
  if (state_.halted) return;
  check_isr(ctx);
  ctx.set_timer(kHeartbeatNs, kHeartbeatTag);
}

void QueueNode::heartbeat_controller(Context& ctx) {
  if (state_.ctl.role == CtlRole::controller || state_.ctl.leader == kNoNode) return;
  // Heartbeats go to the controller this node follows; a new one gets a new connection.
  if (state_.to_controller != kNoConn && state_.to_controller_node != state_.ctl.leader) {
    const ConnId old = state_.to_controller;
    on_disconnect(ctx, old, DisconnectReason::closed_by_peer);
    ctx.close(old);
  }
  if (state_.to_controller == kNoConn) {
    state_.to_controller = ctx.connect(state_.ctl.leader);
    state_.to_controller_node = state_.ctl.leader;
  }
  ctx.send(state_.to_controller, encode(Frame{QueueHeartbeat{}}));
}

void QueueNode::apply_state(Context& ctx, const PartitionState& state) {
  const auto it = state_.partitions.find(state.partition);
  if (it == state_.partitions.end()) return;  // not a replica of it
  Partition& part = it->second;
  if (state.epoch < part.epoch || (state.epoch == part.epoch && part.state_known)) return;
  if (state.epoch > part.epoch) {
    if (!open_batch(ctx)) return;
    sqlite3_stmt* write = upsert_epoch_.get();
    bind_int(write, 1, static_cast<int64_t>(state.partition));
    bind_int(write, 2, static_cast<int64_t>(state.epoch));
    if (!run(write)) {
      halt(ctx, "writing the epoch of partition " + std::to_string(state.partition));
      return;
    }
  }
  part.epoch = state.epoch;
  part.state_known = true;
  part.leader_node = state.leader;
  part.isr_mask = state.isr_mask;
  if (state.leader == self_) {
    if (!part.leader) {
      become_leader(ctx, state.partition);
    } else {
      // The same leader in a new epoch (its ISR changed): carry on.
      part.isr_asked_ns = -1;
      advance_hw(ctx, state.partition);
      replicate_all(ctx, state.partition);
    }
  } else if (part.leader) {
    step_down(ctx, state.partition);
  }
}

void QueueNode::become_leader(Context& ctx, uint32_t partition) {
  // The open batch may hold records this replica appended as a follower: commit them first,
  // so the records above the HW are all in the synced log.
  commit_batch(ctx);
  if (state_.halted) return;
  Partition& part = state_.partitions.at(partition);
  ctx.log(LogLevel::info, "queue: leading partition " + std::to_string(partition) + " at epoch " +
                              std::to_string(part.epoch) + " from offset " + std::to_string(part.log_end));
  part.leader = true;
  part.isr_asked_ns = -1;
  const int64_t now = ctx.now_ns();
  for (uint32_t k = 0; k < config_.topology.replicas(); ++k) {
    const NodeId node = config_.topology.replica_of(partition, k);
    if (node == self_) continue;
    FollowerProgress& f = part.followers[node];
    f = FollowerProgress{};
    f.send_next = part.log_end;
    f.behind_since_ns = now;  // until it proves it has our log
  }
  part.uncommitted.clear();
  std::vector<ReplicaRecord> records;
  for (uint64_t from = part.committed_next_offset; from < part.log_end; from = records.back().offset + 1) {
    records.clear();
    if (!read_records(partition, from, part.log_end, records) || records.empty()) {
      halt(ctx, "reading back partition " + std::to_string(partition) + " from offset " + std::to_string(from));
      return;
    }
    for (ReplicaRecord& r : records) part.uncommitted.push_back(RecordAt{r.offset, std::move(r.entry)});
  }
  for (auto& [key, sub] : state_.subscriptions) {
    if (key.second == partition) sub.caught_up = sub.next_offset >= part.committed_next_offset;
  }
  advance_hw(ctx, partition);
  replicate_all(ctx, partition);
  catch_up(ctx);
}

void QueueNode::step_down(Context& ctx, uint32_t partition) {
  commit_batch(ctx);
  if (state_.halted) return;
  Partition& part = state_.partitions.at(partition);
  ctx.log(LogLevel::info, "queue: no longer leading partition " + std::to_string(partition) + " (epoch " +
                              std::to_string(part.epoch) + ")");
  flush(ctx, partition);  // committed records still go out
  part.leader = false;
  part.followers.clear();
  part.uncommitted.clear();
  part.waiting.clear();  // unanswered: the producers retry at the new leader
  for (auto& [key, sub] : state_.subscriptions) {
    if (key.second == partition) sub.caught_up = false;
  }
}

void QueueNode::check_isr(Context& ctx) {
  const int64_t now = ctx.now_ns();
  for (auto& [p, part] : state_.partitions) {
    if (!part.leader || !part.state_known) continue;
    uint64_t wanted = part.isr_mask;
    for (auto& [node, f] : part.followers) {
      const uint64_t bit = uint64_t{1} << replica_index(p, node);
      if (f.match_end >= part.log_end) f.behind_since_ns = -1;
      else if (f.behind_since_ns < 0) f.behind_since_ns = now;
      const bool lagging = f.behind_since_ns >= 0 && now - f.behind_since_ns > kLagMaxNs;
      if ((wanted & bit) && lagging) wanted &= ~bit;
      // Back in: it has every record below the HW, so every committed record.
      if (!(wanted & bit) && !lagging && f.match_end >= part.committed_next_offset) wanted |= bit;
    }
    // An addition asked for this epoch may still be applied (the request may be in flight), so
    // the HW keeps counting it until the epoch moves on. A request for the ISR as it is (no
    // change) makes the controller move the epoch on anyway, which ends that wait when the
    // leader no longer wants the addition (its request was lost, or the follower fell behind).
    const bool adding = part.isr_adding_epoch == part.epoch && part.isr_adding_mask != 0;
    if (wanted == part.isr_mask && !adding) continue;
    if (part.isr_asked_ns >= 0 && now - part.isr_asked_ns < 2 * kHeartbeatNs) continue;
    part.isr_asked_ns = now;
    // Count before asking: from here on every record the HW passes is on the new member too.
    if (!adding) part.isr_adding_mask = 0;
    part.isr_adding_epoch = part.epoch;
    part.isr_adding_mask |= wanted & ~part.isr_mask;
    const AlterIsr alter{p, part.epoch, wanted};
    if (controls()) {
      on_alter_isr(ctx, self_, alter);
    } else if (state_.to_controller != kNoConn) {
      ctx.send(state_.to_controller, encode(Frame{alter}));
    }
  }
}

// --- electing the controller and keeping its state (queue.h "Controller") --------------------

void QueueNode::load_controller_state() {
  const ChatTopology& t = config_.topology;
  ControllerRole& ctl = state_.ctl;
  {
    sql::Statement stmt = must_prepare(db_, "SELECT term, voted_for, state_term, version FROM controller WHERE id = 0");
    if (next_row(stmt.get()) == 1) {
      ctl.term = static_cast<uint64_t>(stmt.column_int64(0));
      ctl.voted_for = static_cast<NodeId>(stmt.column_int64(1));
      ctl.state_term = static_cast<uint64_t>(stmt.column_int64(2));
      ctl.version = static_cast<uint64_t>(stmt.column_int64(3));
    }
  }
  {
    sql::Statement stmt = must_prepare(db_, "SELECT partition, epoch, leader, isr_mask FROM control");
    while (next_row(stmt.get()) == 1) {
      const auto p = static_cast<uint32_t>(stmt.column_int64(0));
      if (p >= t.partitions) continue;
      Control& c = state_.control[p];
      c.epoch = static_cast<uint64_t>(stmt.column_int64(1));
      c.leader = static_cast<NodeId>(stmt.column_int64(2));
      c.isr_mask = static_cast<uint64_t>(stmt.column_int64(3));
    }
  }
  // Version 0, the state every queue node starts from without writing it: replica 0 leads at
  // epoch 1 with every replica in sync.
  for (uint32_t p = 0; p < t.partitions; ++p) {
    if (state_.control.count(p) != 0) continue;
    Control& c = state_.control[p];
    c.epoch = 1;
    c.leader = t.replica_of(p, 0);
    c.isr_mask = (uint64_t{1} << t.replicas()) - 1;
  }
}

bool QueueNode::persist_controller_state(Context& ctx) {
  // Rule "persist before answer": a vote, a term and a controller state are synced before any
  // frame that depends on them leaves. The open batch commits first, then this on its own.
  commit_batch(ctx);
  if (state_.halted) return false;
  const ControllerRole& ctl = state_.ctl;
  std::string sql = "BEGIN; DELETE FROM control;";
  for (const auto& [p, c] : state_.control) {
    sql += "INSERT INTO control (partition, epoch, leader, isr_mask) VALUES (" + std::to_string(p) + ", " +
           std::to_string(c.epoch) + ", " + std::to_string(c.leader) + ", " + std::to_string(c.isr_mask) + ");";
  }
  sql += "INSERT OR REPLACE INTO controller (id, term, voted_for, state_term, version) VALUES (0, " +
         std::to_string(ctl.term) + ", " + std::to_string(ctl.voted_for) + ", " + std::to_string(ctl.state_term) + ", " +
         std::to_string(ctl.version) + "); COMMIT;";
  const Status written = sql::exec(db_, sql);
  if (!written.ok()) {
    halt(ctx, "writing the controller state");
    return false;
  }
  return true;
}

uint32_t QueueNode::queue_index(NodeId node) const {
  const auto& queues = config_.topology.queues;
  return static_cast<uint32_t>(std::find(queues.begin(), queues.end(), node) - queues.begin());
}

uint32_t QueueNode::vote_weight(NodeId node) const {
  const auto& queues = config_.topology.queues;
  return node == queues.front() && queues.size() % 2 == 0 ? 2 : 1;
}

bool QueueNode::has_majority(const std::set<NodeId>& nodes) const {
  const size_t q = config_.topology.queues.size();
  const uint64_t total = q + (q % 2 == 0 ? 1 : 0);
  uint64_t weight = 0;
  for (NodeId node : nodes) weight += vote_weight(node);
  return 2 * weight > total;
}

bool QueueNode::hears_controller(int64_t now_ns) const {
  const ControllerRole& ctl = state_.ctl;
  if (ctl.role == CtlRole::controller) return true;
  return ctl.role == CtlRole::follower && ctl.leader != kNoNode && now_ns - ctl.heard_ns < kControllerDeadNs;
}

bool QueueNode::at_least_as_new(uint64_t state_term, uint64_t version) const {
  const ControllerRole& ctl = state_.ctl;
  return state_term > ctl.state_term || (state_term == ctl.state_term && version >= ctl.version);
}

void QueueNode::send_to_queues(Context& ctx, const Frame& frame) {
  const Bytes bytes = encode(frame);
  for (NodeId node : config_.topology.queues) {
    if (node == self_) continue;
    const ConnId conn = peer_conn(ctx, node);
    if (conn != kNoConn) ctx.send(conn, bytes);
  }
}

void QueueNode::controller_tick(Context& ctx) {
  ControllerRole& ctl = state_.ctl;
  const int64_t now = ctx.now_ns();
  if (ctl.role == CtlRole::controller) {
    // The state goes out every heartbeat: it is also how the others know the controller lives.
    send_to_queues(ctx, Frame{ControllerSync{ctl.term, ctl.state_term, ctl.version, states_of(state_.control)}});
    return;
  }
  const int64_t timeout = kControllerDeadNs + static_cast<int64_t>(queue_index(self_)) * kHeartbeatNs;
  if (now - ctl.heard_ns >= timeout) start_pre_vote(ctx);
}

void QueueNode::start_pre_vote(Context& ctx) {
  ControllerRole& ctl = state_.ctl;
  ctl.role = CtlRole::pre_candidate;
  ctl.heard_ns = ctx.now_ns();  // the next try comes a full timeout later
  ctl.votes = {self_};
  if (has_majority(ctl.votes)) {
    start_election(ctx);
    return;
  }
  send_to_queues(ctx, Frame{ControllerVote{ctl.term + 1, ctl.state_term, ctl.version, true}});
}

void QueueNode::start_election(Context& ctx) {
  ControllerRole& ctl = state_.ctl;
  ctl.term++;
  ctl.voted_for = self_;
  ctl.leader = kNoNode;
  ctl.role = CtlRole::candidate;
  ctl.votes = {self_};
  ctl.heard_ns = ctx.now_ns();
  if (!persist_controller_state(ctx)) return;
  ctx.log(LogLevel::info, "queue: standing for controller in term " + std::to_string(ctl.term));
  if (has_majority(ctl.votes)) {
    become_controller(ctx);
    return;
  }
  send_to_queues(ctx, Frame{ControllerVote{ctl.term, ctl.state_term, ctl.version, false}});
}

void QueueNode::become_controller(Context& ctx) {
  ControllerRole& ctl = state_.ctl;
  ctl.role = CtlRole::controller;
  ctl.leader = self_;
  ctl.ready = false;
  ctl.acked_version.clear();
  ctx.log(LogLevel::info, "queue: controller in term " + std::to_string(ctl.term));
  // Its state, the newest of a majority, written again in its own term: once that commits, so
  // has everything before it.
  propose(ctx);
}

bool QueueNode::follow_term(Context& ctx, uint64_t term) {
  ControllerRole& ctl = state_.ctl;
  if (term <= ctl.term) return true;
  if (ctl.role == CtlRole::controller) {
    ctx.log(LogLevel::info, "queue: no longer controller (term " + std::to_string(ctl.term) + " -> " +
                                std::to_string(term) + ")");
  }
  ctl.term = term;
  ctl.voted_for = kNoNode;
  ctl.leader = kNoNode;
  ctl.role = CtlRole::follower;
  ctl.ready = false;
  ctl.votes.clear();
  ctl.acked_version.clear();
  state_.control_committed.clear();
  return persist_controller_state(ctx);
}

void QueueNode::on_controller_vote(Context& ctx, ConnId conn, NodeId from, const ControllerVote& vote) {
  ControllerRole& ctl = state_.ctl;
  const int64_t now = ctx.now_ns();
  // While a controller is heard, no vote and no pre-vote: a node back from isolation with a
  // high term does not depose a working controller (Raft's pre-vote and leader stickiness).
  if (vote.pre) {
    const bool granted = vote.term > ctl.term && !hears_controller(now) && at_least_as_new(vote.state_term, vote.version);
    ctx.send(conn, encode(Frame{ControllerVoteAck{vote.term, granted, true}}));
    return;
  }
  if (vote.term > ctl.term && hears_controller(now)) {
    ctx.send(conn, encode(Frame{ControllerVoteAck{ctl.term, false, false}}));
    return;
  }
  if (!follow_term(ctx, vote.term)) return;
  bool granted = false;
  if (vote.term == ctl.term && ctl.role != CtlRole::controller && (ctl.voted_for == kNoNode || ctl.voted_for == from) &&
      at_least_as_new(vote.state_term, vote.version)) {
    granted = true;
    if (ctl.voted_for != from) {
      ctl.voted_for = from;
      ctl.role = CtlRole::follower;
      if (!persist_controller_state(ctx)) return;  // the vote is on disk before it is given
    }
    ctl.heard_ns = now;  // a vote given restarts this node's election clock
  }
  ctx.send(conn, encode(Frame{ControllerVoteAck{ctl.term, granted, false}}));
}

void QueueNode::on_controller_vote_ack(Context& ctx, NodeId from, const ControllerVoteAck& ack) {
  ControllerRole& ctl = state_.ctl;
  if (ack.pre) {
    if (ctl.role != CtlRole::pre_candidate || ack.term != ctl.term + 1 || !ack.granted) return;
    ctl.votes.insert(from);
    if (has_majority(ctl.votes)) start_election(ctx);
    return;
  }
  if (ack.term > ctl.term) {
    follow_term(ctx, ack.term);
    return;
  }
  if (ctl.role != CtlRole::candidate || ack.term != ctl.term || !ack.granted) return;
  ctl.votes.insert(from);
  if (has_majority(ctl.votes)) become_controller(ctx);
}

void QueueNode::on_controller_sync(Context& ctx, ConnId conn, NodeId from, const ControllerSync& sync) {
  ControllerRole& ctl = state_.ctl;
  if (sync.term < ctl.term) {
    ctx.send(conn, encode(Frame{ControllerSyncAck{ctl.term, sync.version, false}}));  // fences the old controller
    return;
  }
  if (!follow_term(ctx, sync.term)) return;
  if (ctl.role == CtlRole::controller) {
    // Votes make one controller per term: a second one is a peer's bug, not this node's state.
    close_bad(ctx, conn, "ControllerSync from a second controller of term " + std::to_string(ctl.term));
    return;
  }
  if (sync.state_term != sync.term || sync.states.size() != config_.topology.partitions) {
    close_bad(ctx, conn, "ControllerSync whose state is not of its term or not of every partition");
    return;
  }
  ctl.role = CtlRole::follower;
  const bool new_controller = ctl.leader != from;
  ctl.leader = from;
  ctl.heard_ns = ctx.now_ns();
  // A controller just learned of hears from this node at once, and answers with the states.
  if (new_controller) heartbeat_controller(ctx);
  if (at_least_as_new(sync.state_term, sync.version) &&
      (sync.state_term != ctl.state_term || sync.version != ctl.version)) {
    std::map<uint32_t, Control> control;
    for (const PartitionState& state : sync.states) {
      if (state.partition >= config_.topology.partitions || !config_.topology.is_replica(state.partition, state.leader)) {
        close_bad(ctx, conn, "ControllerSync with a bad state of partition " + std::to_string(state.partition));
        return;
      }
      control[state.partition] = Control{state.epoch, state.leader, state.isr_mask};
    }
    state_.control = std::move(control);
    ctl.state_term = sync.state_term;
    ctl.version = sync.version;
    if (!persist_controller_state(ctx)) return;  // synced before the ack says so
  }
  ctx.send(conn, encode(Frame{ControllerSyncAck{ctl.term, ctl.version, true}}));
}

void QueueNode::on_controller_sync_ack(Context& ctx, NodeId from, const ControllerSyncAck& ack) {
  ControllerRole& ctl = state_.ctl;
  if (ack.term > ctl.term) {
    follow_term(ctx, ack.term);
    return;
  }
  if (ctl.role != CtlRole::controller || ack.term != ctl.term || !ack.ok) return;
  uint64_t& acked = ctl.acked_version[from];
  acked = std::max(acked, std::min(ack.version, ctl.version));
  state_.last_heard_ns[from] = ctx.now_ns();
  check_commit(ctx);
}

bool QueueNode::propose(Context& ctx) {
  ControllerRole& ctl = state_.ctl;
  MSGSIM_ASSERT(ctl.role == CtlRole::controller, "queue: a proposal from a node that is no controller");
  ctl.state_term = ctl.term;
  ctl.version++;
  if (!persist_controller_state(ctx)) return false;
  send_to_queues(ctx, Frame{ControllerSync{ctl.term, ctl.state_term, ctl.version, states_of(state_.control)}});
  check_commit(ctx);
  return !state_.halted;
}

void QueueNode::check_commit(Context& ctx) {
  ControllerRole& ctl = state_.ctl;
  if (ctl.committed_version == ctl.version && ctl.ready) return;
  std::set<NodeId> have = {self_};
  for (const auto& [node, version] : ctl.acked_version)
    if (version == ctl.version) have.insert(node);
  if (!has_majority(have)) return;
  // Committed: a majority has it synced. Only now does anyone hear of it (commit before publish).
  ctl.committed_version = ctl.version;
  state_.control_committed = state_.control;
  if (!ctl.ready) {
    ctl.ready = true;
    // Every queue node gets a full lease from here before it may be replaced.
    for (NodeId node : config_.topology.queues) state_.last_heard_ns[node] = ctx.now_ns();
  }
  publish_control(ctx);
}

// --- the controller's decisions ----------------------------------------------------------------

std::vector<PartitionState> QueueNode::states_of(const std::map<uint32_t, Control>& control) {
  std::vector<PartitionState> out;
  for (const auto& [p, c] : control) out.push_back(PartitionState{p, c.epoch, c.leader, c.isr_mask});
  return out;
}

void QueueNode::publish_control(Context& ctx) {
  const PartitionStates states{states_of(state_.control_committed)};
  const Bytes frame = encode(Frame{states});
  for (const auto& [conn, node] : state_.heartbeat_conns) ctx.send(conn, frame);
  for (const PartitionState& state : states.states) apply_state(ctx, state);
}

void QueueNode::on_heartbeat(Context& ctx, ConnId conn, NodeId node) {
  state_.last_heard_ns[node] = ctx.now_ns();
  state_.heartbeat_conns[conn] = node;
  if (!controls()) return;  // elected, its state not committed yet: it answers once it is
  ctx.send(conn, encode(Frame{PartitionStates{states_of(state_.control_committed)}}));
}

void QueueNode::control_tick(Context& ctx) {
  const ChatTopology& t = config_.topology;
  const int64_t now = ctx.now_ns();
  auto alive = [&](NodeId node) { return node == self_ || now - state_.last_heard_ns[node] <= kLeaderDeadNs; };
  bool changed = false;
  for (auto& [p, c] : state_.control) {
    if (alive(c.leader)) continue;
    for (uint32_t k = 0; k < t.replicas(); ++k) {
      const NodeId candidate = t.replica_of(p, k);
      if (candidate == c.leader || !((c.isr_mask >> k) & 1) || !alive(candidate)) continue;
      ctx.log(LogLevel::info, "queue controller: partition " + std::to_string(p) + " leader " +
                                  std::to_string(c.leader) + " lost; " + std::to_string(candidate) + " leads at epoch " +
                                  std::to_string(c.epoch + 1));
      c.isr_mask &= ~(uint64_t{1} << replica_index(p, c.leader));
      c.leader = candidate;
      c.epoch++;
      changed = true;
      break;
    }
  }
  if (changed) propose(ctx);
}

void QueueNode::on_alter_isr(Context& ctx, NodeId node, const AlterIsr& alter) {
  if (!controls()) return;  // not yet: the leader asks again
  const auto it = state_.control.find(alter.partition);
  if (it == state_.control.end()) return;
  Control& c = it->second;
  const ChatTopology& t = config_.topology;
  const uint64_t all = (uint64_t{1} << t.replicas()) - 1;
  // Only the current leader, about the current epoch; it stays in the set; only replicas. A
  // request for the set as it is still moves the epoch on: the leader asks that to void an
  // addition it asked for earlier in this epoch (see check_isr).
  if (alter.epoch != c.epoch || node != c.leader || (alter.isr_mask & ~all) != 0 ||
      !((alter.isr_mask >> replica_index(alter.partition, node)) & 1)) {
    return;
  }
  ctx.log(LogLevel::info, "queue controller: partition " + std::to_string(alter.partition) + " ISR " +
                              std::to_string(c.isr_mask) + " -> " + std::to_string(alter.isr_mask) + " at epoch " +
                              std::to_string(c.epoch + 1));
  c.isr_mask = alter.isr_mask;
  c.epoch++;
  propose(ctx);
}

std::string QueueNode::describe() const {
  std::string out = "queue partitions=" + std::to_string(state_.partitions.size()) +
                    " conversations=" + std::to_string(state_.conversations.size()) +
                    " subscriptions=" + std::to_string(state_.subscriptions.size()) +
                    " accepted=" + std::to_string(state_.accepted) + " rejected=" + std::to_string(state_.rejected) +
                    " duplicates=" + std::to_string(state_.duplicates) + " stale=" + std::to_string(state_.stale) +
                    " msg_id_hashes=" + std::to_string(state_.produced_ids.size()) +
                    (state_.produced_ids.saturated() ? " (saturated)" : "") +
                    (state_.batch_open ? " batch=" + std::to_string(state_.replies.size()) : std::string()) +
                    (state_.halted ? " HALTED" : "");
  if (replicated()) {
    static constexpr const char* kRoles[] = {"follower", "pre-candidate", "candidate", "controller"};
    out += std::string(" ctl=") + kRoles[static_cast<int>(state_.ctl.role)] + (state_.ctl.ready ? "(ready)" : "") +
           ":term=" + std::to_string(state_.ctl.term) + ",v=" + std::to_string(state_.ctl.version);
  }
  for (const auto& [p, part] : state_.partitions) {
    out += " p" + std::to_string(p) + (part.leader ? "L" : "F") + std::to_string(part.epoch) +
           ":next=" + std::to_string(part.next_offset);
    if (part.committed_next_offset != part.next_offset) out += ",hw=" + std::to_string(part.committed_next_offset);
    if (part.log_start != 1) out += ",start=" + std::to_string(part.log_start);
  }
  return out;
}

void QueueNode::invariants() const {
  MSGSIM_ASSERT_LE(state_.subscriptions.size(), kSubscriptionsMax);
  MSGSIM_ASSERT_LE(state_.conversations.size(), kConversationsMax);
  MSGSIM_ASSERT_LE(state_.replies.size(), kBatchMax);
  if (state_.halted) return;  // memory may be ahead of the disk; nothing is answered any more
  MSGSIM_ASSERT(state_.batch_open || (state_.replies.empty() && state_.committing.empty()),
                "answers or records waiting without an open batch");
  MSGSIM_ASSERT_LE(state_.dirty_convs.size(), kDirtyConvsMax);
  MSGSIM_ASSERT_LE(state_.batches_since_seqs, kSeqsEveryBatches);
  MSGSIM_ASSERT(!state_.batch_open || state_.commit_armed, "an open batch without a commit timer");
  // An open log batch is the tail of its partition's log, in the open transaction only.
  for (const auto& [p, batch] : open_log_) {
    if (batch.epochs.empty()) continue;
    MSGSIM_ASSERT(state_.batch_open, "queue: partition " + std::to_string(p) + " has an open log batch of " +
                                         std::to_string(batch.epochs.size()) + " records without an open transaction");
    const auto part = state_.partitions.find(p);
    MSGSIM_ASSERT(part != state_.partitions.end(), "queue: an open log batch of partition " + std::to_string(p) +
                                                       ", which this node does not hold");
    MSGSIM_ASSERT_EQ(batch.base_offset + batch.epochs.size(), part->second.next_offset);
    MSGSIM_ASSERT_GE(batch.base_offset, part->second.log_end);
  }
  for (const auto& [p, part] : state_.partitions) {
    MSGSIM_ASSERT(config_.topology.is_replica(p, self_), "a partition this node does not hold");
    MSGSIM_ASSERT_GE(part.committed_next_offset, uint64_t{1});
    // A follower learns the HW with records its open batch has not committed yet.
    MSGSIM_ASSERT_LE(part.committed_next_offset, part.leader ? part.log_end : part.next_offset);
    MSGSIM_ASSERT_LE(part.log_end, part.next_offset);
    // Retention (queue.h): only committed records, and never the last one.
    MSGSIM_ASSERT_LE(part.log_start, part.committed_next_offset);
    if (part.log_start > 1) MSGSIM_ASSERT_LT(part.log_start, part.log_end);
    MSGSIM_ASSERT_LE(part.unflushed.size(), kEntriesPerFrameMax);
    MSGSIM_ASSERT(part.unflushed.empty() || part.flush_armed, "unsent records without a flush timer");
    if (!part.unflushed.empty()) MSGSIM_ASSERT_EQ(part.unflushed.back().offset + 1, part.committed_next_offset);
    if (!state_.batch_open) MSGSIM_ASSERT_EQ(part.log_end, part.next_offset);
    if (part.leader) {
      MSGSIM_ASSERT_EQ(part.followers.size() + 1, size_t{config_.topology.replicas()});
      if (!part.uncommitted.empty()) {
        MSGSIM_ASSERT_EQ(part.uncommitted.front().offset, part.committed_next_offset);
        MSGSIM_ASSERT_EQ(part.uncommitted.back().offset + 1, part.log_end);
      } else {
        MSGSIM_ASSERT_EQ(part.committed_next_offset, part.log_end);
      }
    } else {
      MSGSIM_ASSERT(part.uncommitted.empty() && part.waiting.empty() && part.followers.empty(),
                    "a follower with leader state");
    }
  }
  // The controller role (queue.h "Controller"): one vote per term, for itself when it stands;
  // nothing published before its own state commits; the controller state covers every partition.
  const ControllerRole& ctl = state_.ctl;
  MSGSIM_ASSERT_LE(ctl.state_term, ctl.term);
  if (ctl.role == CtlRole::candidate || ctl.role == CtlRole::controller) MSGSIM_ASSERT_EQ(ctl.voted_for, self_);
  if (ctl.role == CtlRole::controller) {
    MSGSIM_ASSERT_EQ(ctl.leader, self_);
    MSGSIM_ASSERT_LE(ctl.committed_version, ctl.version);
    if (ctl.ready) MSGSIM_ASSERT_EQ(state_.control_committed.size(), size_t{config_.topology.partitions});
  } else {
    MSGSIM_ASSERT(!ctl.ready, "a controller's readiness on a node that is no controller");
  }
  if (replicated()) MSGSIM_ASSERT_EQ(state_.control.size(), size_t{config_.topology.partitions});
  for (const auto& [key, sub] : state_.subscriptions) {
    MSGSIM_ASSERT(state_.partitions.count(key.second) == 1, "a subscription to a partition not held here");
    if (sub.caught_up) {
      MSGSIM_ASSERT(state_.partitions.at(key.second).leader, "a caught-up subscription on a follower");
      const Partition& part = state_.partitions.at(key.second);
      MSGSIM_ASSERT_GE(sub.next_offset, part.unflushed.empty() ? part.committed_next_offset : part.unflushed.front().offset);
    }
  }
}

}  // namespace msgsim::chat
