// Checkpoints of SQLite's write-ahead logs for a live host, mostly off the event loop.
//
// Why. SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the
// loop thread: it syncs the log, copies every page the log holds into the database file and
// syncs that file, and the loop does nothing else meanwhile. In `live bench` at 10,000 msg/s that
// was 7 stalls a second of 3-60 ms each (session 15), every frame of the process waiting behind
// them.
//
// How. `attach` turns a database's automatic checkpoint off and watches its commits (SQLite's WAL
// hook). Once the log holds `wal_pages_trigger` frames, this class's thread checkpoints it through
// a connection of its own on SQLite's default VFS (SQLITE_CHECKPOINT_PASSIVE: it never blocks the
// loop's writer, which goes on appending; SQLite syncs the log before the copy and the database
// file after it, on that thread). That copy is the bulk; while the loop appended more than a
// sixteenth of the trigger during it, the thread checkpoints again (at most kBulkRoundsMax rounds),
// so that what is left is small. The frames the loop appended meanwhile are then copied on the
// loop's own connection (the tail: the pages of a few milliseconds,
// through the group commit's shim, so the group commit counts it as a checkpoint of the loop).
// The tail is needed because SQLite starts a log over only when a write begins with every frame
// of it copied; a log written without pause and checkpointed only from another connection grows
// without bound. A bulk that fails (the file cannot be opened, SQLite refuses) is followed by
// the tail all the same, which then copies the whole log on the loop as SQLite's automatic
// checkpoint would have: the log stays bounded whatever the thread manages.
//
// The tail retried. The tail runs on the loop between handlers, posted by the bulk's completion.
// If the loop's connection has a transaction open then (storage's group commit keeps its batch
// open until the loop's next turn: impl/chat/storage.h), SQLite refuses it (SQLITE_LOCKED, or
// SQLITE_BUSY); it is then run from the WAL hook of that connection's next commit, where no
// transaction is open, and the next bulk waits for it. At most kTailAttemptsMax attempts a tail:
// past that something holds the connection that should not, and the process stops (assert).
//
// Ordering rules. (1) The bulk's connection sees only frames whose commit is in the shared WAL
// index, which SQLite updates after the commit's sync call; the group commit's shim writes a
// log's gathered bytes to the file in that call (group_commit.h), so every frame the bulk copies
// is in the file, and the bulk's own sync of the log makes it durable before any page is copied
// (the group commit's deferred sync is not needed for that). (2) SQLite marks frames copied only
// after the database file's sync, and starts the log over only after that: a frame is never
// overwritten before its page is durable in the database file. (3) A database's bulk and tail
// never overlap (one phase at a time per database), and the bulk's connection is used by one
// thread at a time: the checkpointer's thread during a bulk, the loop to close it after. These
// need the databases in locking_mode=NORMAL (sql::LockingMode): in EXCLUSIVE mode no second
// connection can read the log, and every bulk would fail (then every tail copies everything).
//
// Threads: everything but the bulk runs on the loop thread; the thread touches only the bulk's
// connection and posts its result back to the loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "impl/base/result.h"

struct sqlite3;

namespace msgsim::live {

struct WalCheckpointerStats {
  uint64_t bulks_requested = 0;  // logs that reached the trigger (each one bulk, then its tail)
  uint64_t bulks = 0;            // checkpoints made on the thread
  uint64_t bulk_pages = 0;       // log frames they copied (SQLite's pnCkpt after the last round), summed
  uint64_t bulk_rounds = 0;      // their PASSIVE checkpoint calls (kBulkRoundsMax a bulk at most)
  uint64_t bulk_ns = 0;          // their wall-clock time, summed (the thread's, not the loop's)
  uint64_t bulk_ns_max = 0;
  uint64_t bulk_errors = 0;      // bulks that failed (a tail on the loop copied the whole log)
  uint64_t tails = 0;            // tails checkpointed on the loop
  uint64_t tails_deferred = 0;   // tail attempts refused (a transaction open), retried at a commit
  uint64_t tail_pages = 0;       // log frames the tails found beyond their bulk's, summed
  uint64_t tail_ns = 0;          // the tails' wall-clock time on the loop, summed
  uint64_t tail_ns_max = 0;
  int log_pages_max = 0;         // the longest log a commit of a watched database left
};

// A bulk as the loop learns of it (its completion), for observers.
struct WalBulk {
  int log_pages = 0;     // frames in the log at its last round (SQLite's pnLog)
  int copied_pages = 0;  // frames copied when it ended (pnCkpt): the tail copies the rest
  int rounds = 0;
  int64_t wall_ns = 0;
  bool ok = false;
};

class WalCheckpointer {
 public:
  // Databases watched at once, at most.
  static constexpr size_t kDatabasesMax = 64;
  // Attempts of one tail (the first, then one at each commit of the database), at most.
  static constexpr int kTailAttemptsMax = 1000;
  // A bulk's rounds at most: it checkpoints again while more than the trigger's
  // 1/kTailTargetFraction of the log is left uncopied (what the loop appended during the round).
  static constexpr int kBulkRoundsMax = 4;
  static constexpr int kTailTargetFraction = 16;

