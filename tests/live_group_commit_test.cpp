// GroupCommit (live/group_commit.h): databases opened through its VFS shim commit with
// synchronous=FULL without blocking on fsync; the syncs SQLite asks for are recorded and done in
// batches by a worker thread; sync_point() and durable() tell a host when a frame decided after
// a commit may leave the process. These tests check the bookkeeping (which syncs are deferred,
// which batch covers which commit, batches forming while one is in flight) and that what was
// committed through the shim reads back intact from a plain SQLite connection.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "impl/base/sqlite.h"
#include "live/group_commit.h"
#include "tests/scratch_dir_test_support.h"

namespace msgsim::live {
namespace {

namespace asio = boost::asio;

std::string fresh_path(const std::string& name) {
  const std::string path = test::scratch_dir("live_group_commit_test") + name;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) std::filesystem::remove(path + suffix);
  return path;
}

std::string existing_path(const std::string& name) {
  return test::scratch_dir("live_group_commit_test") + name;
}

sqlite3* open_durable(GroupCommit& group_commit, const std::string& path) {
  Result<sqlite3*> db = group_commit.open(path);
  EXPECT_TRUE(db.ok()) << (db.ok() ? "" : db.error().message);
  if (!db.ok()) return nullptr;
  EXPECT_TRUE(sql::configure_durable(*db).ok());
  EXPECT_TRUE(sql::exec(*db, "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v TEXT)").ok());
  return *db;
}

void insert(sqlite3* db, int key) {
  ASSERT_TRUE(sql::exec(db, "INSERT INTO t(k, v) VALUES(" + std::to_string(key) + ", 'value')").ok());
}

// Runs the loop until `durable` reaches `ticket` (the worker's fsync takes milliseconds).
void run_until_durable(asio::io_context& io, const GroupCommit& group_commit, uint64_t ticket) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (group_commit.durable() < ticket && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(5));
  }
  ASSERT_GE(group_commit.durable(), ticket);
}

TEST(GroupCommit, ACommitIsDeferredUntilItsBatchCompletes) {
  asio::io_context io;
  std::vector<uint64_t> completions;
  GroupCommit group_commit(io, [&](uint64_t durable) { completions.push_back(durable); }, [](const std::string&) {});
  sqlite3* db = open_durable(group_commit, fresh_path("one.db"));
  ASSERT_NE(db, nullptr);
  run_until_durable(io, group_commit, group_commit.sync_point());  // the schema's batch
  const uint64_t before = group_commit.durable();
  ASSERT_EQ(group_commit.sync_point(), before);  // nothing new: a frame may go at once

  const uint64_t deferred_before = group_commit.stats().syncs_deferred;
  insert(db, 1);
  EXPECT_GT(group_commit.stats().syncs_deferred, deferred_before);  // the WAL sync was recorded, not done
  const uint64_t ticket = group_commit.sync_point();
  EXPECT_EQ(ticket, before + 1);  // a frame decided now waits for the next batch
  EXPECT_LT(group_commit.durable(), ticket);

  run_until_durable(io, group_commit, ticket);
  EXPECT_EQ(completions.back(), ticket);
  EXPECT_EQ(group_commit.sync_point(), group_commit.durable());
  EXPECT_FALSE(group_commit.batch_in_flight());
  EXPECT_EQ(group_commit.stats().sync_errors, 0u);
  sqlite3_close_v2(db);
}

