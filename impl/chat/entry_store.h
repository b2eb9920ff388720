// What the queue and storage share for keeping conversation entries in SQLite: the entry
// codec (the wire encoding of Entry's fields), the database set-up, and the hot path's
// statement helpers.
#pragma once

#include <string_view>

#include "impl/base/sqlite.h"
#include "impl/chat/protocol.h"
#include "impl/runtime.h"

struct sqlite3_stmt;

namespace msgsim::chat {

// An entry's fields in the wire encoding, without frame header: how the queue's log and the
// storage keep entries in SQLite. decode_entry is false on bytes that are not one whole entry.
void encode_entry(const Entry& entry, Bytes& out);
bool decode_entry(ByteView bytes, Entry& entry);
// The bytes an entry adds to a frame, at most (for keeping frames under wire::kFrameBytesMax).
size_t entry_bytes_max(const Entry& entry);

// The hot path's SQLite calls, on statements kept for the node's lifetime: no error strings
// are built unless something fails. Text and blobs are bound without copying (SQLITE_STATIC),
// so they must outlive the step that uses them.
namespace fast_sql {
void bind_int(sqlite3_stmt* stmt, int index, int64_t value);
void bind_text(sqlite3_stmt* stmt, int index, std::string_view text);
void bind_blob(sqlite3_stmt* stmt, int index, ByteView blob);
// Steps a statement that returns no rows, then resets it; false on an error.
bool run(sqlite3_stmt* stmt);
// Steps once: 1 a row is ready, 0 done, -1 an error. The caller resets.
int next_row(sqlite3_stmt* stmt);
}  // namespace fast_sql

// Prepares one of the node's own statements; a failure is a bug (the schema is ours).
sql::Statement must_prepare(sqlite3* db, std::string_view text);

// The node's database, made durable (WAL, synchronous=FULL) with 1 KiB pages.
sqlite3* open_entry_database(Context& ctx);

// Makes what a restarted node reads durable before it acts on it. After a failed fsync (the
// node then stopped) the page cache may still hold the failed commit: SQLite reads it back as
// committed, yet one power loss takes it away. A node that answered from it (a retried
// produce's seq, records sent to subscribers) could see it vanish and the seq reused. A full
// checkpoint syncs the WAL and the database file; false if that fails, and the node must stop
// again rather than serve.
bool make_recovered_state_durable(sqlite3* db);

inline bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

}  // namespace msgsim::chat
