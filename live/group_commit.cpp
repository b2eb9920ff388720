#include "live/group_commit.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <optional>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "impl/base/assert.h"
#include "impl/base/sqlite.h"

namespace msgsim::live {
namespace {

// A write-ahead log whose syncs are deferred: the shim's own descriptor for it, so the worker
// can fsync the file whatever SQLite does with its own descriptor meanwhile (fsync flushes the
// file, not the descriptor).
struct SyncFile {
  explicit SyncFile(int descriptor, std::string file_path) : fd(descriptor), path(std::move(file_path)) {}
  ~SyncFile() { ::close(fd); }
  SyncFile(const SyncFile&) = delete;
  SyncFile& operator=(const SyncFile&) = delete;
  int fd;
  std::string path;
  bool queued = false;  // in the batch being formed (loop thread only)
  // Deferred syncs asked for (loop thread writes) and the count the last completed fdatasync
  // covered (either thread writes): a checkpoint must not copy pages while they differ.
  std::atomic<uint64_t> deferred_count{0};
  std::atomic<uint64_t> synced_count{0};
  // The log's gathered writes not yet handed to the file system (loop thread only): a run of
  // contiguous bytes from run_offset. The buffer keeps its capacity (one per log).
  std::vector<uint8_t> run;
  int64_t run_offset = 0;
  sqlite3_file* real_file = nullptr;  // the wrapped VFS's file the run is written through
};

// A run grows to at most this before it is written: SQLite's unix VFS writes at most 128 KiB - 1
// bytes a call (seekAndWriteFd masks the length with 0x1ffff; a longer write comes out short, and
// one of 128 KiB exactly writes nothing: "database or disk is full"), and a run plus one more
// frame (a page of at most 64 KiB and its header) stays under that. A commit of a few pages (the
// bench's) is still one write.
constexpr size_t kLogWriteRunBytesMax = 64 * 1024;

std::atomic<uint64_t> vfs_instances{0};

void raise_to(std::atomic<uint64_t>& value, uint64_t at_least) {
  uint64_t now = value.load();
  while (now < at_least && !value.compare_exchange_weak(now, at_least)) {
  }
}

}  // namespace

class GroupCommit::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(boost::asio::io_context& io, std::function<void(uint64_t)> on_durable,
       std::function<void(const std::string&)> on_sync_error)
      : io_(io), on_durable_(std::move(on_durable)), on_sync_error_(std::move(on_sync_error)) {}

  void register_vfs();
  void stop();

  void defer(const std::shared_ptr<SyncFile>& file) {
    stats_.syncs_deferred++;
    file->deferred_count.fetch_add(1);
    if (!file->queued) {
      file->queued = true;
      forming_.push_back(file);
    }
    // Started from the loop, never inside SQLite's call: the rest of this loop turn's commits
    // join the batch.
    if (!in_flight_ && !start_posted_) {
      start_posted_ = true;
      boost::asio::post(io_, [weak = weak_from_this()] {
        if (auto self = weak.lock()) self->start_batch();
      });
    }
  }

  void start_batch() {
    start_posted_ = false;
    if (in_flight_ || forming_.empty()) return;
    in_flight_ = true;
    // The loop must not run out of work while the worker holds a batch: its completion
    // releases the frames waiting for it.
    in_flight_work_.emplace(io_.get_executor());
    started_++;
    for (auto& file : forming_) file->queued = false;
    {
      std::lock_guard lock(mutex_);
      job_ = std::move(forming_);
      job_batch_ = started_;
      has_job_ = true;
    }
    forming_.clear();
    wake_.notify_one();
  }

  void complete(uint64_t batch, uint64_t files, uint64_t errors, std::string first_error, uint64_t sync_ns,
                uint64_t sync_ns_max) {
    in_flight_ = false;
    in_flight_work_.reset();
    stats_.files_synced += files;
    stats_.sync_ns += sync_ns;
    stats_.sync_ns_max = std::max(stats_.sync_ns_max, sync_ns_max);
    stats_.sync_errors += errors;
    if (errors > 0) {
      if (on_sync_error_) on_sync_error_(first_error);
      return;
    }
    durable_ = batch;
    stats_.batches++;
    start_batch();  // what formed meanwhile goes to the disk before anything is released
    if (on_durable_) on_durable_(durable_);
  }