  WalCheckpointer(boost::asio::io_context& loop, int wal_pages_trigger);
  // Stops the thread (a bulk in progress finishes first), closes the bulks' connections and
  // unhooks the loop's. The loop's connections stay the caller's: close them after this.
  ~WalCheckpointer();
  WalCheckpointer(const WalCheckpointer&) = delete;
  WalCheckpointer& operator=(const WalCheckpointer&) = delete;

  // On the loop thread: takes over the checkpoints of `db`, the database at `path`, which must be
  // in locking_mode=NORMAL (the bulk's connection is opened at its first bulk, when the database
  // is in WAL mode: a node enters it after the runtime hands the connection over).
  Status attach(sqlite3* db, const std::string& path);
  // On the loop thread, before the caller closes `db`: waits for a bulk of it in flight (the
  // loop stalls that long; a node stops rarely), closes the bulk's connection and unhooks `db`.
  // A tail not yet run is dropped: the close checkpoints what it can.
  void detach(sqlite3* db);

  // On the loop thread after every bulk's completion (before its tail).
  void on_bulk(std::function<void(const WalBulk&)> observer) { on_bulk_ = std::move(observer); }
  // On the checkpointer's thread right before each bulk's checkpoint call, with the database's
  // path (tests use it to crash a process in the middle of a bulk).
  void on_bulk_begin(std::function<void(const std::string& path)> observer);
  const WalCheckpointerStats& stats() const { return stats_; }

 private:
  enum class Phase : uint8_t { idle, bulk, tail_posted, tail_at_commit };
  // One watched database. The loop reads and writes everything but `bulk_db`, which is the
  // thread's during a bulk and the loop's once none is in flight (see detach).
  struct Watched {
    uint64_t id = 0;
    sqlite3* db = nullptr;  // the loop's connection
    std::string path;
    Phase phase = Phase::idle;
    int tail_attempts = 0;  // of the tail now due
    int bulk_copied_pages = 0;  // the frames its last bulk copied (0: it failed)
    sqlite3* bulk_db = nullptr;
  };
  static int on_commit(void* self, sqlite3* db, const char* schema, int log_pages);
  void on_bulk_done(uint64_t id, const WalBulk& bulk);
  // Runs the tail of `watched` on the loop; false if SQLite refused it (a transaction open).
  bool try_tail(Watched& watched);
  void run_thread();

  boost::asio::io_context& loop_;
  const int wal_pages_trigger_;
  std::function<void(const WalBulk&)> on_bulk_;
  WalCheckpointerStats stats_;                    // the loop's
  uint64_t next_id_ = 1;                          // the loop's
  std::map<sqlite3*, std::shared_ptr<Watched>> watched_;  // the loop's
  std::mutex mutex_;
  std::condition_variable wake_;       // the thread waits for a request or the stop
  std::condition_variable bulk_done_;  // detach waits for the bulk in flight
  std::deque<std::shared_ptr<Watched>> requests_;  // guarded by mutex_
  const Watched* in_flight_ = nullptr;             // guarded by mutex_
  bool stopping_ = false;                          // guarded by mutex_
  std::function<void(const std::string&)> on_bulk_begin_;  // guarded by mutex_ (copied by the thread)
  // Held while the object lives: a completion the thread posted runs only if it still does.
  std::shared_ptr<bool> alive_;
  std::thread thread_;  // last: started after everything it reads
};

}  // namespace msgsim::live
