// The queue (Kafka-like): a partitioned, append-only log, durable in SQLite. This node leads
// every partition p with `topology.queue_of(p) == self`: it checks each produced entry
// (membership of groups and 1:1 conversations), assigns the conversation's next seq and the
// partition's next offset, writes log + conversation state + msg_id in the open transaction,
// and only after that transaction commits (synced) answers `Produced` and hands the record to
// the partition's subscribers: persist before send.
//
// Group commit: produces that arrive within `kGroupCommitNs` of each other share one
// transaction (at most `kBatchMax` answers), as databases and Kafka brokers batch their fsyncs.
// Memory (seqs, members, offsets) moves at once so later produces of the batch are checked
// against it; answers and records wait for the commit. A failed commit halts the node
// (fail-stop); a restart recovers from what the disk kept.
//
// A retried produce (same msg_id) gets the answer the first one got, accepted with the same
// seq or rejected with the same reason: both are recorded in the same transaction as the rest.
// Rejected produces take no seq and no offset.
//
// Subscribers (storage nodes) get the stored records from the offset they ask for, then every
// new committed record. Catch-up reads committed records from SQLite a few frames at a time (a
// timer continues it), so one subscription never floods the network; new records wait
// `kLingerNs` (Kafka's linger.ms) so a busy partition sends frames of many records, and its
// subscriber stores them in one transaction, instead of one frame and transaction each.
//
// Planted bugs (config.h): ack_before_durable (synchronous=OFF), retry_new_seq (no msg_id
// dedup for accepted entries), reject_after_append (a message that fails the membership check
// is appended anyway, then refused).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "impl/base/sqlite.h"
#include "impl/chat/config.h"
#include "impl/chat/entry_store.h"
#include "impl/chat/protocol.h"

namespace msgsim::chat {

class QueueNode final : public Node {
 public:
  static constexpr size_t kConversationsMax = 10'000'000;
  static constexpr size_t kSubscriptionsMax = 4096;
  static constexpr size_t kCatchUpFramesPerTurn = 8;         // Records frames per catch-up step
  static constexpr size_t kFrameBytesBudget = 512 * 1024;     // below wire::kFrameBytesMax
  static constexpr int64_t kGroupCommitNs = 250 * kNanosPerMicro;  // a batch stays open this long
  static constexpr size_t kBatchMax = 1024;                   // answers one batch holds, at most
  static constexpr int64_t kLingerNs = 1 * kNanosPerMilli;    // committed records wait this long
  static constexpr int64_t kCatchUpStepNs = 1 * kNanosPerMilli;

  explicit QueueNode(const ChatConfig& config);
  ~QueueNode() override = default;

  void on_start(Context& ctx) override;
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override;
  void on_timer(Context& ctx, uint64_t tag) override;
  std::string describe() const override;

  // For tests and reports.
  uint64_t accepted() const { return state_.accepted; }
  uint64_t rejected() const { return state_.rejected; }
  uint64_t duplicates() const { return state_.duplicates; }
  bool halted() const { return state_.halted; }
  uint64_t next_offset(uint32_t partition) const;
  uint64_t next_seq(const std::string& conv) const;

 private:
  struct Conversation {
    uint64_t next_seq = 1;
    std::set<std::string> members;  // groups only; a 1:1 conversation's members are in its id
  };
  struct Subscription {
    uint64_t next_offset = 0;  // the next record this subscriber gets
    bool caught_up = false;    // true: it gets new records from the linger buffer
  };
  struct Partition {
    uint64_t next_offset = 1;            // offsets start at 1, so "stored up to 0" means none
    uint64_t committed_next_offset = 1;  // the open batch's records are below next_offset only
    std::vector<RecordAt> unflushed;     // committed, not yet sent to caught-up subscribers
    size_t unflushed_bytes = 0;
    bool flush_armed = false;
  };
  // Everything this incarnation knows, in one printable struct.
  struct State {
    std::map<uint32_t, Partition> partitions;              // the partitions this node leads
    std::map<std::string, Conversation> conversations;
    std::map<std::pair<ConnId, uint32_t>, Subscription> subscriptions;
    bool catch_up_armed = false;
    // Group commit: the open transaction, the answers and records that wait for its commit.
    bool batch_open = false;
    bool commit_armed = false;
    std::vector<std::pair<ConnId, Bytes>> replies;
    std::vector<std::pair<uint32_t, RecordAt>> committing;
    std::set<std::string> dirty_convs;  // conversations whose next seq the batch moved
    bool halted = false;  // a SQLite write failed: fail-stop, answer nothing more
    uint64_t accepted = 0, rejected = 0, duplicates = 0;
  };
  // The verdict on one produce.
  struct Verdict {
    bool accepted = false;
    uint64_t seq = 0;
    std::string reason;
  };

  void open_database(Context& ctx);
  void recover(Context& ctx);
  void on_produce(Context& ctx, ConnId conn, Produce& produce);
  void on_subscribe(Context& ctx, ConnId conn, const Subscribe& subscribe);
  // Membership and shape checks; empty when the entry may be appended.
  std::string check(const Entry& entry) const;
  bool write_accepted(Context& ctx, uint32_t partition, const Entry& entry, uint64_t offset);
  bool write_rejected(Context& ctx, const Entry& entry, const std::string& reason);
  bool open_batch(Context& ctx);
  void commit_batch(Context& ctx);
  void close_batch_if_full(Context& ctx);
  void reply(Context& ctx, ConnId conn, Bytes frame);
  void append_unflushed(Context& ctx, uint32_t partition, RecordAt record);
  void flush(Context& ctx, uint32_t partition);
  void catch_up(Context& ctx);
  void halt(Context& ctx, const std::string& what);
  void close_bad(Context& ctx, ConnId conn, const std::string& why);
  void invariants() const;

  const ChatConfig& config_;
  NodeId self_ = kNoNode;
  State state_;
  sqlite3* db_ = nullptr;
  Bytes scratch_;  // the encode buffer of log records, reused: no allocation per message
  // Prepared once per incarnation; sql::Statement finalizes them when the node goes away.
  sql::Statement find_msg_;
  sql::Statement insert_msg_;
  sql::Statement insert_log_;
  sql::Statement upsert_conv_;
  sql::Statement insert_member_;
  sql::Statement delete_member_;
  sql::Statement read_log_;
  sql::Statement begin_, commit_, rollback_;
};

}  // namespace msgsim::chat
