#include "impl/chat/entry_store.h"

#include <sqlite3.h>

#include <climits>

namespace msgsim::chat {

void encode_entry(const Entry& entry, Bytes& out) {
  out.clear();
  wire::Writer writer(out);
  const_cast<Entry&>(entry).fields(writer);
}

bool decode_entry(ByteView bytes, Entry& entry) {
  wire::Reader reader(bytes);
  entry.fields(reader);
  return reader.ok() && reader.at_end();
}

size_t entry_bytes_max(const Entry& entry) {
  // Each field's content plus a varint of at most 10 bytes for its length or value.
  return entry.conv.size() + entry.msg_id.size() + entry.from_user.size() + entry.from_device.size() +
         entry.to.size() + entry.member.size() + entry.body.size() + 11 * 10;
}

namespace fast_sql {

void bind_int(sqlite3_stmt* stmt, int index, int64_t value) { sqlite3_bind_int64(stmt, index, value); }

void bind_text(sqlite3_stmt* stmt, int index, std::string_view text) {
  // Every string reaching here is bounded by the protocol (kIdMax, kReasonMax).
  MSGSIM_ASSERT_LE(text.size(), static_cast<size_t>(INT_MAX));
  // An empty view may have a null pointer, which SQLite would bind as NULL, not as "".
  sqlite3_bind_text(stmt, index, text.empty() ? "" : text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
}

void bind_blob(sqlite3_stmt* stmt, int index, ByteView blob) {
  MSGSIM_ASSERT_LE(blob.size(), static_cast<size_t>(INT_MAX));
  static const uint8_t kEmpty = 0;  // a null pointer would bind NULL, not an empty blob
  sqlite3_bind_blob(stmt, index, blob.empty() ? &kEmpty : blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
}

bool run(sqlite3_stmt* stmt) {
  const int rc = sqlite3_step(stmt);
  sqlite3_reset(stmt);
  return rc == SQLITE_DONE;
}

int next_row(sqlite3_stmt* stmt) {
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) return 1;
  if (rc == SQLITE_DONE) return 0;
  return -1;
}

}  // namespace fast_sql

sql::Statement must_prepare(sqlite3* db, std::string_view text) {
  Result<sql::Statement> stmt = sql::prepare(db, text);
  // The schema is ours and was just created: a failure here is a bug, not bad input.
  MSGSIM_ASSERT(stmt.ok(), stmt.ok() ? std::string() : stmt.error().message);
  return std::move(stmt.value());
}

sqlite3* open_entry_database(Context& ctx) {
  sqlite3* db = ctx.db();
  // Small pages: every commit writes each page it dirtied to the WAL, and a commit here touches
  // a few rows in a few tables, so 1 KiB pages write (and the simulated disk copies) a quarter
  // of what 4 KiB pages would. Only takes effect when the database is created.
  const Status pages = sql::exec(db, "PRAGMA page_size=1024");
  MSGSIM_ASSERT(pages.ok(), pages.ok() ? std::string() : pages.error().message);
  const Status durable = sql::configure_durable(db);
  MSGSIM_ASSERT(durable.ok(), durable.ok() ? std::string() : durable.error().message);
  return db;
}

bool make_recovered_state_durable(sqlite3* db) {
  return sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_FULL, nullptr, nullptr) == SQLITE_OK;
}

}  // namespace msgsim::chat