  void work() {
    for (;;) {
      std::vector<std::shared_ptr<SyncFile>> job;
      uint64_t batch = 0;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return has_job_ || stopping_; });
        if (!has_job_) return;
        job = std::move(job_);
        job_.clear();
        batch = job_batch_;
        has_job_ = false;
      }
      uint64_t errors = 0;
      std::string first_error;
      uint64_t sync_ns = 0, sync_ns_max = 0;
      for (const auto& file : job) {
        const uint64_t covered = file->deferred_count.load();
        const auto began = std::chrono::steady_clock::now();
        const int synced = ::fdatasync(file->fd);
        const auto took = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - began).count());
        sync_ns += took;
        sync_ns_max = std::max(sync_ns_max, took);
        if (synced != 0) {
          if (errors++ == 0) first_error = "fdatasync " + file->path + ": " + std::strerror(errno);
        } else {
          raise_to(file->synced_count, covered);
        }
      }
      boost::asio::post(io_, [weak = weak_from_this(), batch, files = job.size(), errors, first_error, sync_ns, sync_ns_max] {
        if (auto self = weak.lock()) self->complete(batch, files, errors, first_error, sync_ns, sync_ns_max);
      });
    }
  }

  boost::asio::io_context& io_;
  std::function<void(uint64_t)> on_durable_;
  std::function<void(const std::string&)> on_sync_error_;
  std::string name_;
  // The write-ahead logs opened through the shim, by path (loop thread only): a main database
  // file's writes look up their log here (see shim_write).
  std::map<std::string, std::weak_ptr<SyncFile>> wal_by_path_;
  sqlite3_vfs vfs_{};
  sqlite3_vfs* real_ = nullptr;
  bool registered_ = false;
  GroupCommitStats stats_;
  std::function<void(int64_t, int64_t)> on_checkpoint_;
  // A checkpoint ended (loop thread): its wall-clock and thread CPU time.
  void note_checkpoint(int64_t wall_ns, int64_t cpu_ns) {
    stats_.checkpoints++;
    stats_.checkpoint_ns += static_cast<uint64_t>(wall_ns);
    stats_.checkpoint_cpu_ns += static_cast<uint64_t>(cpu_ns);
    stats_.checkpoint_ns_max = std::max(stats_.checkpoint_ns_max, static_cast<uint64_t>(wall_ns));
    if (on_checkpoint_) on_checkpoint_(wall_ns, cpu_ns);
  }
  // Loop thread.
  std::vector<std::shared_ptr<SyncFile>> forming_;  // first deferred sync first
  uint64_t started_ = 0;
  uint64_t durable_ = 0;
  bool in_flight_ = false;
  bool start_posted_ = false;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> in_flight_work_;
  // Shared with the worker.
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<SyncFile>> job_;
  uint64_t job_batch_ = 0;
  bool has_job_ = false;
  bool stopping_ = false;
};

namespace {

// The shim's file: ours first, the wrapped VFS's file after it (szOsFile covers both).
struct ShimFile {
  sqlite3_file base;
  GroupCommit::Impl* owner = nullptr;
  std::shared_ptr<SyncFile> deferred;  // set for write-ahead logs
  std::string main_db_path;            // set for main database files
  // A main database file's checkpoint in progress: when its first page write came (0: none), on
  // the steady clock and the thread's CPU clock.
  int64_t checkpoint_began_ns = 0;
  int64_t checkpoint_began_cpu_ns = 0;
};
constexpr size_t kRealOffset = (sizeof(ShimFile) + alignof(std::max_align_t) - 1) & ~(alignof(std::max_align_t) - 1);

ShimFile* shim(sqlite3_file* file) { return reinterpret_cast<ShimFile*>(file); }
sqlite3_file* real(sqlite3_file* file) { return reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kRealOffset); }

// Writes a log's gathered run, if it has one (see "A log's writes are gathered" in the header).
int write_run(GroupCommit::Impl* owner, SyncFile& log) {
  if (log.run.empty()) return SQLITE_OK;
  owner->stats_.log_writes_flushed++;
  const int rc = log.real_file->pMethods->xWrite(log.real_file, log.run.data(), static_cast<int>(log.run.size()), log.run_offset);
  log.run.clear();
  return rc;
}
// Before any method but a write touches a log's file: its gathered run first.
int write_run_of(sqlite3_file* f) {
  ShimFile* s = shim(f);
  return s->deferred ? write_run(s->owner, *s->deferred) : SQLITE_OK;
}

