// The simulated disk: a SQLite VFS whose files live in memory, one namespace per node, with
// what was written kept apart from what was synced, so a crash loses exactly what the model
// says real hardware may lose.
//
// The model (NodeStorage below), in full:
//  - Every file has two images: `current` (what reads see: the OS page cache) and `durable`
//    (what the platter holds). Every mutation (write, truncate, delete) changes `current` at
//    once and is queued, in issue order, in the node's unsynced queue.
//  - Only `current` is stored (in fixed blocks, FileImage). The durable image is implied: it
//    is `current` with the queued operations undone, newest first. So each queued operation
//    keeps its undo record (the bytes it overwrote or truncated away, and the size before it),
//    not its data; writing an operation back, or syncing it, just drops the record, and a
//    crash that loses it puts those bytes back. A file's bytes are held once, plus the old
//    contents of what changed since its last sync.
//  - xSync of a file moves that file's queued operations to its durable image (and queued
//    deletions, below). There are no directories, so "syncing the directory" is not a thing
//    here: xDelete's syncDir flag is honoured by making the deletion itself durable.
//  - Metadata: creating a file is durable at once (on unix SQLite fsyncs the directory after
//    creating a journal or WAL; we fold that into the create). Truncation and deletion are
//    queued like writes: a file's truncation becomes durable with the file's next sync; a
//    deletion when writeback reaches it, or earlier when SQLite asks for a directory sync
//    (xDelete's syncDir), at the next sync of any file of the node (a journaling file system
//    such as ext4 or XFS commits every earlier metadata change with any fsync), or when the
//    name is created again (the directory entry cannot hold both). Each of those writes the
//    queue back in order through the deletion, so the durable state stays a prefix (below).
//    Without the any-fsync rule SQLite's switch to WAL (a rollback-journal transaction whose
//    commit is the journal's unlink, with no directory sync at FULL) could be undone by a
//    power loss after later WAL commits, taking them with it. A handle still open on a
//    deleted file writes to that file's current image only (unix keeps the inode); while the
//    deletion is queued those changes are kept apart (they are undone if the deletion is).
//  - Writeback: the disk persists queued operations in issue order. When the queue exceeds
//    kUnsyncedOpsMax operations or kUnsyncedBytesMax bytes, its oldest operations are written
//    back (become durable), as an OS flushes old dirty pages (set_writeback_limits changes
//    both bounds). The durable state is therefore always "every synced operation, plus a
//    prefix of the rest in issue order". The disk never reorders unsynced writes; that choice
//    is what lets synchronous=OFF lose a suffix of transactions without corrupting the
//    database (SQLite promises no more than that, and a reordering disk could corrupt an OFF
//    database), while synchronous=FULL is durable under reordering too, so the choice costs
//    FULL nothing.
//  - Sectors are 512 bytes and a write never damages bytes outside its own range (SQLite's
//    SQLITE_IOCAP_POWERSAFE_OVERWRITE, which the VFS reports).
//  - Crashes (CrashDisk): keep_unsynced keeps everything (the page cache survives a process
//    crash; queued operations stay queued and can still be lost by a later power crash).
//    lose_unsynced drops the whole queue: every file returns to its durable image, and files
//    whose deletion was queued come back. torn: power failed while the disk was writing the
//    queue back in issue order: a random prefix of the queue reached the disk, the operation at
//    the cut is torn (each 512-byte sector a write covers is independently written or not; a
//    truncate or delete is atomic, applied or not), and everything after the cut is lost. So
//    the torn write is the last unsynced write that reached the disk.
//  - Faults (DiskFaults): fsync_fails makes every xSync return SQLITE_IOERR_FSYNC and leaves the
//    data unsynced (as Linux may; the node must stop, it must never carry on as if the data were
//    safe). capacity_bytes bounds the sum of the node's current file sizes: a write or
//    extension past it fails with SQLITE_FULL and changes nothing (no partial write).
//
// Durability claim: with PRAGMA locking_mode=EXCLUSIVE, journal_mode=WAL and synchronous=FULL,
// every transaction whose COMMIT returned SQLITE_OK survives every crash mode. (In rollback
// journal DELETE mode a commit is the journal's deletion, which is durable at once only with
// synchronous=EXTRA, otherwise at the next fsync — as on a real disk.) The VFS has no shared-memory methods, so WAL
// works only in EXCLUSIVE locking mode (the wal-index lives in heap memory); `SimDisk::open`
// sets locking_mode=EXCLUSIVE on every handle it returns so a WAL database always reopens.
//
// Determinism: files are kept in std::map by name; there is no pointer-ordered iteration; the
// only randomness is the Prng passed to crash() and set_context(); no clock, no threads.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "impl/base/prng.h"
#include "impl/base/result.h"
#include "impl/runtime.h"

