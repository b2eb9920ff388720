#include "live/wal_checkpointer.h"

#include <sqlite3.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <chrono>

#include "impl/base/assert.h"

namespace msgsim::live {
namespace {

int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// SQLite refuses a checkpoint on a connection with a transaction open (SQLITE_LOCKED) and one
// that another connection's checkpoint holds off (SQLITE_BUSY): both pass, the tail is retried.
bool refused_for_now(int rc) { return (rc & 0xff) == SQLITE_LOCKED || (rc & 0xff) == SQLITE_BUSY; }

}  // namespace

WalCheckpointer::WalCheckpointer(boost::asio::io_context& loop, int wal_pages_trigger)
    : loop_(loop), wal_pages_trigger_(wal_pages_trigger), alive_(std::make_shared<bool>(true)) {
  MSGSIM_ASSERT_GT(wal_pages_trigger_, 0);
  thread_ = std::thread([this] { run_thread(); });
}

WalCheckpointer::~WalCheckpointer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
  // A completion posted and not yet run finds the object gone and does nothing.
  alive_.reset();
  for (auto& [db, watched] : watched_) {
    sqlite3_wal_hook(db, nullptr, nullptr);
    if (watched->bulk_db != nullptr) sqlite3_close_v2(watched->bulk_db);
    watched->bulk_db = nullptr;
  }
}

void WalCheckpointer::on_bulk_begin(std::function<void(const std::string&)> observer) {
  std::lock_guard lock(mutex_);
  on_bulk_begin_ = std::move(observer);
}

Status WalCheckpointer::attach(sqlite3* db, const std::string& path) {
  MSGSIM_ASSERT(db != nullptr, "attach of no database: " + path);
  if (watched_.count(db) != 0) return Status{};
  if (watched_.size() >= kDatabasesMax) {
    return make_error(ErrorCode::unavailable, "wal checkpointer: already " + std::to_string(watched_.size()) +
                                                  " databases (at most " + std::to_string(kDatabasesMax) + "), " + path);
  }
  // The WAL hook replaces SQLite's automatic checkpoint (itself a WAL hook).
  if (sqlite3_wal_autocheckpoint(db, 0) != SQLITE_OK) {
    return make_error(ErrorCode::io_error, "wal checkpointer: " + path + ": " + sqlite3_errmsg(db));
  }
  auto watched = std::make_shared<Watched>();
  watched->id = next_id_++;
  watched->db = db;
  watched->path = path;
  watched_.emplace(db, std::move(watched));
  sqlite3_wal_hook(db, &WalCheckpointer::on_commit, this);
  return Status{};
}

void WalCheckpointer::detach(sqlite3* db) {
  const auto found = watched_.find(db);
  if (found == watched_.end()) return;
  std::shared_ptr<Watched> watched = found->second;
  watched_.erase(found);
  sqlite3_wal_hook(db, nullptr, nullptr);
  {
    std::unique_lock lock(mutex_);
    requests_.erase(std::remove(requests_.begin(), requests_.end(), watched), requests_.end());
    bulk_done_.wait(lock, [&] { return in_flight_ != watched.get(); });
  }
  // No bulk of it in flight and none to come: the bulk's connection is the loop's now.
  if (watched->bulk_db != nullptr) sqlite3_close_v2(watched->bulk_db);
  watched->bulk_db = nullptr;
}

// On the loop thread, after each commit of a watched database: `log_pages` frames in its log.
int WalCheckpointer::on_commit(void* self_pointer, sqlite3* db, const char*, int log_pages) {
  auto* self = static_cast<WalCheckpointer*>(self_pointer);
  const auto found = self->watched_.find(db);
  MSGSIM_ASSERT(found != self->watched_.end(), "a WAL hook for a database not attached");
  Watched& watched = *found->second;
  self->stats_.log_pages_max = std::max(self->stats_.log_pages_max, log_pages);
  if (watched.phase == Phase::tail_at_commit) {
    // The commit just ended: this connection has no transaction open now.
    self->try_tail(watched);
    return SQLITE_OK;
  }
  if (watched.phase != Phase::idle || log_pages < self->wal_pages_trigger_) return SQLITE_OK;
  watched.phase = Phase::bulk;
  self->stats_.bulks_requested++;
  {
    std::lock_guard lock(self->mutex_);
    self->requests_.push_back(found->second);
  }
  self->wake_.notify_one();
  return SQLITE_OK;
}

