// The queue (Kafka-like): a partitioned, append-only log, durable in SQLite. This node leads
// every partition p with `topology.queue_of(p) == self`: it checks each produced entry
// (membership of groups and 1:1 conversations), assigns the conversation's next seq and the
// partition's next offset, writes log + conversation state + msg_id in the open transaction,
// and only after that transaction commits (synced) answers `Produced` and hands the record to
// the partition's subscribers: persist before send.
//
// Group commit: produces that arrive within `tuning.queue_commit_window_ns` of each other share one
// transaction (at most `kBatchMax` answers), as databases and Kafka brokers batch their fsyncs.
// Memory (seqs, members, offsets) moves at once so later produces of the batch are checked
// against it; answers and records wait for the commit. A failed commit halts the node
// (fail-stop); a restart recovers from what the disk kept.
//
// E2EE ordering rule (groups): a group message sealed for a member list (Produce.members_digest
// != 0) is appended only if that list is the group's membership at the place the message takes
// in the log, that is, this leader's membership after every record before it. Otherwise it is
// answered ProduceStale with the current list and nothing is recorded (no seq, no msg_id): the
// device seals again for that list and resends the same msg_id. So every member at the
// message's seq got the sender key's distribution (a joiner with the message itself or an
// earlier one), and no one removed before it holds the key (the device makes a new key when
// its current one reached a device outside the list; e2ee_client.h). The check runs on
// whichever node leads when the seq is assigned, against its own log; a record that survives a
// leader change sits on the same log prefix in every replica that keeps it (the consistency
// check below), so the rule holds for every committed record. Followers apply records as given.
//
// A retried produce (same msg_id) gets the answer the first one got, accepted with the same
// seq or rejected with the same reason: both are recorded in the same transaction as the rest.
// Rejected produces take no seq and no offset.
//
// Subscribers (storage nodes) get the stored records from the offset they ask for, then every
// new committed record. Catch-up reads committed records from SQLite a few frames at a time (a
// timer continues it), so one subscription never floods the network; new records wait
// `tuning.queue_linger_ns` (Kafka's linger.ms) so a busy partition sends frames of many records, and its
// subscriber stores them in one transaction, instead of one frame and transaction each.
//
// Replication (replication factor RF = topology.replicas(), from the scenario; RF = 1 is the
// single-copy queue described above). Partition p's replicas are queue nodes (p + k) mod Q for
// k < RF; replica 0 leads. Every record of the log carries the leader epoch it was written in.
//  - The leader appends and syncs a record as above, then pushes it to each follower in a
//    Replicate frame (one frame in flight per follower and partition, read from the synced log)
//    naming the record before it (prev_offset, prev_epoch). A follower whose log does not hold
//    that record answers ok = false with its log end (after dropping a mismatching suffix), and
//    the leader backs off to there (Raft's consistency check). A follower applies the records
//    to the same state the leader keeps (log, conversation seqs, members, accepted msg_ids, so
//    a retry is recognised whoever leads next), syncs, and only then acks with its log end.
//    A frame that reaches the leader's log end also drops any longer suffix the follower has
//    (records of an older epoch that never committed), undoing their effect on seqs, members
//    and msg_ids.
//  - The high watermark (HW) is the smallest log end among the leader and its followers: every
//    replica has every record below it, synced. The leader answers a produce (accepted,
//    rejected or duplicate) only once the HW reaches the partition's log end as it was when
//    the produce was decided, and subscribers get only records below the HW. The HW is kept on
//    disk (lazily, with the next batch); after a restart the records above it wait for the
//    followers again.
//  - Epochs fence a stale leader: a follower refuses frames of an epoch below the highest it
//    knows (kept on disk). Rejections are not replicated: they are the answering leader's own
//    record, and a retry that reaches another leader is checked again.
//  - Backpressure: while followers lag, records above the HW and answers waiting for it pile up
//    to kUncommittedMax / kWaitingMax; past that, new produces get no answer and the producer
//    retries.
//
// Failover (RF > 1). One queue node at a time is the controller (see "Controller" below): it
// keeps (epoch, leader, in-sync set) per partition, and a change counts only once a majority of
// the queue nodes has it on disk. Every queue node sends the controller QueueHeartbeat every
// kHeartbeatNs and gets every partition's committed state back. A replica leads only when the
// controller's state says so (after a restart it waits for it).
//  - A leader that the controller has not heard from for kLeaderDeadNs is replaced by the first
//    live member of its in-sync set (ISR), at epoch + 1, and leaves the ISR. None alive: the
//    partition waits (no unclean election).
//  - The HW counts the ISR, and every member the leader asked to add in this epoch (the
//    "maximal ISR", as Kafka's KIP-497). The leader asks (AlterIsr, naming its epoch) to drop a
//    follower that has lagged for kLagMaxNs, and to add back one that has every committed
//    record; the controller applies a request only from the current leader at the current
//    epoch, and every change bumps the epoch. Rule "count before asking": from the moment the
//    leader asks to add F, the HW passes no record F lacks, so when the controller adds F
//    (whenever the request arrives) F has every committed record, and so does every possible
//    next leader. (Without it, chat-faulty seed 853: a record committed while the request was
//    in flight was missing on the new member, which was later promoted and reused its seq.)
//    A request for the set unchanged still bumps the epoch: the leader sends one to void an
//    addition it no longer wants (the follower fell behind again, or the request was lost).
//  - Two leaders of one epoch cannot exist: only the controller makes epochs. An old leader
//    cut off from the controller cannot commit: the new leader was in its ISR and refuses its
//    epoch. It steps down when it hears of a newer epoch (controller, follower answer, or frame).
//  - Producers and subscribers that reach a replica that does not lead get NotLeader naming the
//    leader it knows. Subscriptions are kept by every replica but served only while it leads, so
//    a storage node may subscribe to all replicas and take records from whichever leads: the
//    records below any leader's HW are the same on every replica.
//  - Left open: a leader cut off from the controller may still answer a duplicate or a
//    rejection from its own (committed) state for a while after the controller replaced it.
//
// Controller. Elected among the queue nodes as Raft elects a leader, with its log cut down to
// one snapshot: the controller state (every partition's Control) with a version and the term it
// was written in, kept on every queue node's disk with the node's term and vote.
//  - Terms (controller epochs) fence an old controller: a node that has seen term T refuses
//    ControllerSync of a lower term and answers with T, and the old controller steps down.
//  - A node that has heard no controller for kControllerDeadNs + its index * kHeartbeatNs (so
//    the lowest live queue node goes first) asks every queue node for a pre-vote, then, granted a
//    majority, moves to term + 1, votes for itself and asks for votes. A node grants one vote per
//    term (kept on disk before it answers), only to a candidate whose state is at least as new as
//    its own ((state_term, version) compared), and grants neither vote nor pre-vote while it
//    hears a controller (so a node coming back from isolation does not depose a working one).
//  - Votes are weighted so that a majority exists with two queue nodes: with an even number of
//    them the first queue node holds two votes. Two nodes: the first alone is a majority (it is
//    the controller whenever it is up, as before); three: any two.
//  - The new controller writes its state again in its own term (version + 1) and sends it to
//    every queue node (ControllerSync, every heartbeat). Rule "commit before publish": a state
//    counts once nodes holding a majority of the votes have it synced (ControllerSyncAck), and
//    only then do queue nodes hear it (PartitionStates) or the controller act on it. Every
//    committed state is on a majority, every new controller has the newest state of a majority
//    it got votes from, so no committed decision is ever lost or contradicted; a state that did
//    not commit was never heard by anyone.
//  - Before its first state commits the new controller decides nothing; after, every queue node
//    gets a full kLeaderDeadNs from then before it can be replaced.
//
// Next seqs are written lazily: the `conversations` table (each conversation's next seq) is
// brought up to date every kSeqsEveryBatches batches, when kDirtyConvsMax conversations wait, and
// in the batch of any truncation, together with `seqs_cover`, the log offset of each partition
// below which it reflects every record. Written per batch, one row per conversation a batch
// touched, it cost about one upsert and one dirty page per record (6.5% of BM_MessagePath's
// instructions). A restart reads the table, then replays the records from `seqs_cover` on (at
// most kSeqsEveryBatches batches' worth): each sets its conversation's next seq to its seq + 1.
// Membership (`members`) is still written with its record: joins and leaves are rare.
//
// Log batches (Kafka's record batch). The log is one SQLite row per batch of a partition's
// consecutive records: (partition, base_offset, last_offset, the records' epochs and entries in
// one blob). The records a partition appends in one transaction (a leader's group commit, a
// follower's Replicate frame) are buffered in memory and written as one row before the
// transaction commits, so a row and its offsets are durable together or not at all. Reads
// slice the rows; a truncation inside a row rewrites it with its prefix; retention deletes only
// rows wholly below its bound (a row straddling it stays until the next). Per record it was a
// row and an index cell to insert and later to delete (on both replicas): in BM_MessagePath a
// leader's batch holds ~4 records of a partition and a follower's ~10 (bench/README.md).
//
// Retention (Kafka's log deletion, bounded by what every reader still needs). A replica deletes
// the log's records below `delete_below`, the least of:
//  - the retention floor: the leader's min(consumer's committed end, HW, every follower's
//    match_end), whether the follower is in the ISR or not, and minus one, so the leader still
//    holds the record before every follower's log end (the consistency check's prev_offset).
//    Every replica holds every record below the floor, committed, so no follower ever needs a
//    deleted record. Followers learn the floor from the leader (Replicate.retain_below). The
//    floor only rises: what it states stays true (committed records are never truncated).
//  - the consumer's committed end: the storage owner of the partition sends OffsetCommit with
//    the last offset its database holds synced (not the one its memory holds), at most once a
//    kOffsetHintNs and on every (re)connection. Memory only here: a restart waits for the next.
//  - this replica's own HW, its `seqs_cover` (a restart replays the log from there) and its
//    last synced record (recovery reads max(offset), and the leader's prev_offset).
// At most kRetainPerBatchMax records a partition go per batch, inside the batch's transaction
// (no sync of its own). `produced` and `conversations` stay: a retry after a long offline
// still finds its seq. A follower treats a prev_offset below its own log start as matching, and
// skips records below it: the floor says they are committed and the same on every replica. A
// follower that needs a record the leader deleted (impossible unless a disk lost synced data,
// e.g. a host loss) is not served again while this node leads: it stays out of the ISR. Choice:
// an out-of-ISR replica that never returns stops retention of its partitions (the alternative,
// sending followers a snapshot of `produced`, `conversations` and `members`, is not built).
//
// Dedup without a read per produce: the node keeps in memory the 64-bit hashes of every msg_id
// its `produced` table holds (MsgIdFilter: loaded at open, added to on every append, leader's or
// follower's, and every recorded rejection; never removed, not even by a truncation, so it is a
// superset). A produce whose msg_id hash is absent is new for sure and skips the SQLite lookup;
// a hit (a retry, or a 64-bit collision) asks SQLite as before. Its memory is bounded: 8 bytes
// a slot, at most half the slots used, so 16 to 32 bytes per msg_id and kHashesMax msg_ids
// (64 MiB of slots at most). Past that bound it lets its slots go and says "maybe" to every
// msg_id, so every produce asks SQLite again, as before the filter.
//
// Planted bugs (config.h): ack_before_durable (synchronous=OFF), retry_new_seq (no msg_id
// dedup for accepted entries), reject_after_append (a message that fails the membership check
// is appended anyway, then refused), leader_ack_before_replication (answers once the leader
// synced, not once the HW covers the record), no_epoch_fencing (replicas follow whoever sends
// Replicate frames, whatever its epoch, so a deposed leader that comes back overwrites records
// the new leader committed).
#pragma once

