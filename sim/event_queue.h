// The simulator's pending-event set: a calendar queue (a timing wheel with an overflow heap),
// ordered by (time, insertion sequence).
//
// Virtual time is cut into buckets of 2^kBucketShift ns. The wheel holds the kBuckets buckets
// from the current one on, each an unsorted vector of events; events further out wait in a
// binary heap (`far_`) and move into the wheel as it turns. Popping takes the current bucket,
// sorts it once, and reads it in order; a push into the current bucket is placed in order. A
// bitmap of non-empty buckets (with a summary word per 64 words) finds the next bucket in a
// few instructions. Network frames and most timers land within the wheel's horizon, so a push
// is an append and a pop a sequential read: this beats a binary or 4-ary heap, whose every
// operation walks log(n) levels of a structure larger than the cache (bench/sim_bench.cpp,
// BM_EventLoop against std::priority_queue).
//
// Ties in time are broken by insertion order, never by payload or address: the same schedule
// of pushes gives the same order of pops on every machine. Pushes must not be earlier than the
// last pop (the simulator never schedules into the past); tests/event_queue_test.cpp checks
// the order against std::priority_queue as a reference model.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "impl/base/assert.h"

namespace msgsim::sim {

enum class EventKind : uint8_t {
  control,       // a scheduled closure (faults, workload phases): a = closure slot
  timer,         // a node's timer: a = timer slot | generation << 32
  link,          // the head frame of one direction of a connection arrives:
                 //   node = connection slot, aux = direction, a = generation | epoch << 32
  link_timeout,  // a held direction may have timed out: same fields as link
  node_resume,   // a node's CPU became free: node = node id
};

struct EventPayload {
  EventKind kind = EventKind::control;
  uint8_t aux = 0;
  uint16_t reserved = 0;
  uint32_t node = 0;
  uint64_t a = 0;
};
static_assert(sizeof(EventPayload) == 16);

class EventQueue {
 public:
  static constexpr int kBucketShift = 13;                 // 8.2 us per bucket
  static constexpr size_t kBuckets = size_t{1} << 14;     // a horizon of 134 ms
  static constexpr size_t kPendingMax = size_t{1} << 32;
  static constexpr size_t kSparesMax = 16;            // emptied bucket vectors kept for reuse
  static constexpr size_t kSpareCapacityMax = 16;     // entries; a larger one is freed

  EventQueue() : buckets_(kBuckets), bits_(kBuckets / 64, 0) {}

  void push(int64_t time_ns, const EventPayload& payload) {
    MSGSIM_ASSERT_GE(time_ns, last_popped_ns_);
    MSGSIM_ASSERT_LT(size_, kPendingMax);
    const Entry entry{time_ns, next_sequence_++, payload};
    size_++;
    place(entry);
  }

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }

  int64_t top_time() {
    MSGSIM_ASSERT(!empty());
    load_next_bucket_if_needed();
    return current_[read_].time_ns;
  }

  // Removes the earliest event; returns its time and payload.
  int64_t pop(EventPayload& out) {
    MSGSIM_ASSERT(!empty());
    load_next_bucket_if_needed();
    const Entry& e = current_[read_++];
    out = e.payload;
    size_--;
    last_popped_ns_ = e.time_ns;
    return e.time_ns;
  }

  void reserve(size_t events) { far_.reserve(events / 8); }

  // Bytes held, at current capacities (for the memory bar: divide by size()).
  size_t bytes_reserved() const {
    size_t bytes = buckets_.capacity() * sizeof(std::vector<Entry>) + bits_.capacity() * sizeof(uint64_t) +
                   (current_.capacity() + far_.capacity()) * sizeof(Entry);
    for (const auto& bucket : buckets_) bytes += bucket.capacity() * sizeof(Entry);
    bytes += spares_.capacity() * sizeof(std::vector<Entry>);
    for (const auto& spare : spares_) bytes += spare.capacity() * sizeof(Entry);
    return bytes;
  }

 private:
  struct Entry {
    int64_t time_ns;
    uint64_t sequence;
    EventPayload payload;
  };
  static bool before(const Entry& x, const Entry& y) {
    return x.time_ns < y.time_ns || (x.time_ns == y.time_ns && x.sequence < y.sequence);
  }
  static int64_t bucket_of(int64_t time_ns) { return time_ns >> kBucketShift; }
  static size_t index_of(int64_t bucket) { return static_cast<size_t>(bucket) & (kBuckets - 1); }

  void place(const Entry& entry) {
    const int64_t bucket = bucket_of(entry.time_ns);
    if (bucket == current_bucket_ && read_ < current_.size()) {
      // Into the run being read: after every entry not later than it (its sequence is the
      // largest yet, so among equal times it goes last).
      auto at = std::upper_bound(current_.begin() + static_cast<std::ptrdiff_t>(read_), current_.end(), entry,
                                 [](const Entry& x, const Entry& y) { return x.time_ns < y.time_ns; });
      current_.insert(at, entry);
    } else if (bucket < current_bucket_ + static_cast<int64_t>(kBuckets) && bucket >= current_bucket_) {
      add_to_wheel(index_of(bucket), entry);
    } else if (bucket < current_bucket_) {
      // Earlier than the bucket a peek moved to (run_until peeks past `now`): give the unread
      // run back to its bucket and turn the wheel back. Rare, and never past the last pop.
      rewind_to(bucket);
      place(entry);
    } else {
      far_.push_back(entry);
      std::push_heap(far_.begin(), far_.end(), [](const Entry& x, const Entry& y) { return before(y, x); });
    }
  }

