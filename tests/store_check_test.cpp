// The store-consistency check (sim/store_check.*) on databases written by hand on a simulated
// disk: a queue node (0) with its `produced` table and a storage node (1) with its `entries`,
// in the shapes the chat nodes use, except that `entries` has no keys so a test can store what
// a non-idempotent storage would. Each clause must fail on its violation and name the node,
// conversation, seq and message ids; a write that never reached the durable image must not
// count (the check reads what a power loss would leave).
#include "sim/store_check.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "impl/base/prng.h"
#include "impl/base/sqlite.h"
#include "sim/disk.h"

namespace msgsim::sim {
namespace {

constexpr NodeId kQueue = 0;
constexpr NodeId kStorage = 1;

class StoreCheckTest : public ::testing::Test {
 protected:
  StoreCheckTest() {
    topology_.queues = {kQueue};
    topology_.storages = {kStorage};
    topology_.partitions = 1;
    queue_ = open(kQueue, "CREATE TABLE produced (msg_id TEXT PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL,"
                          " reason TEXT NOT NULL) WITHOUT ROWID;");
    storage_ = open(kStorage, "CREATE TABLE entries (conv TEXT NOT NULL, seq INTEGER NOT NULL, msg_id TEXT NOT NULL,"
                              " entry BLOB NOT NULL);");
  }

  sql::Database open(NodeId node, const std::string& schema) {
    disk_.set_context(node, 0, &rng_);
    Result<sqlite3*> opened = disk_.open(node, "node.db");
    EXPECT_TRUE(opened.ok());
    sql::Database db(opened.value());
    EXPECT_TRUE(sql::configure_durable(db.get()).ok());
    EXPECT_TRUE(db.exec(schema).ok());
    return db;
  }

  void assign(const std::string& msg_id, const std::string& conv, uint64_t seq) {
    disk_.set_context(kQueue, 0, &rng_);
    ASSERT_TRUE(queue_.exec("INSERT INTO produced VALUES ('" + msg_id + "', '" + conv + "', " + std::to_string(seq) +
                            ", '')").ok());
  }
  void store(const std::string& msg_id, const std::string& conv, uint64_t seq) {
    disk_.set_context(kStorage, 0, &rng_);
    ASSERT_TRUE(storage_.exec("INSERT INTO entries VALUES ('" + conv + "', " + std::to_string(seq) + ", '" + msg_id +
                              "', x'00')").ok());
  }
  StoreCheckResult check(const std::vector<DeviceCursor>& cursors = {}) {
    return check_store_consistency(disk_, {"queue-1", "storage-1"}, topology_, cursors);
  }

  SimDisk disk_;
  Prng rng_{7};
  chat::ChatTopology topology_;
  sql::Database queue_, storage_;
};

TEST_F(StoreCheckTest, ConsistentStorePasses) {
  assign("m1", "dm:a:b", 1);
  assign("m2", "dm:a:b", 2);
  store("m1", "dm:a:b", 1);
  store("m2", "dm:a:b", 2);
  const StoreCheckResult result = check({DeviceCursor{"a.d1", "dm:a:b", 2}});
  EXPECT_TRUE(result.passed) << result.detail;
  EXPECT_NE(result.detail.find("2 stored rows"), std::string::npos) << result.detail;
}

TEST_F(StoreCheckTest, TwoRowsOfOneMessageFail) {
  assign("m1", "dm:a:b", 1);
  store("m1", "dm:a:b", 1);
  store("m1", "dm:a:b", 1);
  const StoreCheckResult result = check();
  EXPECT_FALSE(result.passed);
  EXPECT_NE(result.detail.find("storage-1: message m1 stored 2 times (dm:a:b seq 1, dm:a:b seq 1)"), std::string::npos)
      << result.detail;
}

TEST_F(StoreCheckTest, TwoMessagesAtOneSeqFail) {
  assign("m1", "dm:a:b", 1);
  store("m1", "dm:a:b", 1);
  store("m2", "dm:a:b", 1);  // unknown to the queue: unverified, yet it collides with m1
  const StoreCheckResult result = check();
  EXPECT_FALSE(result.passed);
  EXPECT_NE(result.detail.find("storage-1: dm:a:b seq 1 holds 2 messages (m1, m2)"), std::string::npos) << result.detail;
}

TEST_F(StoreCheckTest, SeqTheQueueDidNotAssignFails) {
  assign("m1", "dm:a:b", 1);
  store("m1", "dm:a:b", 3);
  const StoreCheckResult result = check();
  EXPECT_FALSE(result.passed);
  EXPECT_NE(result.detail.find("message m1 stored at dm:a:b seq 3, which no queue replica assigned it (queue-1 has dm:a:b seq 1)"),
            std::string::npos)
      << result.detail;
}

TEST_F(StoreCheckTest, MessageNoReplicaKnowsIsUnverifiedNotFailed) {
  store("m9", "dm:a:b", 1);
  const StoreCheckResult result = check();
  EXPECT_TRUE(result.passed) << result.detail;
  EXPECT_NE(result.detail.find("1 rows unverified"), std::string::npos) << result.detail;
}

TEST_F(StoreCheckTest, CursorPastStoredRowsFails) {
  assign("m1", "dm:a:b", 1);
  store("m1", "dm:a:b", 1);
  const StoreCheckResult result = check({DeviceCursor{"b.d2", "dm:a:b", 2}});
  EXPECT_FALSE(result.passed);
  EXPECT_NE(result.detail.find("b.d2: cursor of dm:a:b at seq 2, past seq 1, the highest storage-1 stores"),
            std::string::npos)
      << result.detail;
}

TEST_F(StoreCheckTest, UnsyncedRowsAreNotInTheDurableImage) {
  assign("m1", "dm:a:b", 1);
  store("m1", "dm:a:b", 1);
  // A second copy committed without a sync: the page cache has it, a power loss would not.
  disk_.set_context(kStorage, 0, &rng_);
  ASSERT_TRUE(storage_.exec("PRAGMA synchronous=OFF").ok());
  store("m1", "dm:a:b", 1);
  const StoreCheckResult result = check();
  EXPECT_TRUE(result.passed) << result.detail;
}

}  // namespace
}  // namespace msgsim::sim