#include <cstdint>
#include <deque>
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

// A set of 64-bit msg_id hashes that may say "maybe" for an absent one but never "no" for one
// added (queue.h "Dedup without a read per produce"). Open addressing, linear probing.
class MsgIdFilter {
 public:
  static constexpr size_t kHashesMax = size_t{4} << 20;  // 4 Mi hashes: 64 MiB of slots at most

  // False: `hash` was surely never added. True: it may have been.
  bool may_contain(uint64_t hash) const;
  void add(uint64_t hash);
  size_t size() const { return used_; }
  // Over kHashesMax: the slots are gone and may_contain is true for every hash.
  bool saturated() const { return saturated_; }
  size_t slot_bytes() const { return slots_.size() * sizeof(uint64_t); }

 private:
  static uint64_t stored(uint64_t hash) { return hash == 0 ? 1 : hash; }  // 0 marks an empty slot
  // The first slot to probe: the top bits of a Fibonacci product, so hashes that differ only in
  // high bits still spread.
  size_t home(uint64_t key) const { return static_cast<size_t>((key * 0x9e3779b97f4a7c15ULL) >> shift_); }
  void grow();

  std::vector<uint64_t> slots_;  // a power of two, at most half used; 0: empty
  unsigned shift_ = 64;          // 64 - log2(slots_.size())
  size_t used_ = 0;
  bool saturated_ = false;
};

