// A client device: one phone, laptop or browser of one user. It finds its chat server through
// the load balancer, authenticates, syncs from its cursors, sends what its user writes
// (at-least-once, one unanswered send per conversation so its sends keep their order), shows
// what arrives in sequence order with no gaps and no duplicates, expires disappearing and
// view-once messages, sends delivered and read receipts in batches, heartbeats, and reconnects
// with exponential backoff and jitter. It reports what it observes as history events
// (spec/history.md) through Context::emit: the oracle judges those and nothing else.
//
// Processing rule for a conversation (the ReorderBuffer): entry `seq` is processed only when
// `seq == cursor + 1`; earlier ones are duplicates and ignored; later ones wait in the buffer
// (at most reorder_buffer_max), and a gap older than gap_timeout makes the device sync. The
// exception: the device's own user's join entry at `seq` when the device had nothing after
// its last membership: the entries in between were not for this user, so the cursor moves to
// `seq - 1` first.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "impl/chat/config.h"
#include "impl/chat/protocol.h"

namespace msgsim::chat {

class E2eeClient;

// Sees every plaintext a device's user writes, before it is sealed: the simulator's
// confidentiality check (sim/chat_system.cpp) looks for these bytes in what the servers see.
class PlaintextObserver {
 public:
  virtual ~PlaintextObserver() = default;
  virtual void on_plaintext(ByteView plaintext) = 0;
};

class DeviceNode final : public Node {
 public:
  // `user_index` into config.users; devices of a user are numbered from 1.
  DeviceNode(const ChatConfig& config, uint32_t user_index, uint32_t device_number);
  ~DeviceNode() override;
  void on_start(Context& ctx) override;
  void on_accept(Context& ctx, ConnId conn, NodeId peer) override;
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override;
  void on_timer(Context& ctx, uint64_t tag) override;
  std::string describe() const override;

  const std::string& device_id() const { return device_; }
  bool online() const { return phase_ == Phase::online; }
  // When this device last came online (Welcome), on its own clock; -1 before the first time.
  int64_t last_online_ns() const { return last_online_ns_; }
  // Online, nothing waiting to be sent or acknowledged, no gap open, no receipt unsent.
  bool settled() const;
  // Each conversation's cursor (every entry up to it processed), for the store-consistency
  // check: storage routes or syncs only what it stored, so no cursor passes what it holds.
  template <class Visit>
  void for_each_cursor(Visit&& visit) const {
    for (const auto& [conv, c] : convs_) visit(conv, c.cursor);
  }
  // Whether this device encrypts (spec/e2ee.md): the scenario has a key service and E2EE on.
  bool e2ee() const { return e2ee_ != nullptr; }
  // Bytes of E2EE state (keys, sessions), 0 with E2EE off.
  size_t e2ee_memory_bytes() const;

 private:
  enum class Phase : uint8_t { backoff, routing, connecting, syncing, online };

  struct Outgoing {
    bool group_op = false;
    std::string id;  // msg_id or op_id
    Bytes body;
    int64_t expires_at_ns = 0;
    bool view_once = false;
    EntryKind op_kind = EntryKind::join;
    std::string member;
    int64_t sent_at_ns = -1;  // -1: not sent on this connection yet
    // With E2EE, `body` holds the plaintext until the message reaches the front of the outbox
    // and is sealed for the recipients known then (after the device synced, so its view of a
    // group's members is as fresh as it can be); then the sealed body, sent as is on retries.
    bool sealed = false;
    // A sealed group message keeps its plaintext until acknowledged: after a reconnect, or a
    // SendStale, it is sealed again for the members known then (see e2ee_client.h).
    Bytes plaintext;
    uint64_t members_digest = 0;  // a sealed group message: the member list it was sealed for
    uint32_t stale_answers = 0;   // SendStale answers so far (kStaleResendsAtOnceMax)
  };

