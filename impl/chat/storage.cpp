#include "impl/chat/storage.h"

#include <sqlite3.h>

#include <algorithm>
#include <utility>

#include "impl/chat/entry_store.h"

namespace msgsim::chat {

namespace {

using fast_sql::bind_int;
using fast_sql::bind_text;
using fast_sql::bind_blob;
using fast_sql::next_row;
using fast_sql::run;

constexpr uint64_t kReconnectTag = uint64_t{1} << 32;  // | queue node id
constexpr uint64_t kSweepTag = uint64_t{2} << 32;
constexpr uint64_t kOffsetCommitTag = uint64_t{3} << 32;  // the planted bug storage_not_idempotent
constexpr uint64_t kOffsetHintTag = uint64_t{4} << 32;
constexpr uint64_t kBatchCommitTag = uint64_t{5} << 32;
// The planted bug's offset commit interval: Kafka's auto.commit.interval.ms default.
constexpr int64_t kOffsetCommitIntervalNs = 5 * kNanosPerSecond;

// The two users of "dm:<a>:<b>"; false when the id is not of that shape.
bool direct_users(std::string_view conv, std::string_view& a, std::string_view& b) {
  if (!starts_with(conv, "dm:")) return false;
  const std::string_view users = conv.substr(3);
  const size_t colon = users.find(':');
  if (colon == std::string_view::npos) return false;
  a = users.substr(0, colon);
  b = users.substr(colon + 1);
  return !a.empty() && !b.empty();
}

std::string column_string(sqlite3_stmt* stmt, int index) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, index));
  return text == nullptr ? std::string() : std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt, index)));
}

// An entry's blob as storage keeps it: its fields in the wire encoding, except conv, seq and
// msg_id, which the row's own columns hold (they are its keys); each is written empty. About
// 50 of a message row's ~380 bytes, so more rows fit a 1 KiB page (README, "where the memory
// goes"). read_entry puts them back from the columns.
class WithoutKeyColumns {
 public:
  WithoutKeyColumns(const Entry& entry, Bytes& out) : entry_(entry), writer_(out) {}
  template <class T>
  void operator()(const char* name, const T& field, wire::Max bound = wire::Max{0}) {
    const void* at = &field;
    if (at == &entry_.conv || at == &entry_.seq || at == &entry_.msg_id) {
      writer_(name, T{}, bound);
    } else {
      writer_(name, field, bound);
    }
  }

 private:
  const Entry& entry_;
  wire::Writer writer_;
};

void encode_stored_entry(const Entry& entry, Bytes& out) {
  out.clear();
  WithoutKeyColumns visitor(entry, out);
  const_cast<Entry&>(entry).fields(visitor);  // the visitor only reads
}

int64_t as_sql(uint64_t seq) { return seq >= static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(seq); }

}  // namespace

StorageNode::StorageNode(const ChatConfig& config) : config_(config) {
  // Only the users plan_at_named_index does not find (none in the simulator's runs).
  for (const UserPlan& plan : config.users) {
    if (plan_at_named_index(config, plan.user) != &plan) devices_of_user_[plan.user] = plan.devices;
  }
  chat_servers_.insert(config.topology.chat_servers.begin(), config.topology.chat_servers.end());
  const ChatTopology& t = config.topology;
  links_max_ = t.queues.size() + t.registries.size() + t.chat_servers.size() + t.push.size();
}

uint64_t StorageNode::last_offset(uint32_t partition) const {
  const auto it = state_.last_offset.find(partition);
  return it == state_.last_offset.end() ? 0 : it->second;
}

bool StorageNode::owns(const std::string& conv) const {
  return config_.topology.storage_of(config_.topology.partition_of(conv)) == self_;
}