class QueueNode final : public Node {
 public:
  static constexpr size_t kConversationsMax = 10'000'000;
  static constexpr size_t kSubscriptionsMax = 4096;
  static constexpr size_t kCatchUpFramesPerTurn = 8;         // Records frames per catch-up step
  static constexpr size_t kFrameBytesBudget = 512 * 1024;     // below wire::kFrameBytesMax
  static constexpr size_t kBatchMax = 1024;                   // answers one batch holds, at most
  static constexpr uint32_t kSeqsEveryBatches = 256;  // next seqs written every this many batches
  static constexpr size_t kDirtyConvsMax = 8192;      // ... or once this many conversations wait
  static constexpr int64_t kCatchUpStepNs = 1 * kNanosPerMilli;
  static constexpr size_t kUncommittedMax = 100'000;  // records above the HW, per partition
  static constexpr size_t kWaitingMax = 100'000;      // answers waiting for the HW, per partition
  static constexpr int64_t kPeerRetryNs = 200 * kNanosPerMilli;  // reconnect to a follower
  static constexpr int64_t kHeartbeatNs = 200 * kNanosPerMilli;   // queue -> controller
  static constexpr int64_t kLeaderDeadNs = 1500 * kNanosPerMilli;  // no heartbeat this long: replaced
  static constexpr int64_t kLagMaxNs = 1000 * kNanosPerMilli;      // a follower behind this long leaves the ISR
  static constexpr int64_t kControllerDeadNs = 1500 * kNanosPerMilli;  // no controller heard: elect one
  static constexpr uint64_t kRetainPerBatchMax = 2048;  // log records one batch deletes, per partition
  static constexpr size_t kLogBatchBytesMax = 64 * 1024;  // one log row's records; a longer batch takes more rows