// A checkpoint copies WAL frames into the main file; the WAL must be on disk before the first
// page is copied, or a power cut in the copy could leave a torn page the log cannot repair.
TEST(GroupCommit, ACheckpointSyncsADeferredLogBeforeItCopiesPages) {
  asio::io_context io;
  GroupCommit group_commit(io, [](uint64_t) {}, [](const std::string&) {});
  sqlite3* db = open_durable(group_commit, fresh_path("checkpoint.db"));
  ASSERT_NE(db, nullptr);
  run_until_durable(io, group_commit, group_commit.sync_point());
  insert(db, 1);
  ASSERT_LT(group_commit.durable(), group_commit.sync_point());  // the commit's WAL sync is deferred
  const uint64_t before = group_commit.stats().syncs_before_checkpoint;
  ASSERT_TRUE(sql::exec(db, "PRAGMA wal_checkpoint(FULL)").ok());
  EXPECT_EQ(group_commit.stats().syncs_before_checkpoint, before + 1);

  // One sync per checkpoint, not one per page copied: the checkpoint's own request to sync the
  // log (deferred like any other) is done once, at its first page.
  run_until_durable(io, group_commit, group_commit.sync_point());
  ASSERT_TRUE(sql::exec(db, "BEGIN").ok());
  for (int key = 2; key < 400; ++key) {
    ASSERT_TRUE(sql::exec(db, "INSERT INTO t(k, v) VALUES(" + std::to_string(key) + ", hex(randomblob(100)))").ok());
  }
  ASSERT_TRUE(sql::exec(db, "COMMIT").ok());
  ASSERT_TRUE(sql::exec(db, "PRAGMA wal_checkpoint(FULL)").ok());
  EXPECT_EQ(group_commit.stats().syncs_before_checkpoint, before + 2);
  run_until_durable(io, group_commit, group_commit.sync_point());
  sqlite3_close_v2(db);

  // Everything reads back from a plain connection after the checkpoints.
  sqlite3* plain = nullptr;
  ASSERT_EQ(sqlite3_open(existing_path("checkpoint.db").c_str(), &plain), SQLITE_OK);
  Result<std::string> rows = sql::query_text(plain, "SELECT count(*) FROM t");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(*rows, "399");
  sqlite3_close_v2(plain);
}

TEST(GroupCommit, EachCheckpointIsTimedFromItsFirstPageToItsSync) {
  asio::io_context io;
  GroupCommit group_commit(io, [](uint64_t) {}, [](const std::string&) {});
  std::vector<std::pair<int64_t, int64_t>> seen;
  group_commit.on_checkpoint([&](int64_t wall_ns, int64_t cpu_ns) { seen.emplace_back(wall_ns, cpu_ns); });
  sqlite3* db = open_durable(group_commit, fresh_path("timed-checkpoint.db"));
  ASSERT_NE(db, nullptr);
  run_until_durable(io, group_commit, group_commit.sync_point());
  const uint64_t before = group_commit.stats().checkpoints;  // opening may have checkpointed
  const size_t seen_before = seen.size();
  // A commit without a checkpoint is not one.
  insert(db, 1);
  run_until_durable(io, group_commit, group_commit.sync_point());
  EXPECT_EQ(group_commit.stats().checkpoints, before);
  // Two checkpoints that copy pages: each is counted once, whatever the pages it copies.
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(sql::exec(db, "BEGIN").ok());
    for (int key = 0; key < 200; ++key) {
      const int k = 10 + round * 1000 + key;
      ASSERT_TRUE(sql::exec(db, "INSERT INTO t(k, v) VALUES(" + std::to_string(k) + ", hex(randomblob(100)))").ok());
    }
    ASSERT_TRUE(sql::exec(db, "COMMIT").ok());
    ASSERT_TRUE(sql::exec(db, "PRAGMA wal_checkpoint(FULL)").ok());
  }
  run_until_durable(io, group_commit, group_commit.sync_point());
  const GroupCommitStats& stats = group_commit.stats();
  EXPECT_EQ(stats.checkpoints, before + 2);
  ASSERT_EQ(seen.size(), seen_before + 2);
  for (size_t i = seen_before; i < seen.size(); ++i) {
    EXPECT_GT(seen[i].first, 0) << i;   // a page copy and an fdatasync take time
    EXPECT_GE(seen[i].second, 0) << i;  // the thread's CPU in it
    EXPECT_LE(static_cast<uint64_t>(seen[i].first), stats.checkpoint_ns_max) << i;
  }
  EXPECT_GE(stats.checkpoint_ns, static_cast<uint64_t>(seen[seen_before].first + seen[seen_before + 1].first));
  sqlite3_close_v2(db);
}

