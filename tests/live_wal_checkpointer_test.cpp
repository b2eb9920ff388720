// WalCheckpointer (live/wal_checkpointer.h): a database's checkpoints split into a bulk on a
// thread of its own and a tail on the loop. These tests drive real files through the group
// commit's shim, as the live hosts do: the log stays bounded under a long stream of commits (the
// tail lets SQLite start it over), a tail refused because a transaction is open runs at the next
// commit, a bulk that cannot run leaves the whole checkpoint to the loop, the data survives a
// SIGKILL in the middle of a bulk, and teardown or detach with a bulk in flight is clean.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "impl/base/sqlite.h"
#include "live/group_commit.h"
#include "live/wal_checkpointer.h"
#include "tests/scratch_dir_test_support.h"

namespace msgsim::live {
namespace {

namespace asio = boost::asio;

std::string fresh_path(const std::string& name) {
  const std::string path = test::scratch_dir("live_wal_checkpointer_test") + name;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) std::filesystem::remove(path + suffix);
  return path;
}

// Opened as the live hosts open a node's database (GroupCommit::open: locking_mode=NORMAL), then
// configured as the nodes do.
sqlite3* open_node_db(GroupCommit& group_commit, const std::string& path) {
  Result<sqlite3*> db = group_commit.open(path);
  EXPECT_TRUE(db.ok()) << (db.ok() ? "" : db.error().message);
  if (!db.ok()) return nullptr;
  EXPECT_TRUE(sql::configure_durable(*db).ok());
  EXPECT_TRUE(sql::exec(*db, "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v BLOB)").ok());
  return *db;
}

void insert(sqlite3* db, int64_t key, int value_bytes) {
  const Status inserted =
      sql::exec(db, "INSERT INTO t(k, v) VALUES(" + std::to_string(key) + ", randomblob(" + std::to_string(value_bytes) + "))");
  ASSERT_TRUE(inserted.ok()) << inserted.error().message;
}

// The log's frames now, read by a PASSIVE checkpoint of the connection itself (SQLite's pnLog).
int log_frames(sqlite3* db) {
  int log = -1, copied = -1;
  EXPECT_EQ(sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &copied), SQLITE_OK);
  return log;
}

// Runs the loop until `done` holds, for at most 30 s (a bulk syncs two files on a loaded machine).
template <class Done>
bool run_until(asio::io_context& io, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(2));
  }
  return done();
}

// What a plain connection (SQLite's default VFS, recovering the log) reads after the writer is gone.
struct Reopened {
  bool intact = false;
  int64_t rows = -1;
  int64_t keys_below = -1;  // rows with k < the bound asked for
};
Reopened reopen_and_read(const std::string& path, int64_t bound) {
  Reopened out;
  Result<sql::Database> db = sql::Database::open_file(path);
  EXPECT_TRUE(db.ok()) << (db.ok() ? "" : db.error().message);
  if (!db.ok()) return out;
  const Status integrity = sql::check_integrity(db->get());
  EXPECT_TRUE(integrity.ok()) << integrity.error().message;
  out.intact = integrity.ok();
  Result<int64_t> rows = sql::query_int64(db->get(), "SELECT count(*) FROM t");
  if (rows.ok()) out.rows = *rows;
  Result<int64_t> below = sql::query_int64(db->get(), "SELECT count(*) FROM t WHERE k < " + std::to_string(bound));
  if (below.ok()) out.keys_below = *below;
  return out;
}

