// The page cache wrapper (impl/base/page_cache.h): SQLite on top of it keeps exactly the rows a
// simple model keeps through inserts that split and renumber pages, deletes that free them,
// rolled-back transactions and savepoints (pages past the database end that must go), a cache
// far smaller than the database (eviction), and WAL checkpoints; and its truncations are its
// own, not pcache1's walk, except where they must be.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdint>
#include <map>
#include <string>

#include "impl/base/page_cache.h"
#include "impl/base/prng.h"
#include "impl/base/sqlite.h"
#include "tests/scratch_dir_test_support.h"

namespace msgsim {
namespace {

// Installs the wrapper even when an earlier test of this binary (run by hand, not by ctest,
// which gives every case its own process) already initialised SQLite: shutting down is allowed
// once every connection is closed.
void install_or_die() {
  if (sql::page_cache_installed()) return;
  ASSERT_EQ(sqlite3_shutdown(), SQLITE_OK);
  ASSERT_TRUE(sql::install_page_cache());
  ASSERT_EQ(sqlite3_initialize(), SQLITE_OK);
}

struct Db {
  sqlite3* db = nullptr;
  explicit Db(const std::string& path) {
    MSGSIM_ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  }
  ~Db() { sqlite3_close_v2(db); }
  void exec(const std::string& sql) const {
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    const std::string message = error != nullptr ? error : "";
    sqlite3_free(error);
    MSGSIM_ASSERT(rc == SQLITE_OK, sql + ": " + message);
  }
  std::map<int64_t, std::string> rows() const {
    std::map<int64_t, std::string> out;
    sqlite3_stmt* stmt = nullptr;
    MSGSIM_ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT k, v FROM t ORDER BY k", -1, &stmt, nullptr), SQLITE_OK);
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1));
      out[sqlite3_column_int64(stmt, 0)] = std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt, 1)));
    }
    sqlite3_finalize(stmt);
    return out;
  }
};

std::string value_for(Prng& rng) {
  // 20 to 700 bytes: several rows a 1 KiB page, some rows nearly a page, so splits and merges
  // happen all the time.
  return std::string(20 + rng.below(680), static_cast<char>('a' + rng.below(26)));
}

TEST(PageCache, SqliteKeepsWhatAModelKeepsThroughSplitsDeletesAndRollbacks) {
  install_or_die();
  const sql::PageCacheStats before = sql::page_cache_stats();
  const std::string path = test::scratch_dir("page_cache_test") + "model.db";
  Db db(path);
  // As the simulated nodes have it (1 KiB pages, WAL, one connection), with a cache of 64
  // pages against a database of thousands, so pages are evicted and read back all the time.
  db.exec("PRAGMA page_size=1024; PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL;"
          "PRAGMA cache_size=64; PRAGMA wal_autocheckpoint=200;"
          "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX t_v ON t (v, k);");
  std::map<int64_t, std::string> model;
  Prng rng(7);
  for (int round = 0; round < 600; ++round) {
    std::map<int64_t, std::string> attempt = model;
    db.exec("BEGIN");
    const int statements = 1 + static_cast<int>(rng.below(12));
    bool in_savepoint = false;
    std::map<int64_t, std::string> at_savepoint;
    for (int i = 0; i < statements; ++i) {
      const uint64_t kind = rng.below(10);
      if (kind < 5) {  // a burst of inserts or replacements at random keys
        for (int n = 0; n < 1 + static_cast<int>(rng.below(20)); ++n) {
          const int64_t key = static_cast<int64_t>(rng.below(5000));
          const std::string value = value_for(rng);
          db.exec("INSERT OR REPLACE INTO t VALUES (" + std::to_string(key) + ", '" + value + "')");
          attempt[key] = value;
        }
      } else if (kind < 8) {  // a range delete, as the queue's retention does: frees pages
        const int64_t from = static_cast<int64_t>(rng.below(5000));
        const int64_t to = from + static_cast<int64_t>(rng.below(60));
        db.exec("DELETE FROM t WHERE k >= " + std::to_string(from) + " AND k < " + std::to_string(to));
        attempt.erase(attempt.lower_bound(from), attempt.lower_bound(to));
      } else if (!in_savepoint) {
        db.exec("SAVEPOINT s");
        in_savepoint = true;
        at_savepoint = attempt;
      } else {
        // Roll the savepoint back: what it wrote, pages it added past the end included, goes.
        db.exec("ROLLBACK TO s; RELEASE s");
        in_savepoint = false;
        attempt = at_savepoint;
      }
    }
    if (rng.below(5) == 0) {
      db.exec("ROLLBACK");  // the whole transaction: pages it allocated must leave the cache
    } else {
      db.exec("COMMIT");
      model = std::move(attempt);
    }
    if (round % 50 == 49) {
      ASSERT_EQ(db.rows(), model) << "after round " << round;
      ASSERT_TRUE(sql::check_integrity(db.db).ok()) << "after round " << round;
    }
  }
  ASSERT_EQ(db.rows(), model);
  ASSERT_TRUE(sql::check_integrity(db.db).ok());
  ASSERT_GT(model.size(), 1000u);

  const sql::PageCacheStats after = sql::page_cache_stats();
  // The case the wrapper exists for happened, and its truncations were its own.
  EXPECT_GT(after.lock_page_renumbers - before.lock_page_renumbers, 100u);
  const uint64_t truncations = after.truncations - before.truncations;
  const uint64_t walked = after.truncations_walked - before.truncations_walked;
  EXPECT_GT(truncations, 500u);
  EXPECT_LT(walked * 10, truncations) << walked << " of " << truncations << " truncations walked";
  // Rollbacks leave pages past the database end, and those were dropped.
  EXPECT_GT(after.pages_dropped - before.pages_dropped, 0u);
}

}  // namespace
}  // namespace msgsim
