// Group commit for the live runtime: one fsync per batch for every SQLite database of a process,
// run off the event loop, with the process's outgoing frames held until the batch that covers
// the commits before them is on disk.
//
// Why. The nodes (impl/chat/*, unchanged) open their databases with synchronous=FULL and act on
// a commit as soon as sqlite3_step returns: they send acks and records right after it (persist
// before send). Done literally, every commit blocks the one event loop thread for a whole fsync
// (4-8 ms on this machine's disk), and each partition's commit pays its own.
//
// How. The databases are opened through a SQLite VFS shim (`vfs_name()`) that wraps the default
// one. When SQLite asks to sync a write-ahead log, the shim only records that the file needs a
// sync and returns: the commit is written to the page cache, not yet durable. Nothing the node
// does after it can be seen outside the process yet: every frame that leaves the process asks
// `sync_point()` for a ticket and is held until `durable()` reaches it (the caller keeps the
// frames; see the hosts). A worker thread fsyncs every file recorded since the last batch, in
// the order they were first recorded, then posts the completion to the loop, which releases the
// held frames and starts the next batch with whatever accumulated meanwhile. So a batch forms
// while the previous fsync runs, and one fsync per file covers every commit of every partition
// and every node in that window (Kafka's and PostgreSQL's group commit).
//
// What stays synchronous: syncs of a main database file (SQLite's checkpoint, every few thousand
// pages) and of anything that is not a WAL. A checkpoint syncs the WAL before it copies pages
// into the database, so that a power cut in the middle of the copy can be repaired from the log.
// That rule survives the deferral: the first write to a main database file while its WAL has a
// deferred sync not yet done syncs the WAL at once, on the loop thread, before any page is copied
// (`syncs_before_checkpoint` counts them; in WAL mode only a checkpoint writes the main file).
// Frames between nodes of one process are not held: the nodes fail together with the process.
// A power loss in the middle of a batch can leave a later file of the batch synced and an
// earlier one not; files are synced in the order their first deferred sync came, which is the
// order the nodes committed (the queue's log before the storage that read from it).
//
// A log's writes are gathered: SQLite writes a commit's frames to the WAL one header and one page
// at a time (two pwrites per page), and on this VM each system call is expensive (perf of `live
// bench`'s store loop at 25,000 msg/s, session 13: the WAL's pwrites were ~25 % of its CPU). The
// shim keeps a run of contiguous writes to a log in memory and hands it to the file system in one
// write before anything else touches that file (a sync above all, so a commit is in the page
// cache before its sync is recorded, as before; also a read, a truncation, a size, a close, a
// write elsewhere in the file) and before the run passes 64 KiB (the unix VFS writes less than
// 128 KiB a call). SQLite sees nothing of it: what it reads back it reads after the run is
// written, and no other connection can see a commit before the commit's sync.
//
// Threads: everything here runs on the loop's thread except the worker, which only calls
// fdatasync on descriptors the batch owns and posts its result back.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "impl/base/result.h"

struct sqlite3;

namespace msgsim::live {

struct GroupCommitStats {
  uint64_t syncs_deferred = 0;   // WAL syncs SQLite asked for and the shim recorded
  uint64_t syncs_immediate = 0;  // syncs passed through (main database files, checkpoints)
  uint64_t batches = 0;          // batches completed
  uint64_t files_synced = 0;     // fdatasync calls made by the worker
  uint64_t sync_errors = 0;      // fdatasync calls that failed (the process must stop)
  uint64_t syncs_before_checkpoint = 0;  // log syncs done at once because a checkpoint began to copy
  uint64_t sync_ns = 0;          // the worker's fdatasync calls, summed wall-clock time
  uint64_t sync_ns_max = 0;      // the longest of them
  // A log's writes are gathered (see GroupCommit): the writes SQLite made to logs, and the
  // writes of the gathered runs that reached the file system.
  uint64_t log_writes = 0;
  uint64_t log_writes_flushed = 0;
  // The checkpoints made through the shim, which all run on the loop thread: the tails of
  // live/wal_checkpointer.h (whose bulks use a connection of their own and are not counted here)
  // and SQLite's automatic checkpoints where no checkpointer is attached. From the first page
  // copied into a main database file (the log's sync before it included) to the end of that
  // file's sync. The loop does nothing else meanwhile, so each one holds every frame waiting for
  // it (with SQLite's automatic checkpoints, at 1,000 msg/s in `live bench`: about 5 a second of
  // ~3 ms each).
  uint64_t checkpoints = 0;
  uint64_t checkpoint_ns = 0;      // their wall-clock time, summed
  uint64_t checkpoint_cpu_ns = 0;  // the loop thread's CPU time in them (the rest waits on the disk)
  uint64_t checkpoint_ns_max = 0;
};

// The log size at which a live host checkpoints a database it opens through the group commit, in
// log pages (SQLite's default is 1,000): the WalCheckpointer's trigger (live/wal_checkpointer.h).
// Chosen when checkpoints ran whole on the loop thread, syncing the log and then the database file
// there: at 8,000 pages they came an eighth as often as at SQLite's default (each copying more
// pages, but a page written many times is copied once); now it sets how long a bulk runs and how
// long the log grows. The simulator keeps its own 2,000 (sim/disk.h, memory of simulated disks).
inline constexpr int kLiveWalCheckpointPages = 8000;

class GroupCommit {
 public:
  // Registers a VFS of its own (a unique name per instance) wrapping SQLite's default VFS.
  // `on_durable` runs on the loop after every batch with the new durable() value; a batch whose
  // fsync failed calls `on_sync_error` instead (what was committed may be lost: the host must
  // stop, as a node does when its commit fails).
  GroupCommit(boost::asio::io_context& io, std::function<void(uint64_t durable)> on_durable,
              std::function<void(const std::string& what)> on_sync_error);
  // Waits for a batch in flight, stops the worker and unregisters the VFS. Every database
  // opened through it must be closed first.
  ~GroupCommit();
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Opens (creating) a database through the shim.
  Result<sqlite3*> open(const std::string& path);
  const std::string& vfs_name() const;

  // The batch that must complete before something decided now may be seen outside: the next
  // batch if a sync was deferred since the last one started, else the last one started (0 when
  // nothing ever needed a sync).
  uint64_t sync_point() const;
  // The last batch whose fsyncs completed; a frame with ticket <= durable() may go out.
  uint64_t durable() const;
  bool batch_in_flight() const;
  const GroupCommitStats& stats() const;
  // Called on the loop after every checkpoint with its wall-clock and thread CPU time.
  void on_checkpoint(std::function<void(int64_t wall_ns, int64_t cpu_ns)> observer);

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace msgsim::live
