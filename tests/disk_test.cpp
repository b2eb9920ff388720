// The simulated disk: the file model on its own (NodeStorage), then SQLite through the VFS
// under crashes, torn writes, fsync failures and a full disk.
#include <gtest/gtest.h>

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "impl/base/hash.h"
#include "impl/base/sqlite.h"
#include "sim/disk.h"

namespace msgsim::sim {
namespace {

Bytes filled(size_t size, uint8_t value) { return Bytes(size, value); }

Bytes read_all(const SimFile& file) {
  Bytes out(file.current.size());
  NodeStorage::read(file, 0, out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The file model

TEST(NodeStorage, WritesAreVisibleAtOnceAndDurableOnlyAfterSync) {
  NodeStorage storage;
  SimFilePtr file = storage.create("a");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(storage.write(file, 0, filled(1000, 7)), DiskOutcome::ok);
  EXPECT_EQ(read_all(*file), filled(1000, 7));
  EXPECT_TRUE(storage.durable_bytes(file).empty());
  EXPECT_EQ(storage.unsynced_ops(), 1u);
  ASSERT_EQ(storage.sync(file), DiskOutcome::ok);
  EXPECT_EQ(storage.durable_bytes(file), filled(1000, 7));
  EXPECT_EQ(storage.unsynced_ops(), 0u);
}

TEST(FileImage, ClonesShareBlocksUntilEitherSideWrites) {
  FileImage original;
  original.write(0, filled(3000, 1));
  FileImage copy = original.clone();
  copy.write(1500, filled(10, 2));  // copies the one block it touches
  original.write(0, filled(5, 3));
  original.resize(1200);            // the shrink clears the tail of a block the copy shares
  copy.resize(4000);
  Bytes expected_copy = filled(4000, 0);
  std::fill(expected_copy.begin(), expected_copy.begin() + 3000, 1);
  std::fill(expected_copy.begin() + 1500, expected_copy.begin() + 1510, 2);
  EXPECT_EQ(copy.to_bytes(), expected_copy);
  Bytes expected_original = filled(1200, 1);
  std::fill(expected_original.begin(), expected_original.begin() + 5, 3);
  EXPECT_EQ(original.to_bytes(), expected_original);
  original.resize(3000);  // grows with zeros, not with the copy's bytes
  EXPECT_EQ(original.copy(1200, 3000), filled(1800, 0));
  {
    FileImage short_lived = copy.clone();
    short_lived.write(0, filled(4000, 9));
  }
  EXPECT_EQ(copy.to_bytes(), expected_copy);  // a clone gone takes nothing of the copy's
}

TEST(NodeStorage, DurableImagesCopyToAnotherDiskAsSyncedFiles) {
  // The store check's copy: each file's durable image (unsynced writes and a shrink undone),
  // created on another disk with nothing queued, so a crash there keeps it whole.
  NodeStorage storage;
  SimFilePtr a = storage.create("a");
  SimFilePtr b = storage.create("b");
  ASSERT_EQ(storage.write(a, 0, filled(3000, 1)), DiskOutcome::ok);
  ASSERT_EQ(storage.write(b, 0, filled(100, 2)), DiskOutcome::ok);
  ASSERT_EQ(storage.sync(a), DiskOutcome::ok);
  ASSERT_EQ(storage.sync(b), DiskOutcome::ok);
  ASSERT_EQ(storage.write(a, 1000, filled(5000, 3)), DiskOutcome::ok);  // unsynced: not copied
  ASSERT_EQ(storage.truncate(b, 10), DiskOutcome::ok);                   // likewise
  NodeStorage copy;
  storage.for_each_durable_image([&](const std::string& name, FileImage image) {
    ASSERT_NE(copy.create_synced(name, std::move(image)), nullptr);
  });
  std::map<std::string, Bytes> copied;
  copy.for_each_file([&](const std::string& name, ByteView bytes) { copied[name] = Bytes(bytes.begin(), bytes.end()); });
  EXPECT_EQ(copied, (std::map<std::string, Bytes>{{"a", filled(3000, 1)}, {"b", filled(100, 2)}}));
  EXPECT_EQ(copy.unsynced_ops(), 0u);
  Prng rng(1);
  copy.crash(CrashDisk::lose_unsynced, rng);
  EXPECT_EQ(storage.durable_bytes(a), read_all(*copy.find("a")));
  EXPECT_EQ(read_all(*storage.find("a")).size(), 6000u);  // the original keeps its current image
}

TEST(NodeStorage, ReadPastTheEndZeroFills) {
  NodeStorage storage;
  SimFilePtr file = storage.create("a");
  ASSERT_EQ(storage.write(file, 0, filled(10, 9)), DiskOutcome::ok);
  Bytes out(20, 0xff);
  EXPECT_EQ(NodeStorage::read(*file, 5, out), 5u);
  EXPECT_EQ(Bytes(out.begin(), out.begin() + 5), filled(5, 9));
  EXPECT_EQ(Bytes(out.begin() + 5, out.end()), filled(15, 0));
}

TEST(NodeStorage, CrashModesKeepOrLoseUnsyncedWrites) {
  Prng rng(1);
  NodeStorage storage;
  SimFilePtr file = storage.create("a");
  ASSERT_EQ(storage.write(file, 0, filled(600, 1)), DiskOutcome::ok);
  ASSERT_EQ(storage.sync(file), DiskOutcome::ok);
  ASSERT_EQ(storage.write(file, 0, filled(700, 2)), DiskOutcome::ok);

  storage.crash(CrashDisk::keep_unsynced, rng);  // the page cache survives a process crash
  file = storage.find("a");
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(read_all(*file), filled(700, 2));
  EXPECT_EQ(storage.unsynced_ops(), 1u);  // still not on the platter

  storage.crash(CrashDisk::lose_unsynced, rng);
  EXPECT_EQ(read_all(*storage.find("a")), filled(600, 1));
  EXPECT_EQ(storage.unsynced_ops(), 0u);
}

// Checks one torn outcome of writing `value` over [begin, end) of a file whose durable
// content was `before`: every 512-byte sector of the range is all new or all old, and nothing
// outside the range changed. Returns how many sectors were written (-1 on a violation).
int check_torn(const Bytes& before, const Bytes& after, uint64_t begin, uint64_t end, uint8_t value) {
  for (uint64_t i = 0; i < std::max<uint64_t>(after.size(), before.size()); ++i) {
    if (i >= begin && i < end) continue;
    const uint8_t old = i < before.size() ? before[i] : 0;
    const uint8_t now = i < after.size() ? after[i] : 0;
    if (old != now) return -1;
  }
  int written = 0;
  for (uint64_t sector = begin / kSectorBytes * kSectorBytes; sector < end; sector += kSectorBytes) {
    const uint64_t lo = std::max(begin, sector);
    const uint64_t hi = std::min(end, sector + kSectorBytes);
    int fresh = 0;
    for (uint64_t i = lo; i < hi; ++i) {
      const uint8_t now = i < after.size() ? after[i] : 0;
      const uint8_t old = i < before.size() ? before[i] : 0;
      if (now == value) {
        fresh++;
      } else if (now != old) {
        return -1;
      }
    }
    if (fresh != 0 && fresh != static_cast<int>(hi - lo)) return -1;  // torn inside a sector
    written += fresh != 0;
  }
  return written;
}

TEST(NodeStorage, TornWriteTearsAt512ByteSectors) {
  // An unaligned write over existing data: [100, 2100) covers sectors 0..4, partially the
  // first and the last.
  const uint64_t begin = 100;
  const uint64_t end = 2100;
  const Bytes before = filled(4096, 0x11);
  std::vector<int> sector_written(5, 0);
  int all_or_nothing = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    Prng rng(seed);
    NodeStorage storage;
    SimFilePtr file = storage.create("f");
    ASSERT_EQ(storage.write(file, 0, before), DiskOutcome::ok);
    ASSERT_EQ(storage.sync(file), DiskOutcome::ok);
    ASSERT_EQ(storage.write(file, begin, filled(end - begin, 0xee)), DiskOutcome::ok);
    storage.crash(CrashDisk::torn, rng);
    const Bytes after = read_all(*storage.find("f"));
    ASSERT_EQ(after.size(), 4096u);
    const int written = check_torn(before, after, begin, end, 0xee);
    ASSERT_GE(written, 0) << "seed " << seed;
    if (written == 0 || written == 5) all_or_nothing++;
    for (int s = 0; s < 5; ++s) {
      const uint64_t probe = std::max<uint64_t>(begin, static_cast<uint64_t>(s) * kSectorBytes);
      sector_written[s] += after[probe] == 0xee;
    }
  }
  // Every sector was sometimes written and sometimes not, and most outcomes were mixed.
  for (int s = 0; s < 5; ++s) {
    EXPECT_GT(sector_written[s], 0) << "sector " << s;
    EXPECT_LT(sector_written[s], 200) << "sector " << s;
  }
  EXPECT_LT(all_or_nothing, 100);
}

TEST(NodeStorage, TornAppendGrowsTheFileOnlyByWrittenSectors) {
  for (uint64_t seed = 0; seed < 100; ++seed) {
    Prng rng(seed);
    NodeStorage storage;
    SimFilePtr file = storage.create("f");
    ASSERT_EQ(storage.write(file, 0, filled(1500, 0x5a)), DiskOutcome::ok);
    storage.crash(CrashDisk::torn, rng);
    const Bytes after = read_all(*storage.find("f"));
    ASSERT_LE(after.size(), 1500u);
    ASSERT_GE(check_torn({}, after, 0, 1500, 0x5a), 0) << "seed " << seed;
    if (!after.empty()) {
      // The file ends where its last written sector (or the write) ends.
      EXPECT_TRUE(after.size() % kSectorBytes == 0 || after.size() == 1500u) << after.size();
      EXPECT_EQ(after.back(), 0x5a);
    }
  }
}

TEST(NodeStorage, TornCrashKeepsAPrefixInIssueOrder) {
  // Four unsynced writes to separate sectors of two files: after a torn crash, a write that
  // reached the disk means every earlier one did too (all but the last fully).
  int cuts_seen[5] = {0, 0, 0, 0, 0};
  for (uint64_t seed = 0; seed < 300; ++seed) {
    Prng rng(seed);
    NodeStorage storage;
    SimFilePtr a = storage.create("a");
    SimFilePtr b = storage.create("b");
    ASSERT_EQ(storage.write(a, 0, filled(512, 1)), DiskOutcome::ok);
    ASSERT_EQ(storage.write(b, 0, filled(512, 2)), DiskOutcome::ok);
    ASSERT_EQ(storage.write(a, 512, filled(512, 3)), DiskOutcome::ok);
    ASSERT_EQ(storage.write(b, 512, filled(512, 4)), DiskOutcome::ok);
    storage.crash(CrashDisk::torn, rng);
    const Bytes after_a = read_all(*storage.find("a"));
    const Bytes after_b = read_all(*storage.find("b"));
    const bool reached[4] = {after_a.size() >= 512 && after_a[0] == 1, after_b.size() >= 512 && after_b[0] == 2,
                             after_a.size() >= 1024 && after_a[512] == 3,
                             after_b.size() >= 1024 && after_b[512] == 4};
    int count = 0;
    while (count < 4 && reached[count]) count++;
    for (int i = count; i < 4; ++i) ASSERT_FALSE(reached[i]) << "seed " << seed << ": a gap in the prefix";
    cuts_seen[count]++;
  }
  for (int count = 0; count < 4; ++count) EXPECT_GT(cuts_seen[count], 0) << count;
}

TEST(NodeStorage, DeletionIsQueuedUnlessSyncedAndCreationIsDurable) {
  Prng rng(3);
  NodeStorage storage;
  SimFilePtr file = storage.create("a");
  ASSERT_EQ(storage.write(file, 0, filled(100, 1)), DiskOutcome::ok);
  ASSERT_EQ(storage.sync(file), DiskOutcome::ok);
  storage.remove(file, /*durable_now=*/false);
  EXPECT_EQ(storage.find("a"), nullptr);
  EXPECT_EQ(storage.bytes_stored(), 0u);
  storage.crash(CrashDisk::lose_unsynced, rng);
  ASSERT_NE(storage.find("a"), nullptr) << "an unsynced deletion is undone by a power loss";
  EXPECT_EQ(read_all(*storage.find("a")), filled(100, 1));

  storage.remove(storage.find("a"), /*durable_now=*/true);
  storage.crash(CrashDisk::lose_unsynced, rng);
  EXPECT_EQ(storage.find("a"), nullptr);

  ASSERT_NE(storage.create("new"), nullptr);  // never written, never synced: still exists
  storage.crash(CrashDisk::lose_unsynced, rng);
  EXPECT_NE(storage.find("new"), nullptr);
}

TEST(NodeStorage, RecreatingANameMakesItsQueuedDeletionDurable) {
  Prng rng(4);
  NodeStorage storage;
  SimFilePtr old_file = storage.create("a");
  ASSERT_EQ(storage.write(old_file, 0, filled(100, 1)), DiskOutcome::ok);
  ASSERT_EQ(storage.sync(old_file), DiskOutcome::ok);
  storage.remove(old_file, /*durable_now=*/false);
  SimFilePtr new_file = storage.create("a");
  ASSERT_NE(new_file, nullptr);
  storage.crash(CrashDisk::lose_unsynced, rng);
  ASSERT_NE(storage.find("a"), nullptr);
  EXPECT_TRUE(storage.find("a")->current.empty());
}

TEST(NodeStorage, TruncationIsLostWithoutSync) {
  Prng rng(5);
  NodeStorage storage;
  SimFilePtr file = storage.create("a");
  ASSERT_EQ(storage.write(file, 0, filled(4096, 1)), DiskOutcome::ok);
  ASSERT_EQ(storage.sync(file), DiskOutcome::ok);
  ASSERT_EQ(storage.truncate(file, 1000), DiskOutcome::ok);
  EXPECT_EQ(file->current.size(), 1000u);
  storage.crash(CrashDisk::lose_unsynced, rng);
  EXPECT_EQ(storage.find("a")->current.size(), 4096u);
  file = storage.find("a");
  ASSERT_EQ(storage.truncate(file, 1000), DiskOutcome::ok);
  ASSERT_EQ(storage.sync(file), DiskOutcome::ok);
  storage.crash(CrashDisk::lose_unsynced, rng);
  EXPECT_EQ(storage.find("a")->current.size(), 1000u);
}

TEST(NodeStorage, FrozenNodeDiscardsEveryMutationUntilCrash) {
  Prng rng(6);
  NodeStorage storage;
  SimFilePtr file = storage.create("a");
  ASSERT_EQ(storage.write(file, 0, filled(100, 1)), DiskOutcome::ok);
  ASSERT_EQ(storage.sync(file), DiskOutcome::ok);
  storage.freeze();
  EXPECT_EQ(storage.write(file, 0, filled(200, 2)), DiskOutcome::ok);
  EXPECT_EQ(storage.truncate(file, 0), DiskOutcome::ok);
  EXPECT_EQ(storage.sync(file), DiskOutcome::ok);
  storage.remove(file, /*durable_now=*/true);
  EXPECT_EQ(storage.create("b"), nullptr);
  EXPECT_EQ(read_all(*file), filled(100, 1));
  EXPECT_EQ(storage.unsynced_ops(), 0u);
  storage.crash(CrashDisk::keep_unsynced, rng);
  EXPECT_FALSE(storage.frozen());
  file = storage.find("a");
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(storage.write(file, 0, filled(200, 2)), DiskOutcome::ok);
  EXPECT_EQ(read_all(*file), filled(200, 2));
}

TEST(NodeStorage, FreezeAfterCountsMutations) {
  NodeStorage storage;
  SimFilePtr file = storage.create("a");
  storage.freeze_after(2);
  EXPECT_EQ(storage.write(file, 0, filled(10, 1)), DiskOutcome::ok);
  EXPECT_FALSE(storage.frozen());
  EXPECT_EQ(storage.write(file, 10, filled(10, 2)), DiskOutcome::ok);
  EXPECT_TRUE(storage.frozen());
  EXPECT_EQ(storage.write(file, 20, filled(10, 3)), DiskOutcome::ok);
  EXPECT_EQ(file->current.size(), 20u);  // the third write came after the crash point
}

TEST(NodeStorage, WritebackKeepsTheQueueBoundedAndInOrder) {
  Prng rng(7);
  NodeStorage storage;
  storage.set_writeback_limits(/*ops_max=*/8, /*bytes_max=*/1 << 20);
  SimFilePtr file = storage.create("a");
  for (uint8_t i = 0; i < 20; ++i) {
    ASSERT_EQ(storage.write(file, static_cast<uint64_t>(i) * 10, filled(10, i + 1)), DiskOutcome::ok);
    EXPECT_LE(storage.unsynced_ops(), 8u);
  }
  storage.crash(CrashDisk::lose_unsynced, rng);
  // The 12 oldest writes were written back; the 8 newest were lost.
  const Bytes after = read_all(*storage.find("a"));
  ASSERT_EQ(after.size(), 120u);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(after[static_cast<size_t>(i) * 10], i + 1);
}

TEST(NodeStorage, FullDiskRefusesGrowthAndChangesNothing) {
  NodeStorage storage;
  storage.set_faults(DiskFaults{.fsync_fails = false, .capacity_bytes = 1000});
  SimFilePtr file = storage.create("a");
  EXPECT_EQ(storage.write(file, 0, filled(1001, 1)), DiskOutcome::full);
  EXPECT_TRUE(file->current.empty());
  EXPECT_EQ(storage.unsynced_ops(), 0u);
  EXPECT_EQ(storage.write(file, 0, filled(1000, 1)), DiskOutcome::ok);
  EXPECT_EQ(storage.write(file, 0, filled(1000, 2)), DiskOutcome::ok) << "overwriting needs no space";
  EXPECT_EQ(storage.truncate(file, 1001), DiskOutcome::full);
  EXPECT_EQ(storage.bytes_stored(), 1000u);
}

TEST(NodeStorage, FailedFsyncLeavesTheDataUnsynced) {
  Prng rng(8);
  NodeStorage storage;
  SimFilePtr file = storage.create("a");
  ASSERT_EQ(storage.write(file, 0, filled(100, 1)), DiskOutcome::ok);
  storage.set_faults(DiskFaults{.fsync_fails = true});
  EXPECT_EQ(storage.sync(file), DiskOutcome::fsync_failed);
  EXPECT_EQ(storage.unsynced_ops(), 1u);
  storage.crash(CrashDisk::lose_unsynced, rng);
  EXPECT_TRUE(storage.find("a")->current.empty());
}

TEST(NodeStorage, CountersSeeOnlyAppliedWritesAndSyncs) {
  NodeStorage storage;
  storage.set_faults(DiskFaults{.fsync_fails = false, .capacity_bytes = 1000});
  SimFilePtr file = storage.create("a");
  ASSERT_EQ(storage.write(file, 0, filled(600, 1)), DiskOutcome::ok);
  ASSERT_EQ(storage.write(file, 100, filled(50, 2)), DiskOutcome::ok);
  ASSERT_EQ(storage.write(file, 600, filled(500, 3)), DiskOutcome::full);  // refused: not counted
  ASSERT_EQ(storage.sync(file), DiskOutcome::ok);
  storage.set_faults(DiskFaults{.fsync_fails = true, .capacity_bytes = 1000});
  ASSERT_EQ(storage.sync(file), DiskOutcome::fsync_failed);  // failed: not counted
  storage.freeze();
  ASSERT_EQ(storage.write(file, 0, filled(10, 4)), DiskOutcome::ok);  // discarded: not counted
  EXPECT_EQ(storage.counters().writes, 2u);
  EXPECT_EQ(storage.counters().bytes_written, 650u);
  EXPECT_EQ(storage.counters().syncs, 1u);
}

TEST(NodeStorage, WipeRemovesEveryFile) {
  NodeStorage storage;
  SimFilePtr file = storage.create("a");
  ASSERT_EQ(storage.write(file, 0, filled(100, 1)), DiskOutcome::ok);
  ASSERT_EQ(storage.sync(file), DiskOutcome::ok);
  const uint64_t before = storage.incarnation();
  storage.wipe();
  EXPECT_EQ(storage.find("a"), nullptr);
  EXPECT_EQ(storage.bytes_stored(), 0u);
  EXPECT_GT(storage.incarnation(), before);
}

// ---------------------------------------------------------------------------------------------
// The file model against a reference: the two-image model the disk used to be (every file's
// written and synced images held apart, the queue holding each operation's data), kept here
// as simply as it can be written. NodeStorage keeps one image and undo records instead; after
// every step of random writes, truncates, syncs, deletions, recreations, faults, freezes and
// crashes of every mode, both must show the same current and durable bytes.

class TwoImageModel {
 public:
  struct File {
    std::string name;
    Bytes current;
    Bytes durable;
    bool exists = true;
  };
  using FilePtr = std::shared_ptr<File>;

  size_t ops_max = NodeStorage::kUnsyncedOpsMax;
  uint64_t bytes_max = NodeStorage::kUnsyncedBytesMax;
  DiskFaults faults;
  bool frozen = false;
  uint64_t countdown = 0;
  std::map<std::string, FilePtr> files;

  FilePtr find(const std::string& name) const {
    auto it = files.find(name);
    return it == files.end() || !it->second->exists ? nullptr : it->second;
  }
  FilePtr create(const std::string& name) {
    if (frozen) return nullptr;
    auto it = files.find(name);
    if (it != files.end()) {
      const FilePtr deleted = it->second;
      write_back_through([&](const Op& op) { return op.kind == Kind::remove && op.file == deleted; });
    }
    if (files.size() >= NodeStorage::kFilesMax || !admit()) return nullptr;
    auto file = std::make_shared<File>();
    file->name = name;
    files.emplace(name, file);
    return file;
  }
  DiskOutcome write(const FilePtr& file, uint64_t offset, const Bytes& data) {
    if (frozen) return DiskOutcome::ok;
    if (offset + data.size() > file->current.size() && file->exists &&
        stored() + (offset + data.size() - file->current.size()) > faults.capacity_bytes) {
      return DiskOutcome::full;
    }
    if (!admit()) return DiskOutcome::ok;
    put(file->current, offset, data);
    if (file->exists) enqueue(Op{file, Kind::write, offset, data});
    return DiskOutcome::ok;
  }
  DiskOutcome truncate(const FilePtr& file, uint64_t size) {
    if (frozen) return DiskOutcome::ok;
    if (size > file->current.size() && file->exists &&
        stored() + (size - file->current.size()) > faults.capacity_bytes) {
      return DiskOutcome::full;
    }
    if (!admit()) return DiskOutcome::ok;
    file->current.resize(size, 0);
    if (file->exists) enqueue(Op{file, Kind::truncate, size, {}});
    return DiskOutcome::ok;
  }
  DiskOutcome sync(const FilePtr& file) {
    if (frozen) return DiskOutcome::ok;
    if (faults.fsync_fails) return DiskOutcome::fsync_failed;
    if (!admit()) return DiskOutcome::ok;
    write_back_through([](const Op& op) { return op.kind == Kind::remove; });
    std::deque<Op> others;
    for (Op& op : queue) {
      if (op.file == file) {
        apply(op);
      } else {
        others.push_back(std::move(op));
      }
    }
    queue = std::move(others);
    return DiskOutcome::ok;
  }
  void remove(const FilePtr& file, bool durable_now) {
    if (!file->exists || !admit()) return;
    file->exists = false;
    enqueue(Op{file, Kind::remove, 0, {}});
    if (durable_now) write_back_through([](const Op& op) { return op.kind == Kind::remove; });
  }
  void crash(CrashDisk mode, Prng& rng) {
    if (mode == CrashDisk::torn && !queue.empty()) {
      const size_t cut = static_cast<size_t>(rng.below(queue.size()));
      for (size_t i = 0; i < cut; ++i) apply(queue[i]);
      const Op& op = queue[cut];
      if (op.kind != Kind::write) {
        if (rng.below(2) == 1) apply(op);
      } else {
        const uint64_t end = op.offset + op.data.size();
        for (uint64_t sector = op.offset / kSectorBytes * kSectorBytes; sector < end; sector += kSectorBytes) {
          const uint64_t lo = std::max(op.offset, sector);
          const uint64_t hi = std::min(end, sector + kSectorBytes);
          if (rng.below(2) == 1) {
            put(op.file->durable, lo, Bytes(op.data.begin() + static_cast<std::ptrdiff_t>(lo - op.offset),
                                             op.data.begin() + static_cast<std::ptrdiff_t>(hi - op.offset)));
          }
        }
      }
    }
    if (mode != CrashDisk::keep_unsynced) {
      queue.clear();
      for (auto& [name, file] : files) {
        file->current = file->durable;
        file->exists = true;
      }
    }
    frozen = false;
    countdown = 0;
  }
  size_t unsynced_ops() const { return queue.size(); }
  uint64_t stored() const {
    uint64_t total = 0;
    for (const auto& [name, file] : files) total += file->exists ? file->current.size() : 0;
    return total;
  }

 private:
  enum class Kind { write, truncate, remove };
  struct Op {
    FilePtr file;
    Kind kind;
    uint64_t offset;
    Bytes data;
  };

  static void put(Bytes& image, uint64_t offset, const Bytes& data) {
    if (offset + data.size() > image.size()) image.resize(offset + data.size(), 0);
    std::copy(data.begin(), data.end(), image.begin() + static_cast<std::ptrdiff_t>(offset));
  }
  bool admit() {
    if (frozen) return false;
    if (countdown > 0 && --countdown == 0) frozen = true;
    return true;
  }
  uint64_t queued_bytes() const {
    uint64_t total = 0;
    for (const Op& op : queue) total += op.data.size();
    return total;
  }
  void enqueue(Op op) {
    queue.push_back(std::move(op));
    while (queue.size() > ops_max || queued_bytes() > bytes_max) write_back_oldest();
  }
  void write_back_oldest() {
    Op op = std::move(queue.front());
    queue.pop_front();
    apply(op);
  }
  void write_back_through(const std::function<bool(const Op&)>& is_target) {
    size_t count = 0;
    for (size_t i = 0; i < queue.size(); ++i) {
      if (is_target(queue[i])) count = i + 1;
    }
    for (size_t i = 0; i < count; ++i) write_back_oldest();
  }
  void apply(const Op& op) {
    switch (op.kind) {
      case Kind::write: put(op.file->durable, op.offset, op.data); break;
      case Kind::truncate: op.file->durable.resize(op.offset, 0); break;
      case Kind::remove: {
        auto it = files.find(op.file->name);
        if (it != files.end() && it->second == op.file) files.erase(it);
        break;
      }
    }
  }

  std::deque<Op> queue;
};

using FileList = std::vector<std::pair<std::string, Bytes>>;

FileList files_of(const NodeStorage& storage, bool durable) {
  FileList out;
  auto visit = [&](const std::string& name, ByteView bytes) { out.emplace_back(name, Bytes(bytes.begin(), bytes.end())); };
  if (durable) {
    storage.for_each_durable_file(visit);
  } else {
    storage.for_each_file(visit);
  }
  return out;
}

FileList files_of(const TwoImageModel& model, bool durable) {
  FileList out;
  for (const auto& [name, file] : model.files) {
    if (durable || file->exists) out.emplace_back(name, durable ? file->durable : file->current);
  }
  return out;
}

// One random history of `steps` operations on both models; the first difference is a failure.
::testing::AssertionResult same_as_two_image_model(uint64_t seed, int steps) {
  Prng rng(seed);
  NodeStorage storage;
  TwoImageModel model;
  const size_t ops_max = 1 + rng.below(12);
  const uint64_t bytes_max = 200 + rng.below(6000);
  storage.set_writeback_limits(ops_max, bytes_max);
  model.ops_max = ops_max;
  model.bytes_max = bytes_max;
  // Handles of this incarnation, as the VFS holds them: possibly on deleted files.
  std::vector<std::pair<TwoImageModel::FilePtr, SimFilePtr>> handles;
  const char* names[] = {"db", "db-wal", "db-journal"};
  uint8_t fill = 0;
  for (int step = 0; step < steps; ++step) {
    const std::string where = "seed " + std::to_string(seed) + " step " + std::to_string(step);
    const uint64_t choice = rng.below(100);
    const std::string name = names[rng.below(3)];
    if (choice < 8 || handles.empty()) {  // open or create
      SimFilePtr file = storage.find(name);
      TwoImageModel::FilePtr ref = model.find(name);
      if ((file == nullptr) != (ref == nullptr)) return ::testing::AssertionFailure() << where << ": find differs";
      if (file == nullptr) {
        file = storage.create(name);
        ref = model.create(name);
        if ((file == nullptr) != (ref == nullptr)) return ::testing::AssertionFailure() << where << ": create differs";
      }
      if (file != nullptr && handles.size() < 6) handles.emplace_back(ref, file);
    } else if (choice < 50) {  // write, often at page-like offsets, sometimes unaligned
      auto& [ref, file] = handles[rng.below(handles.size())];
      const uint64_t offset = rng.chance(0.5) ? rng.below(8) * 512 : rng.below(4000);
      const Bytes data(rng.below(1600), ++fill);
      if (storage.write(file, offset, data) != model.write(ref, offset, data)) {
        return ::testing::AssertionFailure() << where << ": write outcome differs";
      }
    } else if (choice < 58) {
      auto& [ref, file] = handles[rng.below(handles.size())];
      const uint64_t size = rng.below(5000);
      if (storage.truncate(file, size) != model.truncate(ref, size)) {
        return ::testing::AssertionFailure() << where << ": truncate outcome differs";
      }
    } else if (choice < 72) {
      auto& [ref, file] = handles[rng.below(handles.size())];
      if (storage.sync(file) != model.sync(ref)) return ::testing::AssertionFailure() << where << ": sync outcome differs";
    } else if (choice < 80) {  // delete by name or close a delete-on-close handle
      auto& [ref, file] = handles[rng.below(handles.size())];
      const bool durable_now = rng.chance(0.3);
      storage.remove(file, durable_now);
      model.remove(ref, durable_now);
    } else if (choice < 84) {
      DiskFaults faults;
      faults.fsync_fails = rng.chance(0.3);
      faults.capacity_bytes = rng.chance(0.5) ? UINT64_MAX : 2000 + rng.below(10000);
      storage.set_faults(faults);
      model.faults = faults;
    } else if (choice < 87) {
      const uint64_t mutations = 1 + rng.below(6);
      storage.freeze_after(mutations);
      model.countdown = mutations;
    } else if (choice < 99) {
      const auto mode = static_cast<CrashDisk>(rng.below(3));
      const uint64_t crash_seed = rng.next_u64();
      Prng a(crash_seed);
      Prng b(crash_seed);
      storage.crash(mode, a);
      model.crash(mode, b);
      if (a.next_u64() != b.next_u64()) return ::testing::AssertionFailure() << where << ": crash drew differently";
      handles.clear();  // a new incarnation: the VFS's old handles touch nothing
    } else {
      storage.freeze();
      model.frozen = true;
    }
    if (storage.frozen() != model.frozen) return ::testing::AssertionFailure() << where << ": frozen differs";
    if (storage.unsynced_ops() != model.unsynced_ops()) {
      return ::testing::AssertionFailure() << where << ": " << storage.unsynced_ops() << " unsynced ops, model "
                                           << model.unsynced_ops();
    }
    if (storage.bytes_stored() != model.stored()) return ::testing::AssertionFailure() << where << ": bytes_stored differs";
    if (files_of(storage, false) != files_of(model, false)) return ::testing::AssertionFailure() << where << ": current images differ";
    if (files_of(storage, true) != files_of(model, true)) return ::testing::AssertionFailure() << where << ": durable images differ";
    for (const auto& [ref, file] : handles) {  // handles on deleted files see their own copies
      Bytes seen(file->size());
      NodeStorage::read(*file, 0, seen);
      if (seen != ref->current) return ::testing::AssertionFailure() << where << ": a handle of " << ref->name << " reads differently";
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(NodeStorage, SameBytesAsTheTwoImageModelAfterEveryStep) {
  for (uint64_t seed = 1; seed <= 300; ++seed) ASSERT_TRUE(same_as_two_image_model(seed, 300));
}

TEST(FileImage, GrowsShrinksAndRereadsZerosAcrossBlocks) {
  FileImage image;
  image.write(1000, filled(3000, 7));  // spans four blocks, zeros before
  ASSERT_EQ(image.size(), 4000u);
  EXPECT_EQ(image.copy(0, 1000), filled(1000, 0));
  EXPECT_EQ(image.copy(1000, 4000), filled(3000, 7));
  image.resize(1500);  // in the middle of a block
  image.resize(5000);  // what was cut must read back as zeros
  EXPECT_EQ(image.copy(1000, 1500), filled(500, 7));
  EXPECT_EQ(image.copy(1500, 5000), filled(3500, 0));
  EXPECT_EQ(image.allocated_bytes(), 5 * FileImage::kBlockBytes);
  image.resize(0);
  EXPECT_EQ(image.allocated_bytes(), 0u);
}

// ---------------------------------------------------------------------------------------------
// SQLite through the VFS

// One node's database across crashes, as the simulator drives it: set_context before every
// use, freeze, close, crash, reopen.
class DbNode {
 public:
  DbNode(SimDisk& disk, NodeId id, uint64_t seed, bool full_sync)
      : disk_(disk), id_(id), disk_rng_(Prng(seed).split("disk")), crash_rng_(Prng(seed).split("crash")),
        full_sync_(full_sync) {}
  ~DbNode() { close(); }

  sqlite3* db() {
    disk_.set_context(id_, now_ns_, &disk_rng_);
    return db_;
  }

  ::testing::AssertionResult open() {
    disk_.set_context(id_, now_ns_, &disk_rng_);
    Result<sqlite3*> opened = disk_.open(id_, "node.db");
    if (!opened.ok()) return ::testing::AssertionFailure() << opened.error().message;
    db_ = *opened;
    const std::string pragmas = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") +
                                (full_sync_ ? "FULL" : "OFF") +
                                "; PRAGMA cache_size=16; PRAGMA wal_autocheckpoint=40;";
    Status configured = full_sync_ ? sql::configure_durable(db_) : sql::exec(db_, pragmas);
    if (configured.ok() && full_sync_) configured = sql::exec(db_, pragmas);
    if (!configured.ok()) return ::testing::AssertionFailure() << configured.error().message;
    if (*sql::query_text(db_, "PRAGMA journal_mode") != "wal") return ::testing::AssertionFailure() << "not WAL";
    return ::testing::AssertionSuccess();
  }

  void close() {
    if (db_ != nullptr) {
      disk_.set_context(id_, now_ns_, &disk_rng_);
      sqlite3_close_v2(db_);
      db_ = nullptr;
    }
  }

  // The process dies: nothing it does from here reaches the disk; then the loss model.
  ::testing::AssertionResult crash(CrashDisk mode) {
    disk_.freeze(id_);
    close();
    disk_.crash(id_, mode, crash_rng_);
    now_ns_ += kNanosPerSecond;
    return open();
  }

  NodeId id() const { return id_; }
  Prng& crash_rng() { return crash_rng_; }

 private:
  SimDisk& disk_;
  NodeId id_;
  Prng disk_rng_;
  Prng crash_rng_;
  bool full_sync_;
  int64_t now_ns_ = 1'700'000'000LL * kNanosPerSecond;
  sqlite3* db_ = nullptr;
};

// A workload whose every transaction is a pure function of its number, so the state after
// transaction m is known exactly: transaction j inserts rows (j, 0..rows-1) with generated
// bodies, sometimes deletes the rows of transaction j - kDeleteLag, and sets meta.last_txn = j.
constexpr int64_t kDeleteLag = 20;

struct TxnPlan {
  int rows = 0;
  bool deletes_older = false;
};

TxnPlan plan_of(int64_t txn) {
  Prng p = Prng(0xd15c).split(static_cast<uint64_t>(txn));
  TxnPlan plan;
  plan.rows = 1 + static_cast<int>(p.below(5));
  plan.deletes_older = txn > kDeleteLag && p.below(4) != 0;
  return plan;
}

Bytes body_of(int64_t txn, int64_t seq) {
  Prng p = Prng(0xb0d1).split(static_cast<uint64_t>(txn * 16 + seq));
  Bytes body(p.below(1500));
  p.fill(body);
  return body;
}

Status create_schema(sqlite3* db) {
  return sql::exec(db,
                   "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, txn INTEGER NOT NULL, "
                   "seq INTEGER NOT NULL, body BLOB NOT NULL);"
                   "CREATE INDEX IF NOT EXISTS items_by_txn ON items(txn, seq);"
                   "CREATE TABLE IF NOT EXISTS meta(k INTEGER PRIMARY KEY, last_txn INTEGER NOT NULL);");
}

// Runs transaction `txn`; returns the SQLite code of the first failure (SQLITE_OK if none).
int run_txn(sqlite3* db, int64_t txn) {
  const TxnPlan plan = plan_of(txn);
  int rc = sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return rc;
  Result<sql::Statement> insert = sql::prepare(db, "INSERT INTO items(txn, seq, body) VALUES(?, ?, ?)");
  if (!insert.ok()) return sql::sqlite_code(db);
  for (int seq = 0; seq < plan.rows; ++seq) {
    const Bytes body = body_of(txn, seq);
    if (!insert->bind(1, txn).ok() || !insert->bind(2, int64_t{seq}).ok() || !insert->bind_blob(3, body).ok()) {
      return sql::sqlite_code(db);
    }
    Result<bool> stepped = insert->step();
    if (!stepped.ok()) return sql::sqlite_code(db);
    if (!insert->reset().ok()) return sql::sqlite_code(db);
  }
  if (plan.deletes_older) {
    const std::string del = "DELETE FROM items WHERE txn = " + std::to_string(txn - kDeleteLag);
    rc = sqlite3_exec(db, del.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return rc;
  }
  const std::string meta = "INSERT OR REPLACE INTO meta(k, last_txn) VALUES(1, " + std::to_string(txn) + ")";
  rc = sqlite3_exec(db, meta.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return rc;
  return sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
}

// Checks integrity, then that the database holds exactly the state after some transaction m,
// with every row's body intact; returns m.
Result<int64_t> verify_state(sqlite3* db) {
  Status integrity = sql::check_integrity(db);
  if (!integrity.ok()) return integrity.error();
  Status schema = create_schema(db);
  if (!schema.ok()) return schema.error();
  int64_t last = 0;
  Result<int64_t> found = sql::query_int64(db, "SELECT last_txn FROM meta WHERE k = 1");
  if (found.ok()) {
    last = *found;
  } else if (found.error().code != ErrorCode::not_found) {
    return found.error();
  }
  Result<sql::Statement> rows = sql::prepare(db, "SELECT txn, seq, body FROM items ORDER BY txn, seq");
  if (!rows.ok()) return rows.error();
  for (int64_t txn = 1; txn <= last; ++txn) {
    const bool deleted = txn + kDeleteLag <= last && plan_of(txn + kDeleteLag).deletes_older;
    if (deleted) continue;
    const TxnPlan plan = plan_of(txn);
    for (int64_t seq = 0; seq < plan.rows; ++seq) {
      Result<bool> row = rows->step();
      if (!row.ok()) return row.error();
      const std::string where = "after txn " + std::to_string(last) + ": row (" + std::to_string(txn) + ", " +
                                std::to_string(seq) + ")";
      if (!*row) return make_error(ErrorCode::not_found, where + " missing");
      if (rows->column_int64(0) != txn || rows->column_int64(1) != seq) {
        return make_error(ErrorCode::bad_input, where + " expected, found (" + std::to_string(rows->column_int64(0)) +
                                                    ", " + std::to_string(rows->column_int64(1)) + ")");
      }
      const Bytes expected = body_of(txn, seq);
      const ByteView body = rows->column_blob(2);
      if (!std::equal(body.begin(), body.end(), expected.begin(), expected.end())) {
        return make_error(ErrorCode::bad_input, where + ": body differs");
      }
    }
  }
  Result<bool> extra = rows->step();
  if (!extra.ok()) return extra.error();
  if (*extra) {
    return make_error(ErrorCode::bad_input, "after txn " + std::to_string(last) + ": unexpected row (" +
                                                std::to_string(rows->column_int64(0)) + ", " +
                                                std::to_string(rows->column_int64(1)) + ")");
  }
  return last;
}

CrashDisk random_mode(Prng& rng) { return static_cast<CrashDisk>(rng.below(3)); }

TEST(SimDiskSqlite, WritesAreVisibleAndSurviveAProcessCrash) {
  SimDisk disk;
  DbNode node(disk, 1, 11, /*full_sync=*/false);
  ASSERT_TRUE(node.open());
  ASSERT_TRUE(create_schema(node.db()).ok());
  for (int64_t txn = 1; txn <= 30; ++txn) ASSERT_EQ(run_txn(node.db(), txn), SQLITE_OK);
  Result<int64_t> before = verify_state(node.db());
  ASSERT_TRUE(before.ok()) << before.error().message;
  EXPECT_EQ(*before, 30);
  ASSERT_TRUE(node.crash(CrashDisk::keep_unsynced));
  Result<int64_t> after = verify_state(node.db());
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(*after, 30) << "a process crash loses nothing, even with synchronous=OFF";
}

TEST(SimDiskSqlite, FullSyncCommitSurvivesACrashAfterEveryCommit) {
  SimDisk disk;
  DbNode node(disk, 2, 12, /*full_sync=*/true);
  ASSERT_TRUE(node.open());
  ASSERT_TRUE(create_schema(node.db()).ok());
  Prng rng(99);
  int per_mode[3] = {0, 0, 0};
  for (int64_t txn = 1; txn <= 400; ++txn) {
    ASSERT_EQ(run_txn(node.db(), txn), SQLITE_OK) << "txn " << txn;
    const CrashDisk mode = random_mode(rng);
    per_mode[static_cast<int>(mode)]++;
    ASSERT_TRUE(node.crash(mode));
    Result<int64_t> state = verify_state(node.db());
    ASSERT_TRUE(state.ok()) << "txn " << txn << ", " << to_string(mode) << ": " << state.error().message;
    ASSERT_EQ(*state, txn) << "a committed transaction was lost by a " << to_string(mode) << " crash";
  }
  for (int count : per_mode) EXPECT_GT(count, 50);
}

TEST(SimDiskSqlite, SynchronousOffLosesCommittedTransactions) {
  SimDisk disk;
  DbNode node(disk, 3, 13, /*full_sync=*/false);
  ASSERT_TRUE(node.open());
  ASSERT_TRUE(create_schema(node.db()).ok());
  disk.storage(node.id()).set_writeback_limits(/*ops_max=*/64, /*bytes_max=*/1 << 20);
  Prng rng(7);
  int64_t last = 0;
  int64_t lost = 0;
  int crashes = 0;
  for (int step = 0; step < 300; ++step) {
    ASSERT_EQ(run_txn(node.db(), last + 1), SQLITE_OK);
    last++;
    if (rng.below(10) == 0) {
      ASSERT_TRUE(node.crash(CrashDisk::lose_unsynced));
      crashes++;
      Result<int64_t> state = verify_state(node.db());
      ASSERT_TRUE(state.ok()) << state.error().message;
      ASSERT_LE(*state, last);
      lost += last - *state;
      last = *state;
    }
  }
  EXPECT_GT(crashes, 10);
  EXPECT_GT(lost, 0) << "synchronous=OFF never lost a committed transaction: the disk model keeps unsynced data";
}

struct LoopStats {
  int transactions = 0;
  int crashes = 0;
  int mid_io_crashes = 0;
  int clean_reopens = 0;
  int64_t lost_acknowledged = 0;
};

// Thousands of transactions with crashes at random points (after a commit, or after a random
// number of disk mutations inside whatever SQLite is doing) and in random modes. After every
// crash: integrity_check passes and the database is exactly the state after some transaction
// m; with synchronous=FULL, m is at least the last acknowledged commit.
void crash_loop(bool full_sync, uint64_t seed, int transactions, LoopStats& stats) {
  SimDisk disk;
  DbNode node(disk, 4, seed, full_sync);
  ASSERT_TRUE(node.open());
  ASSERT_TRUE(create_schema(node.db()).ok());
  // A small page cache, so writeback (and with it partial OFF states) happens between crashes.
  disk.storage(node.id()).set_writeback_limits(/*ops_max=*/48, /*bytes_max=*/256 << 10);
  Prng rng(seed);
  int64_t last = 0;          // the state the database should be in, if no crash comes
  int64_t acknowledged = 0;  // the newest commit that returned OK before any crash point
  bool armed = false;
  for (int step = 0; step < transactions; ++step) {
    if (!armed && rng.below(6) == 0) {
      disk.freeze_after(node.id(), 1 + rng.below(60));
      armed = true;
    }
    const int64_t txn = last + 1;
    const int rc = run_txn(node.db(), txn);
    stats.transactions++;
    const bool crashed_inside = disk.frozen(node.id());
    if (!crashed_inside) {
      ASSERT_EQ(rc, SQLITE_OK) << "txn " << txn << ": " << sqlite3_errmsg(node.db());
      acknowledged = txn;
      last = txn;
    }
    const uint64_t dice = rng.below(100);
    if (crashed_inside || dice < 6) {
      const CrashDisk mode = random_mode(rng);
      ASSERT_TRUE(node.crash(mode));
      armed = false;
      stats.crashes++;
      stats.mid_io_crashes += crashed_inside;
      Result<int64_t> state = verify_state(node.db());
      ASSERT_TRUE(state.ok()) << "step " << step << ", txn " << txn << ", " << to_string(mode)
                              << (crashed_inside ? " (mid-I/O)" : "") << ": " << state.error().message;
      ASSERT_LE(*state, txn);
      if (full_sync) {
        ASSERT_GE(*state, acknowledged) << "an acknowledged commit was lost by a " << to_string(mode) << " crash";
      }
      if (*state < acknowledged) stats.lost_acknowledged += acknowledged - *state;
      last = *state;
      acknowledged = std::min(acknowledged, last);
    } else if (dice < 8) {
      // A clean close checkpoints and deletes the WAL; the reopen must find everything.
      disk.freeze_after(node.id(), 0);
      armed = false;
      node.close();
      ASSERT_TRUE(node.open());
      stats.clean_reopens++;
      Result<int64_t> state = verify_state(node.db());
      ASSERT_TRUE(state.ok()) << state.error().message;
      ASSERT_EQ(*state, last);
    }
  }
}

TEST(SimDiskSqlite, IntegrityHoldsAfterEveryCrashWithFullSync) {
  LoopStats stats;
  crash_loop(/*full_sync=*/true, 1001, 3000, stats);
  if (HasFatalFailure()) return;
  EXPECT_GT(stats.crashes, 200);
  EXPECT_GT(stats.mid_io_crashes, 50);
  EXPECT_EQ(stats.lost_acknowledged, 0);
  RecordProperty("crashes", stats.crashes);
  std::printf("FULL: %d transactions, %d crashes (%d mid-I/O), %d clean reopens, %lld acknowledged lost\n",
              stats.transactions, stats.crashes, stats.mid_io_crashes, stats.clean_reopens,
              static_cast<long long>(stats.lost_acknowledged));
}

TEST(SimDiskSqlite, IntegrityHoldsAfterEveryCrashWithSyncOff) {
  LoopStats stats;
  crash_loop(/*full_sync=*/false, 2002, 3000, stats);
  if (HasFatalFailure()) return;
  EXPECT_GT(stats.crashes, 200);
  EXPECT_GT(stats.mid_io_crashes, 50);
  EXPECT_GT(stats.lost_acknowledged, 0);
  std::printf("OFF: %d transactions, %d crashes (%d mid-I/O), %d clean reopens, %lld acknowledged lost\n",
              stats.transactions, stats.crashes, stats.mid_io_crashes, stats.clean_reopens,
              static_cast<long long>(stats.lost_acknowledged));
}

TEST(SimDiskSqlite, RandomnessAndTimeComeFromTheContext) {
  SimDisk disk;
  sqlite3_vfs* vfs = sqlite3_vfs_find(SimDisk::kVfsName);
  ASSERT_NE(vfs, nullptr);
  Prng given(77);
  Prng reference(77);
  disk.set_context(5, 1'700'000'000'123'456'789LL, &given);
  uint8_t drawn[32];
  ASSERT_EQ(vfs->xRandomness(vfs, sizeof drawn, reinterpret_cast<char*>(drawn)), 32);
  uint8_t expected[32];
  reference.fill(expected);
  EXPECT_EQ(0, std::memcmp(drawn, expected, sizeof drawn));

  sqlite3_int64 julian_ms = 0;
  ASSERT_EQ(vfs->xCurrentTimeInt64(vfs, &julian_ms), SQLITE_OK);
  EXPECT_EQ(julian_ms, 210866760000000LL + 1'700'000'000'123LL);

  Result<sqlite3*> opened = disk.open(5, "clock.db");
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  sql::Database db(*opened);
  // 1,700,000,000 s after the epoch is 2023-11-14 22:13:20 UTC.
  Result<std::string> now = sql::query_text(db.get(), "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')");
  ASSERT_TRUE(now.ok()) << now.error().message;
  EXPECT_EQ(*now, "2023-11-14 22:13:20.123");
}

// What a short workload leaves on one node's disk (WAL salts come from SQLite's PRNG), and
// what randomblob() returns, for a given seed.
struct RunBytes {
  uint64_t disk = 0;
  std::string blob;
};

RunBytes run_with_seed(uint64_t seed) {
  SimDisk disk;
  Prng rng(seed);
  disk.set_context(9, 5 * kNanosPerSecond, &rng);
  Result<sqlite3*> opened = disk.open(9, "det.db");
  MSGSIM_ASSERT(opened.ok());
  sql::Database db(*opened);
  MSGSIM_ASSERT(sql::configure_durable(db.get()).ok());
  MSGSIM_ASSERT(create_schema(db.get()).ok());
  for (int64_t txn = 1; txn <= 5; ++txn) MSGSIM_ASSERT_EQ(run_txn(db.get(), txn), SQLITE_OK);
  RunBytes out;
  out.blob = *sql::query_text(db.get(), "SELECT hex(randomblob(16))");
  std::string all;
  disk.for_each_file(9, [&](const std::string& name, ByteView bytes) {
    all += name;
    all.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  });
  out.disk = hash_string(all);
  return out;
}

TEST(SimDiskSqlite, SameSeedGivesTheSameBytes) {
  const RunBytes a = run_with_seed(1234);
  const RunBytes b = run_with_seed(1234);
  const RunBytes c = run_with_seed(4321);
  EXPECT_EQ(a.disk, b.disk);
  EXPECT_EQ(a.blob, b.blob);
  EXPECT_NE(a.disk, c.disk) << "the WAL salts should come from the seed";
  EXPECT_NE(a.blob, c.blob);
}

TEST(SimDiskSqlite, FsyncFailureReachesTheCallerAndSyncsNothing) {
  SimDisk disk;
  DbNode node(disk, 6, 16, /*full_sync=*/true);
  ASSERT_TRUE(node.open());
  ASSERT_TRUE(create_schema(node.db()).ok());
  ASSERT_EQ(run_txn(node.db(), 1), SQLITE_OK);
  disk.set_faults(6, DiskFaults{.fsync_fails = true});
  const int rc = run_txn(node.db(), 2);
  EXPECT_EQ(rc, SQLITE_IOERR_FSYNC) << sqlite3_errstr(rc);
  EXPECT_GT(disk.storage(6).unsynced_ops(), 0u) << "the commit's writes stay unsynced";
  // The node must stop now; a power loss then shows the failed commit was never durable.
  disk.set_faults(6, DiskFaults{});
  ASSERT_TRUE(node.crash(CrashDisk::lose_unsynced));
  Result<int64_t> state = verify_state(node.db());
  ASSERT_TRUE(state.ok()) << state.error().message;
  EXPECT_EQ(*state, 1);
}

TEST(SimDiskSqlite, FullDiskGivesSqliteFullWithoutCorruption) {
  SimDisk disk;
  DbNode node(disk, 7, 17, /*full_sync=*/true);
  ASSERT_TRUE(node.open());
  ASSERT_TRUE(create_schema(node.db()).ok());
  ASSERT_EQ(run_txn(node.db(), 1), SQLITE_OK);
  disk.set_faults(7, DiskFaults{.capacity_bytes = disk.bytes_stored(7) + 40'000});
  int64_t last = 1;
  int rc = SQLITE_OK;
  for (int64_t txn = 2; txn < 200 && rc == SQLITE_OK; ++txn) {
    rc = run_txn(node.db(), txn);
    if (rc == SQLITE_OK) last = txn;
  }
  ASSERT_EQ(rc, SQLITE_FULL) << sqlite3_errstr(rc);
  EXPECT_LE(disk.bytes_stored(7), disk.storage(7).faults().capacity_bytes);
  sqlite3_exec(node.db(), "ROLLBACK", nullptr, nullptr, nullptr);  // if the failure left it open
  Result<int64_t> state = verify_state(node.db());
  ASSERT_TRUE(state.ok()) << state.error().message;
  EXPECT_EQ(*state, last);

  disk.set_faults(7, DiskFaults{});
  ASSERT_EQ(run_txn(node.db(), last + 1), SQLITE_OK);
  ASSERT_TRUE(node.crash(CrashDisk::lose_unsynced));
  state = verify_state(node.db());
  ASSERT_TRUE(state.ok()) << state.error().message;
  EXPECT_EQ(*state, last + 1);
}

TEST(SimDiskSqlite, SimDisksInSequenceDoNotShareFiles) {
  {
    SimDisk first;
    DbNode node(first, 1, 21, /*full_sync=*/true);
    ASSERT_TRUE(node.open());
    ASSERT_TRUE(create_schema(node.db()).ok());
    ASSERT_EQ(run_txn(node.db(), 1), SQLITE_OK);
    EXPECT_GT(first.bytes_stored(1), 0u);
  }
  SimDisk second;
  EXPECT_EQ(second.bytes_stored(1), 0u);
  DbNode node(second, 1, 21, /*full_sync=*/true);
  ASSERT_TRUE(node.open());
  Result<int64_t> tables = sql::query_int64(node.db(), "SELECT count(*) FROM sqlite_master");
  ASSERT_TRUE(tables.ok()) << tables.error().message;
  EXPECT_EQ(*tables, 0);
}

TEST(SimDiskSqlite, NodesHaveSeparateNamespaces) {
  SimDisk disk;
  DbNode a(disk, 1, 31, /*full_sync=*/true);
  DbNode b(disk, 2, 32, /*full_sync=*/true);
  ASSERT_TRUE(a.open());
  ASSERT_TRUE(b.open());
  ASSERT_TRUE(create_schema(a.db()).ok());
  ASSERT_EQ(run_txn(a.db(), 1), SQLITE_OK);
  Result<int64_t> tables = sql::query_int64(b.db(), "SELECT count(*) FROM sqlite_master");
  ASSERT_TRUE(tables.ok());
  EXPECT_EQ(*tables, 0);
  std::vector<std::string> names;
  disk.for_each_file(1, [&](const std::string& name, ByteView) { names.push_back(name); });
  EXPECT_EQ(names, (std::vector<std::string>{"node.db", "node.db-wal"}));
}

TEST(SimDiskSqlite, ContentsAreScannable) {
  SimDisk disk;
  DbNode node(disk, 1, 41, /*full_sync=*/true);
  ASSERT_TRUE(node.open());
  ASSERT_TRUE(sql::exec(node.db(), "CREATE TABLE t(x TEXT); INSERT INTO t VALUES('plaintext-canary-42')").ok());
  bool found = false;
  disk.for_each_file(1, [&](const std::string&, ByteView bytes) {
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    found = found || text.find("plaintext-canary-42") != std::string_view::npos;
  });
  EXPECT_TRUE(found);
}

TEST(SimDiskSqlite, WipeLosesEverything) {
  SimDisk disk;
  DbNode node(disk, 1, 51, /*full_sync=*/true);
  ASSERT_TRUE(node.open());
  ASSERT_TRUE(create_schema(node.db()).ok());
  ASSERT_EQ(run_txn(node.db(), 1), SQLITE_OK);
  disk.freeze(1);
  node.close();
  disk.wipe(1);
  EXPECT_EQ(disk.bytes_stored(1), 0u);
  ASSERT_TRUE(node.open());
  Result<int64_t> tables = sql::query_int64(node.db(), "SELECT count(*) FROM sqlite_master");
  ASSERT_TRUE(tables.ok());
  EXPECT_EQ(*tables, 0);
}

TEST(SimDiskSqlite, OpenRejectsBadNamesAndMissingContext) {
  SimDisk disk;
  Prng rng(1);
  EXPECT_FALSE(disk.open(1, "x.db").ok()) << "no set_context yet";
  disk.set_context(1, 0, &rng);
  for (const char* bad : {"", "../x", "a/b", "x y", ":memory:"}) {
    Result<sqlite3*> opened = disk.open(1, bad);
    EXPECT_FALSE(opened.ok()) << bad;
    if (!opened.ok()) {
      EXPECT_EQ(opened.error().code, ErrorCode::bad_input);
    }
  }
  EXPECT_FALSE(disk.open(1, std::string(SimDisk::kNameBytesMax + 1, 'a')).ok());
  Result<sqlite3*> good = disk.open(1, "fine_name-1.db");
  ASSERT_TRUE(good.ok());
  sqlite3_close_v2(*good);
}

TEST(SimDiskSqlite, SecondConnectionIsLockedOutWhileTheFirstHoldsTheFile) {
  SimDisk disk;
  Prng rng(71);
  disk.set_context(1, 0, &rng);
  Result<sqlite3*> first = disk.open(1, "shared.db");
  Result<sqlite3*> second = disk.open(1, "shared.db");
  ASSERT_TRUE(first.ok() && second.ok());
  sql::Database a(*first);
  sql::Database b(*second);
  ASSERT_TRUE(sql::configure_durable(a.get()).ok());
  ASSERT_TRUE(a.exec("CREATE TABLE t(x); INSERT INTO t VALUES(42)").ok());
  // EXCLUSIVE locking mode: the writer keeps its lock, so the other connection must get BUSY
  // rather than read a WAL it has no index for.
  Result<int64_t> blocked = sql::query_int64(b.get(), "SELECT x FROM t");
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.error().code, ErrorCode::unavailable) << blocked.error().message;
  a.close();  // checkpoints, releases the lock
  Result<int64_t> value = sql::query_int64(b.get(), "SELECT x FROM t");
  ASSERT_TRUE(value.ok()) << value.error().message;
  EXPECT_EQ(*value, 42);
}

uint64_t disk_digest(const SimDisk& disk, NodeId node) {
  std::string all;
  disk.for_each_file(node, [&](const std::string& name, ByteView bytes) {
    all += name;
    all.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  });
  return hash_string(all);
}

TEST(SimDiskSqlite, TheSimulatorsCheckpointIntervalSurvivesTheNodesDurableSettings) {
  SimDisk disk;
  Prng rng(73);
  disk.set_context(1, 0, &rng);
  Result<sqlite3*> opened = disk.open(1, "node.db");
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  sql::Database db(*opened);
  ASSERT_TRUE(sql::configure_durable(db.get()).ok());  // what every node does next
  Result<int64_t> pages = sql::query_int64(db.get(), "PRAGMA wal_autocheckpoint");
  ASSERT_TRUE(pages.ok()) << pages.error().message;
  EXPECT_EQ(*pages, SimDisk::kWalCheckpointPages);
  EXPECT_NE(*pages, 1000);  // SQLite's default: the setting would have been lost
}

TEST(SimDiskSqlite, HandleOfADeadIncarnationCannotTouchTheDisk) {
  SimDisk disk;
  Prng rng(81);
  disk.set_context(1, 0, &rng);
  Result<sqlite3*> opened = disk.open(1, "stale.db");
  ASSERT_TRUE(opened.ok());
  sqlite3* stale = *opened;
  ASSERT_TRUE(sql::configure_durable(stale).ok());
  ASSERT_TRUE(sql::exec(stale, "CREATE TABLE t(x); INSERT INTO t VALUES(1)").ok());
  disk.freeze(1);
  disk.crash(1, CrashDisk::keep_unsynced, rng);  // the simulator forgot to close `stale`
  const uint64_t before = disk_digest(disk, 1);
  sqlite3_exec(stale, "INSERT INTO t VALUES(2)", nullptr, nullptr, nullptr);
  sqlite3_close_v2(stale);
  EXPECT_EQ(disk_digest(disk, 1), before);
  Result<sqlite3*> reopened = disk.open(1, "stale.db");
  ASSERT_TRUE(reopened.ok());
  sql::Database db(*reopened);
  ASSERT_TRUE(sql::configure_durable(db.get()).ok());
  Result<int64_t> count = sql::query_int64(db.get(), "SELECT count(*) FROM t");
  ASSERT_TRUE(count.ok()) << count.error().message;
  EXPECT_EQ(*count, 1);
}

// ---------------------------------------------------------------------------------------------
// impl/base/sqlite.h

TEST(SqlWrapper, StatementsBindStepAndReportErrors) {
  SimDisk disk;
  Prng rng(61);
  disk.set_context(1, 0, &rng);
  Result<sqlite3*> opened = disk.open(1, "wrap.db");
  ASSERT_TRUE(opened.ok());
  sql::Database db(*opened);
  ASSERT_TRUE(sql::configure_durable(db.get()).ok());
  ASSERT_TRUE(db.exec("CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB, n INTEGER)").ok());

  Result<sql::Statement> insert = db.prepare("INSERT INTO kv(k, v, n) VALUES(?, ?, ?)");
  ASSERT_TRUE(insert.ok()) << insert.error().message;
  const Bytes blob = {0, 1, 2, 255};
  ASSERT_TRUE(insert->bind(1, std::string_view("a")).ok());
  ASSERT_TRUE(insert->bind_blob(2, blob).ok());
  ASSERT_TRUE(insert->bind(3, int64_t{-7}).ok());
  Result<bool> done = insert->step();
  ASSERT_TRUE(done.ok());
  EXPECT_FALSE(*done);
  ASSERT_TRUE(insert->reset().ok());
  Result<bool> duplicate = insert->step();  // same key again: a constraint error
  ASSERT_FALSE(duplicate.ok());
  EXPECT_EQ(duplicate.error().code, ErrorCode::bad_input);
  EXPECT_EQ(sql::sqlite_code(db.get()), SQLITE_CONSTRAINT_PRIMARYKEY);
  EXPECT_FALSE(insert->reset().ok()) << "reset repeats the failed step's error";
  ASSERT_TRUE(insert->bind(1, std::string_view("empty")).ok());
  ASSERT_TRUE(insert->bind_blob(2, ByteView()).ok());
  ASSERT_TRUE(insert->bind_null(3).ok());
  ASSERT_TRUE(insert->step().ok());

  Result<sql::Statement> select = db.prepare("SELECT k, v, n FROM kv ORDER BY k");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(*select->step());
  EXPECT_EQ(select->column_text(0), "a");
  const ByteView got = select->column_blob(1);
  EXPECT_EQ(Bytes(got.begin(), got.end()), blob);
  EXPECT_EQ(select->column_int64(2), -7);
  ASSERT_TRUE(*select->step());
  EXPECT_EQ(select->column_text(0), "empty");
  EXPECT_FALSE(select->column_is_null(1)) << "an empty blob is not NULL";
  EXPECT_TRUE(select->column_blob(1).empty());
  EXPECT_TRUE(select->column_is_null(2));
  EXPECT_FALSE(*select->step());

  EXPECT_EQ(db.prepare("SELECT 1; SELECT 2").error().code, ErrorCode::bad_input);
  EXPECT_EQ(db.prepare("SELEC nonsense").error().code, ErrorCode::bad_input);
  EXPECT_FALSE(insert->bind(9, int64_t{1}).ok()) << "parameter index out of range";
  EXPECT_EQ(sql::query_int64(db.get(), "SELECT n FROM kv WHERE k = 'missing'").error().code,
            ErrorCode::not_found);
  EXPECT_TRUE(sql::check_integrity(db.get()).ok());
}

}  // namespace
}  // namespace msgsim::sim