TEST(GroupCommit, CommitsOfOneLoopTurnAcrossDatabasesShareOneBatch) {
  asio::io_context io;
  GroupCommit group_commit(io, nullptr, nullptr);
  sqlite3* a = open_durable(group_commit, fresh_path("a.db"));
  sqlite3* b = open_durable(group_commit, fresh_path("b.db"));
  ASSERT_TRUE(a != nullptr && b != nullptr);
  run_until_durable(io, group_commit, group_commit.sync_point());
  const GroupCommitStats before = group_commit.stats();

  for (int key = 0; key < 50; ++key) {
    insert(a, key);
    insert(b, key);
  }
  const uint64_t ticket = group_commit.sync_point();
  run_until_durable(io, group_commit, ticket);
  const GroupCommitStats after = group_commit.stats();
  EXPECT_EQ(after.syncs_deferred - before.syncs_deferred, 100u);  // one per commit
  EXPECT_EQ(after.batches - before.batches, 1u);                  // one batch ...
  EXPECT_EQ(after.files_synced - before.files_synced, 2u);        // ... one fsync per WAL
  // The worker timed both fsyncs (live bench reports their mean): each took some time, and the
  // longest is at most their sum.
  EXPECT_GT(after.sync_ns - before.sync_ns, 0u);
  EXPECT_GT(after.sync_ns_max, 0u);
  EXPECT_LE(after.sync_ns_max, after.sync_ns);
  sqlite3_close_v2(a);
  sqlite3_close_v2(b);
}

TEST(GroupCommit, CommitsDuringAnFsyncFormTheNextBatch) {
  asio::io_context io;
  GroupCommit group_commit(io, nullptr, nullptr);
  sqlite3* db = open_durable(group_commit, fresh_path("next.db"));
  ASSERT_NE(db, nullptr);
  run_until_durable(io, group_commit, group_commit.sync_point());

  insert(db, 1);
  const uint64_t first = group_commit.sync_point();
  // Let the batch start (it is posted), then commit again while it may be in flight.
  io.restart();
  while (!group_commit.batch_in_flight() && group_commit.durable() < first) io.run_one();
  insert(db, 2);
  const uint64_t second = group_commit.sync_point();
  EXPECT_EQ(second, first + 1);  // the batch in flight may not cover the second commit
  run_until_durable(io, group_commit, second);
  EXPECT_GE(group_commit.stats().batches, 2u);
  sqlite3_close_v2(db);
}

TEST(GroupCommit, WhatWasCommittedReadsBackThroughPlainSqlite) {
  const std::string path = fresh_path("readback.db");
  {
    asio::io_context io;
    GroupCommit group_commit(io, nullptr, nullptr);
    sqlite3* db = open_durable(group_commit, path);
    ASSERT_NE(db, nullptr);
    // Enough rows (and a manual checkpoint) that the main file's syncs happen too: those pass
    // through at once.
    ASSERT_TRUE(sql::exec(db, "BEGIN").ok());
    for (int key = 0; key < 2000; ++key) insert(db, key);
    ASSERT_TRUE(sql::exec(db, "COMMIT").ok());
    ASSERT_EQ(sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_FULL, nullptr, nullptr), SQLITE_OK);
    EXPECT_GT(group_commit.stats().syncs_immediate, 0u);
    for (int key = 2000; key < 2100; ++key) insert(db, key);
    run_until_durable(io, group_commit, group_commit.sync_point());
    sqlite3_close_v2(db);
  }
  sqlite3* plain = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &plain), SQLITE_OK);
  Result<int64_t> rows = sql::query_int64(plain, "SELECT count(*) FROM t");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(*rows, 2100);
  EXPECT_TRUE(sql::check_integrity(plain).ok());
  sqlite3_close_v2(plain);
}