void WalCheckpointer::on_bulk_done(uint64_t id, const WalBulk& bulk) {
  std::shared_ptr<Watched> found;
  for (auto& [db, watched] : watched_) {
    if (watched->id == id) found = watched;
  }
  if (!found) return;  // detached meanwhile
  Watched& watched = *found;
  MSGSIM_ASSERT(watched.phase == Phase::bulk, "a bulk's completion for " + watched.path + " in phase " +
                                                  std::to_string(static_cast<int>(watched.phase)));
  if (bulk.ok) {
    stats_.bulks++;
    stats_.bulk_pages += static_cast<uint64_t>(std::max(0, bulk.copied_pages));
    stats_.bulk_rounds += static_cast<uint64_t>(bulk.rounds);
    stats_.bulk_ns += static_cast<uint64_t>(bulk.wall_ns);
    stats_.bulk_ns_max = std::max(stats_.bulk_ns_max, static_cast<uint64_t>(bulk.wall_ns));
  } else {
    stats_.bulk_errors++;
  }
  if (on_bulk_) on_bulk_(bulk);
  // The tail, between handlers: what the loop appended during the bulk (or, after a failed bulk,
  // the whole log). Posted rather than run here so that the loop serves what waited meanwhile.
  watched.phase = Phase::tail_posted;
  watched.tail_attempts = 0;
  watched.bulk_copied_pages = bulk.ok ? std::max(0, bulk.copied_pages) : 0;
  boost::asio::post(loop_, [this, alive = std::weak_ptr<bool>(alive_), weak = std::weak_ptr<Watched>(found)] {
    if (!alive.lock()) return;
    const std::shared_ptr<Watched> target = weak.lock();
    if (!target || watched_.count(target->db) == 0 || watched_.at(target->db) != target) return;  // detached
    try_tail(*target);
  });
}

bool WalCheckpointer::try_tail(Watched& watched) {
  watched.tail_attempts++;
  MSGSIM_ASSERT(watched.tail_attempts <= kTailAttemptsMax,
                watched.path + ": tail attempt " + std::to_string(watched.tail_attempts) + " of at most " +
                    std::to_string(kTailAttemptsMax) + " (the loop's connection keeps a transaction open)");
  int log_pages = 0, copied_pages = 0;
  const int64_t began_ns = steady_now_ns();
  const int rc = sqlite3_wal_checkpoint_v2(watched.db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_pages, &copied_pages);
  const int64_t wall_ns = steady_now_ns() - began_ns;
  if (refused_for_now(rc)) {
    stats_.tails_deferred++;
    watched.phase = Phase::tail_at_commit;
    return false;
  }
  // Another failure (an I/O error) leaves the log as it was; the node's next commit meets the
  // same disk and fails itself. The next trigger tries again.
  if (rc == SQLITE_OK) {
    stats_.tails++;
    stats_.tail_pages += static_cast<uint64_t>(std::max(0, log_pages - watched.bulk_copied_pages));
    stats_.tail_ns += static_cast<uint64_t>(wall_ns);
    stats_.tail_ns_max = std::max(stats_.tail_ns_max, static_cast<uint64_t>(wall_ns));
  }
  watched.phase = Phase::idle;
  return true;
}

void WalCheckpointer::run_thread() {
  for (;;) {
    std::shared_ptr<Watched> target;
    std::function<void(const std::string&)> on_begin;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !requests_.empty(); });
      if (stopping_) return;
      target = std::move(requests_.front());
      requests_.pop_front();
      in_flight_ = target.get();
      on_begin = on_bulk_begin_;
    }
    WalBulk bulk;
    const int64_t began_ns = steady_now_ns();
    if (target->bulk_db == nullptr) {
      // SQLite's default VFS, not the group commit's shim: this connection only checkpoints, and
      // SQLite syncs the log before the copy itself (synchronous=FULL, the default). Until a
      // first read SQLite does not know the file is in WAL mode, and a checkpoint does nothing
      // (its log size is -1).
      sqlite3* opened = nullptr;
      if (sqlite3_open_v2(target->path.c_str(), &opened, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) == SQLITE_OK &&
          sqlite3_exec(opened, "PRAGMA synchronous=FULL; SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr) == SQLITE_OK) {
        target->bulk_db = opened;
      } else {
        sqlite3_close_v2(opened);
      }
    }
    if (target->bulk_db != nullptr) {
      if (on_begin) on_begin(target->path);
      // Rounds: each copies what the loop appended during the one before, until what is left for
      // the tail is small (the loop appends while a round syncs and copies; a backlogged loop
      // appends thousands of pages during a round of a hundred milliseconds).
      const int tail_target_pages = std::max(1, wal_pages_trigger_ / kTailTargetFraction);
      for (int round = 1; round <= kBulkRoundsMax; ++round) {
        int log_pages = 0, copied_pages = 0;
        const int rc = sqlite3_wal_checkpoint_v2(target->bulk_db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_pages, &copied_pages);
        // A log size of -1: the connection is not in WAL mode (the database was not, or is
        // locked exclusively by the loop's connection): nothing was copied.
        if (rc != SQLITE_OK || log_pages < 0) break;
        bulk.ok = true;
        bulk.rounds = round;
        bulk.log_pages = log_pages;
        bulk.copied_pages = copied_pages;
        if (log_pages - copied_pages <= tail_target_pages) break;
      }
    }
    bulk.wall_ns = steady_now_ns() - began_ns;
    boost::asio::post(loop_, [this, alive = std::weak_ptr<bool>(alive_), id = target->id, bulk] {
      if (alive.lock()) on_bulk_done(id, bulk);
    });
    {
      std::lock_guard lock(mutex_);
      in_flight_ = nullptr;
    }
    bulk_done_.notify_all();
  }
}

}  // namespace msgsim::live
