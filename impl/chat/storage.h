// Storage (Cassandra-like, SQLite here): owns every partition p with
// `topology.storage_of(p) == self`. It subscribes to each partition's queue leader from the
// offset after the last one it stored, and reconnects with backoff when the connection breaks.
//
// Records are stored in transactions: entries idempotently by (conv, seq) and by msg_id,
// membership intervals (a user is a member of a group from its join seq through its leave seq;
// both users of a 1:1 conversation always are), and each partition's last offset. After the
// commit every newly stored entry is fanned out: the members at its seq are looked up in the
// connection registry, located devices get a `Route` through their chat server, the others a
// `Notify` to the push service. A lookup the registry never answers times out and is dropped:
// devices catch up by sync.
//
// Group commit: the Records frames that arrive within `tuning.storage_commit_window_ns` share one
// transaction, whichever partitions they are of (the queue sends a frame per partition, so
// with a commit per frame a busy system committed a transaction, with its log writes, for one
// or two records). Ordering rules: the batch commits before anything else uses the database (a
// SyncQuery's read, a receipt's own synced write), so a sync never serves an entry that is not
// durable; entries fan out only after the commit that made them durable, in the order they were
// stored; the offsets go to the queues (OffsetCommit) only once committed. A negative window,
// or a planted bug of the offsets, commits every frame alone.
//
// It answers `SyncQuery` from what it stored (only what the user may see), and keeps the
// highest receipt per (conv, reader, kind), routing a `ReceiptNotice` when it rises.
//
// Retention: the queue deletes its log below what every reader holds (queue.h "Retention"), so
// storage tells every replica of each owned partition the last offset its database holds synced
// (OffsetCommit; the durable one, which the planted bugs may let lag the one in memory): on
// every (re)connection, and at most once a kOffsetHintNs while it moves.
//
// Planted bugs (config.h): leave_one_late (a leave takes effect one seq late in fan-out and
// sync), sync_off_by_one (sync skips the first entry after each cursor), fsync_error_ignored,
// cursor_past_unsynced and storage_not_idempotent (storage.cpp, where each is planted).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "impl/base/sqlite.h"
#include "impl/chat/config.h"
#include "impl/chat/protocol.h"

namespace msgsim::chat {

class StorageNode final : public Node {
 public:
  static constexpr size_t kGroupsMax = 1'000'000;
  static constexpr size_t kKnownDirectMax = 1'000'000;
  static constexpr size_t kFrameBytesBudget = 512 * 1024;  // below wire::kFrameBytesMax
  static constexpr uint64_t kOpenSeq = UINT64_MAX;          // an interval that has not ended
  static constexpr int64_t kOffsetHintNs = 1 * kNanosPerSecond;  // OffsetCommit at most this often
  static constexpr size_t kBatchEntriesMax = 4096;  // a batch holding this many commits at once

  explicit StorageNode(const ChatConfig& config);
  ~StorageNode() override = default;

  void on_start(Context& ctx) override;
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context& ctx, ConnId conn) override;
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override;
  void on_timer(Context& ctx, uint64_t tag) override;
  std::string describe() const override;

  // For tests and reports.
  uint64_t stored() const { return state_.stored; }
  uint64_t last_offset(uint32_t partition) const;
  uint64_t lookups_timed_out() const { return state_.lookups_timed_out; }
  uint64_t routes_sent() const { return state_.routes_sent; }
  uint64_t notifies_sent() const { return state_.notifies_sent; }
  size_t pending_lookups() const { return state_.pending.size(); }
  bool halted() const { return state_.halted; }