  struct Conversation {
    bool group = false;
    std::string peer;                   // 1:1: the other user
    // 1:1 turns (ChatWorkload::turn_messages): whose turn it is, and how many messages this
    // device sent in its turn or has shown from the peer while waiting.
    bool my_turn = true;
    uint32_t turn_count = 0;
    bool member = false;                // groups: this user is a member now
    uint32_t outbox_head = 0;           // outbox_slots[outbox_head] is the front (see below)
    uint64_t cursor = 0;                // every entry up to here is processed
    std::map<uint64_t, Entry> waiting;  // the reorder buffer: entries past cursor + 1
    int64_t gap_since_ns = -1;
    uint64_t delivered_sent = 0;        // receipts already sent
    uint64_t read_sent = 0;
    uint64_t read_upto = 0;             // what the user has read
    // The outbox: the sends not yet answered, oldest first, in outbox_slots[outbox_head..];
    // the front is in flight once sent. A vector, not a deque: libstdc++'s deque allocates
    // about 600 bytes even when empty, and 150,000 devices hold several conversations each.
    // An answer pops the front by moving the head (its strings freed at once), and the slots
    // before the head are erased once they are half the vector, or all of it: erasing the front
    // each time moved every waiting message (up to kOutboxPerConversationMax - 1 Outgoing of
    // ~170 bytes), 5.5 k instructions an ack in BM_MessagePath. The head sits in the padding
    // after `member`, so a conversation is no larger.
    std::vector<Outgoing> outbox_slots;
    bool outbox_empty() const { return outbox_head == outbox_slots.size(); }
    size_t outbox_size() const { return outbox_slots.size() - outbox_head; }
    Outgoing& outbox_front() { return outbox_slots[outbox_head]; }
    const Outgoing& outbox_front() const { return outbox_slots[outbox_head]; }
    // Groups with E2EE: the members (users, sorted) as this device has processed the log, so
    // its sender key goes to exactly them. A join entry's body lists the members after it; a
    // SendStale brings the queue's list, which may be ahead of the log this device processed.
    std::vector<std::string> members;
    // Others' receipts this device has reported learning here: per (reader, kind) the highest
    // up_to (receipts only rise). Held in the conversation rather than in a device-wide map
    // keyed by (conv, reader, kind) strings: about 50 bytes an entry instead of 160, and a
    // full-scale run holds several per device. One entry per reader and kind, so bounded by
    // the conversation's members.
    struct ReceiptKnown {
      std::string reader;
      ReceiptKind kind = ReceiptKind::delivered;
      uint64_t up_to = 0;
    };
    std::vector<ReceiptKnown> receipts_known;
  };

  // Timer tags: fixed ones below; expiry timers are kExpiryBase + a counter.
  enum : uint64_t {
    kReconnectTimer = 1,
    kSendTimer = 2,
    kHeartbeatTimer = 3,
    kReceiptTimer = 4,
    kRetryTimer = 5,
    kResyncTimer = 6,
    kSignedPrekeyTimer = 7,
    kGroupChangeBase = 1'000,
    kExpiryBase = 1'000'000,
  };