void StorageNode::open_database(Context& ctx) {
  db_ = open_entry_database(ctx);
  const bool not_idempotent = config_.bugs.on(Bug::storage_not_idempotent);
  // The planted bug's table: rows under a row id of their own (as an ORM makes them), indexed
  // for sync but with no key on the message: storing a record twice makes two rows. The tables
  // are created in the same order either way.
  const char* const entries_table = not_idempotent
      ? "CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL,"
        " msg_id TEXT NOT NULL, entry BLOB NOT NULL);"
        "CREATE INDEX IF NOT EXISTS entries_by_seq ON entries (conv, seq);"
      // Without the bug, entries live in a rowid table too, appended in arrival order, but with
      // (conv, seq) and msg_id as unique indexes: each commit writes the rows' bytes to a few
      // pages at the table's end, and only the narrow index cells land at each conversation's
      // tail and at the random msg_id. Keyed by (conv, seq) WITHOUT ROWID, every ~200-byte row
      // went to its conversation's leaf, which split every few inserts (1 KiB pages): 5.4 pages
      // written per record against 4.0 now (BM_MessagePath, bench/README.md).
      : "CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL,"
        " msg_id TEXT NOT NULL UNIQUE, entry BLOB NOT NULL, UNIQUE (conv, seq));";
  const Status schema = sql::exec(db_,
      std::string("CREATE TABLE IF NOT EXISTS offsets (partition INTEGER PRIMARY KEY, last_offset INTEGER NOT NULL);") +
      entries_table +
      // to_seq NULL: the user is still a member.
      "CREATE TABLE IF NOT EXISTS intervals (conv TEXT NOT NULL, user TEXT NOT NULL, from_seq INTEGER NOT NULL,"
      " to_seq INTEGER, PRIMARY KEY (conv, user, from_seq)) WITHOUT ROWID;"
      "CREATE TABLE IF NOT EXISTS user_convs (user TEXT NOT NULL, conv TEXT NOT NULL,"
      " PRIMARY KEY (user, conv)) WITHOUT ROWID;"
      "CREATE TABLE IF NOT EXISTS receipts (conv TEXT NOT NULL, reader TEXT NOT NULL, kind INTEGER NOT NULL,"
      " up_to INTEGER NOT NULL, PRIMARY KEY (conv, reader, kind)) WITHOUT ROWID;");
  MSGSIM_ASSERT(schema.ok(), schema.ok() ? std::string() : schema.error().message);
  insert_entry_ = must_prepare(db_, not_idempotent ? "INSERT INTO entries (conv, seq, msg_id, entry) VALUES (?, ?, ?, ?)"
                                                   : "INSERT OR IGNORE INTO entries (conv, seq, msg_id, entry) VALUES (?, ?, ?, ?)");
  insert_interval_ = must_prepare(db_, "INSERT OR IGNORE INTO intervals (conv, user, from_seq, to_seq) VALUES (?, ?, ?, NULL)");
  close_interval_ = must_prepare(db_, "UPDATE intervals SET to_seq = ? WHERE conv = ? AND user = ? AND from_seq = ?");
  insert_user_conv_ = must_prepare(db_, "INSERT OR IGNORE INTO user_convs (user, conv) VALUES (?, ?)");
  upsert_offset_ = must_prepare(db_,
      "INSERT INTO offsets (partition, last_offset) VALUES (?, ?)"
      " ON CONFLICT (partition) DO UPDATE SET last_offset = excluded.last_offset");
  user_convs_ = must_prepare(db_, "SELECT conv FROM user_convs WHERE user = ? ORDER BY conv");
  read_range_ = must_prepare(db_, "SELECT seq, entry, msg_id FROM entries WHERE conv = ? AND seq >= ? AND seq <= ? ORDER BY seq");
  find_receipt_ = must_prepare(db_, "SELECT up_to FROM receipts WHERE conv = ? AND reader = ? AND kind = ?");
  upsert_receipt_ = must_prepare(db_,
      "INSERT INTO receipts (conv, reader, kind, up_to) VALUES (?, ?, ?, ?)"
      " ON CONFLICT (conv, reader, kind) DO UPDATE SET up_to = excluded.up_to");
  begin_ = must_prepare(db_, "BEGIN");
  commit_ = must_prepare(db_, "COMMIT");
  rollback_ = must_prepare(db_, "ROLLBACK");
}

void StorageNode::recover(Context& ctx) {
  for (uint32_t p = 0; p < config_.topology.partitions; ++p) {
    if (config_.topology.storage_of(p) == ctx.self()) state_.last_offset[p] = 0;
  }
  {
    sql::Statement stmt = must_prepare(db_, "SELECT partition, last_offset FROM offsets");
    while (next_row(stmt.get()) == 1) {
      const auto it = state_.last_offset.find(static_cast<uint32_t>(stmt.column_int64(0)));
      if (it != state_.last_offset.end()) it->second = static_cast<uint64_t>(stmt.column_int64(1));
    }
  }
  state_.durable_offset = state_.last_offset;
  {
    sql::Statement stmt = must_prepare(db_, "SELECT conv, user, from_seq, to_seq FROM intervals ORDER BY conv, user, from_seq");
    while (next_row(stmt.get()) == 1) {
      Interval interval;
      interval.from_seq = static_cast<uint64_t>(stmt.column_int64(2));
      interval.to_seq = stmt.column_is_null(3) ? kOpenSeq : static_cast<uint64_t>(stmt.column_int64(3));
      state_.groups[std::string(stmt.column_text(0))].members[std::string(stmt.column_text(1))].push_back(interval);
    }
  }
}

void StorageNode::on_start(Context& ctx) {
  self_ = ctx.self();
  open_database(ctx);
  if (!make_recovered_state_durable(db_)) {
    halt(ctx, "syncing the recovered entries");
    return;
  }
  recover(ctx);
  std::set<NodeId> queues;
  // Every replica of each owned partition: the one that leads serves the subscription, and
  // after a failover the next one does, from the same offsets (queue.h "Failover").
  for (const auto& [p, last] : state_.last_offset) {
    for (uint32_t k = 0; k < config_.topology.replicas(); ++k) queues.insert(config_.topology.replica_of(p, k));
  }
  for (NodeId queue : queues) {
    Link& link = state_.links[queue];
    link.is_queue = true;
    link.backoff_ns = config_.tuning.backoff_initial_ns;
    connect_queue(ctx, queue);
  }
  ctx.log(LogLevel::info, "storage: recovered " + describe());
  invariants();
}

void StorageNode::connect_queue(Context& ctx, NodeId queue) {
  Link& link = state_.links.at(queue);
  MSGSIM_ASSERT_EQ(link.conn, kNoConn);
  link.conn = ctx.connect(queue);
  state_.link_of_conn[link.conn] = queue;
  // Frames queue behind the handshake: subscribe at once, from the offset after the last stored.
  for (const auto& [p, last] : state_.last_offset) {
    if (!config_.topology.is_replica(p, queue)) continue;
    ctx.send(link.conn, encode(Frame{Subscribe{p, last + 1}}));
    // A restarted queue node knows no consumer offset: it hears it again here.
    const uint64_t durable = state_.durable_offset.at(p);
    if (durable != 0) ctx.send(link.conn, encode(Frame{OffsetCommit{p, durable}}));
  }
}

ConnId StorageNode::link_conn(Context& ctx, NodeId peer) {
  Link& link = state_.links[peer];
  if (link.conn != kNoConn) return link.conn;
  if (link.backoff_ns == 0) link.backoff_ns = config_.tuning.backoff_initial_ns;
  if (ctx.now_ns() < link.retry_at_ns) return kNoConn;  // it broke recently: do not hammer it
  link.conn = ctx.connect(peer);
  state_.link_of_conn[link.conn] = peer;
  return link.conn;
}