 private:
  // [from_seq, to_seq], both included; to_seq = kOpenSeq while the user stays.
  struct Interval {
    uint64_t from_seq = 0;
    uint64_t to_seq = kOpenSeq;
  };
  struct Group {
    std::map<std::string, std::vector<Interval>> members;  // every user who ever joined
  };
  // An outgoing connection to another node, reopened on demand (or, for queues, by a timer)
  // after a backoff when it breaks.
  struct Link {
    ConnId conn = kNoConn;
    int64_t backoff_ns = 0;
    int64_t retry_at_ns = 0;     // on-demand links: no connect before this
    bool is_queue = false;
    bool reconnect_armed = false;  // queue links: the reconnect timer is set
  };
  // One Lookup sent to a registry, waiting for its Located.
  struct PendingLookup {
    int64_t deadline_ns = 0;
    std::shared_ptr<const Entry> entry;            // set for an entry's fan-out
    std::shared_ptr<const ReceiptNotice> receipt;  // set for a receipt
    std::vector<std::string> users;
  };
  // The group commit's open batch (see the top of this file).
  struct Batch {
    bool open = false;         // a transaction holds Records not yet committed
    bool timer_armed = false;  // the commit timer is set (it may outlive an early commit)
    std::set<uint32_t> partitions;  // whose last offset the batch moves
    std::vector<Entry> fresh;       // stored for the first time, to fan out after the commit
  };
  struct State {
    std::map<uint32_t, uint64_t> last_offset;  // owned partitions: the last offset stored (0: none)
    std::map<uint32_t, uint64_t> durable_offset;  // ... as the database holds it, synced
    std::map<uint32_t, uint64_t> hinted_offset;   // ... as the queues last heard it (OffsetCommit)
    bool hint_armed = false;
    std::map<NodeId, Link> links;
    std::map<ConnId, NodeId> link_of_conn;
    std::map<std::string, Group> groups;
    // 1:1 conversations whose users are in user_convs already (a cache: saves two writes a message).
    std::set<std::string> known_direct;
    std::map<uint64_t, PendingLookup> pending;  // by request id, so also by deadline
    uint64_t next_request_id = 1;
    bool sweep_armed = false;
    bool offset_commit_armed = false;  // the planted bug storage_not_idempotent's interval timer
    bool halted = false;  // a SQLite write failed: fail-stop until a restart
    Batch batch;
    uint64_t stored = 0, skipped = 0, routes_sent = 0, notifies_sent = 0, lookups_sent = 0,
             lookups_timed_out = 0, fanouts_dropped = 0, syncs = 0, receipts_raised = 0;
  };

  void open_database(Context& ctx);
  void recover(Context& ctx);
  void connect_queue(Context& ctx, NodeId queue);
  ConnId link_conn(Context& ctx, NodeId peer);
  void on_records(Context& ctx, ConnId conn, Records& records);
  // Inserts the records after `last` (the partition's last offset stored), moving `last` on; the
  // indices of the entries stored for the first time go to `fresh`. False when a write failed.
  bool store_records(Context& ctx, const Records& records, uint64_t& last, std::vector<size_t>& fresh);
  bool batching() const;
  // Stores a frame's records in the open batch (opening it and arming its commit timer).
  void batch_records(Context& ctx, Records& records, uint64_t& last);
  // Commits the open batch, then fans its new entries out; halts if the commit fails.
  void commit_batch(Context& ctx);
  bool store_membership(const Entry& entry);
  void on_located(Context& ctx, const Located& located);
  void on_sync(Context& ctx, ConnId conn, const SyncQuery& query);
  void on_receipt(Context& ctx, ConnId conn, const ReceiptUpdate& update);
  // A stored entry goes to the members at its seq: located devices by Route, the rest by push.
  void fan_out(Context& ctx, Entry&& stored);
  // The users who get the entry at `seq` of `conv`: members at that seq.
  void recipients_at(const std::string& conv, uint64_t seq, std::vector<std::string>& out) const;
  bool member_at(const std::vector<Interval>& intervals, uint64_t seq) const;
  void look_up(Context& ctx, const std::vector<std::string>& users, const std::shared_ptr<const Entry>& entry,
               const std::shared_ptr<const ReceiptNotice>& receipt);
  void sweep(Context& ctx);
  void commit_offsets(Context& ctx);
  // A partition's durable offset moved to `offset`: the queues hear of it within kOffsetHintNs.
  void note_durable(Context& ctx, uint32_t partition, uint64_t offset);
  void send_offset_hints(Context& ctx);
  bool owns(const std::string& conv) const;
  void halt(Context& ctx, const std::string& what);
  // Bug::fsync_error_ignored: true (after logging and rolling back) when the failed write was an
  // fsync error and the planted bug is on, so that the caller carries on instead of halting.
  bool ignores_fsync_error(Context& ctx);
  void close_bad(Context& ctx, ConnId conn, const std::string& why);
  void invariants() const;

  const ChatConfig& config_;
  NodeId self_ = kNoNode;
  // config.users that plan_at_named_index does not find (a user elsewhere than its name says);
  // lookups only.
  std::unordered_map<std::string, uint32_t> devices_of_user_;
  std::set<NodeId> chat_servers_;
  size_t links_max_ = 0;
  State state_;
  sqlite3* db_ = nullptr;
  Bytes scratch_;
  std::vector<std::string> recipients_scratch_;
  std::vector<size_t> fresh_scratch_;
  sql::Statement insert_entry_;
  sql::Statement insert_interval_;
  sql::Statement close_interval_;
  sql::Statement insert_user_conv_;
  sql::Statement upsert_offset_;
  sql::Statement user_convs_;
  sql::Statement read_range_;
  sql::Statement find_receipt_;
  sql::Statement upsert_receipt_;
  sql::Statement begin_, commit_, rollback_;
};

}  // namespace msgsim::chat
