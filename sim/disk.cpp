// The simulated disk: the file model (NodeStorage) and the SQLite VFS over it. See sim/disk.h
// for the loss model; this file follows SQLite's VFS contract (sqlite.org/c3ref/vfs.html,
// c3ref/io_methods.html) in the shape of src/test_demovfs.c, with locks as in os_unix.c.
#include "sim/disk.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "impl/base/assert.h"
#include "impl/base/page_cache.h"
#include "impl/base/sqlite.h"

namespace msgsim::sim {

const char* to_string(CrashDisk mode) {
  switch (mode) {
    case CrashDisk::keep_unsynced: return "keep_unsynced";
    case CrashDisk::lose_unsynced: return "lose_unsynced";
    case CrashDisk::torn: return "torn";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// FileImage: a file's bytes in fixed blocks

void FileImage::read(uint64_t offset, std::span<uint8_t> out) const {
  MSGSIM_ASSERT(offset <= size_ && out.size() <= size_ - offset, "FileImage::read past the end");
  size_t done = 0;
  while (done < out.size()) {
    const uint64_t at = offset + done;
    const size_t in_block = static_cast<size_t>(at % kBlockBytes);
    const size_t count = std::min(out.size() - done, kBlockBytes - in_block);
    std::memcpy(out.data() + done, blocks_[static_cast<size_t>(at / kBlockBytes)].bytes() + in_block, count);
    done += count;
  }
}

void FileImage::write(uint64_t offset, ByteView data) {
  if (offset + data.size() > size_) resize(offset + data.size());
  size_t done = 0;
  while (done < data.size()) {
    const uint64_t at = offset + done;
    const size_t in_block = static_cast<size_t>(at % kBlockBytes);
    const size_t count = std::min(data.size() - done, kBlockBytes - in_block);
    std::memcpy(blocks_[static_cast<size_t>(at / kBlockBytes)].writable_bytes() + in_block, data.data() + done, count);
    done += count;
  }
}

void FileImage::resize(uint64_t size) {
  const size_t blocks = static_cast<size_t>((size + kBlockBytes - 1) / kBlockBytes);
  if (size < size_) {
    // Keep the promise that an allocated block's bytes past size() are zero, so a later
    // growth reads zeros without clearing.
    const size_t in_block = static_cast<size_t>(size % kBlockBytes);
    if (in_block != 0) {
      const size_t clear_end = static_cast<size_t>(std::min<uint64_t>(size_ - (size - in_block), kBlockBytes));
      std::memset(blocks_[blocks - 1].writable_bytes() + in_block, 0, clear_end - in_block);
    }
    blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(blocks), blocks_.end());
  } else {
    while (blocks_.size() < blocks) blocks_.emplace_back(new Block());  // value-initialised: zeroed
  }
  size_ = size;
}

FileImage FileImage::clone() const {
  FileImage copy;
  copy.blocks_ = blocks_;  // shared until written
  copy.size_ = size_;
  return copy;
}

uint8_t* FileImage::BlockRef::writable_bytes() {
  if (block_->holders > 1) {
    Block* own = new Block;  // default-initialised: every byte is copied below
    std::memcpy(own->bytes, block_->bytes, kBlockBytes);
    block_->holders--;
    block_ = own;
  }
  return block_->bytes;
}

Bytes FileImage::copy(uint64_t begin, uint64_t end) const {
  Bytes out(static_cast<size_t>(end - begin));
  read(begin, out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// NodeStorage: the file model

SimFilePtr NodeStorage::find(const std::string& name) const {
  auto it = files_.find(name);
  if (it == files_.end() || !it->second->exists) return nullptr;
  return it->second;
}

SimFilePtr NodeStorage::create(const std::string& name) {
  if (frozen_) return nullptr;
  auto it = files_.find(name);
  if (it != files_.end()) {
    MSGSIM_ASSERT(!it->second->exists, "create() of an existing file: " + name);
    // The queued deletion (and, in order, everything before it) becomes durable first.
    const SimFilePtr deleted = it->second;
    write_back_through([&](const PendingOp& op) { return op.undo.kind == OpKind::remove && op.file == deleted; });
    MSGSIM_ASSERT(files_.count(name) == 0, "a deleted file without a queued deletion: " + name);
  }
  if (files_.size() >= kFilesMax) return nullptr;
  if (!admit_mutation()) return nullptr;
  auto file = std::make_shared<SimFile>();
  file->name = name;
  files_.emplace(name, file);
  return file;
}

SimFilePtr NodeStorage::create_synced(const std::string& name, FileImage image) {
  SimFilePtr file = create(name);
  // Creating is durable at once and nothing is queued for the file, so its durable image is
  // the one it is given.
  if (file != nullptr) file->current = std::move(image);
  return file;
}

size_t NodeStorage::read(const SimFile& file, uint64_t offset, std::span<uint8_t> out) {
  size_t copied = 0;
  if (offset < file.size()) {
    copied = static_cast<size_t>(std::min<uint64_t>(out.size(), file.size() - offset));
    file.current.read(offset, out.first(copied));
  }
  if (copied < out.size()) std::memset(out.data() + copied, 0, out.size() - copied);
  return copied;
}

bool NodeStorage::admit_mutation() {
  if (frozen_) return false;
  if (freeze_countdown_ > 0 && --freeze_countdown_ == 0) frozen_ = true;  // after this one
  return true;
}

DiskOutcome NodeStorage::write(const SimFilePtr& file, uint64_t offset, ByteView data) {
  if (frozen_) return DiskOutcome::ok;  // a dead process's write goes nowhere
  if (offset > kFileBytesMax || data.size() > kFileBytesMax - offset) return DiskOutcome::full;
  const uint64_t end = offset + data.size();
  const uint64_t old_size = file->size();
  if (end > old_size && file->exists) {
    const uint64_t growth = end - old_size;
    const uint64_t stored = bytes_stored();
    if (growth > faults_.capacity_bytes || stored > faults_.capacity_bytes - growth) {
      return DiskOutcome::full;
    }
  }
  if (!admit_mutation()) return DiskOutcome::ok;
  FileUndo undo{OpKind::write, offset, data.size(), old_size, {}};
  if (offset < old_size) undo.old_bytes = old_bytes_of(*file, offset, std::min(end, old_size));
  file->current.write(offset, data);
  record(file, std::move(undo));
  counters_.writes++;
  counters_.bytes_written += data.size();
  return DiskOutcome::ok;
}

DiskOutcome NodeStorage::truncate(const SimFilePtr& file, uint64_t size) {
  if (frozen_) return DiskOutcome::ok;
  if (size > kFileBytesMax) return DiskOutcome::full;
  const uint64_t old_size = file->size();
  if (size > old_size && file->exists) {
    const uint64_t growth = size - old_size;
    const uint64_t stored = bytes_stored();
    if (growth > faults_.capacity_bytes || stored > faults_.capacity_bytes - growth) {
      return DiskOutcome::full;
    }
  }
  if (!admit_mutation()) return DiskOutcome::ok;
  FileUndo undo{OpKind::truncate, size, 0, old_size, {}};
  if (size < old_size) undo.old_bytes = old_bytes_of(*file, size, old_size);
  file->current.resize(size);
  record(file, std::move(undo));
  return DiskOutcome::ok;
}

void NodeStorage::record(const SimFilePtr& file, FileUndo undo) {
  if (file->exists) {
    enqueue(PendingOp{file, std::move(undo)});
    return;
  }
  // A handle on a deleted file (unix keeps the inode) writes to its own copy only; that copy
  // is what comes back if a crash undoes the queued deletion, minus these changes.
  auto it = files_.find(file->name);
  if (it != files_.end() && it->second == file) file->changes_after_removal.push_back(std::move(undo));
}

DiskOutcome NodeStorage::sync(const SimFilePtr& file) {
  if (frozen_) return DiskOutcome::ok;
  // A failed fsync leaves the data where it was: queued, losable. Nothing is marked clean.
  if (faults_.fsync_fails) return DiskOutcome::fsync_failed;
  if (!admit_mutation()) return DiskOutcome::ok;
  counters_.syncs++;
  // Every queued deletion, with everything queued before it (a journaling file system commits
  // all earlier metadata with any fsync; writing back in order keeps the durable state a
  // prefix), then the file's own operations: their undo records are dropped, in place,
  // keeping the other files' operations in order (a new deque per sync cost an allocation of
  // its map and first block each time).
  write_back_through([](const PendingOp& op) { return op.undo.kind == OpKind::remove; });
  size_t kept = 0;
  for (size_t i = 0; i < queue_.size(); ++i) {
    PendingOp& op = queue_[i];
    if (op.file == file) {
      queued_bytes_ -= op.undo.length;
      recycle_undo_buffer(op.undo.old_bytes);
    } else {
      if (kept != i) queue_[kept] = std::move(op);
      kept++;
    }
  }
  queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(kept), queue_.end());
  return DiskOutcome::ok;
}

void NodeStorage::remove(const SimFilePtr& file, bool durable_now) {
  if (!file->exists) return;
  if (!admit_mutation()) return;
  file->exists = false;
  enqueue(PendingOp{file, FileUndo{OpKind::remove, 0, 0, file->size(), {}}});
  // A directory sync: the deletion, and in order everything queued before it, is durable.
  if (durable_now) write_back_through([](const PendingOp& op) { return op.undo.kind == OpKind::remove; });
}

void NodeStorage::write_back_through(const std::function<bool(const PendingOp&)>& is_target) {
  size_t count = 0;  // how many operations to write back: through the last target
  for (size_t i = queue_.size(); i > 0; --i) {
    if (is_target(queue_[i - 1])) {
      count = i;
      break;
    }
  }
  for (size_t i = 0; i < count; ++i) write_back_oldest();
}

void NodeStorage::enqueue(PendingOp op) {
  queued_bytes_ += op.undo.length;
  queue_.push_back(std::move(op));
  while (queue_.size() > unsynced_ops_max_ || queued_bytes_ > unsynced_bytes_max_) write_back_oldest();
}

void NodeStorage::set_writeback_limits(size_t ops_max, uint64_t bytes_max) {
  MSGSIM_ASSERT(ops_max >= 1 && bytes_max >= 1, "writeback limits must be at least 1");
  unsynced_ops_max_ = ops_max;
  unsynced_bytes_max_ = bytes_max;
  while (queue_.size() > unsynced_ops_max_ || queued_bytes_ > unsynced_bytes_max_) write_back_oldest();
}

void NodeStorage::write_back_oldest() {
  MSGSIM_ASSERT(!queue_.empty());
  PendingOp op = std::move(queue_.front());
  queue_.pop_front();
  queued_bytes_ -= op.undo.length;
  make_durable(op);
  recycle_undo_buffer(op.undo.old_bytes);
}

UndoBytes NodeStorage::old_bytes_of(const SimFile& file, uint64_t begin, uint64_t end) {
  UndoBytes bytes;
  if (!spare_undo_buffers_.empty()) {
    bytes = std::move(spare_undo_buffers_.back());
    spare_undo_buffers_.pop_back();
  }
  bytes.resize(static_cast<size_t>(end - begin));  // no zero fill: read() overwrites it all
  file.current.read(begin, bytes);
  return bytes;
}

void NodeStorage::recycle_undo_buffer(UndoBytes& bytes) {
  // Small buffers only (pages and WAL frame headers), and a bounded number: a node keeps at
  // most kSpareUndoBuffersMax * kSpareUndoBufferBytesMax bytes spare.
  if (bytes.capacity() == 0 || bytes.capacity() > kSpareUndoBufferBytesMax ||
      spare_undo_buffers_.size() >= kSpareUndoBuffersMax) {
    return;
  }
  spare_undo_buffers_.push_back(std::move(bytes));
  bytes = UndoBytes();
}

void NodeStorage::make_durable(const PendingOp& op) {
  if (op.undo.kind != OpKind::remove) return;  // the undo record is all there was to drop
  auto it = files_.find(op.file->name);
  if (it != files_.end() && it->second == op.file) files_.erase(it);
  // The file is out of the directory for good: what open handles change later matters to them
  // alone.
  op.file->changes_after_removal.clear();
  op.file->changes_after_removal.shrink_to_fit();
}

void NodeStorage::undo(SimFile& file, const FileUndo& change) {
  switch (change.kind) {
    case OpKind::write:
      file.current.resize(change.old_size);
      if (!change.old_bytes.empty()) file.current.write(change.offset, change.old_bytes);
      break;
    case OpKind::truncate:
      file.current.resize(change.old_size);
      if (!change.old_bytes.empty()) file.current.write(change.offset, change.old_bytes);
      break;
    case OpKind::remove:
      // The deletion did not happen: neither did what open handles changed after it.
      for (size_t i = file.changes_after_removal.size(); i > 0; --i) undo(file, file.changes_after_removal[i - 1]);
      file.changes_after_removal.clear();
      break;
  }
}

void NodeStorage::undo_torn(const PendingOp& op, Prng& rng) {
  const FileUndo& change = op.undo;
  if (change.kind != OpKind::write) {
    // Metadata changes are atomic: they happened or they did not.
    if (rng.below(2) == 1) {
      make_durable(op);
    } else {
      undo(*op.file, change);
    }
    return;
  }
  // Each 512-byte sector (aligned to the file, not to the write) is written whole or not at
  // all; bytes of a sector outside the write's range are never touched. A sector not written
  // gets its old bytes back (zeros past the old end); the file ends at the old end or at the
  // end of its last written sector, whichever is later.
  SimFile& file = *op.file;
  const uint64_t begin = change.offset;
  const uint64_t end = change.offset + change.length;
  uint64_t written_end = 0;
  for (uint64_t sector = begin / kSectorBytes * kSectorBytes; sector < end; sector += kSectorBytes) {
    const uint64_t lo = std::max(begin, sector);
    const uint64_t hi = std::min(end, sector + kSectorBytes);
    if (rng.below(2) == 1) {
      written_end = hi;
      continue;
    }
    if (lo < change.old_size) {
      const uint64_t old_hi = std::min(hi, change.old_size);
      file.current.write(lo, ByteView(change.old_bytes).subspan(lo - begin, old_hi - lo));
    }
    if (hi > change.old_size) {
      const uint64_t zero_lo = std::max(lo, change.old_size);
      file.current.write(zero_lo, Bytes(hi - zero_lo, 0));
    }
  }
  file.current.resize(std::max(change.old_size, written_end));
}

void NodeStorage::drop_queue() {
  for (size_t i = queue_.size(); i > 0; --i) undo(*queue_[i - 1].file, queue_[i - 1].undo);
  queue_.clear();
  queued_bytes_ = 0;
  for (auto& [name, file] : files_) {
    file->exists = true;  // a deletion that never reached the disk did not happen
  }
}

void NodeStorage::crash(CrashDisk mode, Prng& rng) {
  switch (mode) {
    case CrashDisk::keep_unsynced: break;
    case CrashDisk::lose_unsynced: drop_queue(); break;
    case CrashDisk::torn: {
      if (!queue_.empty()) {
        // Power failed while the queue was being written back: operations after the cut never
        // reached the disk (undone, newest first), the one at the cut is torn, the ones before
        // it are durable.
        const size_t cut = static_cast<size_t>(rng.below(queue_.size()));
        for (size_t i = queue_.size(); i > cut + 1; --i) undo(*queue_[i - 1].file, queue_[i - 1].undo);
        undo_torn(queue_[cut], rng);
        for (size_t i = 0; i < cut; ++i) make_durable(queue_[i]);
        queue_.clear();
        queued_bytes_ = 0;
      }
      drop_queue();
      break;
    }
  }
  for (auto& [name, file] : files_) {
    file->shared_holders = 0;
    file->reserved_owner = file->pending_owner = file->exclusive_owner = nullptr;
  }
  frozen_ = false;
  freeze_countdown_ = 0;
  incarnation_++;
}

void NodeStorage::wipe() {
  files_.clear();
  queue_.clear();
  queued_bytes_ = 0;
  frozen_ = false;
  freeze_countdown_ = 0;
  incarnation_++;
}

uint64_t NodeStorage::bytes_stored() const {
  uint64_t total = 0;
  for (const auto& [name, file] : files_) {
    if (file->exists) total += file->size();
  }
  return total;
}

uint64_t NodeStorage::bytes_allocated() const {
  uint64_t total = 0;
  for (const auto& [name, file] : files_) {
    total += file->current.allocated_bytes();
    for (const FileUndo& change : file->changes_after_removal) total += change.old_bytes.capacity();
  }
  for (const PendingOp& op : queue_) total += sizeof(PendingOp) + op.undo.old_bytes.capacity();
  for (const UndoBytes& spare : spare_undo_buffers_) total += spare.capacity();
  return total;
}

void NodeStorage::for_each_file(
    const std::function<void(const std::string& name, ByteView bytes)>& visit) const {
  for (const auto& [name, file] : files_) {
    if (file->exists) visit(name, file->current.to_bytes());
  }
}

FileImage NodeStorage::durable_image(const SimFilePtr& file) const {
  // Undo on a scratch copy of the file: its queued operations newest first, and before them
  // (they came after its queued deletion) the changes made after its removal.
  SimFile scratch;
  scratch.current = file->current.clone();
  scratch.changes_after_removal = file->changes_after_removal;
  bool removal_queued = false;
  for (size_t i = queue_.size(); i > 0; --i) {
    const PendingOp& op = queue_[i - 1];
    if (op.file != file) continue;
    removal_queued |= op.undo.kind == OpKind::remove;
    undo(scratch, op.undo);
  }
  MSGSIM_ASSERT(removal_queued || scratch.changes_after_removal.empty(),
                "changes after a removal that is not queued: " + file->name);
  return std::move(scratch.current);
}

Bytes NodeStorage::durable_bytes(const SimFilePtr& file) const { return durable_image(file).to_bytes(); }

void NodeStorage::for_each_durable_file(
    const std::function<void(const std::string& name, ByteView bytes)>& visit) const {
  for (const auto& [name, file] : files_) visit(name, durable_bytes(file));
}

void NodeStorage::for_each_durable_image(
    const std::function<void(const std::string& name, FileImage image)>& visit) const {
  for (const auto& [name, file] : files_) visit(name, durable_image(file));
}

// ---------------------------------------------------------------------------------------------
// The VFS

namespace {

// One open file, as SQLite holds it: SQLite allocates szOsFile bytes and we keep a pointer to
// the C++ state, so nothing with a destructor lives in SQLite's memory.
struct FileHandle {
  std::shared_ptr<NodeStorage> storage;  // null for an anonymous temporary file
  SimFilePtr file;
  uint64_t incarnation = 0;
  int lock_level = SQLITE_LOCK_NONE;
  bool delete_on_close = false;

  // False for temporary files and for handles of a dead incarnation: they touch no disk.
  bool live() const { return storage != nullptr && storage->incarnation() == incarnation; }
};

struct OpenFile {
  sqlite3_file base;  // first: SQLite casts between the two
  FileHandle* handle;
};

FileHandle& handle_of(sqlite3_file* file) { return *reinterpret_cast<OpenFile*>(file)->handle; }

std::vector<SimDisk*>& disk_stack() {
  static std::vector<SimDisk*> stack;  // the newest SimDisk serves the VFS
  return stack;
}

// "node-<id>/<name>": the only paths SimDisk::open hands to SQLite (and the "-wal", "-journal"
// names SQLite derives from them).
std::string node_path(NodeId node, const std::string& name) {
  return "node-" + std::to_string(node) + "/" + name;
}

bool parse_path(const char* path, NodeId& node, std::string& name) {
  static constexpr std::string_view kPrefix = "node-";
  const std::string_view text(path);
  if (text.substr(0, kPrefix.size()) != kPrefix) return false;
  const size_t slash = text.find('/', kPrefix.size());
  if (slash == std::string_view::npos || slash == kPrefix.size() || slash + 1 >= text.size()) return false;
  uint64_t id = 0;
  for (size_t i = kPrefix.size(); i < slash; ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    id = id * 10 + static_cast<uint64_t>(text[i] - '0');
    if (id >= kNoNode) return false;
  }
  node = static_cast<NodeId>(id);
  name = std::string(text.substr(slash + 1));
  return true;
}

std::shared_ptr<NodeStorage> storage_for_path(const char* path, std::string& name) {
  NodeId node = kNoNode;
  if (path == nullptr || !parse_path(path, node, name)) return nullptr;
  SimDisk* disk = SimDisk::active();
  if (disk == nullptr) return nullptr;
  return disk->find_storage(node);
}

// --- io methods ---

int file_close(sqlite3_file* file) {
  auto* open_file = reinterpret_cast<OpenFile*>(file);
  FileHandle* handle = open_file->handle;
  if (handle->live()) {
    SimFile& f = *handle->file;
    if (handle->lock_level >= SQLITE_LOCK_SHARED) f.shared_holders--;
    if (f.reserved_owner == handle) f.reserved_owner = nullptr;
    if (f.pending_owner == handle) f.pending_owner = nullptr;
    if (f.exclusive_owner == handle) f.exclusive_owner = nullptr;
    // As unix's unlink at close: no directory sync, so the deletion is queued.
    if (handle->delete_on_close) handle->storage->remove(handle->file, /*durable_now=*/false);
  }
  delete handle;
  open_file->handle = nullptr;
  return SQLITE_OK;
}

int file_read(sqlite3_file* file, void* buffer, int amount, sqlite3_int64 offset) {
  if (offset < 0 || amount < 0) return SQLITE_IOERR_READ;
  const FileHandle& handle = handle_of(file);
  const size_t copied = NodeStorage::read(*handle.file, static_cast<uint64_t>(offset),
                                          std::span<uint8_t>(static_cast<uint8_t*>(buffer), amount));
  return copied < static_cast<size_t>(amount) ? SQLITE_IOERR_SHORT_READ : SQLITE_OK;
}

int outcome_code(DiskOutcome outcome, int io_error) {
  switch (outcome) {
    case DiskOutcome::ok: return SQLITE_OK;
    case DiskOutcome::full: return SQLITE_FULL;
    case DiskOutcome::fsync_failed: return io_error;
  }
  return io_error;
}

int file_write(sqlite3_file* file, const void* buffer, int amount, sqlite3_int64 offset) {
  if (offset < 0 || amount < 0) return SQLITE_IOERR_WRITE;
  FileHandle& handle = handle_of(file);
  const ByteView data(static_cast<const uint8_t*>(buffer), static_cast<size_t>(amount));
  if (handle.storage == nullptr) {  // a temporary file: memory only, never durable
    if (static_cast<uint64_t>(offset) + data.size() > NodeStorage::kFileBytesMax) return SQLITE_FULL;
    handle.file->current.write(static_cast<uint64_t>(offset), data);
    return SQLITE_OK;
  }
  if (!handle.live()) return SQLITE_OK;  // a dead incarnation's write goes nowhere
  return outcome_code(handle.storage->write(handle.file, static_cast<uint64_t>(offset), data),
                      SQLITE_IOERR_WRITE);
}

int file_truncate(sqlite3_file* file, sqlite3_int64 size) {
  if (size < 0) return SQLITE_IOERR_TRUNCATE;
  FileHandle& handle = handle_of(file);
  if (handle.storage == nullptr) {
    if (static_cast<uint64_t>(size) > NodeStorage::kFileBytesMax) return SQLITE_FULL;
    handle.file->current.resize(static_cast<uint64_t>(size));
    return SQLITE_OK;
  }
  if (!handle.live()) return SQLITE_OK;
  return outcome_code(handle.storage->truncate(handle.file, static_cast<uint64_t>(size)),
                      SQLITE_IOERR_TRUNCATE);
}

int file_sync(sqlite3_file* file, int flags) {
  (void)flags;  // NORMAL and FULL fsync are the same thing here
  FileHandle& handle = handle_of(file);
  if (!handle.live()) return SQLITE_OK;
  return outcome_code(handle.storage->sync(handle.file), SQLITE_IOERR_FSYNC);
}

int file_size(sqlite3_file* file, sqlite3_int64* size) {
  *size = static_cast<sqlite3_int64>(handle_of(file).file->size());
  return SQLITE_OK;
}

// Locks as in os_unix.c's unixLock, for connections of one process: SHARED is refused while
// someone holds PENDING or EXCLUSIVE; RESERVED is one writer; EXCLUSIVE goes through PENDING
// (which keeps new readers out) and waits for the other readers to leave. A temporary file or
// a dead incarnation's handle only records its level.
int file_lock(sqlite3_file* file, int level) {
  FileHandle& handle = handle_of(file);
  if (handle.lock_level >= level) return SQLITE_OK;
  if (!handle.live()) {
    handle.lock_level = level;
    return SQLITE_OK;
  }
  SimFile& f = *handle.file;
  const void* me = &handle;
  if (level == SQLITE_LOCK_SHARED) {
    if (f.pending_owner != nullptr || f.exclusive_owner != nullptr) return SQLITE_BUSY;
    f.shared_holders++;
    handle.lock_level = SQLITE_LOCK_SHARED;
    return SQLITE_OK;
  }
  MSGSIM_ASSERT(handle.lock_level >= SQLITE_LOCK_SHARED, "SQLite locks SHARED before writing");
  if (level == SQLITE_LOCK_RESERVED) {
    if (f.reserved_owner != nullptr) return SQLITE_BUSY;
    f.reserved_owner = me;
    handle.lock_level = SQLITE_LOCK_RESERVED;
    return SQLITE_OK;
  }
  MSGSIM_ASSERT_EQ(level, SQLITE_LOCK_EXCLUSIVE);
  if (f.pending_owner != nullptr && f.pending_owner != me) return SQLITE_BUSY;
  if (handle.lock_level < SQLITE_LOCK_RESERVED && f.reserved_owner != nullptr) return SQLITE_BUSY;
  f.pending_owner = me;
  handle.lock_level = SQLITE_LOCK_PENDING;
  if (f.shared_holders > 1) return SQLITE_BUSY;  // keep PENDING: no new readers meanwhile
  f.exclusive_owner = me;
  handle.lock_level = SQLITE_LOCK_EXCLUSIVE;
  return SQLITE_OK;
}

int file_unlock(sqlite3_file* file, int level) {
  FileHandle& handle = handle_of(file);
  if (handle.lock_level <= level) return SQLITE_OK;
  if (handle.live()) {
    SimFile& f = *handle.file;
    const void* me = &handle;
    if (f.reserved_owner == me) f.reserved_owner = nullptr;
    if (f.pending_owner == me) f.pending_owner = nullptr;
    if (f.exclusive_owner == me) f.exclusive_owner = nullptr;
    if (level == SQLITE_LOCK_NONE) f.shared_holders--;
  }
  handle.lock_level = level;
  return SQLITE_OK;
}

int file_check_reserved_lock(sqlite3_file* file, int* reserved) {
  const FileHandle& handle = handle_of(file);
  const SimFile& f = *handle.file;
  *reserved = handle.live() && (f.reserved_owner != nullptr || f.pending_owner != nullptr ||
                                f.exclusive_owner != nullptr);
  return SQLITE_OK;
}

int file_control(sqlite3_file* file, int op, void* arg) {
  (void)file;
  (void)op;
  (void)arg;
  return SQLITE_NOTFOUND;  // SQLite's defaults for every file control
}

int file_sector_size(sqlite3_file* file) {
  (void)file;
  return static_cast<int>(kSectorBytes);
}

int file_device_characteristics(sqlite3_file* file) {
  (void)file;
  // True of the model: a torn write changes whole sectors of its own range and nothing else.
  return SQLITE_IOCAP_POWERSAFE_OVERWRITE;
}

// Version 1: no shared memory (WAL needs locking_mode=EXCLUSIVE) and no memory mapping.
const sqlite3_io_methods kIoMethods = {
    1,
    file_close,
    file_read,
    file_write,
    file_truncate,
    file_sync,
    file_size,
    file_lock,
    file_unlock,
    file_check_reserved_lock,
    file_control,
    file_sector_size,
    file_device_characteristics,
    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
};

// --- vfs methods ---

int vfs_open(sqlite3_vfs* vfs, const char* path, sqlite3_file* file, int flags, int* out_flags) {
  (void)vfs;
  auto* open_file = reinterpret_cast<OpenFile*>(file);
  open_file->base.pMethods = nullptr;  // on failure SQLite then calls no xClose
  open_file->handle = nullptr;
  auto handle = std::make_unique<FileHandle>();
  if (path == nullptr) {  // a temporary file (sorter, temp tables, statement journal)
    handle->file = std::make_shared<SimFile>();
    handle->delete_on_close = true;
  } else {
    std::string name;
    std::shared_ptr<NodeStorage> storage = storage_for_path(path, name);
    if (storage == nullptr) return SQLITE_CANTOPEN;
    SimFilePtr existing = storage->find(name);
    if (existing != nullptr) {
      if ((flags & SQLITE_OPEN_EXCLUSIVE) != 0 && (flags & SQLITE_OPEN_CREATE) != 0) return SQLITE_CANTOPEN;
      handle->file = std::move(existing);
    } else {
      if ((flags & SQLITE_OPEN_CREATE) == 0) return SQLITE_CANTOPEN;
      handle->file = storage->create(name);
      if (handle->file == nullptr) return SQLITE_CANTOPEN;  // frozen, or too many files
    }
    handle->incarnation = storage->incarnation();
    handle->storage = std::move(storage);
    handle->delete_on_close = (flags & SQLITE_OPEN_DELETEONCLOSE) != 0;
  }
  open_file->handle = handle.release();
  open_file->base.pMethods = &kIoMethods;
  if (out_flags != nullptr) *out_flags = flags;
  return SQLITE_OK;
}

int vfs_delete(sqlite3_vfs* vfs, const char* path, int sync_dir) {
  (void)vfs;
  std::string name;
  std::shared_ptr<NodeStorage> storage = storage_for_path(path, name);
  if (storage == nullptr) return SQLITE_IOERR_DELETE;
  SimFilePtr file = storage->find(name);
  if (file == nullptr) return SQLITE_IOERR_DELETE_NOENT;
  storage->remove(file, /*durable_now=*/sync_dir != 0);
  return SQLITE_OK;
}

int vfs_access(sqlite3_vfs* vfs, const char* path, int flags, int* result) {
  (void)vfs;
  std::string name;
  std::shared_ptr<NodeStorage> storage = storage_for_path(path, name);
  SimFilePtr file = storage == nullptr ? nullptr : storage->find(name);
  if (flags == SQLITE_ACCESS_EXISTS) {
    // As os_unix.c: an empty file counts as absent (SQLite relies on that for journals).
    *result = file != nullptr && !file->current.empty();
  } else {
    *result = file != nullptr;
  }
  return SQLITE_OK;
}

int vfs_full_pathname(sqlite3_vfs* vfs, const char* path, int out_size, char* out) {
  (void)vfs;
  const size_t length = std::strlen(path);
  if (out_size <= 0 || length + 1 > static_cast<size_t>(out_size)) return SQLITE_CANTOPEN;
  std::memcpy(out, path, length + 1);
  return SQLITE_OK;
}

void* vfs_dl_open(sqlite3_vfs* vfs, const char* path) {
  (void)vfs;
  (void)path;
  return nullptr;
}

void vfs_dl_error(sqlite3_vfs* vfs, int size, char* message) {
  (void)vfs;
  if (size <= 0) return;
  sqlite3_snprintf(size, message, "the simulated disk loads no extensions");
}

void (*vfs_dl_sym(sqlite3_vfs* vfs, void* library, const char* symbol))(void) {
  (void)vfs;
  (void)library;
  (void)symbol;
  return nullptr;
}

void vfs_dl_close(sqlite3_vfs* vfs, void* library) {
  (void)vfs;
  (void)library;
}

int vfs_randomness(sqlite3_vfs* vfs, int size, char* out) {
  (void)vfs;
  if (size <= 0) return 0;
  SimDisk* disk = SimDisk::active();
  Prng* rng = disk == nullptr ? nullptr : disk->context_rng();
  std::span<uint8_t> bytes(reinterpret_cast<uint8_t*>(out), static_cast<size_t>(size));
  if (rng != nullptr) {
    rng->fill(bytes);
  } else {
    std::fill(bytes.begin(), bytes.end(), 0);  // no node is running: constant, never the OS's
  }
  return size;
}

int vfs_sleep(sqlite3_vfs* vfs, int microseconds) {
  (void)vfs;
  return microseconds;  // virtual time does not pass inside a handler
}

// Milliseconds since the Julian epoch (noon, 24 November 4714 BC), SQLite's xCurrentTimeInt64.
constexpr sqlite3_int64 kUnixEpochJulianMs = 210866760000000LL;

int vfs_current_time_int64(sqlite3_vfs* vfs, sqlite3_int64* now) {
  (void)vfs;
  SimDisk* disk = SimDisk::active();
  const int64_t now_ns = disk == nullptr ? 0 : disk->context_now_ns();
  int64_t ms = now_ns / kNanosPerMilli;
  if (now_ns % kNanosPerMilli < 0) ms -= 1;  // floor, for a clock skewed before the epoch
  *now = kUnixEpochJulianMs + ms;
  return SQLITE_OK;
}

int vfs_current_time(sqlite3_vfs* vfs, double* now_days) {
  sqlite3_int64 ms = 0;
  vfs_current_time_int64(vfs, &ms);
  *now_days = static_cast<double>(ms) / 86400000.0;
  return SQLITE_OK;
}

int vfs_get_last_error(sqlite3_vfs* vfs, int size, char* message) {
  (void)vfs;
  (void)size;
  (void)message;
  return 0;
}

sqlite3_vfs& the_vfs() {
  static sqlite3_vfs vfs = {
      2,                        // iVersion: has xCurrentTimeInt64
      sizeof(OpenFile),         // szOsFile
      512,                      // mxPathname
      nullptr,                  // pNext
      SimDisk::kVfsName,        // zName
      nullptr,                  // pAppData
      vfs_open,
      vfs_delete,
      vfs_access,
      vfs_full_pathname,
      vfs_dl_open,
      vfs_dl_error,
      vfs_dl_sym,
      vfs_dl_close,
      vfs_randomness,
      vfs_sleep,
      vfs_current_time,
      vfs_get_last_error,
      vfs_current_time_int64,
      nullptr,
      nullptr,
      nullptr,
  };
  return vfs;
}

void register_vfs_once() {
  static const bool registered = [] {
    const int rc = sqlite3_vfs_register(&the_vfs(), /*makeDflt=*/0);
    MSGSIM_ASSERT_EQ(rc, SQLITE_OK);
    return true;
  }();
  (void)registered;
}

// SQLite's PRNG (WAL salts, temporary names, random(), randomblob()) is process-wide and seeds
// itself once, from the *default* VFS's xRandomness. To make it draw from the node's stream we
// make our VFS the default for a moment, reset the PRNG and force it to reseed, and put the
// previous default back. Single-threaded by the simulator's design; another thread opening a
// database with the default VFS during these few calls would land on the simulated disk.
void reseed_sqlite_prng() {
  sqlite3_vfs* previous_default = sqlite3_vfs_find(nullptr);
  MSGSIM_ASSERT_EQ(sqlite3_vfs_register(&the_vfs(), /*makeDflt=*/1), SQLITE_OK);
  sqlite3_randomness(0, nullptr);  // forget the state: the next draw reseeds
  uint8_t first = 0;
  sqlite3_randomness(1, &first);   // reseed now, from vfs_randomness
  if (previous_default != nullptr && previous_default != &the_vfs()) {
    MSGSIM_ASSERT_EQ(sqlite3_vfs_register(previous_default, /*makeDflt=*/1), SQLITE_OK);
  }
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > SimDisk::kNameBytesMax) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SimDisk

SimDisk::SimDisk() {
  // SQLite keeps memory statistics behind a global mutex on every allocation (a few hundred
  // thousand a simulated second); nothing here reads them and no heap limit is set, so they go
  // when this is the first use of SQLite in the process. Later (SQLite already initialised)
  // the call is refused with SQLITE_MISUSE and changes nothing, which is fine: it only saves
  // time.
  static const bool memstatus_off = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK;
  (void)memstatus_off;
  // Likewise the page cache (impl/base/page_cache.h): the same pages, dropped without a walk.
  static const bool page_cache = sql::install_page_cache();
  (void)page_cache;
  MSGSIM_ASSERT_EQ(sqlite3_initialize(), SQLITE_OK);
  register_vfs_once();
  disk_stack().push_back(this);
}

SimDisk::~SimDisk() {
  auto& stack = disk_stack();
  stack.erase(std::remove(stack.begin(), stack.end(), this), stack.end());
}

SimDisk* SimDisk::active() {
  const auto& stack = disk_stack();
  return stack.empty() ? nullptr : stack.back();
}

std::shared_ptr<NodeStorage> SimDisk::find_storage(NodeId node) const {
  auto it = nodes_.find(node);
  return it == nodes_.end() ? nullptr : it->second;
}

NodeStorage& SimDisk::storage(NodeId node) {
  std::shared_ptr<NodeStorage>& slot = nodes_[node];
  if (slot == nullptr) slot = std::make_shared<NodeStorage>();
  return *slot;
}

Result<sqlite3*> SimDisk::open(NodeId node, const std::string& name) {
  const std::string where = "SimDisk::open(node " + std::to_string(node) + ", \"" + name + "\")";
  if (!valid_name(name)) {
    return make_error(ErrorCode::bad_input,
                      where + ": a name is 1 to " + std::to_string(kNameBytesMax) +
                          " characters of [A-Za-z0-9._-]");
  }
  if (context_node_ != node || context_rng_ == nullptr) {
    return make_error(ErrorCode::bad_input, where + ": set_context(node, ...) must come first");
  }
  if (active() != this) {
    return make_error(ErrorCode::unavailable, where + ": a newer SimDisk serves the VFS");
  }
  storage(node);
  reseed_sqlite_prng();
  sqlite3* db = nullptr;
  const std::string path = node_path(node, name);
  // NOMUTEX: a node's connection is used by the simulator's one thread only, so SQLite's
  // per-connection mutex (taken on every API call) buys nothing.
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           kVfsName);
  if (rc == SQLITE_OK) {
    sqlite3_extended_result_codes(db, 1);
    rc = sqlite3_wal_autocheckpoint(db, kWalCheckpointPages);
  }
  if (rc != SQLITE_OK) {
    std::string message = where + ": " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return make_error(ErrorCode::io_error, std::move(message));
  }
  // This VFS has no shared memory (kIoMethods): WAL works only in EXCLUSIVE mode.
  const Status locking = sql::set_locking_mode(db, sql::LockingMode::exclusive);
  if (!locking.ok()) {
    sqlite3_close_v2(db);
    return make_error(ErrorCode::io_error, where + ": " + locking.error().message);
  }
  return db;
}

void SimDisk::set_context(NodeId node, int64_t now_ns, Prng* rng) {
  context_node_ = node;
  context_now_ns_ = now_ns;
  context_rng_ = rng;
}

void SimDisk::freeze(NodeId node) { storage(node).freeze(); }

void SimDisk::freeze_after(NodeId node, uint64_t mutations) { storage(node).freeze_after(mutations); }

bool SimDisk::frozen(NodeId node) const {
  std::shared_ptr<NodeStorage> found = find_storage(node);
  return found != nullptr && found->frozen();
}

void SimDisk::crash(NodeId node, CrashDisk mode, Prng& rng) { storage(node).crash(mode, rng); }

void SimDisk::wipe(NodeId node) { storage(node).wipe(); }

void SimDisk::set_faults(NodeId node, DiskFaults faults) { storage(node).set_faults(faults); }

void SimDisk::for_each_file(
    NodeId node, const std::function<void(const std::string& name, ByteView bytes)>& visit) const {
  std::shared_ptr<NodeStorage> found = find_storage(node);
  if (found != nullptr) found->for_each_file(visit);
}

DiskCounters SimDisk::counters() const {
  DiskCounters total;
  for (const auto& [node, storage] : nodes_) {
    total.writes += storage->counters().writes;
    total.bytes_written += storage->counters().bytes_written;
    total.syncs += storage->counters().syncs;
  }
  return total;
}

uint64_t SimDisk::bytes_stored(NodeId node) const {
  std::shared_ptr<NodeStorage> found = find_storage(node);
  return found == nullptr ? 0 : found->bytes_stored();
}

}  // namespace msgsim::sim
