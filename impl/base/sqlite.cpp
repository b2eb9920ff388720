#include "impl/base/sqlite.h"

#include <sqlite3.h>

#include <climits>

namespace msgsim::sql {

ErrorCode error_code_for(int sqlite_code) {
  switch (sqlite_code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return ErrorCode::unavailable;
    case SQLITE_TOOBIG: return ErrorCode::too_large;
    case SQLITE_NOTFOUND: return ErrorCode::not_found;
    case SQLITE_ERROR:
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE: return ErrorCode::bad_input;
    default: return ErrorCode::io_error;  // FULL, IOERR, CORRUPT, CANTOPEN, NOMEM, ...
  }
}

Error make_sqlite_error(sqlite3* db, int sqlite_code, std::string_view what) {
  std::string message(what);
  message += ": ";
  message += sqlite3_errstr(sqlite_code);
  message += " (code " + std::to_string(sqlite_code) + ")";
  if (db != nullptr && sqlite3_extended_errcode(db) == sqlite_code) {
    message += ": ";
    message += sqlite3_errmsg(db);
  }
  return make_error(error_code_for(sqlite_code), std::move(message));
}

int sqlite_code(sqlite3* db) { return sqlite3_extended_errcode(db); }

Status exec(sqlite3* db, std::string_view sql) {
  const std::string text(sql);  // sqlite3_exec wants a terminated string
  const int rc = sqlite3_exec(db, text.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) {
    const int code = sqlite3_extended_errcode(db) != SQLITE_OK ? sqlite3_extended_errcode(db) : rc;
    return make_sqlite_error(db, code, "exec \"" + text.substr(0, 80) + "\"");
  }
  return {};
}

Status set_locking_mode(sqlite3* db, LockingMode mode) {
  const char* const wanted = mode == LockingMode::exclusive ? "exclusive" : "normal";
  Result<std::string> now = query_text(db, mode == LockingMode::exclusive ? "PRAGMA locking_mode=EXCLUSIVE" : "PRAGMA locking_mode=NORMAL");
  if (!now.ok()) return now.error();
  if (*now != wanted) {
    return make_error(ErrorCode::io_error, "set_locking_mode: locking_mode is \"" + *now + "\", not \"" + wanted + "\"");
  }
  return {};
}

Status configure_durable(sqlite3* db) {
  Result<std::string> mode = query_text(db, "PRAGMA journal_mode=WAL");
  if (!mode.ok()) return mode.error();
  if (*mode != "wal") {
    return make_error(ErrorCode::io_error, "configure_durable: journal_mode stayed \"" + *mode + "\"");
  }
  // Debian builds SQLite with SECURE_DELETE on, which zeroes deleted content and writes every
  // page a delete frees: the queue's retention freed the overflow pages of each old log batch
  // and wrote them all to the WAL again, as zeros. Nothing here needs deleted bytes scrubbed
  // (message bodies are ciphertext, and the confidentiality scan looks for plaintext), so
  // deletes only unlink.
  Status scrub = exec(db, "PRAGMA secure_delete=OFF");
  if (!scrub.ok()) return scrub;
  // How often the WAL is checkpointed is the runtime's choice (sim/disk.cpp, live/live_host.cpp):
  // it trades the memory of a simulated disk against the stalls of real checkpoints.
  return exec(db, "PRAGMA synchronous=FULL");
}

Status check_integrity(sqlite3* db) {
  Result<Statement> stmt = prepare(db, "PRAGMA integrity_check");
  if (!stmt.ok()) return stmt.error();
  std::string problems;
  for (int rows = 0; rows < 100; ++rows) {
    Result<bool> row = stmt->step();
    if (!row.ok()) return row.error();
    if (!*row) break;
    const std::string_view line = stmt->column_text(0);
    if (line == "ok") return {};
    if (!problems.empty()) problems += "; ";
    problems += line;
  }
  return make_error(ErrorCode::io_error, "integrity_check: " + problems);
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    db_ = other.db_;
    stmt_ = std::exchange(other.stmt_, nullptr);
  }
  return *this;
}

Status Statement::check(int rc, std::string_view what) const {
  if (rc == SQLITE_OK) return {};
  std::string where(what);
  if (stmt_ != nullptr) {
    where += " in \"";
    where += std::string_view(sqlite3_sql(stmt_)).substr(0, 80);
    where += "\"";
  }
  return make_sqlite_error(db_, rc, where);
}

