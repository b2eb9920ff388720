// The event queue against a reference model: std::priority_queue ordered by (time, insertion
// sequence). Random schedules with many equal times, far and near events, peeks followed by
// earlier pushes (as run_until does), and long idle gaps.
#include <gtest/gtest.h>

#include <queue>

#include "impl/base/prng.h"
#include "sim/event_queue.h"

namespace msgsim::sim {
namespace {

struct Reference {
  struct Item {
    int64_t time;
    uint64_t sequence;
    uint64_t tag;
    bool operator>(const Item& o) const { return time > o.time || (time == o.time && sequence > o.sequence); }
  };
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> queue;
  uint64_t next = 0;
  void push(int64_t t, uint64_t tag) { queue.push(Item{t, next++, tag}); }
};

// Delays from a mix: zero (same time), sub-bucket, within the wheel, past the horizon.
int64_t draw_delay(Prng& rng) {
  switch (rng.below(6)) {
    case 0: return 0;
    case 1: return static_cast<int64_t>(rng.below(1 << EventQueue::kBucketShift));
    case 2: return static_cast<int64_t>(rng.below(1'000'000));
    case 3: return static_cast<int64_t>(rng.below(100'000'000));
    case 4: return static_cast<int64_t>(rng.below(5'000'000'000));
    default: return static_cast<int64_t>(rng.below(8)) << EventQueue::kBucketShift;
  }
}

TEST(EventQueue, PopsInTheReferenceOrderUnderRandomSchedules) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    Prng rng(seed);
    EventQueue queue;
    Reference ref;
    int64_t now = 0;
    uint64_t tag = 0;
    for (int step = 0; step < 20'000; ++step) {
      const uint64_t action = rng.below(10);
      if (action < 5 || ref.queue.empty()) {
        const int64_t t = now + draw_delay(rng);
        queue.push(t, EventPayload{EventKind::timer, 0, 0, 0, tag});
        ref.push(t, tag);
        tag++;
      } else if (action < 9) {
        EventPayload payload;
        const int64_t t = queue.pop(payload);
        const auto expected = ref.queue.top();
        ref.queue.pop();
        ASSERT_EQ(t, expected.time) << "seed " << seed << " step " << step;
        ASSERT_EQ(payload.a, expected.tag) << "seed " << seed << " step " << step;
        now = t;
      } else {
        // Peek, then schedule at a time between now and the peeked one (run_until's pattern).
        const int64_t next = queue.top_time();
        ASSERT_EQ(next, ref.queue.top().time);
        const int64_t t = now + (next > now ? static_cast<int64_t>(rng.below(static_cast<uint64_t>(next - now))) : 0);
        queue.push(t, EventPayload{EventKind::timer, 0, 0, 0, tag});
        ref.push(t, tag);
        tag++;
      }
      ASSERT_EQ(queue.size(), ref.queue.size());
    }
    while (!ref.queue.empty()) {
      EventPayload payload;
      ASSERT_EQ(queue.pop(payload), ref.queue.top().time);
      ASSERT_EQ(payload.a, ref.queue.top().tag);
      ref.queue.pop();
    }
    EXPECT_TRUE(queue.empty());
  }
}

TEST(EventQueue, EqualTimesPopInInsertionOrder) {
  EventQueue queue;
  for (uint64_t i = 0; i < 1000; ++i) queue.push(5'000'000'000, EventPayload{EventKind::timer, 0, 0, 0, i});
  for (uint64_t i = 0; i < 1000; ++i) {
    EventPayload payload;
    EXPECT_EQ(queue.pop(payload), 5'000'000'000);
    EXPECT_EQ(payload.a, i);
  }
}

TEST(EventQueue, HoldsUnder64BytesPerPendingEventAtScale) {
  EventQueue queue;
  Prng rng(3);
  for (int i = 0; i < 100'000; ++i) {
    queue.push(static_cast<int64_t>(rng.below(10'000'000)), EventPayload{});
  }
  EventPayload payload;
  int64_t now = 0;
  for (int i = 0; i < 1'000'000; ++i) {
    now = queue.pop(payload);
    queue.push(now + static_cast<int64_t>(rng.below(10'000'000)), payload);
  }
  const double per_event = static_cast<double>(queue.bytes_reserved()) / static_cast<double>(queue.size());
  RecordProperty("bytes_per_pending_event", std::to_string(per_event));
  EXPECT_LE(per_event, 64.0);
}

}  // namespace
}  // namespace msgsim::sim