  void rewind_to(int64_t bucket) {
    MSGSIM_ASSERT_LT(bucket, current_bucket_);
    std::vector<Entry> moved(current_.begin() + static_cast<std::ptrdiff_t>(read_), current_.end());
    current_.clear();
    read_ = 0;
    // Wheel entries past the new horizon go back to the far heap with the unread run; then
    // everything is placed again against the new current bucket.
    const int64_t old_bucket = current_bucket_;
    const int64_t horizon = static_cast<int64_t>(kBuckets);
    const int64_t first = std::max(bucket + horizon, old_bucket);
    for (int64_t b = first; b < old_bucket + horizon; ++b) {
      const size_t index = index_of(b);
      if (buckets_[index].empty()) continue;
      moved.insert(moved.end(), buckets_[index].begin(), buckets_[index].end());
      wheel_count_ -= buckets_[index].size();
      buckets_[index].clear();
      bits_[index / 64] &= ~(uint64_t{1} << (index % 64));
    }
    current_bucket_ = bucket;
    for (const Entry& e : moved) place(e);
  }

  void add_to_wheel(size_t index, const Entry& entry) {
    std::vector<Entry>& bucket = buckets_[index];
    if (bucket.capacity() == 0 && !spares_.empty()) {
      bucket = std::move(spares_.back());
      spares_.pop_back();
    }
    bucket.push_back(entry);
    bits_[index / 64] |= uint64_t{1} << (index % 64);
    wheel_count_++;
  }

  // Keeps an emptied run's storage for reuse. In a sparse run (a few events per bucket) most
  // buckets hold one event: without the spares every such push allocated a vector and every
  // bucket load freed one (0.7 allocations per event in ci-nemesis). Only small runs are kept:
  // a dense wheel's larger vectors are freed as before, or every bucket would drift to the
  // largest capacity any bucket had (event_queue_test's bytes-per-event bound). Bounded in
  // number and size: the spares never hold more than kSparesMax * kSpareCapacityMax entries.
  void recycle(std::vector<Entry>&& run) {
    if (run.capacity() == 0 || run.capacity() > kSpareCapacityMax || spares_.size() >= kSparesMax) return;
    run.clear();
    spares_.push_back(std::move(run));
  }

  // The first non-empty bucket at or after `from` within the horizon (a wheel index), or -1.
  int64_t next_bucket_from(int64_t from) const {
    for (int64_t b = from; b < current_bucket_ + static_cast<int64_t>(kBuckets);) {
      const size_t index = index_of(b);
      const uint64_t word = bits_[index / 64] >> (index % 64);
      if (word != 0) return b + __builtin_ctzll(word);
      b += static_cast<int64_t>(64 - index % 64);
    }
    return -1;
  }

  void load_next_bucket_if_needed() {
    if (read_ < current_.size()) return;
    current_.clear();
    read_ = 0;
    int64_t next = wheel_count_ > 0 ? next_bucket_from(current_bucket_) : -1;
    if (next < 0) {
      // The wheel is empty: jump to the earliest far event's bucket.
      MSGSIM_ASSERT(!far_.empty());
      next = bucket_of(far_.front().time_ns);
    }
    current_bucket_ = next;
    // Far events that the turned wheel now covers move in.
    const auto later = [](const Entry& x, const Entry& y) { return before(y, x); };
    while (!far_.empty() && bucket_of(far_.front().time_ns) < current_bucket_ + static_cast<int64_t>(kBuckets)) {
      std::pop_heap(far_.begin(), far_.end(), later);
      const Entry e = far_.back();
      far_.pop_back();
      add_to_wheel(index_of(bucket_of(e.time_ns)), e);
    }
    const size_t index = index_of(current_bucket_);
    MSGSIM_ASSERT(!buckets_[index].empty());
    // The bucket gives its storage to the run and starts over empty: were buckets to keep their
    // high-water capacity, every bucket the wheel ever turned through would hold memory. The
    // run's old storage goes to the spares instead, for the next bucket that fills.
    recycle(std::move(current_));
    current_ = std::move(buckets_[index]);
    buckets_[index] = std::vector<Entry>();
    bits_[index / 64] &= ~(uint64_t{1} << (index % 64));
    wheel_count_ -= current_.size();
    std::sort(current_.begin(), current_.end(), before);
  }

  std::vector<std::vector<Entry>> buckets_;  // the wheel, by index_of(bucket)
  std::vector<uint64_t> bits_;               // bit i: buckets_[i] is not empty
  std::vector<Entry> current_;               // the current bucket's events, sorted
  size_t read_ = 0;                          // current_[read_] is the next to pop
  int64_t current_bucket_ = 0;
  size_t wheel_count_ = 0;                   // events in buckets_ (not counting current_)
  std::vector<Entry> far_;                   // a min-heap of events beyond the horizon
  std::vector<std::vector<Entry>> spares_;   // emptied runs' storage, for buckets that fill
  size_t size_ = 0;
  uint64_t next_sequence_ = 0;
  int64_t last_popped_ns_ = 0;
};

}  // namespace msgsim::sim