  explicit QueueNode(const ChatConfig& config);
  ~QueueNode() override = default;

  void on_start(Context& ctx) override;
  void on_accept(Context&, ConnId conn, NodeId peer) override { accepted_from_[conn] = peer; }
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override;
  void on_timer(Context& ctx, uint64_t tag) override;
  std::string describe() const override;

  // For tests and reports.
  uint64_t accepted() const { return state_.accepted; }
  uint64_t rejected() const { return state_.rejected; }
  uint64_t duplicates() const { return state_.duplicates; }
  uint64_t stale() const { return state_.stale; }
  bool halted() const { return state_.halted; }
  uint64_t next_offset(uint32_t partition) const;
  // The partition's high watermark: records below it are on every replica (0: not a replica).
  uint64_t high_watermark(uint32_t partition) const;
  bool leads(uint32_t partition) const;
  // The first record the partition's log still holds (retention deleted those before; 0: not a replica).
  uint64_t log_start(uint32_t partition) const;
  // The controller role: whether this node holds it (with its state committed), and its term.
  bool controls() const { return state_.ctl.role == CtlRole::controller && state_.ctl.ready; }
  uint64_t controller_term() const { return state_.ctl.term; }
  uint64_t next_seq(const std::string& conv) const;

 private:
  struct Conversation {
    uint64_t next_seq = 1;
    std::set<std::string> members;  // groups only; a 1:1 conversation's members are in its id
    uint64_t members_digest = 0;    // members_digest() of `members`; 0: not computed since a change
  };
  struct Subscription {
    uint64_t next_offset = 0;  // the next record this subscriber gets
    bool caught_up = false;    // true: it gets new records from the linger buffer
  };
  // What a leader knows of one follower of one partition.
  struct FollowerProgress {
    uint64_t send_next = 1;  // the next record to send it
    uint64_t match_end = 0;  // its log matches ours below this (0: not yet known)
    bool inflight = false;   // a Replicate awaits its ack
    int64_t behind_since_ns = -1;  // when it last fell behind the leader's log end (-1: caught up)
    bool needs_deleted = false;    // it lacks records this leader deleted: not served while it leads
  };
  // The controller's record of one partition.
  struct Control {
    uint64_t epoch = 1;
    NodeId leader = kNoNode;
    uint64_t isr_mask = 0;
  };
  enum class CtlRole { follower, pre_candidate, candidate, controller };
  // This node's part in electing the controller and keeping its state (queue.h "Controller").
  struct ControllerRole {
    CtlRole role = CtlRole::follower;
    uint64_t term = 0;             // on disk: the highest term seen
    NodeId voted_for = kNoNode;    // on disk: the vote given in `term`
    uint64_t state_term = 0;       // on disk: the term `control` was written in
    uint64_t version = 0;          // on disk: the version of `control`
    NodeId leader = kNoNode;       // the controller of `term` (kNoNode: none known)
    int64_t heard_ns = 0;          // when that controller was last heard (or the election began)
    std::set<NodeId> votes;        // candidate, pre-candidate: who granted
    bool ready = false;            // controller: a state of its own term committed
    uint64_t committed_version = 0;            // controller: the newest version a majority has
    std::map<NodeId, uint64_t> acked_version;  // controller: what each queue node has synced
  };
  // An answer that waits: for the batch's commit, then for the HW to reach `until`.
  struct PendingReply {
    ConnId conn = kNoConn;
    uint32_t partition = UINT32_MAX;  // UINT32_MAX: waits for the commit only
    uint64_t until = 0;
    Bytes frame;
  };
  struct Partition {
    bool leader = false;
    bool state_known = false;            // the controller's state for `epoch` arrived
    NodeId leader_node = kNoNode;        // as the controller said, for redirects
    uint64_t isr_mask = 0;               // bit k: replica k is in sync, as the controller decided
    int64_t isr_asked_ns = -1;           // leader: when it last sent AlterIsr
    // Leader: replicas this epoch's AlterIsr requests asked to add. The controller may apply such
    // a request at any time until the epoch moves on, so the HW counts them already (the
    // "maximal ISR"): a replica never joins the ISR without every record committed meanwhile.
    uint64_t isr_adding_mask = 0;
    uint64_t isr_adding_epoch = 0;       // the epoch those requests named
    uint64_t epoch = 1;                  // the highest leader epoch this replica knows
    uint64_t next_offset = 1;            // offsets start at 1, so "stored up to 0" means none
    uint64_t log_end = 1;                // synced: the open batch's records are below next_offset only
    uint64_t committed_next_offset = 1;  // the high watermark: on every replica, visible to consumers
    bool hw_dirty = false;               // the HW moved since it was last written
    // Retention (queue.h "Retention").
    uint64_t log_start = 1;              // the log holds every record from here on (those below may be deleted)
    uint64_t seqs_cover = 1;             // `conversations` reflects every record below this (as written)
    uint64_t consumed_end = 0;           // the consumer holds every record below this, synced (its hint)
    uint64_t retain_floor = 0;           // every replica holds every record below this, committed
    std::deque<RecordAt> uncommitted;    // leader: synced here, at or above the HW
    std::deque<PendingReply> waiting;    // leader: answers waiting for the HW, in order
    std::map<NodeId, FollowerProgress> followers;  // leader: the other replicas
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
    std::vector<PendingReply> replies;
    std::vector<std::pair<uint32_t, RecordAt>> committing;
    std::set<std::string> dirty_convs;  // conversations whose next seq moved since it was written
    uint32_t batches_since_seqs = 0;    // batches committed since the next seqs were written
    std::map<NodeId, ConnId> peers;     // connections to followers this node opened
    ConnId to_controller = kNoConn;
    NodeId to_controller_node = kNoNode;  // where to_controller leads
    ControllerRole ctl;
    // The controller state as this node has it (on disk); the controller publishes and acts on
    // `control_committed`, the newest version a majority has.
    std::map<uint32_t, Control> control;
    std::map<uint32_t, Control> control_committed;
    std::map<NodeId, int64_t> last_heard_ns;  // controller: queue node -> its last heartbeat here
    std::map<ConnId, NodeId> heartbeat_conns;  // accepted connections of queue nodes
    std::set<NodeId> peer_retry_armed;
    MsgIdFilter produced_ids;  // a superset of the `produced` table's msg_ids, as hashes
    bool halted = false;  // a SQLite write failed: fail-stop, answer nothing more
    uint64_t accepted = 0, rejected = 0, duplicates = 0, stale = 0;
  };
  // The verdict on one produce.
  struct Verdict {
    bool accepted = false;
    uint64_t seq = 0;
    std::string reason;
  };

