// The ledger: a small request/response service that proves the runtime contract end to end
// before the messaging system exists, and keeps probing the simulator's durability model after.
//
// Each client appends numbered entries (1, 2, 3, ...) to its own ledger on its home server
// (chosen by hashing the client's node id over the servers). A server stores each entry in
// SQLite, idempotently by (client, seq), and acknowledges it only after the commit: persist
// before send. Clients retry unacknowledged entries after a timeout or a reconnect
// (at-least-once), reconnect with exponential backoff and jitter, and on every (re)connection
// ask the server how far their ledger is stored. A server that reports less than the client
// saw acknowledged has lost an acknowledged write: the client counts a `lost_acked` violation.
// With `synchronous_full = false` (SQLite's synchronous=OFF) the simulator's crashes make that
// happen, which is what the foundation's tests show.
//
// Wire format (all integers little-endian): a frame is one message.
//   hello   = 0x01 | u32 client
//   welcome = 0x02 | u64 stored_upto     (highest seq stored for that client with none missing)
//   append  = 0x03 | u64 seq | u16 length | payload (length <= kPayloadMax)
//   ack     = 0x04 | u64 seq
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "impl/base/result.h"
#include "impl/runtime.h"

namespace msgsim::ledger {

inline constexpr size_t kPayloadMax = 1024;

struct LedgerConfig {
  std::vector<NodeId> servers;
  int64_t append_interval_ns = 200 * kNanosPerMilli;
  int64_t request_timeout_ns = 1 * kNanosPerSecond;
  int64_t backoff_initial_ns = 100 * kNanosPerMilli;
  int64_t backoff_max_ns = 2 * kNanosPerSecond;
  uint32_t in_flight_max = 16;  // unacknowledged appends a client keeps outstanding
  uint32_t payload_bytes = 32;
  bool synchronous_full = true;
  bool appending = true;        // false once the workload phase ends: clients only settle
};

enum class MessageType : uint8_t { hello = 1, welcome = 2, append = 3, ack = 4 };

struct Message {
  MessageType type = MessageType::hello;
  uint32_t client = 0;
  uint64_t seq = 0;  // welcome: stored_upto; append/ack: the entry
  Bytes payload;
};

Bytes encode(const Message& message);
Result<Message> decode(ByteView frame);

// The observer of one client: what it saw, kept outside the node so that it survives the
// client's crashes (the node's memory does not). It is the ledger's oracle: an acknowledged
// entry must stay stored, so a server that later reports less has lost it.
class ClientReport {
 public:
  void saw_append() { appended_++; }
  void saw_retry() { retries_++; }
  void saw_reconnect() { reconnects_++; }
  void saw_protocol_error() { protocol_errors_++; }
  // An ack for `seq`; acks may repeat (at-least-once) and come out of order.
  void saw_ack(uint64_t seq);
  // The server says every entry up to `stored_upto` is stored.
  void saw_stored_upto(uint64_t stored_upto) {
    if (stored_upto < acked_upto_) lost_acked_++;
  }

  uint64_t appended() const { return appended_; }
  uint64_t acked() const { return acked_; }
  uint64_t acked_upto() const { return acked_upto_; }
  uint64_t retries() const { return retries_; }
  uint64_t reconnects() const { return reconnects_; }
  uint64_t lost_acked() const { return lost_acked_; }
  uint64_t protocol_errors() const { return protocol_errors_; }

 private:
  uint64_t appended_ = 0;
  uint64_t acked_ = 0;            // distinct entries acknowledged
  uint64_t acked_upto_ = 0;       // every entry up to here was acknowledged
  std::vector<uint64_t> acked_ahead_;  // acknowledged entries above acked_upto_, sorted
  uint64_t retries_ = 0;
  uint64_t reconnects_ = 0;
  uint64_t lost_acked_ = 0;
  uint64_t protocol_errors_ = 0;
};

class LedgerServer final : public Node {
 public:
  explicit LedgerServer(const LedgerConfig& config) : config_(config) {}
  ~LedgerServer() override;
  void on_start(Context& ctx) override;
  void on_accept(Context& ctx, ConnId conn, NodeId peer) override;
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override;
  void on_timer(Context&, uint64_t) override {}
  std::string describe() const override;

 private:
  uint64_t stored_upto(uint32_t client);
  void invariants() const;

  const LedgerConfig& config_;
  Context* ctx_ = nullptr;
  std::map<ConnId, uint32_t> clients_;  // connection -> client id (after hello)
  // What the database holds per client, read once per incarnation and then kept in step with
  // every commit, so an append costs one insert and no scan.
  std::map<uint32_t, uint64_t> stored_upto_;
  uint64_t appends_stored_ = 0;
};

class LedgerClient final : public Node {
 public:
  LedgerClient(const LedgerConfig& config, ClientReport& report) : config_(config), report_(report) {}
  void on_start(Context& ctx) override;
  void on_accept(Context& ctx, ConnId conn, NodeId peer) override;
  void on_connected(Context& ctx, ConnId conn) override;
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override;
  void on_timer(Context& ctx, uint64_t tag) override;
  std::string describe() const override;

  // Whether every entry this incarnation created has been acknowledged.
  bool settled() const { return unacked_.empty(); }

 private:
  enum Timer : uint64_t { kAppendTick = 1, kReconnect = 2, kRetryCheck = 3 };
  void connect(Context& ctx);
  void reconnect_later(Context& ctx);
  void send_append(Context& ctx, uint64_t seq);
  void invariants() const;

  const LedgerConfig& config_;
  ClientReport& report_;  // survives restarts: it is the observer's, not the node's memory
  NodeId server_ = kNoNode;
  ConnId conn_ = kNoConn;
  bool welcomed_ = false;
  uint32_t backoff_attempt_ = 0;
  uint64_t next_seq_ = 0;                  // 0 until the first welcome says where to go on
  std::map<uint64_t, int64_t> unacked_;    // seq -> local time last sent
};

}  // namespace msgsim::ledger