// A long stream of commits with the checkpointer attached: the log grows past the trigger, the
// bulk copies it on the thread, the tail copies what came meanwhile, and the next commit starts
// the log over. Without the tail (a bulk alone, or nothing) the log would hold every frame the
// stream wrote, ~15,000 here; the bound allows a bulk to take as long as ~1,700 commits.
TEST(WalCheckpointer, TheLogStaysBoundedUnderALongStreamOfCommits) {
  constexpr int kTriggerPages = 250;
  constexpr int kLogPagesBound = 8 * kTriggerPages;
  constexpr int kCommits = 10'000;
  const std::string path = fresh_path("bounded.db");
  {
    asio::io_context io;
    GroupCommit group_commit(io, nullptr, nullptr);
    sqlite3* db = open_node_db(group_commit, path);
    ASSERT_NE(db, nullptr);
    {
      WalCheckpointer checkpointer(io, kTriggerPages);
      ASSERT_TRUE(checkpointer.attach(db, path).ok());
      for (int key = 0; key < kCommits; ++key) {
        insert(db, key, 1500);
        io.restart();
        io.poll();
        // Paced a little, as a loop that also serves sockets: the bulk's syncs get their time.
        if (key % 5 == 4) io.run_for(std::chrono::milliseconds(1));
      }
      ASSERT_TRUE(run_until(io, [&] { return group_commit.durable() >= group_commit.sync_point(); }));
      const WalCheckpointerStats& stats = checkpointer.stats();
      EXPECT_GE(stats.bulks, 5u);
      EXPECT_GE(stats.tails, 5u);
      EXPECT_EQ(stats.bulk_errors, 0u);
      // The bulk did most of the copying: the tails found the frames of a bulk's duration only.
      EXPECT_GT(stats.bulk_pages, stats.tail_pages) << "tails " << stats.tail_pages;
      EXPECT_LT(stats.log_pages_max, kLogPagesBound)
          << "bulks " << stats.bulks << ", the longest " << stats.bulk_ns_max / 1'000'000 << " ms";
      EXPECT_LT(std::filesystem::file_size(path + "-wal"), static_cast<uintmax_t>(kLogPagesBound) * (4096 + 24) + 32);
    }
    sqlite3_close_v2(db);
  }
  const Reopened read = reopen_and_read(path, kCommits);
  EXPECT_TRUE(read.intact);
  EXPECT_EQ(read.rows, kCommits);
}

// The storage's group commit keeps its batch transaction open until the loop's next turn: a tail
// posted meanwhile is refused (SQLITE_LOCKED) and runs from the WAL hook of the next commit, and
// the log starts over after it.
TEST(WalCheckpointer, ATailRefusedWhileATransactionIsOpenRunsAtTheNextCommit) {
  constexpr int kTriggerPages = 100;
  const std::string path = fresh_path("tail.db");
  asio::io_context io;
  GroupCommit group_commit(io, nullptr, nullptr);
  sqlite3* db = open_node_db(group_commit, path);
  ASSERT_NE(db, nullptr);
  {
    WalCheckpointer checkpointer(io, kTriggerPages);
    ASSERT_TRUE(checkpointer.attach(db, path).ok());
    // Commits without running the loop: the one that crosses the trigger asks for the bulk.
    int key = 0;
    while (checkpointer.stats().log_pages_max < kTriggerPages) insert(db, key++, 3000);
    // A transaction open before the loop runs the bulk's completion and its posted tail.
    ASSERT_TRUE(sql::exec(db, "BEGIN").ok());
    insert(db, key++, 3000);
    ASSERT_TRUE(run_until(io, [&] { return checkpointer.stats().tails_deferred >= 1; }));
    EXPECT_EQ(checkpointer.stats().bulks, 1u);
    EXPECT_EQ(checkpointer.stats().tails, 0u);
    const int before_commit = checkpointer.stats().log_pages_max;
    ASSERT_TRUE(sql::exec(db, "COMMIT").ok());  // its WAL hook runs the tail
    EXPECT_EQ(checkpointer.stats().tails, 1u);
    EXPECT_EQ(checkpointer.stats().tails_deferred, 1u);
    // Every frame copied: the next write starts the log over.
    insert(db, key++, 10);
    EXPECT_LT(log_frames(db), 10) << "the log before the tail held " << before_commit;
  }
  ASSERT_TRUE(run_until(io, [&] { return group_commit.durable() >= group_commit.sync_point(); }));
  sqlite3_close_v2(db);
}