struct sqlite3;

namespace msgsim::sim {

enum class CrashDisk : uint8_t {
  keep_unsynced,  // process crash: the OS page cache survives, nothing is lost
  lose_unsynced,  // power/host crash: every write since the file's last sync is lost
  torn,           // power crash mid-writeback: a prefix of the unsynced operations (in issue
                  // order) reached the disk, the last of them torn at 512-byte granularity
};

const char* to_string(CrashDisk mode);

struct DiskFaults {
  bool fsync_fails = false;
  uint64_t capacity_bytes = UINT64_MAX;
};

inline constexpr uint64_t kSectorBytes = 512;

// What a disk operation did, for the VFS to turn into a SQLite result code.
enum class DiskOutcome : uint8_t {
  ok,            // done (or silently discarded, if the node is frozen)
  full,          // capacity_bytes or kFileBytesMax would be exceeded; nothing changed
  fsync_failed,  // DiskFaults::fsync_fails; the data stays unsynced
};

// A file's bytes in fixed blocks: growing a file never copies what it holds, and a write
// touches only the blocks it covers. Bytes of an allocated block past size() are zero.
class FileImage {
 public:
  // SQLite's pages here are 1 KiB (devices) or 4 KiB (servers): a small block wastes little
  // at the end of the many small device files.
  static constexpr size_t kBlockBytes = 1024;

  uint64_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Copies [offset, offset + out.size()) to `out`; the range must lie within size().
  void read(uint64_t offset, std::span<uint8_t> out) const;
  // Writes `data` at `offset`, growing the file with zeros first if it ends past size().
  void write(uint64_t offset, ByteView data);
  // Grows with zeros or shrinks (freeing whole blocks past the end).
  void resize(uint64_t size);
  Bytes copy(uint64_t begin, uint64_t end) const;
  Bytes to_bytes() const { return copy(0, size_); }
  // A copy of the whole image that shares its blocks until either side writes one (copy on
  // write): the store check's durable copies and durable_image's scratch copy cost only the
  // blocks that differ.
  FileImage clone() const;
  // The bytes held, with the blocks' unused tails (a block shared with a clone counts in both).
  uint64_t allocated_bytes() const { return blocks_.size() * kBlockBytes; }

 private:
  // One block with the number of images holding it, in one allocation: the count fits in the
  // allocator's rounding of a 1 KiB request (glibc gives 1,040-byte chunks to both).
  struct Block {
    uint32_t holders = 1;
    uint8_t bytes[kBlockBytes];
  };
  // A counted reference to a Block: copying shares it, the last holder frees it. Single-threaded
  // like the rest of the simulator.
  class BlockRef {
   public:
    explicit BlockRef(Block* block) : block_(block) {}
    BlockRef(const BlockRef& other) : block_(other.block_) { block_->holders++; }
    BlockRef(BlockRef&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
    BlockRef& operator=(BlockRef other) noexcept {
      std::swap(block_, other.block_);
      return *this;
    }
    ~BlockRef() {
      if (block_ != nullptr && --block_->holders == 0) delete block_;
    }
    const uint8_t* bytes() const { return block_->bytes; }
    // The block's bytes for writing: a shared block is copied first, so the other holders keep
    // theirs.
    uint8_t* writable_bytes();

   private:
    Block* block_;
  };

