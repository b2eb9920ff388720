// Configuration shared by every node of the messaging system: who is where (topology), how
// fast things tick (tuning), what each device does (workload), and which planted bugs are on.
// Built once per run by the runtime from the scenario and handed to every node by reference;
// nodes only read it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/hash.h"
#include "impl/chat/cpu_costs.h"
#include "impl/runtime.h"

namespace msgsim::chat {

// The planted bugs (`msgsim bugs`): each a realistic mistake the oracle must catch.
enum class Bug : uint8_t {
  ack_before_durable,   // queue: commits with synchronous=OFF, so an acked produce can be lost
  retry_new_seq,        // queue: no msg_id dedup, a retried send gets a second seq
  reject_after_append,  // queue: checks membership after appending, so a refused message is still stored
  leave_one_late,       // storage: a leave takes effect one seq late in fan-out and sync
  sync_off_by_one,      // storage: sync skips the first entry after each cursor
  client_no_dedup,      // device: shows an entry again when it is delivered twice
  no_reorder_buffer,    // device: shows entries as they arrive, not in seq order
  gap_skip,             // device: gives up on a gap after the timeout and moves past it
  read_before_display,  // device: read receipts cover entries received but not yet shown
  expiry_ignored,       // device: never deletes a disappearing message
  server_sees_plaintext,  // device: sends the plaintext along with the ciphertexts (E2EE broken)
  leader_ack_before_replication,  // queue: the leader answers a produce once it synced, before its followers have it
  no_epoch_fencing,               // queue: followers take records from a leader of an older epoch
  fsync_error_ignored,            // storage: takes a commit whose fsync failed as stored and carries on
  cursor_past_unsynced,           // storage: commits its queue offset before the entries, which are written behind
  storage_not_idempotent,         // storage: plain inserts under a row id of its own, offsets committed on an interval
  drain_drops_buffered,           // chat server: a drain closes device connections at once, dropping the answers owed
  count,
};

struct BugInfo {
  Bug bug;
  const char* name;
  const char* what;
};
const std::vector<BugInfo>& bug_catalogue();

class BugSet {
 public:
  void enable(Bug bug) { bits_ |= uint32_t{1} << static_cast<int>(bug); }
  bool on(Bug bug) const { return (bits_ >> static_cast<int>(bug)) & 1; }
  bool any() const { return bits_ != 0; }

 private:
  uint32_t bits_ = 0;
};

struct ChatTopology {
  std::vector<NodeId> load_balancers;
  std::vector<NodeId> chat_servers;
  std::vector<NodeId> registries;
  std::vector<NodeId> queues;
  std::vector<NodeId> storages;
  std::vector<NodeId> push;
  std::vector<NodeId> key_services;  // empty: no key service, so devices send plaintext (E2EE off)
  uint32_t partitions = 16;
  // Copies of each partition's log (the scenario's replication factor, capped by the queues).
  uint32_t replication_factor = 1;