int shim_close(sqlite3_file* file) {
  sqlite3_file* r = real(file);
  ShimFile* s = shim(file);
  int rc = SQLITE_OK;
  if (s->deferred) {
    rc = write_run(s->owner, *s->deferred);
    s->deferred->real_file = nullptr;  // the worker may still hold the SyncFile; this file is gone
  }
  const int closed = r->pMethods->xClose(r);
  s->~ShimFile();
  return rc != SQLITE_OK ? rc : closed;
}
int shim_read(sqlite3_file* f, void* out, int n, sqlite3_int64 offset) {
  const int rc = write_run_of(f);
  if (rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xRead(real(f), out, n, offset);
}
// In WAL mode a main database file is written only by a checkpoint, which copies pages out of
// the log. SQLite syncs the log before that copy so that a power cut in the middle of it can be
// repaired from the log; a deferred sync would break that rule (a torn page whose log frames are
// not on disk). So the first write to a main database file while its log has a deferred sync not
// yet covered syncs the log here, synchronously, before any page is copied.
int sync_log_before_checkpoint(ShimFile* s) {
  const auto found = s->owner->wal_by_path_.find(s->main_db_path + "-wal");
  if (found == s->owner->wal_by_path_.end()) return SQLITE_OK;
  const std::shared_ptr<SyncFile> log = found->second.lock();
  if (!log) return SQLITE_OK;
  // A log's run is written at every sync and every commit syncs, so this is empty; written
  // anyway, as the sync below must cover every byte SQLite wrote.
  const int rc = write_run(s->owner, *log);
  if (rc != SQLITE_OK) return rc;
  const uint64_t covered = log->deferred_count.load();
  if (log->synced_count.load() >= covered) return SQLITE_OK;
  s->owner->stats_.syncs_before_checkpoint++;
  if (::fdatasync(log->fd) != 0) return SQLITE_IOERR_FSYNC;
  raise_to(log->synced_count, covered);
  return SQLITE_OK;
}

int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
int64_t thread_cpu_now_ns() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

int shim_write(sqlite3_file* f, const void* in, int n, sqlite3_int64 offset) {
  ShimFile* s = shim(f);
  if (s->deferred && n > 0) {
    SyncFile& log = *s->deferred;
    s->owner->stats_.log_writes++;
    // Not contiguous (the earlier bytes first), or the run is long enough: written before this.
    if (!log.run.empty() && (offset != log.run_offset + static_cast<int64_t>(log.run.size()) ||
                             log.run.size() + static_cast<size_t>(n) > kLogWriteRunBytesMax)) {
      const int rc = write_run(s->owner, log);
      if (rc != SQLITE_OK) return rc;
    }
    if (log.run.empty()) log.run_offset = offset;
    const auto* bytes = static_cast<const uint8_t*>(in);
    log.run.insert(log.run.end(), bytes, bytes + n);
    return SQLITE_OK;
  }
  if (!s->main_db_path.empty()) {
    // In WAL mode only a checkpoint writes the main file: its first write starts one.
    if (s->checkpoint_began_ns == 0) {
      s->checkpoint_began_ns = steady_now_ns();
      s->checkpoint_began_cpu_ns = thread_cpu_now_ns();
    }
    const int rc = sync_log_before_checkpoint(s);
    if (rc != SQLITE_OK) return rc;
  }
  return real(f)->pMethods->xWrite(real(f), in, n, offset);
}
int shim_truncate(sqlite3_file* f, sqlite3_int64 size) {
  const int rc = write_run_of(f);
  if (rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xTruncate(real(f), size);
}
int shim_sync(sqlite3_file* f, int flags) {
  ShimFile* s = shim(f);
  if (s->deferred) {
    // The commit's bytes reach the page cache before its sync is recorded.
    const int rc = write_run(s->owner, *s->deferred);
    if (rc != SQLITE_OK) return rc;
    s->owner->defer(s->deferred);
    return SQLITE_OK;
  }
  s->owner->stats_.syncs_immediate++;
  const int rc = real(f)->pMethods->xSync(real(f), flags);
  if (s->checkpoint_began_ns != 0) {
    // The checkpoint's copy is on disk: it ends here.
    s->owner->note_checkpoint(steady_now_ns() - s->checkpoint_began_ns, thread_cpu_now_ns() - s->checkpoint_began_cpu_ns);
    s->checkpoint_began_ns = 0;
  }
  return rc;
}
int shim_file_size(sqlite3_file* f, sqlite3_int64* size) {
  const int rc = write_run_of(f);
  if (rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xFileSize(real(f), size);
}
int shim_lock(sqlite3_file* f, int level) { return real(f)->pMethods->xLock(real(f), level); }
int shim_unlock(sqlite3_file* f, int level) { return real(f)->pMethods->xUnlock(real(f), level); }
int shim_check_reserved(sqlite3_file* f, int* out) { return real(f)->pMethods->xCheckReservedLock(real(f), out); }
int shim_file_control(sqlite3_file* f, int op, void* arg) {
  const int rc = write_run_of(f);
  if (rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xFileControl(real(f), op, arg);
}
int shim_sector_size(sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); }
int shim_device_characteristics(sqlite3_file* f) { return real(f)->pMethods->xDeviceCharacteristics(real(f)); }
int shim_shm_map(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  return real(f)->pMethods->xShmMap(real(f), region, size, extend, out);
}
int shim_shm_lock(sqlite3_file* f, int offset, int n, int flags) { return real(f)->pMethods->xShmLock(real(f), offset, n, flags); }
void shim_shm_barrier(sqlite3_file* f) { real(f)->pMethods->xShmBarrier(real(f)); }
int shim_shm_unmap(sqlite3_file* f, int remove) { return real(f)->pMethods->xShmUnmap(real(f), remove); }
int shim_fetch(sqlite3_file* f, sqlite3_int64 offset, int n, void** out) { return real(f)->pMethods->xFetch(real(f), offset, n, out); }
int shim_unfetch(sqlite3_file* f, sqlite3_int64 offset, void* page) { return real(f)->pMethods->xUnfetch(real(f), offset, page); }

const sqlite3_io_methods kShimMethods = {
    3,           shim_close,  shim_read, shim_write, shim_truncate, shim_sync, shim_file_size, shim_lock, shim_unlock,
    shim_check_reserved, shim_file_control, shim_sector_size, shim_device_characteristics, shim_shm_map, shim_shm_lock,
    shim_shm_barrier, shim_shm_unmap, shim_fetch, shim_unfetch,
};

int shim_open(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
  auto* owner = static_cast<GroupCommit::Impl*>(vfs->pAppData);
  ShimFile* s = new (file) ShimFile{};
  s->base.pMethods = nullptr;  // SQLite calls no method of a file whose open failed
  s->owner = owner;
  sqlite3_file* r = real(file);
  const int rc = owner->real_->xOpen(owner->real_, name, r, flags, out_flags);
  if (rc != SQLITE_OK) {
    s->~ShimFile();
    return rc;
  }
  if ((flags & SQLITE_OPEN_WAL) != 0 && name != nullptr) {
    const int fd = ::open(name, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      r->pMethods->xClose(r);
      s->~ShimFile();
      return SQLITE_CANTOPEN;
    }
    s->deferred = std::make_shared<SyncFile>(fd, name);
    s->deferred->real_file = r;
    owner->wal_by_path_[name] = s->deferred;
  } else if ((flags & SQLITE_OPEN_MAIN_DB) != 0 && name != nullptr) {
    s->main_db_path = name;
  }
  s->base.pMethods = &kShimMethods;
  return SQLITE_OK;
}

}  // namespace

void GroupCommit::Impl::register_vfs() {
  real_ = sqlite3_vfs_find(nullptr);
  MSGSIM_ASSERT(real_ != nullptr, "SQLite has no default VFS");
  name_ = "msgsim-group-commit-" + std::to_string(vfs_instances.fetch_add(1));
  // The wrapped VFS's methods take the VFS they belong to; only xOpen needs ours. The others
  // are called with our struct, which carries the wrapped one's fields (mxPathname, iVersion).
  vfs_ = *real_;
  vfs_.szOsFile = static_cast<int>(kRealOffset) + real_->szOsFile;
  vfs_.zName = name_.c_str();
  vfs_.pAppData = this;
  vfs_.pNext = nullptr;
  vfs_.xOpen = shim_open;
  const int rc = sqlite3_vfs_register(&vfs_, 0);
  MSGSIM_ASSERT(rc == SQLITE_OK, "cannot register the group commit VFS");
  registered_ = true;
  worker_ = std::thread([this] { work(); });
}

void GroupCommit::Impl::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (worker_.joinable()) worker_.join();
  if (registered_) sqlite3_vfs_unregister(&vfs_);
  registered_ = false;
}

GroupCommit::GroupCommit(boost::asio::io_context& io, std::function<void(uint64_t)> on_durable,
                         std::function<void(const std::string&)> on_sync_error)
    : impl_(std::make_shared<Impl>(io, std::move(on_durable), std::move(on_sync_error))) {
  impl_->register_vfs();
}

GroupCommit::~GroupCommit() { impl_->stop(); }

Result<sqlite3*> GroupCommit::open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 impl_->name_.c_str());
  if (rc != SQLITE_OK) {
    std::string why = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return make_error(ErrorCode::io_error, "cannot open " + path + ": " + why);
  }
  // NORMAL, SQLite's default, made explicit: the WalCheckpointer's connection checkpoints the log
  // from another thread while this one writes, which needs the log's shared index.
  const Status locking = sql::set_locking_mode(db, sql::LockingMode::normal);
  if (!locking.ok()) {
    sqlite3_close_v2(db);
    return make_error(ErrorCode::io_error, "cannot open " + path + ": " + locking.error().message);
  }
  return db;
}

const std::string& GroupCommit::vfs_name() const { return impl_->name_; }
uint64_t GroupCommit::sync_point() const { return impl_->forming_.empty() ? impl_->started_ : impl_->started_ + 1; }
uint64_t GroupCommit::durable() const { return impl_->durable_; }
bool GroupCommit::batch_in_flight() const { return impl_->in_flight_; }
const GroupCommitStats& GroupCommit::stats() const { return impl_->stats_; }
void GroupCommit::on_checkpoint(std::function<void(int64_t, int64_t)> observer) { impl_->on_checkpoint_ = std::move(observer); }

}  // namespace msgsim::live