  std::vector<BlockRef> blocks_;
  uint64_t size_ = 0;
};

// An allocator whose resize() leaves new elements uninitialised (default-initialised), for
// buffers that are overwritten at once: an undo record's old bytes.
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* at) noexcept {
    ::new (static_cast<void*>(at)) U;
  }
  template <typename U, typename... Args>
  void construct(U* at, Args&&... args) {
    ::new (static_cast<void*>(at)) U(std::forward<Args>(args)...);
  }
};
using UndoBytes = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

// One change to a file, kept so that it can be undone: what a crash that loses it puts back.
struct FileUndo {
  enum class Kind : uint8_t { write, truncate, remove };
  Kind kind = Kind::write;
  uint64_t offset = 0;      // write: where; truncate: the new size
  uint64_t length = 0;      // write: how many bytes it wrote
  uint64_t old_size = 0;    // the file's size before the change
  UndoBytes old_bytes;      // write: what [offset, min(offset + length, old_size)) held;
                            // truncate: what [offset, old_size) held, when it shrank the file
};

// One file of a node. The VFS keeps a shared_ptr to it in each open handle, so a handle that
// outlives its file (deleted, wiped) still reads its last contents and cannot touch the disk.
struct SimFile {
  std::string name;
  FileImage current;     // what reads see; the durable image is implied (see the top)
  bool exists = true;    // false once deleted (the deletion may still be queued)
  // Changes made through open handles after the deletion was queued, oldest first: undone if
  // a crash undoes the deletion, dropped once the deletion is durable.
  std::vector<FileUndo> changes_after_removal;

  uint64_t size() const { return current.size(); }

  // SQLite's file locks (SQLITE_LOCK_*), process-local state rather than disk contents. Owners
  // are compared for identity only, never ordered.
  int shared_holders = 0;
  const void* reserved_owner = nullptr;
  const void* pending_owner = nullptr;
  const void* exclusive_owner = nullptr;
};

using SimFilePtr = std::shared_ptr<SimFile>;

// What the nodes asked of their disks: every write and sync that was applied (a frozen
// node's are not). For benchmarks (bytes written per message: SQLite's write amplification),
// never for behaviour.
struct DiskCounters {
  uint64_t writes = 0;
  uint64_t bytes_written = 0;
  uint64_t syncs = 0;
};

// The files of one node and the loss model described at the top of this file. The VFS calls
// it; tests call it directly to check the model.
class NodeStorage {
 public:
  static constexpr size_t kFilesMax = 256;                  // files per node
  static constexpr uint64_t kFileBytesMax = 1ULL << 32;     // one file's size
  static constexpr size_t kUnsyncedOpsMax = 8192;           // default writeback bounds: queued
  static constexpr uint64_t kUnsyncedBytesMax = 32ULL << 20;  // operations and bytes

  // The existing (not deleted) file called `name`, or nullptr.
  SimFilePtr find(const std::string& name) const;
  // Creates an empty file (durable at once). Returns nullptr if there are kFilesMax files, or
  // if the node is frozen (a dead process creates nothing). `name` must not exist.
  SimFilePtr create(const std::string& name);
  // Creates a file holding `image`, durable at once (a copy of another disk's file, as the
  // store check makes). Nullptr as create() says.
  SimFilePtr create_synced(const std::string& name, FileImage image);

  // Copies bytes at `offset` into `out`; returns how many came from the file (the rest of
  // `out` is zero-filled, past the end of the file).
  static size_t read(const SimFile& file, uint64_t offset, std::span<uint8_t> out);
  DiskOutcome write(const SimFilePtr& file, uint64_t offset, ByteView data);
  DiskOutcome truncate(const SimFilePtr& file, uint64_t size);
  DiskOutcome sync(const SimFilePtr& file);
  // Deletes the file. `durable_now` is SQLite's syncDir: the deletion is durable at once.
  void remove(const SimFilePtr& file, bool durable_now);