  uint32_t partition_of(std::string_view conv) const {
    return static_cast<uint32_t>(hash_string(conv) % partitions);
  }
  // The partition's preferred leader: its first replica.
  NodeId queue_of(uint32_t partition) const { return queues[partition % queues.size()]; }
  // Partition p's replicas are queues (p + k) mod Q for k < replicas(); k = 0 leads.
  uint32_t replicas() const {
    return std::max<uint32_t>(1, std::min<uint32_t>(replication_factor, static_cast<uint32_t>(queues.size())));
  }
  NodeId replica_of(uint32_t partition, uint32_t k) const { return queues[(partition + k) % queues.size()]; }
  bool is_replica(uint32_t partition, NodeId node) const {
    for (uint32_t k = 0; k < replicas(); ++k)
      if (replica_of(partition, k) == node) return true;
    return false;
  }
  NodeId storage_of(uint32_t partition) const { return storages[partition % storages.size()]; }
  NodeId registry_of(std::string_view user) const { return registries[hash_string(user, 7) % registries.size()]; }
  // Every device talks to one key service (the first); more key service nodes are spares that
  // a scenario may fail over to by hand. One node keeps "an OPK handed out once" a local fact.
  NodeId key_service() const { return key_services.empty() ? kNoNode : key_services.front(); }
};

struct ChatTuning {
  int64_t heartbeat_interval_ns = 5 * kNanosPerSecond;      // device -> chat server
  int64_t heartbeat_timeout_ns = 15 * kNanosPerSecond;      // no frame for this long: reconnect
  int64_t registry_ttl_ns = 30 * kNanosPerSecond;           // presence entries expire
  int64_t health_check_interval_ns = 5 * kNanosPerSecond;   // lb -> chat server (the seed's 5 s)
  int64_t health_check_timeout_ns = 3 * kNanosPerSecond;
  int64_t backoff_initial_ns = 1 * kNanosPerSecond;         // the seed's 1, 2, 4, 8 s...
  int64_t backoff_max_ns = 32 * kNanosPerSecond;
  int64_t send_timeout_ns = 10 * kNanosPerSecond;           // an unacked send is retried
  int64_t receipt_batch_ns = 200 * kNanosPerMilli;          // receipts are batched this long
  int64_t gap_timeout_ns = 2 * kNanosPerSecond;             // a seq gap this old triggers a sync
  // An online device syncs this often anyway (anti-entropy): a delivery lost while its presence
  // entry was missing (a registry crash) shows no gap until the next message, and there may be
  // none.
  int64_t resync_interval_ns = 30 * kNanosPerSecond;
  int64_t server_request_timeout_ns = 5 * kNanosPerSecond;  // chat server's calls to other servers
  uint32_t device_pending_max = 256;                        // unacked sends a device keeps
  uint32_t reorder_buffer_max = 1024;                       // out-of-order entries a device holds
  uint32_t server_pending_max = 100'000;                    // requests a server has outstanding
  // The queue's batching delays (impl/chat/queue.h). A produce waits up to the commit window for
  // others to share its transaction, and committed records wait the linger before they go to the
  // subscribers in one frame. Both add to every message's latency when the system is quiet; 0
  // means "the next turn of the event loop" (a zero timer), which in a real process still
  // batches everything that arrived in the same wakeup.
  int64_t queue_commit_window_ns = 250 * kNanosPerMicro;
  int64_t queue_linger_ns = 1 * kNanosPerMilli;
  // Storage's group commit (impl/chat/storage.h): Records frames that arrive within this window
  // share one transaction, whichever partitions they are of; their entries fan out after its
  // commit. 0 is the event loop's next turn, as for the queue; negative commits every frame
  // alone.
  int64_t storage_commit_window_ns = 0;
};

// One user's part in the workload.
struct UserPlan {
  std::string user;
  uint32_t devices = 1;
  std::vector<std::string> contacts;  // 1:1 conversation peers
};

struct GroupPlan {
  std::string conv;            // "g:<n>"
  std::string admin;           // the user whose first device creates the group
  std::vector<std::string> members;  // initial members, admin included
  // Membership changes the admin makes during the run: (time, join?, user).
  struct Change {
    int64_t at_ns;
    bool join;
    std::string user;
  };
  std::vector<Change> changes;
};

struct ChatWorkload {
  int64_t send_interval_mean_ns = 10 * kNanosPerSecond;  // per device, exponential
  // When > 0, 1:1 conversations take turns, so that the direction of a conversation changes
  // every turn_messages messages (what a conversation's DH ratchet steps depend on): the user
  // whose name sorts first starts; a device sends turn_messages messages to a contact, then
  // none until it has shown turn_messages from that contact. For benchmarks: under faults a
  // lost message leaves the conversation waiting. 0 (the default): no turns.
  uint32_t turn_messages = 0;
  uint32_t body_bytes_min = 16;
  uint32_t body_bytes_max = 256;
  double group_share = 0.3;          // of sends, the share that go to a group
  double disappearing_share = 0.0;   // of sends, the share that disappear
  int64_t disappearing_ttl_ns = 30 * kNanosPerSecond;
  double read_share = 0.5;           // of shown messages, the share the user reads
  bool sending = true;               // false once the workload phase is over
  // End-to-end encryption (spec/e2ee.md): on whenever the topology has a key service, unless
  // the scenario turns it off (for benchmark comparisons).
  bool e2ee = true;
};

class PlaintextObserver;  // device.h

struct ChatConfig {
  ChatTopology topology;
  ChatTuning tuning;
  ChatWorkload workload;
  BugSet bugs;
  CpuCosts cpu_costs;  // the cost model (zero: no CPU charged); see cpu_costs.h
  std::vector<UserPlan> users;    // by user index
  std::vector<GroupPlan> groups;
  // The simulator's confidentiality check, told every plaintext a device writes; null live.
  PlaintextObserver* plaintext_observer = nullptr;
};

// The plan of `user` when it sits where its name says: "u<N>" at users[N - 1], as the simulator
// names users (sim/chat_system.cpp). Null otherwise; callers that may see other names keep an
// index of the rest. Lets 150,000 devices and every storage node find a user's device count
// without a name -> plan map each (~64 bytes a user a storage node).
const UserPlan* plan_at_named_index(const ChatConfig& config, std::string_view user);

// 1:1 conversation ids are "dm:<a>:<b>" with a < b, so both sides name it the same way.
inline std::string direct_conversation(std::string_view a, std::string_view b) {
  return a < b ? "dm:" + std::string(a) + ":" + std::string(b) : "dm:" + std::string(b) + ":" + std::string(a);
}

}  // namespace msgsim::chat
