// The messaging system's wire protocol: one struct per frame, each listing its fields once
// (impl/wire/codec.h), and a variant of them all. docs/protocol.md is the reference a third
// party implements from; the type numbers below are part of the protocol and never change.
//
// Who speaks what:
//   device   <-> lb        RouteRequest / RouteReply
//   device   <-> chat      Hello, Welcome, Send, GroupOp, SendAck, SendReject, Deliver,
//                          SyncRequest, SyncDone, ReceiptSend, ReceiptNotice, Heartbeat,
//                          HeartbeatAck, Drain, SendStale
//   chat      -> registry  Register, Unregister
//   storage  <-> registry  Lookup, Located
//   chat     <-> queue     Produce, Produced, ProduceRejected, ProduceStale
//   storage  <-> queue     Subscribe, Records, OffsetCommit
//   queue    <-> queue     Replicate, ReplicaAck (leader -> followers of a partition)
//   queue    <-> controller QueueHeartbeat, PartitionStates, AlterIsr; queue -> chat, storage: NotLeader
//   queue    <-> queue      ControllerVote, ControllerVoteAck, ControllerSync, ControllerSyncAck
//   chat     <-> storage   SyncQuery, SyncResult, ReceiptUpdate
//   storage   -> chat      Route (an entry or a receipt for devices connected there)
//   storage   -> push      Notify
//   lb       <-> chat      HealthCheck, Health
//   device   <-> keys      PublishKeys / KeysPublished, FetchBundles / Bundles, KeyRequestFailed
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "impl/base/result.h"
#include "impl/runtime.h"
#include "impl/wire/codec.h"