// A commit's log writes are gathered into one write, made before its sync is recorded: right
// after the commit (no batch has run, nothing is fsynced) the log file holds every byte of it,
// and SQLite's own reads of the log (a checkpoint's copy) and a plain connection after the close
// read it whole. (configure_durable locks the database exclusively: no second connection can
// read it while the shim's is open.)
TEST(GroupCommit, ACommitsLogWritesReachTheFileAsOneWriteBeforeItsSync) {
  const std::string path = fresh_path("gathered.db");
  {
    asio::io_context io;
    GroupCommit group_commit(io, nullptr, nullptr);
    sqlite3* db = open_durable(group_commit, path);
    ASSERT_NE(db, nullptr);
    run_until_durable(io, group_commit, group_commit.sync_point());  // the schema's batch
    const GroupCommitStats before = group_commit.stats();
    const uintmax_t log_bytes_before = std::filesystem::file_size(path + "-wal");
    ASSERT_TRUE(sql::exec(db, "BEGIN").ok());
    for (int key = 0; key < 200; ++key) insert(db, key);
    ASSERT_TRUE(sql::exec(db, "INSERT INTO t(k, v) VALUES(1000, '" + std::string(20'000, 'v') + "')").ok());
    ASSERT_TRUE(sql::exec(db, "COMMIT").ok());
    const GroupCommitStats after = group_commit.stats();
    EXPECT_EQ(after.syncs_deferred, before.syncs_deferred + 1);
    // Several pages (a header and a page each) in one write.
    EXPECT_GE(after.log_writes - before.log_writes, 8u);
    EXPECT_EQ(after.log_writes_flushed, before.log_writes_flushed + 1);
    EXPECT_EQ(after.batches, before.batches);  // not yet synced
    EXPECT_GE(std::filesystem::file_size(path + "-wal"), log_bytes_before + 20'000);

    ASSERT_EQ(sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_FULL, nullptr, nullptr), SQLITE_OK);
    Result<int64_t> after_checkpoint = sql::query_int64(db, "SELECT count(*) FROM t");
    ASSERT_TRUE(after_checkpoint.ok());
    EXPECT_EQ(*after_checkpoint, 201);
    EXPECT_TRUE(sql::check_integrity(db).ok());
    // A commit far past one run (300 KB: several runs, each under the unix VFS's 128 KiB a write).
    const uint64_t runs_before_large = group_commit.stats().log_writes_flushed;
    ASSERT_TRUE(sql::exec(db, "INSERT INTO t(k, v) VALUES(1001, '" + std::string(300'000, 'w') + "')").ok());
    EXPECT_GE(group_commit.stats().log_writes_flushed - runs_before_large, 5u);
    insert(db, 2000);  // left in the log at the close
    run_until_durable(io, group_commit, group_commit.sync_point());
    sqlite3_close_v2(db);
  }
  sqlite3* plain = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &plain), SQLITE_OK);
  Result<int64_t> rows = sql::query_int64(plain, "SELECT count(*) FROM t");
  ASSERT_TRUE(rows.ok()) << rows.error().message;
  EXPECT_EQ(*rows, 203);
  Result<int64_t> long_value = sql::query_int64(plain, "SELECT length(v) FROM t WHERE k = 1000");
  ASSERT_TRUE(long_value.ok());
  EXPECT_EQ(*long_value, 20'000);
  Result<int64_t> longer_value = sql::query_int64(plain, "SELECT length(v) FROM t WHERE k = 1001");
  ASSERT_TRUE(longer_value.ok());
  EXPECT_EQ(*longer_value, 300'000);
  EXPECT_TRUE(sql::check_integrity(plain).ok());
  sqlite3_close_v2(plain);
}

TEST(GroupCommit, EachInstanceHasItsOwnVfs) {
  asio::io_context io;
  GroupCommit first(io, nullptr, nullptr);
  GroupCommit second(io, nullptr, nullptr);
  EXPECT_NE(first.vfs_name(), second.vfs_name());
  EXPECT_NE(sqlite3_vfs_find(first.vfs_name().c_str()), nullptr);
}

}  // namespace
}  // namespace msgsim::live