void StorageNode::on_connected(Context&, ConnId conn) {
  const auto it = state_.link_of_conn.find(conn);
  if (it != state_.link_of_conn.end()) state_.links.at(it->second).backoff_ns = config_.tuning.backoff_initial_ns;
  invariants();
}

void StorageNode::on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) {
  const auto it = state_.link_of_conn.find(conn);
  if (it == state_.link_of_conn.end()) return;  // a chat server's connection to us
  const NodeId peer = it->second;
  state_.link_of_conn.erase(it);
  Link& link = state_.links.at(peer);
  link.conn = kNoConn;
  // Exponential backoff with jitter: half fixed, half drawn, so peers do not retry in step.
  const int64_t half = std::max<int64_t>(link.backoff_ns / 2, 1);
  const int64_t delay_ns = half + static_cast<int64_t>(ctx.rng().below(static_cast<uint64_t>(half)));
  link.backoff_ns = std::min(link.backoff_ns * 2, config_.tuning.backoff_max_ns);
  if (link.is_queue) {
    ctx.log(LogLevel::info, "storage: queue " + std::to_string(peer) + " connection broke (" + to_string(reason) +
                                "); reconnecting in " + std::to_string(delay_ns / kNanosPerMilli) + " ms");
    MSGSIM_ASSERT(!link.reconnect_armed, "a queue link broke twice without a reconnect");
    link.reconnect_armed = true;
    ctx.set_timer(delay_ns, kReconnectTag | peer);
  } else {
    link.retry_at_ns = ctx.now_ns() + delay_ns;
  }
  invariants();
}

void StorageNode::on_timer(Context& ctx, uint64_t tag) {
  if (tag == kSweepTag) {
    state_.sweep_armed = false;
    sweep(ctx);
  } else if (tag == kOffsetHintTag) {
    state_.hint_armed = false;
    if (!state_.halted) send_offset_hints(ctx);
  } else if (tag == kOffsetCommitTag) {
    state_.offset_commit_armed = false;
    if (!state_.halted) commit_offsets(ctx);
  } else if (tag == kBatchCommitTag) {
    state_.batch.timer_armed = false;
    if (!state_.halted) commit_batch(ctx);
  } else if ((tag & ~uint64_t{UINT32_MAX}) == kReconnectTag) {
    const auto queue = static_cast<NodeId>(tag & UINT32_MAX);
    Link& link = state_.links.at(queue);
    link.reconnect_armed = false;
    if (!state_.halted) connect_queue(ctx, queue);
  } else {
    MSGSIM_UNREACHABLE("storage: unknown timer tag " + std::to_string(tag));
  }
  invariants();
}

void StorageNode::close_bad(Context& ctx, ConnId conn, const std::string& why) {
  ctx.log(LogLevel::warn, "storage: closing a connection: " + why);
  ctx.close(conn);
  // If it was one of our links, it is gone now: the next use reopens it (or the timer does).
  on_disconnect(ctx, conn, DisconnectReason::closed_by_peer);
}

bool StorageNode::ignores_fsync_error(Context& ctx) {
  if (!config_.bugs.on(Bug::fsync_error_ignored) || sqlite3_extended_errcode(db_) != SQLITE_IOERR_FSYNC) return false;
  // The planted bug (fsyncgate): an fsync error taken for a slow disk whose pages the kernel
  // will write back anyway, on every write path of the node alike, so the node carries on
  // instead of halting (which would make it recover from what the disk kept, and hide the bug).
  ctx.log(LogLevel::warn, "storage: fsync failed; carrying on");
  if (!sqlite3_get_autocommit(db_)) run(rollback_.get());
  return true;
}

void StorageNode::halt(Context& ctx, const std::string& what) {
  // A write that did not commit may or may not be on disk, and memory (offsets, membership)
  // may already be ahead of what is: carrying on could store past a hole. Fail-stop: answer
  // nothing more and stop (ctx.exit); the supervisor restarts the node, which recovers from what
  // the disk kept and resubscribes from the last offset stored there.
  ctx.log(LogLevel::error, "storage: halting: " + what + ": " + sqlite3_errmsg(db_));
  if (!sqlite3_get_autocommit(db_)) run(rollback_.get());
  state_.batch.open = false;  // rolled back: nothing of it is stored, and nothing fans out
  state_.batch.partitions.clear();
  state_.batch.fresh.clear();
  state_.halted = true;
  ctx.exit();
}

void StorageNode::on_frame(Context& ctx, ConnId conn, ByteView bytes) {
  if (state_.halted) return;  // fail-stop: answers nothing, so nothing wrong
  Result<Frame> decoded = decode(bytes);
  if (!decoded.ok()) {
    close_bad(ctx, conn, "bad frame: " + decoded.error().message);
    return;
  }
  ctx.charge_cpu(config_.cpu_costs.frame_cost_ns(CostRole::storage, *decoded));
  if (auto* records = std::get_if<Records>(&*decoded)) {
    on_records(ctx, conn, *records);
  } else if (const auto* located = std::get_if<Located>(&*decoded)) {
    on_located(ctx, *located);
  } else if (const auto* query = std::get_if<SyncQuery>(&*decoded)) {
    // The open batch first (storage.h, "Group commit"): a sync serves only what is durable.
    commit_batch(ctx);
    if (!state_.halted) on_sync(ctx, conn, *query);
  } else if (const auto* update = std::get_if<ReceiptUpdate>(&*decoded)) {
    // ... and a receipt's write is its own synced transaction, not part of the batch.
    commit_batch(ctx);
    if (!state_.halted) on_receipt(ctx, conn, *update);
  } else {
    close_bad(ctx, conn, std::string("unexpected ") + frame_name(*decoded));
  }
  invariants();
}