  void start_routing(Context& ctx);
  // Every frame to the chat server goes through here (the heartbeat needs when the last went).
  void send_to_server(Context& ctx, Bytes frame);
  // Heartbeats and the heartbeat timeout: armed at Welcome, cancelled when the connection goes.
  void on_liveness_timer(Context& ctx);
  // The 1 s retry timer runs only while something waits for an answer, keys or a gap to close;
  // every handler ends by arming it when that holds.
  bool retry_needed() const;
  void arm_retry_if_needed(Context& ctx);
  void go_offline(Context& ctx);
  void reconnect_later(Context& ctx, bool immediately);
  void on_welcome(Context& ctx);
  void request_sync(Context& ctx, bool owed);
  void send_next(Context& ctx, const std::string& conv, Conversation& c);
  void create_message(Context& ctx);
  void enqueue_group_op(Context& ctx, const std::string& conv, EntryKind kind, const std::string& member);
  void on_deliver(Context& ctx, Entry entry);
  void drain_ready(Context& ctx, const std::string& conv, Conversation& c);
  void process(Context& ctx, const std::string& conv, Conversation& c, const Entry& entry);
  void on_ack(Context& ctx, const SendAck& ack);
  // The front of the outbox was answered (acked or rejected): drop it.
  void drop_front_of_outbox(Conversation& c);
  void on_reject(Context& ctx, const SendReject& reject);
  void on_stale(Context& ctx, const SendStale& stale);
  void on_receipt(Context& ctx, const ReceiptNotice& notice);
  void flush_receipts(Context& ctx);
  void check_gaps(Context& ctx);
  Conversation& conversation(const std::string& conv);
  // E2EE: sealing, the key service connection, opening what arrives.
  bool seal(Context& ctx, const std::string& conv, Conversation& c, Outgoing& out);
  std::vector<std::string> recipients_of(const Conversation& c) const;
  uint32_t device_count(const std::string& user) const;
  void key_request(Context& ctx, Frame frame);
  void publish_keys(Context& ctx);
  void fetch_bundles(Context& ctx, std::vector<std::string> users);
  void on_key_frame(Context& ctx, Frame& frame);
  void reset_key_connection();
  void apply_membership(const std::string& conv, Conversation& c, const Entry& entry);
  std::string new_uuid(Context& ctx);
  void invariants() const;

  const ChatConfig& config_;
  const UserPlan& plan_;
  std::string user_;
  std::string device_;
  uint32_t device_number_;
  Phase phase_ = Phase::backoff;
  ConnId lb_conn_ = kNoConn;
  ConnId conn_ = kNoConn;
  NodeId server_ = kNoNode;
  uint32_t backoff_attempt_ = 0;
  int64_t last_heard_ns_ = 0;  // the last frame from the server on this connection
  int64_t last_sent_ns_ = 0;   // the last frame to it
  int64_t last_ping_ns_ = 0;   // the last Heartbeat to it
  TimerId liveness_timer_ = 0;
  bool liveness_armed_ = false;
  bool retry_armed_ = false;
  int64_t last_online_ns_ = -1;
  bool receipt_timer_armed_ = false;
  bool syncing_ = false;  // a SyncRequest is out and its SyncDone has not come
  bool server_draining_ = false;  // the server sent Drain: send it nothing, go when it closes
  // Whether that sync is owed for correctness (after a connect, or for a gap) rather than the
  // periodic anti-entropy one: only an owed sync keeps the device from being settled, since at
  // scale some device is always in the middle of a periodic one.
  bool sync_owed_ = false;
  std::map<std::string, Conversation> convs_;
  // The same for receipts of conversations this device does not hold (yet): (conv, reader,
  // kind) -> the highest up_to reported. Moved into the conversation when it appears.
  std::map<std::tuple<std::string, std::string, ReceiptKind>, uint64_t> receipts_known_elsewhere_;
  uint64_t& receipt_known(const std::string& conv, const std::string& reader, ReceiptKind kind);
  // Pending expiries: timer tag -> (conv, msg id).
  std::map<uint64_t, std::pair<std::string, std::string>> expiries_;
  uint64_t next_expiry_tag_ = kExpiryBase;

  // E2EE (null when off). The key service connection is opened when needed; one publish (or
  // one-time prekey count query) and one bundle fetch are out at a time.
  std::unique_ptr<E2eeClient> e2ee_;
  ConnId key_conn_ = kNoConn;
  uint64_t next_key_request_ = 1;
  bool keys_published_ = false;
  uint64_t publish_request_ = 0;  // 0: none out
  uint64_t fetch_request_ = 0;
  int64_t key_request_sent_ns_ = 0;
  // client-no-dedup bug only: the digests of recently shown messages, so that the buggy device
  // can show a repeat without decrypting it (the ratchet refuses a replay). Bounded.
  std::map<std::string, std::string> shown_digests_;
};

// Hex SHA-256 of `bytes`: the history's `body` field.
std::string body_digest_hex(ByteView bytes);

}  // namespace msgsim::chat
