#include "impl/chat/config.h"

namespace msgsim::chat {

const std::vector<BugInfo>& bug_catalogue() {
  static const std::vector<BugInfo> catalogue = {
      {Bug::ack_before_durable, "ack-before-durable",
       "the queue commits with synchronous=OFF, so a crash can lose a message it already acknowledged"},
      {Bug::retry_new_seq, "retry-new-seq",
       "the queue does not recognise a retried send by its id and gives it a second sequence number"},
      {Bug::reject_after_append, "reject-after-append",
       "the queue appends a message before checking membership and then refuses it, so the refused message is still delivered"},
      {Bug::leave_one_late, "leave-one-late",
       "storage applies a leave one sequence number late, so the next message still reaches the leaver"},
      {Bug::sync_off_by_one, "sync-off-by-one", "storage's sync skips the first entry after each cursor"},
      {Bug::client_no_dedup, "client-no-dedup", "a device shows a message again when it is delivered twice"},
      {Bug::no_reorder_buffer, "no-reorder-buffer",
       "a device shows messages in the order they arrive instead of sequence order"},
      {Bug::gap_skip, "gap-skip", "a device gives up on a missing sequence number after a timeout and moves past it"},
      {Bug::read_before_display, "read-before-display",
       "a device sends read receipts for messages it received but has not shown yet"},
      {Bug::expiry_ignored, "expiry-ignored", "a device never deletes disappearing or view-once messages"},
      {Bug::server_sees_plaintext, "server-sees-plaintext",
       "a device sends each message's plaintext alongside its ciphertexts, so the servers can read it"},
      {Bug::leader_ack_before_replication, "leader-ack-before-replication",
       "the queue leader acknowledges a message once it synced it, before its followers have it, so a failover can lose it"},
      {Bug::no_epoch_fencing, "no-epoch-fencing",
       "queue followers accept records from a leader of an older epoch, so a deposed leader keeps committing"},
      {Bug::fsync_error_ignored, "fsync-error-ignored",
       "storage takes a commit whose fsync failed for stored and carries on, so the batch is gone while its offset moves on"},
      {Bug::cursor_past_unsynced, "cursor-past-unsynced",
       "storage commits its queue offset first and writes the entries behind it without a sync, so a power loss leaves "
       "the offset past entries it never stored: they are never fetched again and no sync returns them"},
      {Bug::storage_not_idempotent, "storage-not-idempotent",
       "storage inserts entries under a row id of its own (no key on msg_id or (conversation, seq)) and commits its "
       "queue offset on an interval, so the records a restart consumes again are stored a second time"},
      {Bug::drain_drops_buffered, "drain-drops-buffered",
       "a draining chat server tells each device to go and closes its connection at once, so the answers it still "
       "owes it (acks of sends in flight to the queue) are dropped when they come and the device sends again"},
  };
  return catalogue;
}

const UserPlan* plan_at_named_index(const ChatConfig& config, std::string_view user) {
  if (user.size() < 2 || user.size() > 11 || user[0] != 'u') return nullptr;
  size_t index = 0;
  for (size_t i = 1; i < user.size(); ++i) {
    if (user[i] < '0' || user[i] > '9') return nullptr;
    index = index * 10 + static_cast<size_t>(user[i] - '0');
  }
  if (index < 1 || index > config.users.size() || config.users[index - 1].user != user) return nullptr;
  return &config.users[index - 1];
}

}  // namespace msgsim::chat