// ---------------------------------------------------------------------------------------------
// Storing

bool StorageNode::store_membership(const Entry& entry) {
  std::string_view a, b;
  if (direct_users(entry.conv, a, b)) {
    // Both users belong to it from its first entry on; recorded once per incarnation at most.
    if (state_.known_direct.count(entry.conv) != 0) return true;
    if (state_.known_direct.size() < kKnownDirectMax) state_.known_direct.insert(entry.conv);
    for (std::string_view user : {a, b}) {
      sqlite3_stmt* stmt = insert_user_conv_.get();
      bind_text(stmt, 1, user);
      bind_text(stmt, 2, entry.conv);
      if (!run(stmt)) return false;
    }
    return true;
  }
  if (entry.kind == EntryKind::message) return true;
  std::vector<Interval>& intervals = state_.groups[entry.conv].members[entry.member];
  const bool member_now = !intervals.empty() && intervals.back().to_seq == kOpenSeq;
  if (entry.kind == EntryKind::join) {
    if (member_now) return true;  // the queue checks this; a second join changes nothing
    intervals.push_back(Interval{entry.seq, kOpenSeq});
    sqlite3_stmt* stmt = insert_interval_.get();
    bind_text(stmt, 1, entry.conv);
    bind_text(stmt, 2, entry.member);
    bind_int(stmt, 3, as_sql(entry.seq));
    if (!run(stmt)) return false;
    stmt = insert_user_conv_.get();
    bind_text(stmt, 1, entry.member);
    bind_text(stmt, 2, entry.conv);
    return run(stmt);
  }
  if (!member_now) return true;  // a leave of a non-member changes nothing
  intervals.back().to_seq = entry.seq;
  sqlite3_stmt* stmt = close_interval_.get();
  bind_int(stmt, 1, as_sql(entry.seq));
  bind_text(stmt, 2, entry.conv);
  bind_text(stmt, 3, entry.member);
  bind_int(stmt, 4, as_sql(intervals.back().from_seq));
  return run(stmt);
}

void StorageNode::on_records(Context& ctx, ConnId conn, Records& records) {
  const auto last_it = state_.last_offset.find(records.partition);
  if (last_it == state_.last_offset.end()) {
    close_bad(ctx, conn, "Records of partition " + std::to_string(records.partition) + " that this node does not own");
    return;
  }
  const auto link = state_.link_of_conn.find(conn);
  if (link == state_.link_of_conn.end() || !config_.topology.is_replica(records.partition, link->second)) {
    close_bad(ctx, conn, "Records of partition " + std::to_string(records.partition) + " from a node not its replica");
    return;
  }
  if (batching()) {
    batch_records(ctx, records, last_it->second);
    return;
  }
  // One transaction for this frame alone: the window is negative, or a planted bug of the
  // offsets is on (each commits its offsets its own way).
  uint64_t last = last_it->second;
  std::vector<size_t> fresh;  // indices of records stored for the first time: they fan out
  fresh.reserve(records.records.size());
  bool ok = true;
  const bool offset_first = config_.bugs.on(Bug::cursor_past_unsynced);
  uint64_t offset_first_durable = 0;  // that bug: the offset its first transaction made durable
  if (offset_first) {
    // The planted bug (a consumer that commits its offset before it has processed, to keep the
    // offset table off the hot path): the offset of the whole batch is committed and synced
    // first, and the entries are written behind it with synchronous=OFF, to be synced by the
    // next commit. A power loss in between keeps the offset and loses the entries: the node
    // resubscribes past them, so they are never fetched again and no sync returns them.
    uint64_t newest = last;
    for (const RecordAt& record : records.records) newest = std::max(newest, record.offset);
    if (newest != last) {
      sqlite3_stmt* offset = upsert_offset_.get();
      bind_int(offset, 1, static_cast<int64_t>(records.partition));
      bind_int(offset, 2, static_cast<int64_t>(newest));
      ok = run(begin_.get()) && run(offset) && run(commit_.get());
      if (ok) offset_first_durable = newest;
    }
    ok = ok && sql::exec(db_, "PRAGMA synchronous=OFF").ok();
  }
  ok = ok && run(begin_.get());
  ok = ok && store_records(ctx, records, last, fresh);
  const bool offsets_on_interval = config_.bugs.on(Bug::storage_not_idempotent);
  if (ok && last != last_it->second && !offset_first && !offsets_on_interval) {
    sqlite3_stmt* offset = upsert_offset_.get();
    bind_int(offset, 1, static_cast<int64_t>(records.partition));
    bind_int(offset, 2, static_cast<int64_t>(last));
    ok = run(offset);
  }
  if (ok) ok = run(commit_.get());
  // What the database now holds synced (before the planted bug below may pretend a failed
  // commit went through): the queues may delete the log up to there.
  const uint64_t durable = !ok || offsets_on_interval ? 0 : offset_first ? offset_first_durable : last;
  if (ok && offset_first) ok = sql::exec(db_, "PRAGMA synchronous=FULL").ok();
  // Bug::fsync_error_ignored: SQLite has undone the transaction, yet the offset below moves on
  // and the entries fan out; the next batch's commit stores an offset past them.
  if (!ok && ignores_fsync_error(ctx)) ok = true;
  if (!ok) {
    halt(ctx, "storing records of partition " + std::to_string(records.partition));
    return;
  }
  if (offsets_on_interval && last != last_it->second && !state_.offset_commit_armed) {
    // The planted bug (a consumer with auto-commit, as Kafka's enable.auto.commit): the offset
    // is committed every few seconds, not with the entries. Memory moves on at once, so this
    // incarnation never stores a record twice; a restart resubscribes from the offset on disk,
    // consumes again what it stored since, and the plain insert stores it a second time.
    state_.offset_commit_armed = true;
    ctx.set_timer(kOffsetCommitIntervalNs, kOffsetCommitTag);
  }
  last_it->second = last;
  if (durable != 0) note_durable(ctx, records.partition, durable);
  state_.stored += fresh.size();

  // Persisted: now fan out.
  for (size_t i : fresh) fan_out(ctx, std::move(records.records[i].entry));
}