  void open_database(Context& ctx);
  // Loads the state the disk kept; false if reading it failed (halted).
  bool recover(Context& ctx);
  // Writes every dirty conversation's next seq and where the log is covered (queue.h "Next seqs").
  bool write_seqs(Context& ctx);
  void on_produce(Context& ctx, ConnId conn, Produce& produce);
  void on_subscribe(Context& ctx, ConnId conn, const Subscribe& subscribe);
  void on_replicate(Context& ctx, ConnId conn, Replicate& replicate);
  void on_replica_ack(Context& ctx, ConnId conn, const ReplicaAck& ack);
  void on_offset_commit(Context& ctx, ConnId conn, const OffsetCommit& commit);
  // Deletes what retention allows in the open batch (queue.h "Retention"); false if halted.
  bool retain(Context& ctx);
  bool replicated() const { return config_.topology.replicas() > 1; }
  // Failover: a state from the controller; becoming leader, staying, or stepping down.
  void apply_state(Context& ctx, const PartitionState& state);
  void become_leader(Context& ctx, uint32_t partition);
  void step_down(Context& ctx, uint32_t partition);
  void heartbeat(Context& ctx);
  void heartbeat_controller(Context& ctx);
  void check_isr(Context& ctx);
  uint32_t replica_index(uint32_t partition, NodeId node) const;
  // The replicas the leader's HW must count: the ISR and every addition it asked for this epoch.
  static uint64_t hw_mask(const Partition& part);
  // Electing the controller and keeping its state (queue.h "Controller").
  void load_controller_state();
  bool persist_controller_state(Context& ctx);
  uint32_t queue_index(NodeId node) const;
  uint32_t vote_weight(NodeId node) const;
  bool has_majority(const std::set<NodeId>& nodes) const;
  bool hears_controller(int64_t now_ns) const;
  bool at_least_as_new(uint64_t state_term, uint64_t version) const;
  void controller_tick(Context& ctx);
  void start_pre_vote(Context& ctx);
  void start_election(Context& ctx);
  void become_controller(Context& ctx);
  // Moves to `term` (when newer) as a follower; false if writing it failed (halted).
  bool follow_term(Context& ctx, uint64_t term);
  void send_to_queues(Context& ctx, const Frame& frame);
  void on_controller_vote(Context& ctx, ConnId conn, NodeId from, const ControllerVote& vote);
  void on_controller_vote_ack(Context& ctx, NodeId from, const ControllerVoteAck& ack);
  void on_controller_sync(Context& ctx, ConnId conn, NodeId from, const ControllerSync& sync);
  void on_controller_sync_ack(Context& ctx, NodeId from, const ControllerSyncAck& ack);
  // Controller: writes its changed state (version + 1) and sends it; it counts once committed.
  bool propose(Context& ctx);
  void check_commit(Context& ctx);
  // The controller's part, on its committed state.
  void control_tick(Context& ctx);
  void on_heartbeat(Context& ctx, ConnId conn, NodeId node);
  void on_alter_isr(Context& ctx, NodeId node, const AlterIsr& alter);
  static std::vector<PartitionState> states_of(const std::map<uint32_t, Control>& control);
  void publish_control(Context& ctx);
  // Leader: sends `follower` what it lacks (or a probe), unless a frame is in flight.
  void replicate_to(Context& ctx, uint32_t partition, NodeId follower);
  void replicate_all(Context& ctx, uint32_t partition);
  // Leader: moves the HW to the smallest log end of the replicas; releases answers and records.
  void advance_hw(Context& ctx, uint32_t partition);
  ConnId peer_conn(Context& ctx, NodeId node);
  // Appends one record (leader or follower) and applies it to the conversation state.
  bool apply_record(Context& ctx, uint32_t partition, uint64_t offset, uint64_t epoch, const Entry& entry);
  // Drops the records at and after `from` and undoes their effect (seqs, members, msg_ids).
  bool truncate_from(Context& ctx, uint32_t partition, uint64_t from);
  // The epoch of the record at `offset`: 0 if there is none; -1 on a read error.
  int64_t epoch_at(uint32_t partition, uint64_t offset);
  // Reads synced records from `from` below `end`, at most one frame's worth; false on an error.
  bool read_records(uint32_t partition, uint64_t from, uint64_t end, std::vector<ReplicaRecord>& out);
  // Calls visit(offset, epoch, entry bytes) for the log's records of `partition` from `from`
  // below `end`, in order, until it returns false: 1 if it did, 0 when the records ran out, -1
  // on a read error. Writes the partition's open log batch first, so it sees every record.
  template <class Visit>
  int scan_log(uint32_t partition, uint64_t from, uint64_t end, Visit visit);
  // Writes the open log batch of `partition` (all of them: UINT32_MAX) as one row; false on an
  // error (the caller halts).
  bool write_log_batch(uint32_t partition);
  // Membership and shape checks; empty when the entry may be appended.
  std::string check(const Entry& entry) const;
  bool write_rejected(Context& ctx, const Entry& entry, const std::string& reason);
  bool open_batch(Context& ctx);
  void commit_batch(Context& ctx);
  void close_batch_if_full(Context& ctx);
  // Answers now, or at the batch's commit; with a partition, once its HW reaches `until`.
  void reply(Context& ctx, ConnId conn, Bytes frame, uint32_t partition = UINT32_MAX, uint64_t until = 0);
  void append_unflushed(Context& ctx, uint32_t partition, RecordAt record);
  void flush(Context& ctx, uint32_t partition);
  void catch_up(Context& ctx);
  void halt(Context& ctx, const std::string& what);
  void close_bad(Context& ctx, ConnId conn, const std::string& why);
  void invariants() const;

