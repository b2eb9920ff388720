#include "sim/store_check.h"

#include <sqlite3.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "impl/base/hash.h"
#include "impl/base/sqlite.h"
#include "sim/disk.h"

namespace msgsim::sim {

namespace {

constexpr const char* kDatabaseName = "node.db";  // SimContext::db()
constexpr size_t kExamplesMax = 5;                // violations named in the detail

struct StoredRow {
  std::string conv;
  uint64_t seq = 0;
  std::string msg_id;
};

// The queue's answer for a message id on one replica: (conv, seq), seq 0 when rejected. Kept
// compact, as the queues hold one per replica and message (millions at full scale): the id as
// two independent 64-bit hashes (two ids are confused only if both collide: about n^2 / 2^129,
// under 1e-25 for 10 million ids), the conversation as an index into the interned names.
struct Assignment {
  uint64_t id_hash = 0, id_hash2 = 0;
  uint64_t seq = 0;
  uint32_t conv = 0;
  NodeId queue = kNoNode;

  auto key() const { return std::pair(id_hash, id_hash2); }
};

std::pair<uint64_t, uint64_t> id_key(std::string_view msg_id) {
  return {hash_string(msg_id), hash_string(msg_id, 0x5707ec4ec4ULL)};
}

struct ByKey {
  bool operator()(const Assignment& a, const std::pair<uint64_t, uint64_t>& key) const { return a.key() < key; }
  bool operator()(const std::pair<uint64_t, uint64_t>& key, const Assignment& a) const { return key < a.key(); }
};

// Conversation names, each held once.
class ConvNames {
 public:
  uint32_t intern(std::string_view conv) {
    const auto [it, added] = index_.try_emplace(std::string(conv), static_cast<uint32_t>(names_.size()));
    if (added) names_.push_back(&it->first);
    return it->second;
  }
  // The index of `conv`, or UINT32_MAX if no queue named it.
  uint32_t find(const std::string& conv) const {
    const auto it = index_.find(conv);
    return it == index_.end() ? UINT32_MAX : it->second;
  }
  const std::string& name(uint32_t index) const { return *names_[index]; }