  // The process died: every later mutation is discarded until crash() or wipe().
  void freeze() { frozen_ = true; }
  // Freezes the node after `mutations` more writes, truncates, syncs or deletes have been
  // applied: a crash in the middle of whatever SQLite is doing. 0 disarms.
  void freeze_after(uint64_t mutations) { freeze_countdown_ = mutations; }
  bool frozen() const { return frozen_; }
  // Applies the loss model, unfreezes, and starts a new incarnation (handles opened before it
  // can no longer change anything).
  void crash(CrashDisk mode, Prng& rng);
  // Host loss: every file is gone. Also starts a new incarnation and unfreezes.
  void wipe();
  uint64_t incarnation() const { return incarnation_; }

  // A smaller page cache writes back sooner (at most `ops_max` operations and `bytes_max` bytes
  // stay unsynced). Both must be at least 1.
  void set_writeback_limits(size_t ops_max, uint64_t bytes_max);

  void set_faults(const DiskFaults& faults) { faults_ = faults; }
  const DiskFaults& faults() const { return faults_; }

  uint64_t bytes_stored() const;
  const DiskCounters& counters() const { return counters_; }
  size_t unsynced_ops() const { return queue_.size(); }
  // Every existing file with its current bytes, in name order.
  void for_each_file(const std::function<void(const std::string& name, ByteView bytes)>& visit) const;
  // Every file with its durable bytes (what a power loss now would leave), in name order.
  void for_each_durable_file(const std::function<void(const std::string& name, ByteView bytes)>& visit) const;
  // The same, as images: one file's copy at a time, in blocks, so copying a node's database
  // elsewhere holds each byte once more, not three times.
  void for_each_durable_image(const std::function<void(const std::string& name, FileImage image)>& visit) const;
  // What a power loss now would leave of `file` (its current bytes with its queued operations
  // undone).
  Bytes durable_bytes(const SimFilePtr& file) const;
  FileImage durable_image(const SimFilePtr& file) const;
  // The bytes held for the node's files: their images' blocks and the undo records.
  uint64_t bytes_allocated() const;

 private:
  using OpKind = FileUndo::Kind;
  struct PendingOp {  // a queued operation: which file, and how to undo it
    SimFilePtr file;
    FileUndo undo;
  };

  // False if the node is frozen (the mutation must be discarded); counts down freeze_after.
  bool admit_mutation();
  // Records a change to `file` that was just applied to its current image: queued if the file
  // exists, kept with the file if its deletion is queued, forgotten if the deletion is durable.
  void record(const SimFilePtr& file, FileUndo undo);
  void enqueue(PendingOp op);
  void write_back_oldest();
  // A queued operation became durable: drop it (a deletion takes the file out of the directory).
  void make_durable(const PendingOp& op);
  // Undoes a change on `file`'s current image (a deletion: the changes made after it).
  static void undo(SimFile& file, const FileUndo& change);
  // The cut operation of a torn crash, undone sector by sector where the coin says "not written".
  void undo_torn(const PendingOp& op, Prng& rng);
  void drop_queue();
  // Writes back, in order, every queued operation up to and including the last one for which
  // `is_target` holds (nothing if none does).
  void write_back_through(const std::function<bool(const PendingOp&)>& is_target);
  // Undo records' buffers, kept when their operation becomes durable and reused by the next
  // overwrite: with synchronous=FULL nearly every write overwrites (the WAL restarts after each
  // checkpoint) and its undo record lives only until the commit's sync (~130 writes), so a
  // fresh buffer each time cost an allocation, a zero fill and a free per write. A node keeps
  // at most kSpareUndoBuffersMax * kSpareUndoBufferBytesMax = 1 MiB spare.
  // The current bytes [begin, end) of `file`, in a spare buffer if there is one.
  UndoBytes old_bytes_of(const SimFile& file, uint64_t begin, uint64_t end);
  void recycle_undo_buffer(UndoBytes& bytes);
  static constexpr size_t kSpareUndoBuffersMax = 256;                            // per node, and
  static constexpr size_t kSpareUndoBufferBytesMax = 4 * FileImage::kBlockBytes;  // each at most