namespace msgsim::chat {

// Bounds on every variable-length field.
inline constexpr size_t kIdMax = 64;                 // user, device, conversation, message ids
inline constexpr size_t kBodyMax = 64 * 1024;        // one message's (encrypted) body
inline constexpr size_t kReasonMax = 128;
inline constexpr size_t kEntriesPerFrameMax = 512;   // entries in one Records / SyncResult
inline constexpr size_t kCursorsMax = 4096;          // conversations in one SyncRequest
inline constexpr size_t kTargetsMax = 4096;          // devices in one Route / Lookup answer
inline constexpr size_t kUsersPerLookupMax = 1024;
inline constexpr size_t kKeyBytes = 32;                 // X25519 and Ed25519 public keys
inline constexpr size_t kSignatureBytes = 64;           // Ed25519 signatures
inline constexpr size_t kOneTimePrekeysPerPublishMax = 100;
inline constexpr size_t kBundlesPerFrameMax = 4096;     // device bundles in one Bundles answer
inline constexpr size_t kPartitionsMax = 4096;          // partitions in one PartitionStates

enum class EntryKind : uint8_t { message = 0, join = 1, leave = 2, max_value = 2 };
enum class ReceiptKind : uint8_t { delivered = 0, read = 1, max_value = 1 };
enum class HealthStatus : uint8_t { ok = 0, draining = 1, max_value = 1 };

// One record of a conversation's log. `seq` is 0 until the partition leader assigns it.
struct Entry {
  EntryKind kind = EntryKind::message;
  std::string conv;
  uint64_t seq = 0;
  std::string msg_id;        // the message id, or the id of the membership operation
  std::string from_user;     // the sender, or the user who asked for the membership change
  std::string from_device;
  std::string to;            // a 1:1 message: the other user; empty in a group
  std::string member;        // join / leave: the user who joins or leaves
  Bytes body;                // a message: the (encrypted) content
  int64_t expires_at_ns = 0; // a disappearing message: expiry on the run's clock; 0 = never
  bool view_once = false;
  template <class V> void fields(V& v) {
    v("kind", kind); v("conv", conv, wire::Max{kIdMax}); v("seq", seq);
    v("msg_id", msg_id, wire::Max{kIdMax}); v("from_user", from_user, wire::Max{kIdMax});
    v("from_device", from_device, wire::Max{kIdMax}); v("to", to, wire::Max{kIdMax});
    v("member", member, wire::Max{kIdMax}); v("body", body, wire::Max{kBodyMax});
    v("expires_at_ns", expires_at_ns); v("view_once", view_once);
  }
};

struct Cursor {
  std::string conv;
  uint64_t seq = 0;  // every entry up to and including seq was processed
  template <class V> void fields(V& v) { v("conv", conv, wire::Max{kIdMax}); v("seq", seq); }
};

struct DeviceAddress {
  std::string user;
  std::string device;
  template <class V> void fields(V& v) { v("user", user, wire::Max{kIdMax}); v("device", device, wire::Max{kIdMax}); }
};

struct UserRef {
  std::string user;
  template <class V> void fields(V& v) { v("user", user, wire::Max{kIdMax}); }
};

struct Location {
  std::string user;
  std::string device;
  uint32_t server = 0;  // the chat server's node id
  template <class V> void fields(V& v) {
    v("user", user, wire::Max{kIdMax}); v("device", device, wire::Max{kIdMax}); v("server", server);
  }
};

// --- device <-> load balancer
struct RouteRequest { static constexpr uint8_t kType = 1;
  std::string user;
  template <class V> void fields(V& v) { v("user", user, wire::Max{kIdMax}); } };
struct RouteReply { static constexpr uint8_t kType = 2;
  bool ok = false; uint32_t server = 0;  // ok = false: no healthy server right now
  template <class V> void fields(V& v) { v("ok", ok); v("server", server); } };

// --- device <-> chat server
struct Hello { static constexpr uint8_t kType = 10;
  std::string user; std::string device; std::string token;
  template <class V> void fields(V& v) {
    v("user", user, wire::Max{kIdMax}); v("device", device, wire::Max{kIdMax}); v("token", token, wire::Max{kIdMax}); } };
struct Welcome { static constexpr uint8_t kType = 11;
  uint32_t server = 0;
  template <class V> void fields(V& v) { v("server", server); } };
// `members_digest`: a group message sealed with E2EE names the member list it was sealed for
// (members_digest() of that list); the queue refuses it with ProduceStale / SendStale unless
// that list is the group's membership at the message's place in the log. 0: not checked.
struct Send { static constexpr uint8_t kType = 12;
  std::string msg_id; std::string conv; std::string to; Bytes body; int64_t expires_at_ns = 0; bool view_once = false;
  uint64_t members_digest = 0;
  template <class V> void fields(V& v) {
    v("msg_id", msg_id, wire::Max{kIdMax}); v("conv", conv, wire::Max{kIdMax}); v("to", to, wire::Max{kIdMax});
    v("body", body, wire::Max{kBodyMax}); v("expires_at_ns", expires_at_ns); v("view_once", view_once);
    v("members_digest", members_digest); } };
// `members`: the group's members after this change as the requesting device knows them, one
// user id per line; the join entry carries it (Entry.body) so that a joining member's devices
// learn whom to send their sender keys to (E2EE). Empty when the device does not track members.
struct GroupOp { static constexpr uint8_t kType = 13;
  std::string op_id; std::string conv; EntryKind kind = EntryKind::join; std::string member; Bytes members;
  template <class V> void fields(V& v) {
    v("op_id", op_id, wire::Max{kIdMax}); v("conv", conv, wire::Max{kIdMax}); v("kind", kind);
    v("member", member, wire::Max{kIdMax}); v("members", members, wire::Max{kBodyMax}); } };
struct SendAck { static constexpr uint8_t kType = 14;
  std::string msg_id; std::string conv; uint64_t seq = 0;
  template <class V> void fields(V& v) { v("msg_id", msg_id, wire::Max{kIdMax}); v("conv", conv, wire::Max{kIdMax}); v("seq", seq); } };
struct SendReject { static constexpr uint8_t kType = 15;
  std::string msg_id; std::string conv; std::string reason;
  template <class V> void fields(V& v) {
    v("msg_id", msg_id, wire::Max{kIdMax}); v("conv", conv, wire::Max{kIdMax}); v("reason", reason, wire::Max{kReasonMax}); } };
struct Deliver { static constexpr uint8_t kType = 16;
  Entry entry;
  template <class V> void fields(V& v) { entry.fields(v); } };
struct SyncRequest { static constexpr uint8_t kType = 17;
  std::vector<Cursor> cursors;
  template <class V> void fields(V& v) { v("cursors", cursors, wire::Max{kCursorsMax}); } };
struct SyncDone { static constexpr uint8_t kType = 18;
  template <class V> void fields(V&) {} };
struct ReceiptSend { static constexpr uint8_t kType = 19;
  std::string conv; ReceiptKind kind = ReceiptKind::delivered; uint64_t up_to = 0;
  template <class V> void fields(V& v) { v("conv", conv, wire::Max{kIdMax}); v("kind", kind); v("up_to", up_to); } };
struct ReceiptNotice { static constexpr uint8_t kType = 20;
  std::string conv; std::string reader; ReceiptKind kind = ReceiptKind::delivered; uint64_t up_to = 0;
  template <class V> void fields(V& v) {
    v("conv", conv, wire::Max{kIdMax}); v("reader", reader, wire::Max{kIdMax}); v("kind", kind); v("up_to", up_to); } };
struct Heartbeat { static constexpr uint8_t kType = 21;
  template <class V> void fields(V&) {} };
struct HeartbeatAck { static constexpr uint8_t kType = 22;
  template <class V> void fields(V&) {} };
struct Drain { static constexpr uint8_t kType = 23;
  template <class V> void fields(V&) {} };
// The answer to a Send whose members_digest is not the group's membership now: not a refusal
// (the device seals the message again for `members`, the current member list, and resends it
// with the same msg_id). The queue recorded nothing about it.
struct SendStale { static constexpr uint8_t kType = 24;
  std::string msg_id; std::string conv; Bytes members;
  template <class V> void fields(V& v) {
    v("msg_id", msg_id, wire::Max{kIdMax}); v("conv", conv, wire::Max{kIdMax}); v("members", members, wire::Max{kBodyMax}); } };

// --- chat server <-> registry (presence)
struct Register { static constexpr uint8_t kType = 30;
  std::string user; std::string device; uint32_t server = 0; int64_t ttl_ns = 0;
  template <class V> void fields(V& v) {
    v("user", user, wire::Max{kIdMax}); v("device", device, wire::Max{kIdMax}); v("server", server); v("ttl_ns", ttl_ns); } };
struct Unregister { static constexpr uint8_t kType = 31;
  std::string user; std::string device; uint32_t server = 0;
  template <class V> void fields(V& v) {
    v("user", user, wire::Max{kIdMax}); v("device", device, wire::Max{kIdMax}); v("server", server); } };
struct Lookup { static constexpr uint8_t kType = 32;
  uint64_t request_id = 0; std::vector<UserRef> users;
  template <class V> void fields(V& v) { v("request_id", request_id); v("users", users, wire::Max{kUsersPerLookupMax}); } };
struct Located { static constexpr uint8_t kType = 33;
  uint64_t request_id = 0; std::vector<Location> locations;
  template <class V> void fields(V& v) { v("request_id", request_id); v("locations", locations, wire::Max{kTargetsMax}); } };

// --- producers <-> queue
// members_digest: Send.members_digest, which the leader checks and does not store.
struct Produce { static constexpr uint8_t kType = 40;
  uint64_t request_id = 0; Entry entry; uint64_t members_digest = 0;
  template <class V> void fields(V& v) { v("request_id", request_id); entry.fields(v); v("members_digest", members_digest); } };
struct Produced { static constexpr uint8_t kType = 41;
  uint64_t request_id = 0; std::string msg_id; std::string conv; uint64_t seq = 0;
  template <class V> void fields(V& v) {
    v("request_id", request_id); v("msg_id", msg_id, wire::Max{kIdMax}); v("conv", conv, wire::Max{kIdMax}); v("seq", seq); } };
struct ProduceRejected { static constexpr uint8_t kType = 42;
  uint64_t request_id = 0; std::string msg_id; std::string conv; std::string reason;
  template <class V> void fields(V& v) {
    v("request_id", request_id); v("msg_id", msg_id, wire::Max{kIdMax}); v("conv", conv, wire::Max{kIdMax});
    v("reason", reason, wire::Max{kReasonMax}); } };
// The leader's answer to a group message sealed for another member list than the group's now
// (Produce.members_digest): `members` is the current list; nothing was recorded, no seq taken.
struct ProduceStale { static constexpr uint8_t kType = 48;
  uint64_t request_id = 0; std::string msg_id; std::string conv; Bytes members;
  template <class V> void fields(V& v) {
    v("request_id", request_id); v("msg_id", msg_id, wire::Max{kIdMax}); v("conv", conv, wire::Max{kIdMax});
    v("members", members, wire::Max{kBodyMax}); } };
struct RecordAt {
  uint64_t offset = 0; Entry entry;
  template <class V> void fields(V& v) { v("offset", offset); entry.fields(v); } };
struct Subscribe { static constexpr uint8_t kType = 43;
  uint32_t partition = 0; uint64_t from_offset = 0;
  template <class V> void fields(V& v) { v("partition", partition); v("from_offset", from_offset); } };
struct Records { static constexpr uint8_t kType = 44;
  uint32_t partition = 0; std::vector<RecordAt> records;
  template <class V> void fields(V& v) { v("partition", partition); v("records", records, wire::Max{kEntriesPerFrameMax}); } };
// Storage (the partition's consumer) -> every replica of the partition: every record up to and
// including `offset` is stored and synced at the consumer, so the queue may delete the log's
// records up to there (queue.h "Retention"). A hint: a lost or late one only delays deletion.
struct OffsetCommit { static constexpr uint8_t kType = 49;
  uint32_t partition = 0; uint64_t offset = 0;
  template <class V> void fields(V& v) { v("partition", partition); v("offset", offset); } };

// --- queue leader <-> queue followers (replication; queue.h, docs/protocol.md)
// One record of a partition's replicated log: where, and in which leader epoch it was written.
struct ReplicaRecord {
  uint64_t offset = 0; uint64_t epoch = 0; Entry entry;
  template <class V> void fields(V& v) { v("offset", offset); v("epoch", epoch); entry.fields(v); } };
// Leader -> follower: the records after prev_offset (whose epoch must be prev_epoch at the
// follower), the leader's high watermark, whether the records reach the leader's log end, and
// the retention floor: every replica holds every record below retain_below, all committed and
// consumed, so the follower may delete them (queue.h "Retention"). prev_epoch = 0 with
// prev_offset > 0: the leader deleted that record already; it lies below a floor it was given,
// so every replica that still holds it holds the same record.
struct Replicate { static constexpr uint8_t kType = 45;
  uint32_t partition = 0; uint64_t epoch = 0; uint64_t prev_offset = 0; uint64_t prev_epoch = 0;
  uint64_t high_watermark = 0; bool to_end = false; std::vector<ReplicaRecord> records; uint64_t retain_below = 0;
  template <class V> void fields(V& v) {
    v("partition", partition); v("epoch", epoch); v("prev_offset", prev_offset); v("prev_epoch", prev_epoch);
    v("high_watermark", high_watermark); v("to_end", to_end); v("records", records, wire::Max{kEntriesPerFrameMax});
    v("retain_below", retain_below); } };
// Follower -> leader, once the records are synced: ok = they matched and are stored; log_end is
// the follower's log end (the offset it expects next); epoch is the highest it knows.
struct ReplicaAck { static constexpr uint8_t kType = 46;
  uint32_t partition = 0; uint64_t epoch = 0; bool ok = false; uint64_t log_end = 0;
  template <class V> void fields(V& v) { v("partition", partition); v("epoch", epoch); v("ok", ok); v("log_end", log_end); } };

// --- queue nodes <-> the queue controller (the first queue node; queue.h "Failover")
// A partition's leadership as the controller decided it: bit k of isr_mask stands for the
// partition's replica k, (partition + k) mod Q.
struct PartitionState {
  uint32_t partition = 0; uint64_t epoch = 0; uint32_t leader = 0; uint64_t isr_mask = 0;
  template <class V> void fields(V& v) { v("partition", partition); v("epoch", epoch); v("leader", leader); v("isr_mask", isr_mask); } };
struct QueueHeartbeat { static constexpr uint8_t kType = 90;
  template <class V> void fields(V&) {} };
// Controller -> queue node: the answer to every heartbeat, and news after every change.
struct PartitionStates { static constexpr uint8_t kType = 91;
  std::vector<PartitionState> states;
  template <class V> void fields(V& v) { v("states", states, wire::Max{kPartitionsMax}); } };
// Leader -> controller: asks for this in-sync set, in this epoch (the controller bumps it).
struct AlterIsr { static constexpr uint8_t kType = 92;
  uint32_t partition = 0; uint64_t epoch = 0; uint64_t isr_mask = 0;
  template <class V> void fields(V& v) { v("partition", partition); v("epoch", epoch); v("isr_mask", isr_mask); } };
// --- queue node <-> queue node: electing the controller and replicating its state (queue.h
// "Controller"), Raft's election with a pre-vote and its log cut down to one snapshot.
// A candidate (pre = true: only asking whether a vote would be granted, nobody's term moves)
// for controller of `term`, whose controller state was written in state_term at version.
struct ControllerVote { static constexpr uint8_t kType = 93;
  uint64_t term = 0; uint64_t state_term = 0; uint64_t version = 0; bool pre = false;
  template <class V> void fields(V& v) { v("term", term); v("state_term", state_term); v("version", version); v("pre", pre); } };
// The answer: term is the voter's (for pre = true, the term asked about).
struct ControllerVoteAck { static constexpr uint8_t kType = 94;
  uint64_t term = 0; bool granted = false; bool pre = false;
  template <class V> void fields(V& v) { v("term", term); v("granted", granted); v("pre", pre); } };
// Controller of `term` -> every other queue node, every heartbeat: its state (version; written
// in state_term, always its own term) to keep on disk. It counts only once a majority has it.
struct ControllerSync { static constexpr uint8_t kType = 95;
  uint64_t term = 0; uint64_t state_term = 0; uint64_t version = 0; std::vector<PartitionState> states;
  template <class V> void fields(V& v) {
    v("term", term); v("state_term", state_term); v("version", version); v("states", states, wire::Max{kPartitionsMax}); } };
// The answer, once the state is synced: ok = false when the node knows a newer term (term).
struct ControllerSyncAck { static constexpr uint8_t kType = 96;
  uint64_t term = 0; uint64_t version = 0; bool ok = false;
  template <class V> void fields(V& v) { v("term", term); v("version", version); v("ok", ok); } };
// A queue node that does not lead the partition, to a producer (request_id of its Produce) or a
// subscriber (request_id 0): the leader it knows (kNoNode: none yet) at that epoch.
struct NotLeader { static constexpr uint8_t kType = 47;
  uint64_t request_id = 0; uint32_t partition = 0; uint64_t epoch = 0; uint32_t leader = 0;
  template <class V> void fields(V& v) { v("request_id", request_id); v("partition", partition); v("epoch", epoch); v("leader", leader); } };

// --- chat server <-> storage
struct SyncQuery { static constexpr uint8_t kType = 50;
  uint64_t request_id = 0; std::string user; std::vector<Cursor> cursors;
  template <class V> void fields(V& v) {
    v("request_id", request_id); v("user", user, wire::Max{kIdMax}); v("cursors", cursors, wire::Max{kCursorsMax}); } };
struct SyncResult { static constexpr uint8_t kType = 51;
  uint64_t request_id = 0; std::vector<Entry> entries; bool done = true;
  template <class V> void fields(V& v) {
    v("request_id", request_id); v("entries", entries, wire::Max{kEntriesPerFrameMax}); v("done", done); } };
struct ReceiptUpdate { static constexpr uint8_t kType = 52;
  std::string conv; std::string reader; ReceiptKind kind = ReceiptKind::delivered; uint64_t up_to = 0;
  template <class V> void fields(V& v) {
    v("conv", conv, wire::Max{kIdMax}); v("reader", reader, wire::Max{kIdMax}); v("kind", kind); v("up_to", up_to); } };
// Storage -> chat server: deliver `entry` (or, when is_receipt, `receipt`) to these devices.
struct Route { static constexpr uint8_t kType = 53;
  std::vector<DeviceAddress> targets; bool is_receipt = false; Entry entry; ReceiptNotice receipt;
  template <class V> void fields(V& v) {
    v("targets", targets, wire::Max{kTargetsMax}); v("is_receipt", is_receipt); entry.fields(v); receipt.fields(v); } };

// --- storage -> push
struct Notify { static constexpr uint8_t kType = 60;
  std::string user; std::string device; std::string conv; uint64_t seq = 0;
  template <class V> void fields(V& v) {
    v("user", user, wire::Max{kIdMax}); v("device", device, wire::Max{kIdMax}); v("conv", conv, wire::Max{kIdMax}); v("seq", seq); } };

// --- load balancer <-> chat server
struct HealthCheck { static constexpr uint8_t kType = 70;
  template <class V> void fields(V&) {} };
struct Health { static constexpr uint8_t kType = 71;
  HealthStatus status = HealthStatus::ok; uint32_t connections = 0;
  template <class V> void fields(V& v) { v("status", status); v("connections", connections); } };

// --- device <-> key service (spec/e2ee.md "Keys a user publishes"; docs/protocol.md)
struct OneTimeKey {
  uint32_t id = 0; Bytes key;  // an X25519 public key
  template <class V> void fields(V& v) { v("id", id); v("key", key, wire::Max{kKeyBytes}); } };
// A device publishes (or re-publishes) its identity and signed prekey and adds one-time
// prekeys; with no keys at all it only asks how many of its one-time prekeys are left.
struct PublishKeys { static constexpr uint8_t kType = 80;
  uint64_t request_id = 0; std::string user; std::string device; Bytes identity; uint32_t spk_id = 0; Bytes spk;
  Bytes spk_sig; std::vector<OneTimeKey> opks;
  template <class V> void fields(V& v) {
    v("request_id", request_id); v("user", user, wire::Max{kIdMax}); v("device", device, wire::Max{kIdMax});
    v("identity", identity, wire::Max{kKeyBytes}); v("spk_id", spk_id); v("spk", spk, wire::Max{kKeyBytes});
    v("spk_sig", spk_sig, wire::Max{kSignatureBytes}); v("opks", opks, wire::Max{kOneTimePrekeysPerPublishMax}); } };
struct KeysPublished { static constexpr uint8_t kType = 81;
  uint64_t request_id = 0; uint32_t opks_available = 0;
  template <class V> void fields(V& v) { v("request_id", request_id); v("opks_available", opks_available); } };
struct FetchBundles { static constexpr uint8_t kType = 82;
  uint64_t request_id = 0; std::vector<UserRef> users;
  template <class V> void fields(V& v) { v("request_id", request_id); v("users", users, wire::Max{kUsersPerLookupMax}); } };
// One device's prekey bundle; has_opk false when its one-time prekeys ran out (X3DH without DH4).
struct DeviceBundle {
  std::string user; std::string device; Bytes identity; uint32_t spk_id = 0; Bytes spk; Bytes spk_sig;
  bool has_opk = false; uint32_t opk_id = 0; Bytes opk;
  template <class V> void fields(V& v) {
    v("user", user, wire::Max{kIdMax}); v("device", device, wire::Max{kIdMax}); v("identity", identity, wire::Max{kKeyBytes});
    v("spk_id", spk_id); v("spk", spk, wire::Max{kKeyBytes}); v("spk_sig", spk_sig, wire::Max{kSignatureBytes});
    v("has_opk", has_opk); v("opk_id", opk_id); v("opk", opk, wire::Max{kKeyBytes}); } };
struct Bundles { static constexpr uint8_t kType = 83;
  uint64_t request_id = 0; std::vector<DeviceBundle> bundles;
  template <class V> void fields(V& v) { v("request_id", request_id); v("bundles", bundles, wire::Max{kBundlesPerFrameMax}); } };
struct KeyRequestFailed { static constexpr uint8_t kType = 84;
  uint64_t request_id = 0; std::string reason;
  template <class V> void fields(V& v) { v("request_id", request_id); v("reason", reason, wire::Max{kReasonMax}); } };

using Frame = std::variant<RouteRequest, RouteReply, Hello, Welcome, Send, GroupOp, SendAck, SendReject, Deliver,
                           SyncRequest, SyncDone, ReceiptSend, ReceiptNotice, Heartbeat, HeartbeatAck, Drain,
                           Register, Unregister, Lookup, Located, Produce, Produced, ProduceRejected, Subscribe,
                           Records, SyncQuery, SyncResult, ReceiptUpdate, Route, Notify, HealthCheck, Health, Replicate, ReplicaAck,
                           QueueHeartbeat, PartitionStates, AlterIsr, NotLeader,
                           ControllerVote, ControllerVoteAck, ControllerSync, ControllerSyncAck,
                           PublishKeys, KeysPublished, FetchBundles, Bundles, KeyRequestFailed,
                           SendStale, ProduceStale, OffsetCommit>;

// A group's member list on the wire (GroupOp.members, a join entry's body, SendStale.members):
// user ids in ascending order, each followed by '\n'. `users` must be sorted and unique.
template <typename Users>
Bytes encode_member_list(const Users& users) {
  Bytes out;
  for (const std::string& user : users) {
    out.insert(out.end(), user.begin(), user.end());
    out.push_back('\n');
  }
  return out;
}
// The user ids of a member list, sorted and unique whatever the bytes; empty and over-long
// (kIdMax) lines are skipped.
std::vector<std::string> decode_member_list(ByteView list);
// The digest a group Send names: a 64-bit hash of the encoded member list, never 0 (0 means
// "not checked"). Not cryptographic: it only has to tell one membership from another.
uint64_t members_digest(ByteView member_list);

// version | type | fields. Asserts the frame is within its bounds (the sender's bug if not).
Bytes encode(const Frame& frame);
template <typename T>
Bytes encode_as(T message) {
  return encode(Frame{std::move(message)});
}

// Never crashes, whatever the bytes; a bad frame is an ErrorCode::bad_input error naming the
// frame type and the field ("Send.body: length 70000 over the maximum 65536"), or too_large.
Result<Frame> decode(ByteView bytes);

// Decodes a T frame's fields up to and including the one called `last_field`, and nothing
// after it (those keep their defaults): for observers that need a frame's ids, not its body.
// False if the bytes are not a T frame of this protocol version or a field up to `last_field`
// does not decode; what follows it is not checked.
namespace detail {
// decode_through's visitor: a wire::Reader that stops after the named field.
struct ReadThrough {
  wire::Reader reader;
  std::string_view last;
  bool done = false;
  template <typename F>
  void operator()(const char* name, F& field, wire::Max bound = wire::Max{0}) {
    if (done) return;
    reader(name, field, bound);
    done = name == last;
  }
};
}  // namespace detail

template <typename T>
bool decode_through(ByteView bytes, std::string_view last_field, T& out) {
  if (bytes.size() < 2 || bytes.size() > wire::kFrameBytesMax || bytes[0] != wire::kWireVersion || bytes[1] != T::kType) {
    return false;
  }
  detail::ReadThrough through{wire::Reader(bytes.subspan(2)), last_field};
  out.fields(through);
  return through.done && through.reader.ok();
}

// The frame's name ("Send"), for logs.
const char* frame_name(const Frame& frame);
// The name of an encoded frame's type from its header alone ("Send"), without decoding it;
// "unknown" for bytes that are not a frame of this protocol version.
const char* frame_type_name(ByteView bytes);

}  // namespace msgsim::chat