 private:
  std::map<std::string, uint32_t> index_;
  std::vector<const std::string*> names_;
};

// Opens, in `scratch`, a copy of the durable images of `node`'s files on `disk`: the database
// a restart after a power loss now would find. Null when the node has no database file. The
// caller closes it and wipes the node's copy before the next node's (with_durable_copy), so the
// check holds one node's database at a time on top of the run's disks.
sql::Database open_durable_copy(SimDisk& disk, SimDisk& scratch, NodeId node, Prng& rng, std::string& error) {
  bool has_database = false;
  NodeStorage& copy = scratch.storage(node);
  disk.storage(node).for_each_durable_image([&](const std::string& name, FileImage image) {
    has_database |= name == kDatabaseName;
    const SimFilePtr file = copy.create_synced(name, std::move(image));
    MSGSIM_ASSERT(file != nullptr, "store check: cannot create the copy of " + name);
  });
  if (!has_database) return sql::Database();
  scratch.set_context(node, 0, &rng);
  Result<sqlite3*> opened = scratch.open(node, kDatabaseName);
  if (!opened.ok()) {
    error = opened.error().message;
    return sql::Database();
  }
  // Closing the last connection of a WAL database checkpoints it, writing the WAL's pages into
  // the copy's database file: blocks the copy would otherwise go on sharing with the run's disk.
  // The check only reads, so the copy is closed as it is.
  sqlite3_db_config(opened.value(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  return sql::Database(opened.value());
}

// Opens the copy of `node`'s durable database, hands it to `read` (null when the node has none
// or it could not be opened, with `error` saying why), then closes it and frees the copy.
template <class Read>
void with_durable_copy(SimDisk& disk, SimDisk& scratch, NodeId node, Prng& rng, Read&& read) {
  {
    std::string error;
    sql::Database db = open_durable_copy(disk, scratch, node, rng, error);
    read(db, error);
  }
  scratch.wipe(node);
}

bool has_table(const sql::Database& db, std::string_view table) {
  Result<sql::Statement> stmt = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?");
  if (!stmt.ok() || !stmt->bind(1, table).ok()) return false;
  Result<bool> row = stmt->step();
  return row.ok() && *row;
}

// Runs `sql` and hands each row to `visit`; the error message on failure, empty on success.
template <class Visit>
std::string each_row(const sql::Database& db, std::string_view sql, Visit&& visit) {
  Result<sql::Statement> stmt = db.prepare(sql);
  if (!stmt.ok()) return stmt.error().message;
  for (;;) {
    Result<bool> row = stmt->step();
    if (!row.ok()) return row.error().message;
    if (!*row) return std::string();
    visit(*stmt);
  }
}

}  // namespace

StoreCheckResult check_store_consistency(SimDisk& disk, const std::vector<std::string>& node_names,
                                         const chat::ChatTopology& topology, const std::vector<DeviceCursor>& cursors) {
  auto name_of = [&](NodeId node) { return node < node_names.size() ? node_names[node] : "node " + std::to_string(node); };
  // Opening a WAL database recovers it, which writes: work on copies, on a disk of their own.
  // It serves the VFS until it is destroyed, then hands it back to the run's disk.
  SimDisk scratch;
  Prng rng(0x5707e);
  std::vector<std::string> violations;
  uint64_t violation_count = 0;
  auto violate = [&](std::string what) {
    if (violations.size() < kExamplesMax) violations.push_back(std::move(what));
    violation_count++;
  };
  std::vector<std::string> unreadable;

  // The queue's assignments, one vector per queue in the topology's order, each sorted by id.
  // Per queue rather than one merged vector because this check runs at the end of the run,
  // when the run's memory is at its peak: each vector is reserved to its row count and sorted in
  // place, so nothing is held twice (a merged vector doubled as it grew and its stable sort took
  // a buffer of half its size: ~0.4 KB per device at full scale). Looking a message id up in
  // every queue's vector in turn visits the replicas in the queues' order.
  std::vector<std::vector<Assignment>> assigned_by_queue;
  assigned_by_queue.reserve(topology.queues.size());
  ConvNames convs;
  std::set<NodeId> queues_read;
  for (NodeId queue : topology.queues) {
    std::vector<Assignment>& assigned = assigned_by_queue.emplace_back();
    with_durable_copy(disk, scratch, queue, rng, [&](const sql::Database& db, std::string error) {
      if (!db || !has_table(db, "produced")) {
        if (!error.empty()) unreadable.push_back(name_of(queue) + ": " + error);
        return;
      }
      error = each_row(db, "SELECT count(*) FROM produced",
                       [&](const sql::Statement& row) { assigned.reserve(static_cast<size_t>(row.column_int64(0))); });
      if (error.empty()) {
        error = each_row(db, "SELECT msg_id, conv, seq FROM produced", [&](const sql::Statement& row) {
          const auto [id_hash, id_hash2] = id_key(row.column_text(0));
          assigned.push_back(Assignment{id_hash, id_hash2, static_cast<uint64_t>(row.column_int64(2)),
                                        convs.intern(row.column_text(1)), queue});
        });
      }
      if (!error.empty()) {
        unreadable.push_back(name_of(queue) + ": " + error);
        return;
      }
      queues_read.insert(queue);
    });
    // Ids are unique in a queue's `produced` (its primary key), so the order is total but for a
    // collision of both 64-bit hashes; the tie-break on (seq, conv) keeps even that deterministic.
    std::sort(assigned.begin(), assigned.end(), [](const Assignment& a, const Assignment& b) {
      return std::tie(a.id_hash, a.id_hash2, a.seq, a.conv) < std::tie(b.id_hash, b.id_hash2, b.seq, b.conv);
    });
  }

  // Per storage node: the clauses on its rows, and the highest seq it stores per conversation.
  std::map<std::string, uint64_t> highest_stored;  // by conv, over the conversation's owner
  std::set<NodeId> storages_read;
  uint64_t rows = 0, unverified = 0;
  for (NodeId storage : topology.storages) {
    const std::string node = name_of(storage);
    std::vector<StoredRow> stored;
    bool read = false;
    with_durable_copy(disk, scratch, storage, rng, [&](const sql::Database& db, std::string error) {
      if (!db || !has_table(db, "entries")) {
        if (!error.empty()) unreadable.push_back(node + ": " + error);
        if (error.empty()) storages_read.insert(storage);  // no database yet: it stores nothing
        return;
      }
      // Reserved to the row count: this vector is the check's largest while it lives.
      error = each_row(db, "SELECT count(*) FROM entries",
                       [&](const sql::Statement& row) { stored.reserve(static_cast<size_t>(row.column_int64(0))); });
      if (error.empty()) error = each_row(db, "SELECT conv, seq, msg_id FROM entries", [&](const sql::Statement& row) {
        stored.push_back(StoredRow{std::string(row.column_text(0)), static_cast<uint64_t>(row.column_int64(1)),
                                   std::string(row.column_text(2))});
      });
      if (!error.empty()) {
        unreadable.push_back(node + ": " + error);
        return;
      }
      read = true;
    });
    if (!read) continue;
    storages_read.insert(storage);
    rows += stored.size();

    for (const StoredRow& row : stored) {
      if (topology.storage_of(topology.partition_of(row.conv)) == storage) {
        uint64_t& highest = highest_stored[row.conv];
        highest = std::max(highest, row.seq);
      }
    }
    // Clauses 1 and 2 on the rows sorted by id, then by place: equal neighbours are what a map
    // of them would group, without a node per row (a storage node holds ~170,000 rows at full
    // scale). Stable sorts keep copies in the order the database returned them.
    std::vector<const StoredRow*> sorted;
    sorted.reserve(stored.size());
    for (const StoredRow& row : stored) sorted.push_back(&row);
    std::stable_sort(sorted.begin(), sorted.end(), [](const StoredRow* a, const StoredRow* b) { return a->msg_id < b->msg_id; });
    for (size_t first = 0, last = 0; first < sorted.size(); first = last) {
      while (last < sorted.size() && sorted[last]->msg_id == sorted[first]->msg_id) ++last;
      if (last - first < 2) continue;
      std::string where;
      for (size_t i = first; i < last; ++i)
        where += (where.empty() ? "" : ", ") + sorted[i]->conv + " seq " + std::to_string(sorted[i]->seq);
      violate(node + ": message " + sorted[first]->msg_id + " stored " + std::to_string(last - first) + " times (" + where + ")");
    }
    const auto place_then_id = [](const StoredRow* a, const StoredRow* b) {
      return std::tie(a->conv, a->seq, a->msg_id) < std::tie(b->conv, b->seq, b->msg_id);
    };
    std::sort(sorted.begin(), sorted.end(), place_then_id);
    for (size_t first = 0, last = 0; first < sorted.size(); first = last) {
      size_t distinct_ids = 0;
      for (; last < sorted.size() && sorted[last]->conv == sorted[first]->conv && sorted[last]->seq == sorted[first]->seq; ++last)
        distinct_ids += last == first || sorted[last]->msg_id != sorted[last - 1]->msg_id;
      if (distinct_ids < 2) continue;
      std::string ids;
      for (size_t i = first; i < last; ++i)
        if (i == first || sorted[i]->msg_id != sorted[i - 1]->msg_id) ids += (ids.empty() ? "" : ", ") + sorted[i]->msg_id;
      violate(node + ": " + sorted[first]->conv + " seq " + std::to_string(sorted[first]->seq) + " holds " +
              std::to_string(distinct_ids) + " messages (" + ids + ")");
    }
    std::vector<const StoredRow*>().swap(sorted);
    for (const StoredRow& row : stored) {
      const uint32_t partition = topology.partition_of(row.conv);
      const auto key = id_key(row.msg_id);
      const uint32_t conv = convs.find(row.conv);
      bool agrees = false, any_replica = false;
      std::string other;
      for (const std::vector<Assignment>& assigned : assigned_by_queue) {
        const auto known = std::equal_range(assigned.begin(), assigned.end(), key, ByKey{});
        for (auto it = known.first; it != known.second; ++it) {
          const Assignment& assignment = *it;
          if (!topology.is_replica(partition, assignment.queue)) continue;
          any_replica = true;
          if (assignment.conv == conv && assignment.seq == row.seq) {
            agrees = true;
          } else if (other.empty()) {
            other = name_of(assignment.queue) + " has " + convs.name(assignment.conv) + " seq " + std::to_string(assignment.seq);
          }
        }
      }
      if (!any_replica) {
        unverified++;
      } else if (!agrees) {
        violate(node + ": message " + row.msg_id + " stored at " + row.conv + " seq " + std::to_string(row.seq) +
                ", which no queue replica assigned it (" + other + ")");
      }
    }
  }

  // Devices' cursors against what the conversation's owner stores.
  for (const DeviceCursor& cursor : cursors) {
    if (cursor.cursor == 0) continue;
    const NodeId owner = topology.storage_of(topology.partition_of(cursor.conv));
    if (storages_read.count(owner) == 0) continue;  // its database could not be read: reported
    const auto it = highest_stored.find(cursor.conv);
    const uint64_t highest = it == highest_stored.end() ? 0 : it->second;
    if (cursor.cursor > highest) {
      violate(cursor.device + ": cursor of " + cursor.conv + " at seq " + std::to_string(cursor.cursor) + ", past seq " +
              std::to_string(highest) + ", the highest " + name_of(owner) + " stores");
    }
  }

  StoreCheckResult result;
  result.passed = violation_count == 0 && unreadable.empty();
  if (result.passed) {
    result.detail = std::to_string(rows) + " stored rows on " + std::to_string(storages_read.size()) +
                    " storage nodes: one row per message id and per (conversation, seq), every seq the queue's "
                    "(" + std::to_string(unverified) + " rows unverified: no readable replica knows the id), " +
                    std::to_string(cursors.size()) + " device cursors within what storage holds";
    return result;
  }
  std::string detail;
  if (violation_count > 0) detail = std::to_string(violation_count) + " violations";
  for (const std::string& v : violations) detail += "; " + v;
  for (const std::string& u : unreadable) detail += "; unreadable database: " + u;
  result.detail = std::move(detail);
  return result;
}

}  // namespace msgsim::sim