// A database the bulk's connection cannot read (locked exclusively by the loop's): every bulk
// fails, and its tail copies the whole log on the loop, as SQLite's automatic checkpoint did.
TEST(WalCheckpointer, ABulkThatCannotRunLeavesTheWholeCheckpointToTheLoop) {
  constexpr int kTriggerPages = 100;
  const std::string path = fresh_path("exclusive.db");
  asio::io_context io;
  GroupCommit group_commit(io, nullptr, nullptr);
  Result<sqlite3*> opened = group_commit.open(path);
  ASSERT_TRUE(opened.ok());
  sqlite3* db = *opened;
  ASSERT_TRUE(sql::set_locking_mode(db, sql::LockingMode::exclusive).ok());
  ASSERT_TRUE(sql::configure_durable(db).ok());
  ASSERT_TRUE(sql::exec(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)").ok());
  {
    WalCheckpointer checkpointer(io, kTriggerPages);
    ASSERT_TRUE(checkpointer.attach(db, path).ok());
    const WalCheckpointerStats& stats = checkpointer.stats();
    for (int key = 0; key < 1000; ++key) {
      insert(db, key, 3000);
      // Every bulk asked for has come back and had its tail before the next commit: the log's
      // bound below is then the trigger and one commit, whatever the machine's speed.
      ASSERT_TRUE(run_until(io, [&] { return stats.bulks + stats.bulk_errors == stats.bulks_requested && stats.tails == stats.bulks_requested; }));
    }
    EXPECT_EQ(stats.bulks, 0u);
    EXPECT_GE(stats.bulk_errors, 3u);
    EXPECT_EQ(stats.tails, stats.bulk_errors);
    EXPECT_LT(stats.log_pages_max, 2 * kTriggerPages);
  }
  ASSERT_TRUE(run_until(io, [&] { return group_commit.durable() >= group_commit.sync_point(); }));
  sqlite3_close_v2(db);
}

// Where the log's last checkpoint stood when the writer died, read from the WAL index (the -shm
// file, SQLite's layout: two 48-byte copies of the index header, then WalCkptInfo, native
// endian): nBackfill, the frames copied and synced into the database file, is set at a
// checkpoint's end and 0 after the log starts over; nBackfillAttempted at the start of its copy.
struct ShmCheckpointState {
  uint32_t backfilled = 0;
  uint32_t backfill_attempted = 0;
  bool mid_bulk = false;  // the log had started over and no checkpoint of it had ended
};
ShmCheckpointState read_checkpoint_state(const std::string& shm_path) {
  ShmCheckpointState state;
  std::FILE* file = std::fopen(shm_path.c_str(), "rb");
  EXPECT_NE(file, nullptr) << shm_path;
  if (file == nullptr) return state;
  unsigned char bytes[136] = {};
  const size_t got = std::fread(bytes, 1, sizeof bytes, file);
  std::fclose(file);
  EXPECT_EQ(got, sizeof bytes);
  std::memcpy(&state.backfilled, bytes + 96, 4);
  std::memcpy(&state.backfill_attempted, bytes + 128, 4);
  state.mid_bulk = state.backfilled == 0;
  return state;
}

// The child's side of the crash test: commits rows 0, 1, 2, .. and reports each one whose commit
// returned, and each bulk as it begins, through `fd` (5-byte records: 'R' or 'B', then the key).
[[noreturn]] void commit_until_killed(const std::string& path, int fd, int trigger_pages) {
  auto report = [fd](char tag, uint32_t key) {
    char record[5];
    record[0] = tag;
    std::memcpy(record + 1, &key, sizeof key);
    if (::write(fd, record, sizeof record) != static_cast<ssize_t>(sizeof record)) ::_exit(3);
  };
  asio::io_context io;
  GroupCommit group_commit(io, nullptr, [](const std::string&) { ::_exit(4); });
  Result<sqlite3*> db = group_commit.open(path);
  if (!db.ok() || !sql::configure_durable(*db).ok() || !sql::exec(*db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)").ok()) ::_exit(5);
  WalCheckpointer checkpointer(io, trigger_pages);
  std::atomic<uint32_t> next_key{0};
  checkpointer.on_bulk_begin([&](const std::string&) { report('B', next_key.load()); });
  if (!checkpointer.attach(*db, path).ok()) ::_exit(6);
  for (uint32_t key = 0; key < 1'000'000; ++key) {
    if (!sql::exec(*db, "INSERT INTO t(k, v) VALUES(" + std::to_string(key) + ", randomblob(3000))").ok()) ::_exit(7);
    next_key.store(key + 1);
    report('R', key);
    io.restart();
    io.poll();
  }
  ::_exit(8);  // never killed: the parent reports it
}

// SIGKILL while a bulk runs (its log sync or its copy into the database file), at three delays
// after it began: the database reopens intact (WAL recovery) and holds every row whose commit
// returned. A process crash keeps the page cache, so "returned" is the bar here; a power cut's
// bar is the group commit's batch (group_commit.h), which these checkpoints do not change.
TEST(WalCheckpointer, TheDataSurvivesAKillInTheMiddleOfABulk) {
  constexpr int kTriggerPages = 2000;  // ~8 MB to copy and sync: a bulk of tens of milliseconds
  int killed_mid_bulk = 0;
  for (const int delay_us : {0, 1000, 4000}) {
    SCOPED_TRACE("kill " + std::to_string(delay_us) + " us after the bulk began");
    const std::string path = fresh_path("crash-" + std::to_string(delay_us) + ".db");
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(fds[0]);
      commit_until_killed(path, fds[1], kTriggerPages);
    }
    ::close(fds[1]);
    int64_t committed = 0;  // rows 0 .. committed-1 returned
    int bulks_begun = 0;
    bool killed = false;
    char record[5];
    size_t have = 0;
    for (;;) {
      const ssize_t got = ::read(fds[0], record + have, sizeof record - have);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      have += static_cast<size_t>(got);
      if (have < sizeof record) continue;
      have = 0;
      uint32_t key = 0;
      std::memcpy(&key, record + 1, sizeof key);
      if (record[0] == 'R') committed = static_cast<int64_t>(key) + 1;
      // The second bulk: the log has started over once, with a tail, before it.
      if (record[0] == 'B' && ++bulks_begun == 2 && !killed) {
        if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
        ASSERT_EQ(::kill(child, SIGKILL), 0);
        killed = true;
      }
    }
    ::close(fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child ended by itself, status " << status;
    ASSERT_TRUE(killed);
    ASSERT_GT(committed, 0);
    const ShmCheckpointState shm = read_checkpoint_state(path + "-shm");
    const Reopened read = reopen_and_read(path, committed);
    EXPECT_TRUE(read.intact);
    EXPECT_EQ(read.keys_below, committed) << "rows whose commit returned";
    // At most the row whose commit was under way when the kill came is there too.
    EXPECT_LE(read.rows, committed + 1);
    if (shm.mid_bulk) killed_mid_bulk++;
  }
  // The kill came before the bulk had marked its frames copied (at least once of three: it
  // copies and syncs ~8 MB, the first kill follows its start by the pipe's latency).
  EXPECT_GT(killed_mid_bulk, 0);
  std::printf("killed in the middle of a bulk: %d of 3\n", killed_mid_bulk);
}

// The checkpointer destroyed, and a database detached, while a bulk of it runs: both wait for the
// bulk, unhook the loop's connection (later commits call nothing), and the completion the thread
// posted finds nothing to do.
TEST(WalCheckpointer, TeardownAndDetachWithABulkInFlightAreClean) {
  constexpr int kTriggerPages = 200;
  for (const bool detach : {false, true}) {
    SCOPED_TRACE(detach ? "detach" : "destroy");
    const std::string path = fresh_path(detach ? "detach.db" : "destroy.db");
    asio::io_context io;
    GroupCommit group_commit(io, nullptr, nullptr);
    sqlite3* db = open_node_db(group_commit, path);
    ASSERT_NE(db, nullptr);
    auto checkpointer = std::make_unique<WalCheckpointer>(io, kTriggerPages);
    std::atomic<bool> began{false}, observer_returned{false};
    checkpointer->on_bulk_begin([&](const std::string&) {
      began = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // still in flight when the loop goes on
      observer_returned = true;
    });
    ASSERT_TRUE(checkpointer->attach(db, path).ok());
    int key = 0;
    while (!began) {
      insert(db, key++, 3000);
      ASSERT_LT(key, 100'000);
    }
    if (detach) checkpointer->detach(db);
    else checkpointer.reset();
    EXPECT_TRUE(observer_returned) << "returned before the bulk in flight ended";
    for (int more = 0; more < 500; ++more) insert(db, key++, 3000);  // no hook: nothing is called
    io.restart();
    io.run_for(std::chrono::milliseconds(20));  // the bulk's completion: ignored
    if (checkpointer) {
      EXPECT_EQ(checkpointer->stats().bulks, 0u);
      EXPECT_EQ(checkpointer->stats().tails, 0u);
    }
    ASSERT_TRUE(run_until(io, [&] { return group_commit.durable() >= group_commit.sync_point(); }));
    checkpointer.reset();
    sqlite3_close_v2(db);
    const Reopened read = reopen_and_read(path, key);
    EXPECT_TRUE(read.intact);
    EXPECT_EQ(read.rows, key);
  }
}

}  // namespace
}  // namespace msgsim::live