  const ChatConfig& config_;
  NodeId self_ = kNoNode;
  std::map<ConnId, NodeId> accepted_from_;  // who opened each accepted connection
  State state_;
  sqlite3* db_ = nullptr;
  Bytes scratch_;  // the encode buffer of log records, reused: no allocation per message
  // The records each partition appended in the open transaction, not yet in `log_batches`
  // (queue.h "Log batches"): one row each at the commit, or before the log is read or cut.
  struct LogBatch {
    uint64_t base_offset = 0;
    std::vector<uint64_t> epochs;  // of base_offset, base_offset + 1, ...
    Bytes records;                 // each: epoch (8 bytes), entry size (4), entry; little-endian
  };
  std::map<uint32_t, LogBatch> open_log_;
  // Prepared once per incarnation; sql::Statement finalizes them when the node goes away.
  sql::Statement find_msg_;
  sql::Statement insert_msg_;
  sql::Statement insert_log_;
  sql::Statement upsert_conv_;
  sql::Statement insert_member_;
  sql::Statement delete_member_;
  sql::Statement read_log_;
  sql::Statement read_epoch_;
  sql::Statement upsert_hw_;
  sql::Statement upsert_seqs_cover_;
  sql::Statement upsert_epoch_;
  sql::Statement delete_msg_;
  sql::Statement delete_conv_;
  sql::Statement truncate_log_;
  sql::Statement delete_log_range_;
  sql::Statement rewrite_log_batch_;
  sql::Statement begin_, commit_, rollback_;
};

}  // namespace msgsim::chat
