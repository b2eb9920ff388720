// The store-consistency check (DESIGN.md "Oracle": what only the simulator can see): the
// storage nodes' databases, as a power loss at the end of the run would leave them (the
// simulated disks' durable images), hold each message once and where the queue put it.
//
// Histories cannot show these faults: storage skips records at or below its stored offset,
// keys entries by (conv, seq) and by msg_id, and devices drop entries at or below their
// cursors, so a second copy of a message in a database never reaches a device twice. It is
// still a corrupt database (a sync that returns both copies, a count, an export, a migration),
// and the defences above are what a bug removes. The clauses, per storage node:
//  1. no message id has two stored rows;
//  2. no (conversation, seq) has rows of two message ids;
//  3. no live device's cursor in a conversation is past the highest seq stored for it (a
//     device processes only what storage stored and then routed or synced to it; a cursor past
//     that means storage lost what it had handed out);
//  4. every stored row's seq is the one the queue assigned to that message: its `produced`
//     table (msg_id -> conv, seq; written in the same transaction as the log record) on some
//     replica of the conversation's partition holds that (conv, seq) for the message id. A
//     replica may hold a different seq for the id (an uncommitted record of an old epoch that
//     no leader truncated yet), so the clause fails only when no replica agrees and at least
//     one knows the id; when none knows it (every replica's disk lost, or never readable) the
//     row is counted as unverified rather than judged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "impl/chat/config.h"

namespace msgsim::sim {

class SimDisk;

struct DeviceCursor {
  std::string device;  // node name
  std::string conv;
  uint64_t cursor = 0;
};

struct StoreCheckResult {
  bool passed = true;
  std::string detail;  // what was checked, or the first violations with node, conv, seq and ids
};

// Reads every storage and queue node's durable database through a scratch copy of its files
// (opening a WAL database runs recovery, which writes; the run's disks stay untouched).
// `node_names` is indexed by node id (for the report). `disk` must be the active SimDisk.
StoreCheckResult check_store_consistency(SimDisk& disk, const std::vector<std::string>& node_names,
                                         const chat::ChatTopology& topology, const std::vector<DeviceCursor>& cursors);

}  // namespace msgsim::sim