Status Statement::bind(int index, int64_t value) {
  return check(sqlite3_bind_int64(stmt_, index, value), "bind " + std::to_string(index));
}

Status Statement::bind(int index, std::string_view text) {
  if (text.size() > static_cast<size_t>(INT_MAX)) {
    return make_error(ErrorCode::too_large, "bind " + std::to_string(index) + ": text too large");
  }
  return check(sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT),
               "bind " + std::to_string(index));
}

Status Statement::bind_blob(int index, ByteView blob) {
  if (blob.size() > static_cast<size_t>(INT_MAX)) {
    return make_error(ErrorCode::too_large, "bind " + std::to_string(index) + ": blob too large");
  }
  // A zero-length blob needs a non-null pointer, or SQLite binds NULL.
  static const uint8_t kEmpty = 0;
  const void* data = blob.empty() ? &kEmpty : blob.data();
  return check(sqlite3_bind_blob(stmt_, index, data, static_cast<int>(blob.size()), SQLITE_TRANSIENT),
               "bind " + std::to_string(index));
}

Status Statement::bind_null(int index) {
  return check(sqlite3_bind_null(stmt_, index), "bind " + std::to_string(index));
}

Result<bool> Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return check(rc, "step").error();
}

Status Statement::reset() { return check(sqlite3_reset(stmt_), "reset"); }

Status Statement::clear_bindings() { return check(sqlite3_clear_bindings(stmt_), "clear_bindings"); }

int64_t Statement::column_int64(int index) const { return sqlite3_column_int64(stmt_, index); }

std::string_view Statement::column_text(int index) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, index));
  if (text == nullptr) return {};
  return std::string_view(text, static_cast<size_t>(sqlite3_column_bytes(stmt_, index)));
}

ByteView Statement::column_blob(int index) const {
  const auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_, index));
  if (blob == nullptr) return {};
  return ByteView(blob, static_cast<size_t>(sqlite3_column_bytes(stmt_, index)));
}

bool Statement::column_is_null(int index) const { return sqlite3_column_type(stmt_, index) == SQLITE_NULL; }

int Statement::column_count() const { return sqlite3_column_count(stmt_); }

Result<Statement> prepare(sqlite3* db, std::string_view sql) {
  if (sql.size() > static_cast<size_t>(INT_MAX)) return make_error(ErrorCode::too_large, "prepare: SQL too large");
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt, &tail);
  const std::string shown(sql.substr(0, 80));
  if (rc != SQLITE_OK) return make_sqlite_error(db, rc, "prepare \"" + shown + "\"");
  if (stmt == nullptr) return make_error(ErrorCode::bad_input, "prepare \"" + shown + "\": no statement");
  Statement result(db, stmt);
  const std::string_view rest(tail, static_cast<size_t>(sql.data() + sql.size() - tail));
  if (rest.find_first_not_of(" \t\r\n;") != std::string_view::npos) {
    return make_error(ErrorCode::bad_input, "prepare \"" + shown + "\": more than one statement");
  }
  return Result<Statement>(std::move(result));
}

Result<int64_t> query_int64(sqlite3* db, std::string_view sql) {
  Result<Statement> stmt = prepare(db, sql);
  if (!stmt.ok()) return stmt.error();
  Result<bool> row = stmt->step();
  if (!row.ok()) return row.error();
  if (!*row) return make_error(ErrorCode::not_found, "query \"" + std::string(sql.substr(0, 80)) + "\": no row");
  return stmt->column_int64(0);
}

Result<std::string> query_text(sqlite3* db, std::string_view sql) {
  Result<Statement> stmt = prepare(db, sql);
  if (!stmt.ok()) return stmt.error();
  Result<bool> row = stmt->step();
  if (!row.ok()) return row.error();
  if (!*row) return make_error(ErrorCode::not_found, "query \"" + std::string(sql.substr(0, 80)) + "\": no row");
  return std::string(stmt->column_text(0));
}

Result<Database> Database::open_file(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    Error error = make_sqlite_error(db, rc, "open \"" + path + "\"");
    sqlite3_close_v2(db);
    return error;
  }
  sqlite3_extended_result_codes(db, 1);
  return Database(db);
}

void Database::close() {
  if (db_ != nullptr) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
  }
}

}  // namespace msgsim::sql