void StorageNode::fan_out(Context& ctx, Entry&& stored) {
  auto entry = std::make_shared<const Entry>(std::move(stored));
  recipients_at(entry->conv, entry->seq, recipients_scratch_);
  look_up(ctx, recipients_scratch_, entry, nullptr);
}

bool StorageNode::store_records(Context& ctx, const Records& records, uint64_t& last, std::vector<size_t>& fresh) {
  for (size_t i = 0; i < records.records.size(); ++i) {
    const RecordAt& record = records.records[i];
    const Entry& entry = record.entry;
    if (record.offset <= last) {
      state_.skipped++;  // stored already (a resubscription overlaps, or the queue reused offsets)
      continue;
    }
    last = record.offset;
    if (entry.seq == 0 || entry.msg_id.empty() || config_.topology.partition_of(entry.conv) != records.partition) {
      ctx.log(LogLevel::warn, "storage: skipping a malformed record at offset " + std::to_string(record.offset) +
                                  " of partition " + std::to_string(records.partition));
      state_.skipped++;
      continue;
    }
    encode_stored_entry(entry, scratch_);
    sqlite3_stmt* insert = insert_entry_.get();
    bind_text(insert, 1, entry.conv);
    bind_int(insert, 2, as_sql(entry.seq));
    bind_text(insert, 3, entry.msg_id);
    bind_blob(insert, 4, scratch_);
    if (!run(insert)) return false;
    if (sqlite3_changes(db_) == 0) {
      state_.skipped++;  // the same (conv, seq) or msg_id is stored already
      continue;
    }
    if (!store_membership(entry)) return false;
    fresh.push_back(i);
  }
  return true;
}

bool StorageNode::batching() const {
  return config_.tuning.storage_commit_window_ns >= 0 && !config_.bugs.on(Bug::cursor_past_unsynced) &&
         !config_.bugs.on(Bug::storage_not_idempotent);
}

void StorageNode::batch_records(Context& ctx, Records& records, uint64_t& last) {
  Batch& batch = state_.batch;
  const uint64_t last_before = last;
  fresh_scratch_.clear();
  bool ok = batch.open || run(begin_.get());
  batch.open = batch.open || ok;
  // Memory's last offset moves on at once, so a later frame of this batch skips what this one
  // stored; if the commit fails the node halts, and a restart takes the offset from disk.
  ok = ok && store_records(ctx, records, last, fresh_scratch_);
  if (!ok && !ignores_fsync_error(ctx)) {
    halt(ctx, "storing records of partition " + std::to_string(records.partition));
    return;
  }
  if (!ok) {
    // Bug::fsync_error_ignored rolled the batch back and carries on as if it were committed.
    batch.open = false;
  }
  if (last != last_before) batch.partitions.insert(records.partition);
  for (size_t i : fresh_scratch_) batch.fresh.push_back(std::move(records.records[i].entry));
  if (!batch.open || batch.fresh.size() >= kBatchEntriesMax) {
    commit_batch(ctx);
    return;
  }
  if (!batch.timer_armed) {
    batch.timer_armed = true;
    ctx.set_timer(config_.tuning.storage_commit_window_ns, kBatchCommitTag);
  }
}

void StorageNode::commit_batch(Context& ctx) {
  Batch& batch = state_.batch;
  if (!batch.open && batch.fresh.empty() && batch.partitions.empty()) return;
  bool committed = batch.open;
  for (auto it = batch.partitions.begin(); committed && it != batch.partitions.end(); ++it) {
    sqlite3_stmt* offset = upsert_offset_.get();
    bind_int(offset, 1, static_cast<int64_t>(*it));
    bind_int(offset, 2, static_cast<int64_t>(state_.last_offset.at(*it)));
    committed = run(offset);
  }
  committed = committed && run(commit_.get());
  // Bug::fsync_error_ignored: SQLite has undone the transaction (or it was undone when a write
  // in it failed), yet the offsets in memory stay moved on and the entries fan out; the next
  // batch's commit stores an offset past them.
  if (!committed && batch.open && !ignores_fsync_error(ctx)) {
    halt(ctx, "committing the stored records of " + std::to_string(batch.partitions.size()) + " partitions");
    return;
  }
  batch.open = false;
  if (committed) {
    for (uint32_t partition : batch.partitions) note_durable(ctx, partition, state_.last_offset.at(partition));
  }
  state_.stored += batch.fresh.size();
  // Persisted: now fan out, in the order the entries were stored.
  for (Entry& stored : batch.fresh) fan_out(ctx, std::move(stored));
  batch.fresh.clear();
  batch.partitions.clear();
}