  std::map<std::string, SimFilePtr> files_;  // existing files and files whose deletion is queued
  std::deque<PendingOp> queue_;
  std::vector<UndoBytes> spare_undo_buffers_;  // at most kSpareUndoBuffersMax
  uint64_t queued_bytes_ = 0;
  size_t unsynced_ops_max_ = kUnsyncedOpsMax;
  uint64_t unsynced_bytes_max_ = kUnsyncedBytesMax;
  DiskFaults faults_;
  bool frozen_ = false;
  uint64_t freeze_countdown_ = 0;
  uint64_t incarnation_ = 0;
  DiskCounters counters_;
};

class SimDisk {  // every simulated disk of one run; one SimDisk per Simulator
 public:
  // Registers the VFS (name kVfsName, once per process) and makes this SimDisk the one it
  // serves; tests create several in sequence. Destroying it hands the VFS back to the SimDisk
  // created before it, if that one still lives. Close every handle before destroying it.
  SimDisk();
  ~SimDisk();
  SimDisk(const SimDisk&) = delete;
  SimDisk& operator=(const SimDisk&) = delete;

  static constexpr const char* kVfsName = "msgsim-sim";
  static constexpr size_t kNameBytesMax = 128;

  // The WAL is checkpointed every this many pages. A WAL keeps its largest size after a checkpoint
  // (it is reused from its start) and a simulated disk holds it in memory: at SQLite's 1,000-page
  // default a hot page is copied into the database twice as often, at 8,000 (the value until
  // session 8) the full-scale crash held 56 MB more (nine databases, 0.37 KB per device) for 0.5%
  // fewer BM_MessagePath instructions (bench/README.md).
  static constexpr int kWalCheckpointPages = 2000;
  // sqlite3_open_v2 through the VFS, with extended result codes on and
  // PRAGMA locking_mode=EXCLUSIVE set (the VFS has no shared memory; see above). `name` is
  // 1..kNameBytesMax of [A-Za-z0-9._-]. Needs set_context(node, ...) first: the open reseeds
  // SQLite's process-wide PRNG from that node's stream, so every run starts it from its seed.
  Result<sqlite3*> open(NodeId node, const std::string& name);
  // The node now running: SQLite's xCurrentTime* answer now_ns (nanoseconds since the Unix
  // epoch on the node's clock) and xRandomness draws from *rng. The Prng must outlive its use;
  // give SQLite a stream of its own (e.g. split("disk")) so its draws shift nobody else's.
  void set_context(NodeId node, int64_t now_ns, Prng* rng);
  // The node's process just died: discard every later write, sync, truncate or delete through
  // its files (the simulator then closes the node's sqlite3* handles, which must not change
  // the disk).
  void freeze(NodeId node);
  // Freezes the node after `mutations` more disk mutations: a crash in the middle of an I/O
  // sequence. The caller notices with frozen(node), then closes handles and calls crash().
  void freeze_after(NodeId node, uint64_t mutations);
  bool frozen(NodeId node) const;
  // After handles are closed: apply the loss model and unfreeze, ready for reopen.
  void crash(NodeId node, CrashDisk mode, Prng& rng);
  // Host loss: every file of the node is gone.
  void wipe(NodeId node);
  void set_faults(NodeId node, DiskFaults faults);
  // Every file of a node with its current bytes (for scanning; deterministic order by name).
  void for_each_file(NodeId node,
                     const std::function<void(const std::string& name, ByteView bytes)>& visit) const;
  uint64_t bytes_stored(NodeId node) const;
  // Every node's counters added up (nodes that were wiped keep theirs).
  DiskCounters counters() const;
  // The model itself, for tests and for scanning durable images.
  NodeStorage& storage(NodeId node);

  // Used by the VFS callbacks (sim/disk.cpp); not for other callers.
  static SimDisk* active();
  std::shared_ptr<NodeStorage> find_storage(NodeId node) const;
  int64_t context_now_ns() const { return context_now_ns_; }
  Prng* context_rng() const { return context_rng_; }

 private:
  std::map<NodeId, std::shared_ptr<NodeStorage>> nodes_;
  NodeId context_node_ = kNoNode;
  int64_t context_now_ns_ = 0;
  Prng* context_rng_ = nullptr;
};

}  // namespace msgsim::sim
