// SQLite with Result: exec, prepared statements with bind/step, an owning Database handle, and
// the durable configuration every node's database uses.
//
// A node gets its sqlite3* from Context::db() (the runtime owns it and closes it); code that
// opens a database itself (tests, tools) owns it through `Database`, which closes on
// destruction. Errors carry SQLite's extended result code and message in `Error::message`;
// `sqlite_code(db)` gives the extended code itself when a caller must tell SQLITE_FULL or
// SQLITE_IOERR_FSYNC apart (a node whose fsync failed must stop, not retry).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "impl/base/result.h"
#include "impl/runtime.h"

struct sqlite3;
struct sqlite3_stmt;

namespace msgsim::sql {

// The ErrorCode for a SQLite result code: SQLITE_FULL and I/O or corruption errors are
// io_error, SQLITE_BUSY/LOCKED unavailable, SQLITE_TOOBIG too_large, SQL and constraint
// errors bad_input.
ErrorCode error_code_for(int sqlite_code);
// An Error naming `what`, the extended code and SQLite's message for `db`.
Error make_sqlite_error(sqlite3* db, int sqlite_code, std::string_view what);
// The extended result code of the last failed call on `db`.
int sqlite_code(sqlite3* db);

// Runs one or more statements that return no rows.
Status exec(sqlite3* db, std::string_view sql);

// How a node's database holds its file locks (PRAGMA locking_mode): the choice of the runtime
// that opens it, made right after the open and before configure_durable (a connection that
// enters WAL mode in EXCLUSIVE mode cannot leave it). The one place each runtime makes it:
// sim/disk.cpp (SimDisk::open) and live/group_commit.cpp (GroupCommit::open).
enum class LockingMode : uint8_t {
  // The simulator: its VFS has no shared memory, and WAL without shared memory needs EXCLUSIVE
  // (it also saves the shared-memory locks' work on every transaction). No second connection can
  // read the database while this one is open.
  exclusive,
  // The live runtime: a second connection, on another thread, checkpoints the log while the
  // node's connection goes on writing (live/wal_checkpointer.h); that needs the log's shared
  // index. SQLite's default.
  normal,
};
Status set_locking_mode(sqlite3* db, LockingMode mode);

// The settings durable state needs: journal_mode=WAL, synchronous=FULL. A transaction whose
// COMMIT returned OK then survives every crash. Checks that WAL really was chosen. The locking
// mode is left as the runtime opened the database with (LockingMode); the nodes call this on the
// connection their runtime hands them.
Status configure_durable(sqlite3* db);

// PRAGMA integrity_check: ok, or an io_error listing what it found.
Status check_integrity(sqlite3* db);

class Statement {
 public:
  Statement() = default;
  ~Statement();
  Statement(Statement&& other) noexcept : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Parameters are numbered from 1, as in SQLite.
  Status bind(int index, int64_t value);
  Status bind(int index, std::string_view text);
  Status bind_blob(int index, ByteView blob);
  Status bind_null(int index);

  // true: a row is ready (read it with the column getters); false: done.
  Result<bool> step();
  // Ready to step again from the start; bindings are kept.
  Status reset();
  Status clear_bindings();

  // Columns are numbered from 0. Views stay valid until the next step, reset or destruction.
  int64_t column_int64(int index) const;
  std::string_view column_text(int index) const;
  ByteView column_blob(int index) const;
  bool column_is_null(int index) const;
  int column_count() const;

  sqlite3_stmt* get() const { return stmt_; }

 private:
  friend Result<Statement> prepare(sqlite3* db, std::string_view sql);
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Status check(int rc, std::string_view what) const;

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

// Compiles one statement (trailing text after it is an error: it would be silently ignored).
Result<Statement> prepare(sqlite3* db, std::string_view sql);

// One-shot queries for a single integer or text value (the first column of the first row).
Result<int64_t> query_int64(sqlite3* db, std::string_view sql);
Result<std::string> query_text(sqlite3* db, std::string_view sql);

// Owns a sqlite3* and closes it (sqlite3_close_v2) on destruction.
class Database {
 public:
  Database() = default;
  explicit Database(sqlite3* db) : db_(db) {}
  ~Database() { close(); }
  Database(Database&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  Database& operator=(Database&& other) noexcept {
    if (this != &other) {
      close();
      db_ = std::exchange(other.db_, nullptr);
    }
    return *this;
  }
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // A real file through SQLite's default VFS (live runtime, tools), extended codes on.
  static Result<Database> open_file(const std::string& path);

  sqlite3* get() const { return db_; }
  explicit operator bool() const { return db_ != nullptr; }
  sqlite3* release() { return std::exchange(db_, nullptr); }
  void close();

  Status exec(std::string_view sql) const { return sql::exec(db_, sql); }
  Result<Statement> prepare(std::string_view sql) const { return sql::prepare(db_, sql); }

 private:
  sqlite3* db_ = nullptr;
};

}  // namespace msgsim::sql