// The planted bug storage_not_idempotent's periodic offset commit: every partition's offset as
// memory has it, in one transaction.
void StorageNode::commit_offsets(Context& ctx) {
  bool ok = run(begin_.get());
  for (const auto& [partition, last] : state_.last_offset) {
    if (!ok || last == 0) continue;
    sqlite3_stmt* offset = upsert_offset_.get();
    bind_int(offset, 1, static_cast<int64_t>(partition));
    bind_int(offset, 2, static_cast<int64_t>(last));
    ok = run(offset);
  }
  if (ok) ok = run(commit_.get());
  if (!ok) {
    halt(ctx, "committing the queue offsets");
    return;
  }
  for (const auto& [partition, last] : state_.last_offset)
    if (last != 0) note_durable(ctx, partition, last);
}

void StorageNode::note_durable(Context& ctx, uint32_t partition, uint64_t offset) {
  uint64_t& durable = state_.durable_offset.at(partition);
  if (offset <= durable) return;
  durable = offset;
  if (!state_.hint_armed) {
    state_.hint_armed = true;
    ctx.set_timer(kOffsetHintNs, kOffsetHintTag);
  }
}

void StorageNode::send_offset_hints(Context& ctx) {
  for (const auto& [partition, durable] : state_.durable_offset) {
    uint64_t& hinted = state_.hinted_offset[partition];
    if (durable == hinted) continue;
    hinted = durable;
    // Every replica: whichever leads computes the floor, and a follower may lead next.
    for (uint32_t k = 0; k < config_.topology.replicas(); ++k) {
      const auto link = state_.links.find(config_.topology.replica_of(partition, k));
      if (link != state_.links.end() && link->second.conn != kNoConn)
        ctx.send(link->second.conn, encode(Frame{OffsetCommit{partition, durable}}));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Fan-out

bool StorageNode::member_at(const std::vector<Interval>& intervals, uint64_t seq) const {
  const uint64_t late = config_.bugs.on(Bug::leave_one_late) ? 1 : 0;
  for (const Interval& interval : intervals) {
    const uint64_t to = interval.to_seq == kOpenSeq ? kOpenSeq : interval.to_seq + late;
    if (interval.from_seq <= seq && seq <= to) return true;
  }
  return false;
}

void StorageNode::recipients_at(const std::string& conv, uint64_t seq, std::vector<std::string>& out) const {
  out.clear();
  std::string_view a, b;
  if (direct_users(conv, a, b)) {
    out.emplace_back(a);
    out.emplace_back(b);
    return;
  }
  const auto group = state_.groups.find(conv);
  if (group == state_.groups.end()) return;
  for (const auto& [user, intervals] : group->second.members) {
    if (member_at(intervals, seq)) out.push_back(user);
  }
}

void StorageNode::look_up(Context& ctx, const std::vector<std::string>& users, const std::shared_ptr<const Entry>& entry,
                          const std::shared_ptr<const ReceiptNotice>& receipt) {
  // One Lookup per registry (users are spread over registries by a hash of the user id).
  std::map<NodeId, std::vector<std::string>> by_registry;
  for (const std::string& user : users) by_registry[config_.topology.registry_of(user)].push_back(user);
  for (auto& [registry, group] : by_registry) {
    for (size_t start = 0; start < group.size(); start += kUsersPerLookupMax) {
      if (state_.pending.size() >= config_.tuning.server_pending_max) {
        state_.fanouts_dropped++;  // overloaded: the devices catch up by sync
        continue;
      }
      const ConnId conn = link_conn(ctx, registry);
      if (conn == kNoConn) {
        state_.fanouts_dropped++;  // the registry is backing off: same as a lookup that timed out
        continue;
      }
      const size_t end = std::min(group.size(), start + kUsersPerLookupMax);
      Lookup lookup{state_.next_request_id++, {}};
      PendingLookup pending{ctx.now_ns() + config_.tuning.server_request_timeout_ns, entry, receipt, {}};
      lookup.users.reserve(end - start);
      pending.users.reserve(end - start);
      for (size_t i = start; i < end; ++i) {
        lookup.users.push_back(UserRef{group[i]});
        pending.users.push_back(std::move(group[i]));
      }
      state_.pending.emplace(lookup.request_id, std::move(pending));
      ctx.send(conn, encode(Frame{std::move(lookup)}));
      state_.lookups_sent++;
    }
  }
  if (!state_.pending.empty() && !state_.sweep_armed) {
    state_.sweep_armed = true;
    ctx.set_timer(std::max<int64_t>(state_.pending.begin()->second.deadline_ns - ctx.now_ns(), 1), kSweepTag);
  }
}

void StorageNode::sweep(Context& ctx) {
  const int64_t now = ctx.now_ns();
  while (!state_.pending.empty() && state_.pending.begin()->second.deadline_ns <= now) {
    state_.pending.erase(state_.pending.begin());
    state_.lookups_timed_out++;
  }
  if (!state_.pending.empty()) {
    state_.sweep_armed = true;
    ctx.set_timer(std::max<int64_t>(state_.pending.begin()->second.deadline_ns - now, 1), kSweepTag);
  }
}

void StorageNode::on_located(Context& ctx, const Located& located) {
  const auto it = state_.pending.find(located.request_id);
  if (it == state_.pending.end()) return;  // timed out already: its devices sync instead
  PendingLookup pending = std::move(it->second);
  state_.pending.erase(it);

  // (user, device) -> chat server, sorted for binary search; unknown servers count as absent.
  std::vector<std::pair<std::pair<std::string_view, std::string_view>, NodeId>> where;
  where.reserve(located.locations.size());
  for (const Location& location : located.locations) {
    if (chat_servers_.count(location.server) != 0) where.push_back({{location.user, location.device}, location.server});
  }
  std::sort(where.begin(), where.end());

  std::map<NodeId, std::vector<DeviceAddress>> by_server;
  const NodeId push = config_.topology.push.empty() ? kNoNode : config_.topology.push[0];
  std::string device;
  for (const std::string& user : pending.users) {
    uint32_t devices = 0;
    if (const UserPlan* named = plan_at_named_index(config_, user)) {
      devices = named->devices;
    } else if (const auto plan = devices_of_user_.find(user); plan != devices_of_user_.end()) {
      devices = plan->second;
    }
    for (uint32_t i = 1; i <= devices; ++i) {
      device = user + ".d" + std::to_string(i);
      const auto found = std::lower_bound(where.begin(), where.end(), std::pair<std::string_view, std::string_view>{user, device},
                                          [](const auto& item, const auto& key) { return item.first < key; });
      if (found != where.end() && found->first.first == user && found->first.second == device) {
        by_server[found->second].push_back(DeviceAddress{user, device});
      } else if (pending.entry != nullptr && push != kNoNode) {
        const ConnId conn = link_conn(ctx, push);
        if (conn == kNoConn) continue;
        ctx.send(conn, encode(Frame{Notify{user, device, pending.entry->conv, pending.entry->seq}}));
        state_.notifies_sent++;
      }
    }
  }
  for (auto& [server, targets] : by_server) {
    const ConnId conn = link_conn(ctx, server);
    if (conn == kNoConn) continue;  // that server broke recently: its devices will sync
    for (size_t start = 0; start < targets.size(); start += kTargetsMax) {
      Route route;
      const size_t end = std::min(targets.size(), start + kTargetsMax);
      route.targets.assign(std::make_move_iterator(targets.begin() + static_cast<std::ptrdiff_t>(start)),
                           std::make_move_iterator(targets.begin() + static_cast<std::ptrdiff_t>(end)));
      if (pending.entry != nullptr) {
        route.entry = *pending.entry;
      } else {
        route.is_receipt = true;
        route.receipt = *pending.receipt;
      }
      ctx.send(conn, encode(Frame{std::move(route)}));
      state_.routes_sent++;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Sync and receipts

void StorageNode::on_sync(Context& ctx, ConnId conn, const SyncQuery& query) {
  state_.syncs++;
  std::map<std::string_view, uint64_t> cursors;
  for (const Cursor& cursor : query.cursors) cursors[cursor.conv] = cursor.seq;

  std::vector<std::string> convs;
  {
    sqlite3_stmt* stmt = user_convs_.get();
    bind_text(stmt, 1, query.user);
    int row = 0;
    while ((row = next_row(stmt)) == 1) convs.push_back(column_string(stmt, 0));
    sqlite3_reset(stmt);
    if (row < 0) {
      halt(ctx, "reading the conversations of " + query.user);
      return;
    }
  }

  SyncResult result{query.request_id, {}, false};
  size_t result_bytes = 0;
  const bool skip_first = config_.bugs.on(Bug::sync_off_by_one);
  const uint64_t late = config_.bugs.on(Bug::leave_one_late) ? 1 : 0;
  for (const std::string& conv : convs) {
    if (!owns(conv)) continue;  // stored here under an older topology
    const auto cursor_it = cursors.find(conv);
    const uint64_t after = cursor_it == cursors.end() ? 0 : cursor_it->second;
    if (after == UINT64_MAX) continue;
    // The seq ranges the user may see: all of a 1:1 conversation, a group's membership
    // intervals (which hold the user's own join and leave entries), merged.
    std::vector<Interval> ranges;
    std::string_view a, b;
    if (direct_users(conv, a, b)) {
      ranges.push_back(Interval{1, kOpenSeq});
    } else {
      const auto group = state_.groups.find(conv);
      if (group == state_.groups.end()) continue;
      const auto member = group->second.members.find(query.user);
      if (member == group->second.members.end()) continue;
      for (const Interval& interval : member->second) {
        const uint64_t to = interval.to_seq == kOpenSeq ? kOpenSeq : interval.to_seq + late;
        if (!ranges.empty() && interval.from_seq <= ranges.back().to_seq + 1) {
          ranges.back().to_seq = std::max(ranges.back().to_seq, to);
        } else {
          ranges.push_back(Interval{interval.from_seq, to});
        }
      }
    }
    bool first = true;
    for (const Interval& range : ranges) {
      if (range.to_seq <= after) continue;
      sqlite3_stmt* read = read_range_.get();
      bind_text(read, 1, conv);
      bind_int(read, 2, as_sql(std::max(range.from_seq, after + 1)));
      bind_int(read, 3, as_sql(range.to_seq));
      int row = 0;
      while ((row = next_row(read)) == 1) {
        if (first && skip_first) {
          first = false;  // the planted bug: the entry right after the cursor is lost
          continue;
        }
        first = false;
        Entry entry;
        const auto* data = static_cast<const uint8_t*>(sqlite3_column_blob(read, 1));
        MSGSIM_ASSERT(decode_entry(ByteView(data, static_cast<size_t>(sqlite3_column_bytes(read, 1))), entry),
                      "storage: undecodable stored entry in " + conv);
        entry.conv = conv;  // the blob leaves out what the columns hold (encode_stored_entry)
        entry.seq = static_cast<uint64_t>(sqlite3_column_int64(read, 0));
        entry.msg_id = column_string(read, 2);
        const size_t bytes = entry_bytes_max(entry);
        if (result.entries.size() == kEntriesPerFrameMax || result_bytes + bytes > kFrameBytesBudget) {
          ctx.send(conn, encode(Frame{std::move(result)}));
          result = SyncResult{query.request_id, {}, false};
          result_bytes = 0;
        }
        result.entries.push_back(std::move(entry));
        result_bytes += bytes;
      }
      sqlite3_reset(read);
      if (row < 0) {
        halt(ctx, "reading " + conv + " for a sync");
        return;
      }
    }
  }
  result.done = true;
  ctx.send(conn, encode(Frame{std::move(result)}));
}

void StorageNode::on_receipt(Context& ctx, ConnId conn, const ReceiptUpdate& update) {
  if (!owns(update.conv)) {
    close_bad(ctx, conn, "ReceiptUpdate for " + update.conv + " that this node does not own");
    return;
  }
  // The reader must be, or have been, in the conversation.
  std::string_view a, b;
  const bool direct = direct_users(update.conv, a, b);
  bool in_conversation = false;
  if (direct) {
    in_conversation = update.reader == a || update.reader == b;
  } else {
    const auto group = state_.groups.find(update.conv);
    in_conversation = group != state_.groups.end() && group->second.members.count(update.reader) != 0;
  }
  if (!in_conversation) {
    ctx.log(LogLevel::warn, "storage: ignoring a receipt of " + update.reader + " who is not in " + update.conv);
    return;
  }
  sqlite3_stmt* find = find_receipt_.get();
  bind_text(find, 1, update.conv);
  bind_text(find, 2, update.reader);
  bind_int(find, 3, static_cast<int64_t>(update.kind));
  const int row = next_row(find);
  const uint64_t stored = row == 1 ? static_cast<uint64_t>(sqlite3_column_int64(find, 0)) : 0;
  sqlite3_reset(find);
  if (row < 0) {
    halt(ctx, "reading a receipt");
    return;
  }
  if (update.up_to <= stored) return;  // receipts only rise
  sqlite3_stmt* upsert = upsert_receipt_.get();
  bind_text(upsert, 1, update.conv);
  bind_text(upsert, 2, update.reader);
  bind_int(upsert, 3, static_cast<int64_t>(update.kind));
  bind_int(upsert, 4, as_sql(update.up_to));
  if (!run(upsert) && !ignores_fsync_error(ctx)) {  // one statement in autocommit: its own synced transaction
    halt(ctx, "storing a receipt");
    return;
  }
  state_.receipts_raised++;

  // Every member now, except the reader.
  std::vector<std::string> users;
  if (direct) {
    users.emplace_back(update.reader == a ? b : a);
  } else {
    for (const auto& [user, intervals] : state_.groups.at(update.conv).members) {
      if (user != update.reader && !intervals.empty() && intervals.back().to_seq == kOpenSeq) users.push_back(user);
    }
  }
  auto notice = std::make_shared<const ReceiptNotice>(ReceiptNotice{update.conv, update.reader, update.kind, update.up_to});
  look_up(ctx, users, nullptr, notice);
}

// ---------------------------------------------------------------------------------------------

std::string StorageNode::describe() const {
  std::string out = "storage partitions=" + std::to_string(state_.last_offset.size()) +
                    " groups=" + std::to_string(state_.groups.size()) + " stored=" + std::to_string(state_.stored) +
                    " skipped=" + std::to_string(state_.skipped) + " pending=" + std::to_string(state_.pending.size()) +
                    " lookups=" + std::to_string(state_.lookups_sent) +
                    " timed_out=" + std::to_string(state_.lookups_timed_out) +
                    " dropped=" + std::to_string(state_.fanouts_dropped) + " routes=" + std::to_string(state_.routes_sent) +
                    " notifies=" + std::to_string(state_.notifies_sent) + " syncs=" + std::to_string(state_.syncs) +
                    " receipts=" + std::to_string(state_.receipts_raised) +
                    (state_.batch.open ? " batch_open entries=" + std::to_string(state_.batch.fresh.size()) : "") +
                    (state_.halted ? " HALTED" : "");
  for (const auto& [p, last] : state_.last_offset) out += " p" + std::to_string(p) + ":" + std::to_string(last);
  return out;
}

void StorageNode::invariants() const {
  MSGSIM_ASSERT_LE(state_.pending.size(), config_.tuning.server_pending_max);
  MSGSIM_ASSERT_LE(state_.groups.size(), kGroupsMax);
  MSGSIM_ASSERT_LE(state_.known_direct.size(), kKnownDirectMax);
  // Links go only to nodes of the topology (chat servers are checked before a Route).
  MSGSIM_ASSERT_LE(state_.links.size(), links_max_);
  MSGSIM_ASSERT(state_.pending.empty() || state_.sweep_armed, "pending lookups without a sweep timer");
  // Between handlers a batch is open (a transaction with its commit timer set) or wholly gone.
  const Batch& batch = state_.batch;
  MSGSIM_ASSERT_LE(batch.fresh.size(), kBatchEntriesMax);
  if (batch.open) {
    MSGSIM_ASSERT(batch.timer_armed, "an open batch without its commit timer");
    MSGSIM_ASSERT(db_ != nullptr && !sqlite3_get_autocommit(db_), "an open batch without an open transaction");
  } else {
    MSGSIM_ASSERT(batch.fresh.empty() && batch.partitions.empty(), "a closed batch holding " + std::to_string(batch.fresh.size()) + " entries");
  }
  MSGSIM_ASSERT_EQ(state_.link_of_conn.size(),
                   static_cast<size_t>(std::count_if(state_.links.begin(), state_.links.end(),
                                                     [](const auto& link) { return link.second.conn != kNoConn; })));
  for (const auto& [peer, link] : state_.links) {
    if (link.is_queue) MSGSIM_ASSERT(link.conn != kNoConn || link.reconnect_armed || state_.halted,
                                     "a queue link neither connected nor reconnecting");
  }
}

}  // namespace msgsim::chat
