#include "oracle/checker.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <map>
#include <utility>

#include "impl/base/assert.h"
#include "impl/base/hash.h"
#include "oracle/jsonl.h"
#include "oracle/tables.h"

namespace msgsim::history {

namespace {

using detail::ReservedVector;
using detail::FlatMap64;
using detail::Interner;
using detail::kNone;
using detail::pack;
using detail::prefetch_address;
using detail::same_text;
using detail::body_hash;
using detail::text_hash;

constexpr int64_t kNoSeq = std::numeric_limits<int64_t>::min();
constexpr int64_t kNoExpiry = std::numeric_limits<int64_t>::max();
constexpr int64_t kExpirySlack_ns = 1'000'000'000;  // "within 1 s (virtual) of expires_at"
constexpr uint64_t kLinesMax = 0xffffffffULL;         // lines are stored in 32 bits
// Deliveries judged for membership wait here until finish(), because a join may be written
// after the deliveries it allows; past this many they are judged at once.
constexpr size_t kMembershipSuspectsMax = size_t{1} << 22;

const char* const kInvariantNames[kInvariantCount] = {
    "no-loss",    "no-duplicate", "no-phantom", "order",  "gap-free",
    "seq-agreement", "sender-fifo", "causal",   "receipts", "membership",
    "expiry",     "no-rejected-delivery", "decrypt", "latency"};

enum MessageFlag : uint8_t {
  kSent = 1,
  kAcked = 2,
  kRejected = 4,
  kViewOnce = 8,
  kShownAnywhere = 16,
  kInternedAtSend = 32,  // first seen at its send: message ids are then in send order
  kExpiring = 64,        // sent with an expires_at (in MessageCold)
};

// Per message, split in two by how often a field is touched: this record is most of the
// checker's memory and a deliver (60% of the events) reads a message at random among up to
// millions, a cache miss each time. `Message` holds what every deliver, ack and expire checks,
// and the message's own id (a lookup by id compares it here: the record is the table entry),
// in exactly one 64-byte cache line (records are line-aligned); `MessageCold` holds what only
// a send, the first seq, the first show, a reject, a disappearing message (8% of them), an
// example or finish() needs, in a parallel array. 64 + 32 bytes a message.
struct alignas(64) Message {
  int64_t seq = kNoSeq;
  int64_t send_t = 0;
  uint64_t body_hash = 0;
  uint32_t conv = kNone;
  uint32_t ordinal = 0;  // index among its conversation's messages
  uint32_t sender_user = kNone;
  uint32_t sender_device = kNone;
  uint32_t send_line = 0;
  uint8_t flags = 0;
  detail::InlineName name;  // the msg id

  bool has(MessageFlag f) const { return (flags & f) != 0; }
};
static_assert(sizeof(Message) == 64);

struct MessageCold {
  int64_t expires_at = kNoExpiry;  // when the kExpiring flag is set
  // The largest seq the sender's device had shown or got acked in the conv at the send.
  int64_t causal_floor_seq = kNoSeq;
  uint32_t causal_floor_msg = kNone;
  uint32_t first_show_line = 0;
  uint32_t ack_line = 0;
  uint32_t reject_line = 0;

  int64_t causal_floor() const { return causal_floor_seq; }
  void set_causal_floor(int64_t seq) { causal_floor_seq = seq; }
};
static_assert(sizeof(MessageCold) == 32);

// Two bits per message of one conversation on one device, by ordinal from base() (a multiple
// of 32): bit 2k = shown on the device, bit 2k+1 = expired there. Nearly every deliver lands in
// the newest word, so that word is kept inline (in the DeviceConv record, read anyway) and only
// the earlier words live on the heap: a deliver then touches no other cache line for its bits.
class ShownBits {
 public:
  ShownBits() = default;
  ShownBits(ShownBits&& other) noexcept
      : last_(other.last_), heap_(std::exchange(other.heap_, nullptr)), base_(other.base_),
        words_(std::exchange(other.words_, 0)) {}
  ShownBits(const ShownBits&) = delete;
  ShownBits& operator=(const ShownBits&) = delete;
  ShownBits& operator=(ShownBits&&) = delete;
  ~ShownBits() { delete[] heap_; }

  uint32_t base() const { return base_; }
  size_t words() const { return words_; }
  uint64_t word(size_t w) const { return w + 1 == words_ ? last_ : heap_[w]; }

  // The word holding `ordinal`, or nullptr when no bit of it was ever set.
  const uint64_t* find(uint32_t ordinal) const {
    if (words_ == 0 || ordinal < base_) return nullptr;
    const size_t w = (ordinal - base_) / 32;
    if (w >= words_) return nullptr;
    return w + 1 == words_ ? &last_ : &heap_[w];
  }
  uint64_t* find(uint32_t ordinal) { return const_cast<uint64_t*>(std::as_const(*this).find(ordinal)); }

  // The word holding `ordinal`, adding (zero) words as needed. Inline where the word is there
  // (nearly always the inline one), so that a deliver does not depend on how GCC weighs inlining
  // the whole of it (it stopped doing so once on_deliver changed elsewhere: +20 M instructions
  // over the 1 M history).
  uint64_t* grow_to(uint32_t ordinal) {
    if (words_ != 0 && ordinal >= base_) {
      const size_t w = (ordinal - base_) / 32;
      if (w + 1 == words_) return &last_;
      if (w < words_) return &heap_[w];
    }
    return add_words_to(ordinal);
  }

  size_t heap_bytes() const { return words_ == 0 ? 0 : capacity(words_ - 1) * sizeof(uint64_t); }

 private:
  // The allocation for n heap words: n rounded up to its two leading bits (n, or at most half
  // again), so growing one word at a time reallocates O(log n) times and wastes little: these
  // bits are per message and device.
  static size_t capacity(size_t n) {
    if (n <= 4) return n;
    const int drop = std::bit_width(n) - 2;
    return ((n + (size_t{1} << drop) - 1) >> drop) << drop;
  }
  // Heap words [0, old_size) move to [offset, offset + old_size); the other words below
  // new_size (> old_size) are zero.
  void resize_heap(size_t old_size, size_t new_size, size_t offset) {
    uint64_t* target = heap_;
    if (capacity(new_size) != capacity(old_size)) target = new uint64_t[capacity(new_size)];
    if (old_size > 0) std::memmove(target + offset, heap_, old_size * sizeof(uint64_t));
    std::fill(target, target + offset, uint64_t{0});
    std::fill(target + offset + old_size, target + new_size, uint64_t{0});
    if (target != heap_) {
      delete[] heap_;
      heap_ = target;
    }
  }

  // grow_to past the words there: the first word, an earlier one, a later one.
  [[gnu::noinline]] uint64_t* add_words_to(uint32_t ordinal) {
    if (words_ == 0) {
      base_ = ordinal & ~31u;
      words_ = 1;
      last_ = 0;
    }
    if (ordinal < base_) {
      const uint32_t new_base = ordinal & ~31u;
      const size_t shift = (base_ - new_base) / 32;
      resize_heap(words_ - 1, words_ - 1 + shift, shift);
      words_ += static_cast<uint32_t>(shift);
      base_ = new_base;
    }
    const size_t w = (ordinal - base_) / 32;
    if (w >= words_) {
      // The inline word becomes heap word words_ - 1; a new zero word at w is the inline one.
      const size_t heap_words = words_ - 1;
      resize_heap(heap_words, w, 0);
      heap_[heap_words] = last_;
      last_ = 0;
      words_ = static_cast<uint32_t>(w + 1);
    }
    return w + 1 == words_ ? &last_ : &heap_[w];
  }

  uint64_t last_ = 0;          // word words_ - 1
  uint64_t* heap_ = nullptr;   // words [0, words_ - 1)
  uint32_t base_ = 0;
  uint32_t words_ = 0;         // 0: no bit set yet
};
static_assert(sizeof(ShownBits) == 24);

// Per (device, conversation). 64 bytes, line-aligned: a deliver reads and writes it, and an
// unaligned record would span two cache lines (two misses) three times out of four.
struct alignas(64) DeviceConv {
  int64_t max_shown_seq = kNoSeq;
  int64_t max_acked_own_seq = kNoSeq;
  ShownBits bits;
  uint32_t device = kNone;
  uint32_t conv = kNone;
  uint32_t max_shown_msg = kNone;
  uint32_t max_shown_line = 0;
  uint32_t max_acked_own_msg = kNone;
  // The Membership record of the device's user in this conversation (a group), once a deliver
  // found one: final, as records are never removed, so later delivers skip the index probe.
  uint32_t membership = kNone;

  static int shift(uint32_t ordinal) { return static_cast<int>((ordinal & 31u) * 2); }
  bool shown(uint32_t ordinal) const {
    const uint64_t* w = bits.find(ordinal);
    return w != nullptr && ((*w >> shift(ordinal)) & 1) != 0;
  }
  bool expired(uint32_t ordinal) const {
    const uint64_t* w = bits.find(ordinal);
    return w != nullptr && ((*w >> shift(ordinal)) & 2) != 0;
  }
  bool handled(uint32_t ordinal) const {
    const uint64_t* w = bits.find(ordinal);
    return w != nullptr && ((*w >> shift(ordinal)) & 3) != 0;
  }
  void set_shown(uint32_t ordinal) { *bits.grow_to(ordinal) |= uint64_t{1} << shift(ordinal); }
  void set_expired(uint32_t ordinal) { *bits.grow_to(ordinal) |= uint64_t{2} << shift(ordinal); }
};
static_assert(sizeof(DeviceConv) == 64);

// Per device; 64 bytes, line-aligned. The device's first kInlineConvs conversations keep their
// DeviceConv record's index here, so a deliver, ack, expire or send finds its (device, conv)
// record in the line it reads anyway instead of probing the (device, conv) index, which holds
// only the conversations past those (a device of the benchmark has ~2.7 on average).
struct alignas(64) Device {
  static constexpr int kInlineConvs = 3;
  uint32_t user = kNone;
  uint32_t first_line = 0;
  int64_t online_since_t = 0;
  // A view-once message shown here and not yet expired.
  uint32_t pending_view_once_msg = kNone;
  uint32_t pending_view_once_line = 0;
  int64_t pending_view_once_t = 0;
  bool online = false;
  uint32_t inline_convs[kInlineConvs] = {kNone, kNone, kNone};  // filled in order
  uint32_t inline_device_convs[kInlineConvs] = {kNone, kNone, kNone};

  // conv's DeviceConv index when it is inline here; kNone otherwise (`all_inline` tells whether
  // that means "none": fewer than kInlineConvs conversations, so the index holds none of them).
  uint32_t inline_device_conv(uint32_t conv, bool& all_inline) const {
    for (int k = 0; k < kInlineConvs; ++k) {
      if (inline_convs[k] == conv) return inline_device_convs[k];
    }
    all_inline = inline_convs[kInlineConvs - 1] == kNone;
    return kNone;
  }
};
static_assert(sizeof(Device) == 64);

struct User {
  std::vector<uint32_t> devices;
};

struct Conv {
  bool one_to_one = false;
  uint32_t user_a = kNone;
  uint32_t user_b = kNone;
  std::vector<uint32_t> messages;      // by ordinal
  std::vector<uint32_t> memberships;   // Membership indices: users with join/leave events
  std::vector<uint32_t> readers;       // ReaderConv indices with a delivered receipt
  int64_t max_shown_seq = std::numeric_limits<int64_t>::min();
  // The largest delivered_checked_up_to among `readers`: a message whose seq is above it needs
  // no look at the readers when it gets its seq.
  int64_t max_delivered_checked_up_to = kNoSeq;
  // A join or leave arrived after a message with a higher seq was shown: the deliveries judged
  // at the time are judged again at finish().
  bool late_membership = false;
};

struct Change {
  int64_t seq;
  bool join;
  uint32_t line;
};

// The join/leave events of one user in one group, sorted by seq.
struct Membership {
  uint32_t conv = kNone;
  uint32_t user = kNone;
  std::vector<Change> changes;
};

// Per (reader user, conversation).
struct ReaderConv {
  uint32_t user = kNone;
  uint32_t conv = kNone;
  int64_t max_read_up_to = kNoSeq;
  uint32_t max_read_line = 0;
  int64_t delivered_checked_up_to = kNoSeq;  // delivered receipts were checked up to here
  uint32_t delivered_line = 0;
  bool listed = false;
};

struct ReceiptState {
  int64_t max_up_to;
  uint32_t line;
};

struct MembershipEvent {
  uint32_t user;
  bool join;
  uint32_t line;
};

// One id an event names: its text's hash, and its id once a lookup ahead of observing found
// it. A found id is final (ids are never removed or renumbered), so observing uses it without
// a second lookup; kNone means "not looked up or not there yet", and observing interns.
struct IdKey {
  uint64_t hash = 0;  // 0: not computed (ids the fast paths resolve through records are not hashed)
  uint32_t id = kNone;
  // For a msg id, in the look-ahead: the first message whose tagged slot agrees with the hash,
  // as the candidates stage saw it; the records stage compares this one record with the id
  // before probing the table again. (In the padding after `id`.)
  uint32_t candidate = kNone;

  // The text's hash, computed now when it was not before (recomputing a true 0 gives 0 again).
  uint64_t hash_of(std::string_view text) const { return hash != 0 ? hash : text_hash(text); }
};
// `candidate` sits in what was padding: with it added to EventIdKeys instead (128 -> 136 bytes of
// keys a ring slot), the step came to +22 M instructions over the 1 M-line history, not -27 M.
static_assert(sizeof(IdKey) == 16);

// The keys of one event's ids (empty for fields its type does not use).
struct EventIdKeys {
  IdKey user;
  IdKey device;
  IdKey conv;
  IdKey msg;
  IdKey from;
  IdKey reader;
  IdKey to;
  // The (device, conversation) record a deliver or expire touches, once a lookup ahead of
  // observing found it (final too: records are never removed or renumbered).
  uint32_t device_conv = kNone;
  // The deliver's (conv, recipient user) Membership record, when a lookup ahead found one: used
  // only to prefetch its changes (the lookup when observing is as before).
  uint32_t membership = kNone;
  // The line before named the same device (bursts of delivers to one device, an ack after its
  // send): its hash was taken from there, and so is its id if that line's look-ahead found it.
  bool device_as_line_before = false;
  // The message's conversation, once the conversation-records stage read it (look-ahead only:
  // observing takes the line's conv as before).
  uint32_t msg_conv = kNone;
};

// A join or leave as the (conv, seq) table keeps it.
struct MembershipEventRecord {
  int64_t seq;
  uint32_t conv;
  MembershipEvent event;
};

struct MembershipSuspect {
  uint32_t user;
  uint32_t device;
  uint32_t msg;
  uint32_t line;
};

// Log-linear histogram of nanosecond latencies: 128 sub-buckets per power of two (< 0.8% error).
class LatencyHistogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr size_t kLinear = size_t{1} << (kSubBits + 1);  // exact below 256 ns
  static constexpr size_t kBuckets = kLinear + (64 - kSubBits - 1) * (size_t{1} << kSubBits);

  void add(int64_t value_ns) {
    if (counts_.empty()) counts_.assign(kBuckets, 0);  // on first use
    const uint64_t v = value_ns < 0 ? 0 : static_cast<uint64_t>(value_ns);
    ++counts_[bucket(v)];
    ++samples_;
    max_ns_ = std::max(max_ns_, static_cast<int64_t>(v));
  }
  uint64_t samples() const { return samples_; }
  int64_t max_ns() const { return max_ns_; }

  // The nearest-rank quantile (rank ceil(q * n)), as the midpoint of its bucket.
  int64_t quantile(double q) const {
    if (samples_ == 0) return 0;
    const uint64_t rank = rank_of(q);
    uint64_t seen = 0;
    for (size_t b = 0; b < counts_.size(); ++b) {
      seen += counts_[b];
      if (seen >= rank) return std::min(midpoint(b), max_ns_);
    }
    return max_ns_;
  }
  uint64_t rank_of(double q) const {
    const double exact = q * static_cast<double>(samples_);
    uint64_t rank = static_cast<uint64_t>(exact);
    if (static_cast<double>(rank) < exact) ++rank;
    return std::max<uint64_t>(rank, 1);
  }
  size_t memory_bytes() const { return counts_.capacity() * sizeof(uint64_t); }

 private:
  static size_t bucket(uint64_t v) {
    if (v < kLinear) return static_cast<size_t>(v);
    const int exponent = 63 - __builtin_clzll(v);  // >= kSubBits + 1
    const uint64_t sub = (v >> (exponent - kSubBits)) & ((uint64_t{1} << kSubBits) - 1);
    return kLinear + static_cast<size_t>(exponent - kSubBits - 1) * (size_t{1} << kSubBits) + sub;
  }
  static int64_t midpoint(size_t b) {
    if (b < kLinear) return static_cast<int64_t>(b);
    const size_t k = b - kLinear;
    const int exponent = static_cast<int>(k >> kSubBits) + kSubBits + 1;
    const uint64_t sub = k & ((size_t{1} << kSubBits) - 1);
    const uint64_t low = (uint64_t{1} << exponent) | (sub << (exponent - kSubBits));
    const uint64_t width = uint64_t{1} << (exponent - kSubBits);
    const uint64_t mid = low + width / 2;
    return mid > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
               ? std::numeric_limits<int64_t>::max()
               : static_cast<int64_t>(mid);
  }

  std::vector<uint64_t> counts_;
  uint64_t samples_ = 0;
  int64_t max_ns_ = 0;
};

std::string seq_text(int64_t seq) { return seq == kNoSeq ? std::string("none") : std::to_string(seq); }

}  // namespace

const char* to_string(Invariant invariant) {
  const auto index = static_cast<size_t>(invariant);
  return index < kInvariantCount ? kInvariantNames[index] : "unknown";
}

const InvariantResult* Verdict::find(std::string_view name) const {
  for (const InvariantResult& r : invariants) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

struct Checker::State {
  CheckerOptions options;
  std::optional<Error> input_error;
  uint64_t line = 0;  // events observed
  int64_t last_t = std::numeric_limits<int64_t>::min();
  Stats stats;

  // A deliver compares its user, conv and sender with names these keep by id (one line each).
  Interner users_ids{Interner::Names::by_id};
  Interner device_ids{Interner::Names::by_id};
  Interner conv_ids{Interner::Names::by_id};
  // Message ids: a tagged 4-byte slot per id (detail::HashedIndexSlots), whose candidates are
  // compared with the name inside their Message record, and an arena for ids longer than 14 bytes.
  detail::HashedIndexSlots msg_slots{1024, detail::HashedIndexSlots::Indices::dense};
  detail::NameArena msg_arena;
  uint32_t last_added_msg = kNone;  // the message message_of added last
  // Records by id. A table moves when its reservation fills (detail::ReservedVector): a handler
  // holds a reference to a record only while nothing is added to that record's table.
  ReservedVector<User, 10> users;
  ReservedVector<Device, 10> devices;
  ReservedVector<Conv, 10> convs;
  // 65,536 records (4 MB, and 2 MB of cold halves) a chunk, large enough for huge pages; at
  // most one chunk is slack. messages[i] and message_cold[i] are the two halves of message i.
  ReservedVector<Message, 16> messages;
  ReservedVector<MessageCold, 16> message_cold;

  // (device, conv) -> DeviceConv, for a device's conversations past its kInlineConvs inline ones.
  FlatMap64 device_conv_index;
  ReservedVector<DeviceConv, 10> device_convs;
  FlatMap64 membership_index;  // (conv, user) -> Membership
  ReservedVector<Membership, 8> memberships;
  FlatMap64 reader_index;  // (user, conv) -> ReaderConv
  ReservedVector<ReaderConv, 10> readers;
  FlatMap64 receipt_index;  // (DeviceConv, reader, kind) -> ReceiptState
  ReservedVector<ReceiptState, 10> receipt_states;
  // (conv, seq) -> the join or leave that claimed it: slots of record index + 1.
  std::vector<MembershipEventRecord> membership_events;
  detail::HashedIndexSlots membership_event_slots{64};
  std::vector<MembershipSuspect> membership_suspects;

  // (conv, seq) -> the message that first claimed it, compared through the message's own record.
  detail::HashedIndexSlots seq_slots{1024};

  std::map<std::string, uint32_t, std::less<>> active_faults;
  int64_t last_heal_t = std::numeric_limits<int64_t>::min();
  LatencyHistogram latency;
  uint64_t latency_within_bound = 0;

  std::array<InvariantResult, kInvariantCount> results;

  explicit State(CheckerOptions o) : options(o) {
    for (int i = 0; i < kInvariantCount; ++i) {
      results[static_cast<size_t>(i)].invariant = static_cast<Invariant>(i);
      results[static_cast<size_t>(i)].name = kInvariantNames[i];
    }
  }

  // ---- recording violations ----
  template <typename MakeExample>
  void violate(Invariant invariant, MakeExample&& make) {
    InvariantResult& r = results[static_cast<size_t>(invariant)];
    ++r.count;
    r.valid = false;
    if (r.examples.size() < options.examples_max) r.examples.push_back(make());
  }
  std::string msg_name(uint32_t m) const { return std::string(messages[m].name.view()); }
  std::string device_name(uint32_t d) const { return std::string(device_ids.name(d)); }
  std::string user_name(uint32_t u) const { return u == kNone ? std::string("?") : std::string(users_ids.name(u)); }
  std::string conv_name(uint32_t c) const { return std::string(conv_ids.name(c)); }

  // ---- interning ----
  uint32_t line32() const { return static_cast<uint32_t>(line); }

  uint32_t user_of(std::string_view name, const IdKey& key) {
    if (key.id != kNone) return key.id;
    bool added = false;
    const uint32_t id = users_ids.intern(name, key.hash_of(name), added);
    if (added) users.push_back(User{});
    return id;
  }
  uint32_t device_of(std::string_view name, const IdKey& key) {
    if (key.id != kNone) return key.id;
    bool added = false;
    const uint32_t id = device_ids.intern(name, key.hash_of(name), added);
    if (added) {
      Device d;
      d.first_line = line32();
      devices.push_back(std::move(d));
    }
    return id;
  }
  // A device belongs to the first user named with it.
  uint32_t device_of(std::string_view name, const IdKey& key, uint32_t user) {
    const uint32_t id = device_of(name, key);
    Device& d = devices[id];
    if (d.user == kNone) {
      d.user = user;
      users[user].devices.push_back(id);
    }
    return id;
  }
  uint32_t conv_of(std::string_view name, const IdKey& key) {
    if (key.id != kNone) return key.id;
    bool added = false;
    const uint32_t id = conv_ids.intern(name, key.hash_of(name), added);
    if (added) convs.push_back(Conv{});
    return id;
  }
  // The message named `name`; a new one is placed in `conv`.
  uint32_t message_of(std::string_view name, const IdKey& key, uint32_t conv, bool& added) {
    if (key.id != kNone) {
      added = false;
      return key.id;
    }
    const uint64_t h = key.hash_of(name);
    const auto id = static_cast<uint32_t>(messages.size());
    MSGSIM_ASSERT(id < kNone - 1, "more than 4 billion distinct msg ids");
    // The probe that misses places the new id (a rebuild reads only the records of the ids
    // before it, which all exist), so the records below are added after it.
    const uint32_t found = msg_slots.find_or_insert(
        h, id, [&](uint32_t index) { return messages[index].name.is(name); },
        [&](uint32_t index) { return text_hash(messages[index].name.view()); });
    added = found == kNone;
    if (!added) return found;
    Message m;
    m.conv = conv;
    m.name = detail::InlineName(name, msg_arena);
    Conv& c = convs[conv];
    m.ordinal = static_cast<uint32_t>(c.messages.size());
    c.messages.push_back(id);
    messages.push_back(m);
    message_cold.push_back(MessageCold{});
    last_added_msg = id;
    return id;
  }
  // The line that first gave message mi its seq: its ack or its first show, whichever came first.
  uint32_t seq_line(uint32_t mi) const {
    const uint32_t ack_line = message_cold[mi].ack_line;
    const uint32_t first_show_line = message_cold[mi].first_show_line;
    if (ack_line != 0 && (first_show_line == 0 || ack_line < first_show_line)) return ack_line;
    return first_show_line;
  }
  // The message whose id is `name` (of text_hash h), or kNone: candidates by hash bits, each
  // compared through the name in its record.
  // Out of line, as it was while message_of called it too: GCC inlined it into the look-ahead
  // once message_of no longer did, and LineFeed::push came to +3.4 instructions a line.
  [[gnu::noinline]] uint32_t find_msg(std::string_view name, uint64_t h) const {
    return msg_slots.find(h, [&](uint32_t index) { return messages[index].name.is(name); });
  }
  std::optional<uint32_t> find_message(std::string_view name, const IdKey& key) const {
    if (key.id != kNone) return key.id;
    const uint32_t found = find_msg(name, key.hash_of(name));
    if (found == kNone) return std::nullopt;
    return found;
  }
  // The (device, conv) record's index, or kNone: through the device's inline conversations,
  // then (for a device with more) the index.
  uint32_t find_device_conv_index(uint32_t device, uint32_t conv) const {
    if (device >= devices.size()) return kNone;
    bool all_inline = false;
    const uint32_t inline_index = devices[device].inline_device_conv(conv, all_inline);
    if (inline_index != kNone || all_inline) return inline_index;
    const uint32_t* index = device_conv_index.find(pack(device, conv));
    return index == nullptr ? kNone : *index;
  }
  uint32_t device_conv_index_of(uint32_t device, uint32_t conv) {
    const uint32_t found = find_device_conv_index(device, conv);
    if (found != kNone) return found;
    const auto index = static_cast<uint32_t>(device_convs.size());
    MSGSIM_ASSERT(index < (1u << 31), "more than 2^31 (device, conversation) pairs");
    DeviceConv dc;
    dc.device = device;
    dc.conv = conv;
    device_convs.push_back(std::move(dc));
    Device& d = devices[device];
    for (int k = 0; k < Device::kInlineConvs; ++k) {
      if (d.inline_convs[k] == kNone) {
        d.inline_convs[k] = conv;
        d.inline_device_convs[k] = index;
        return index;
      }
    }
    device_conv_index.insert(pack(device, conv), index);
    return index;
  }
  DeviceConv& device_conv(uint32_t device, uint32_t conv) { return device_convs[device_conv_index_of(device, conv)]; }
  DeviceConv* find_device_conv(uint32_t device, uint32_t conv) {
    const uint32_t index = find_device_conv_index(device, conv);
    return index == kNone ? nullptr : &device_convs[index];
  }
  ReaderConv& reader_conv(uint32_t user, uint32_t conv) {
    const uint32_t index = reader_index.insert(pack(user, conv), static_cast<uint32_t>(readers.size()));
    if (index == readers.size()) {
      ReaderConv rc;
      rc.user = user;
      rc.conv = conv;
      readers.push_back(rc);
    }
    return readers[index];
  }
  Membership* find_membership(uint32_t conv, uint32_t user) {
    const uint32_t* index = membership_index.find(pack(conv, user));
    return index == nullptr ? nullptr : &memberships[*index];
  }

  // ---- the (conv, seq) -> message table ----
  static uint64_t seq_hash(uint32_t conv, int64_t seq) {
    return mix64(static_cast<uint64_t>(seq) ^ mix64(uint64_t{conv} + 0x9e3779b97f4a7c15ULL));
  }
  uint32_t find_seq(uint32_t conv, int64_t seq) const {
    return seq_slots.find(seq_hash(conv, seq), [&](uint32_t mi) {
      const Message& msg = messages[mi];
      return msg.conv == conv && msg.seq == seq;
    });
  }
  // The message that has (conv, seq) already, or kNone after giving it to m (which has that seq
  // in its record now): find_seq and then storing m, in one probe where the table has room.
  uint32_t find_or_insert_seq(uint32_t conv, int64_t seq, uint32_t m) {
    return seq_slots.find_or_insert(
        seq_hash(conv, seq), m,
        [&](uint32_t mi) {
          const Message& msg = messages[mi];
          return msg.conv == conv && msg.seq == seq;
        },
        [&](uint32_t mi) { return seq_hash(messages[mi].conv, messages[mi].seq); },
        [&](uint32_t mi) { messages.prefetch(mi); });
  }

  // ---- the (conv, seq) -> join/leave table ----
  const MembershipEventRecord* find_membership_event(uint32_t conv, int64_t seq) const {
    const uint32_t r = membership_event_slots.find(seq_hash(conv, seq), [&](uint32_t index) {
      return membership_events[index].conv == conv && membership_events[index].seq == seq;
    });
    return r == kNone ? nullptr : &membership_events[r];
  }
  // Adds the change unless (conv, seq) is taken; returns the record that holds it either way.
  const MembershipEventRecord& insert_membership_event(uint32_t conv, int64_t seq, MembershipEvent event, bool& inserted) {
    if (const MembershipEventRecord* found = find_membership_event(conv, seq)) {
      inserted = false;
      return *found;
    }
    inserted = true;
    membership_events.push_back({seq, conv, event});
    membership_event_slots.insert(seq_hash(conv, seq), static_cast<uint32_t>(membership_events.size() - 1),
                                  [&](uint32_t index) {
                                    return seq_hash(membership_events[index].conv, membership_events[index].seq);
                                  });
    return membership_events.back();
  }

  // ---- membership ----
  // Whether `user` is a member of `conv` for a message at `seq`: the last change below seq.
  bool group_member(uint32_t conv, uint32_t user, int64_t seq) {
    const Membership* ms = find_membership(conv, user);
    if (ms == nullptr) return false;
    return member_in(*ms, seq);
  }
  static bool member_in(const Membership& ms, int64_t seq) {
    const auto& ch = ms.changes;
    auto it = std::lower_bound(ch.begin(), ch.end(), seq, [](const Change& c, int64_t s) { return c.seq < s; });
    if (it == ch.begin()) return false;
    return std::prev(it)->join;
  }
  bool pair_conversation(const Message& m, uint32_t& a, uint32_t& b) const {
    const Conv& c = convs[m.conv];
    if (c.one_to_one) {
      a = c.user_a;
      b = c.user_b;
      return true;
    }
    return false;
  }
  bool member_for(const Message& m, uint32_t user) {
    uint32_t a = kNone;
    uint32_t b = kNone;
    if (pair_conversation(m, a, b)) return user == a || user == b;
    return group_member(m.conv, user, m.seq);
  }
  // member_for(m, user) where `user` is the user of dc's device and dc is (that device, m.conv):
  // a group's Membership record comes through dc once found.
  bool member_for_device_conv(const Message& m, uint32_t user, DeviceConv& dc) {
    uint32_t a = kNone;
    uint32_t b = kNone;
    if (pair_conversation(m, a, b)) return user == a || user == b;
    if (dc.membership == kNone) {
      const uint32_t* index = membership_index.find(pack(m.conv, user));
      if (index == nullptr) return false;
      dc.membership = *index;
    }
    return member_in(memberships[dc.membership], m.seq);
  }
  // "meant for": a member's device other than the sender's that appeared by the send.
  bool meant_for(const Message& m, uint32_t device) {
    if (!m.has(kSent) || m.seq == kNoSeq || device == m.sender_device) return false;
    const Device& d = devices[device];
    if (d.user == kNone || d.first_line > m.send_line) return false;
    return member_for(m, d.user);
  }
  // Meant for at least one of the user's devices; the reader's own messages are not meant for
  // the reader (receipts are about what others sent).
  bool meant_for_user(const Message& m, uint32_t user) {
    if (!m.has(kSent) || m.seq == kNoSeq || user == m.sender_user) return false;
    bool some_device = false;
    for (const uint32_t d : users[user].devices) {
      if (devices[d].first_line <= m.send_line) {
        some_device = true;
        break;
      }
    }
    return some_device && member_for(m, user);
  }
  bool handled_by_user(const Message& m, uint32_t user) {
    for (const uint32_t d : users[user].devices) {
      DeviceConv* dc = find_device_conv(d, m.conv);
      if (dc != nullptr && dc->handled(m.ordinal)) return true;
    }
    return false;
  }

  // ---- seqs ----
  // The first seq a message gets is its seq; a later different one breaks seq-agreement.
  // Inline: a deliver's message nearly always has its seq already (it was acked or shown
  // before), and that case is one compare, without the call and the register saves of the rest.
  [[gnu::always_inline]] void assign_seq(uint32_t mi, int64_t seq, const char* source) {
    const int64_t known = messages[mi].seq;
    if (known == kNoSeq) {
      assign_first_seq(mi, seq);
    } else if (known != seq) {
      report_other_seq(mi, seq, source);
    }
  }
  [[gnu::noinline]] void report_other_seq(uint32_t mi, int64_t seq, const char* source) {
    violate(Invariant::seq_agreement, [&] {
      return Example{{msg_name(mi)}, {seq_line(mi), line},
                     std::string(source) + " says seq " + std::to_string(seq) + " but the message already has seq " +
                         std::to_string(messages[mi].seq)};
    });
  }
  [[gnu::noinline]] void assign_first_seq(uint32_t mi, int64_t seq) {
    Message& m = messages[mi];
    m.seq = seq;
    const uint32_t other = find_or_insert_seq(m.conv, seq, mi);
    if (other != kNone) {
      violate(Invariant::seq_agreement, [&] {
        return Example{{msg_name(other), msg_name(mi)}, {seq_line(other), line},
                       "two messages have seq " + std::to_string(seq) + " in conv " + conv_name(m.conv)};
      });
    }
    const Conv& c = convs[m.conv];
    // A conversation without memberships has had no join or leave (each one adds its user).
    const MembershipEventRecord* record = c.memberships.empty() ? nullptr : find_membership_event(m.conv, seq);
    if (record != nullptr) {
      const MembershipEvent& event = record->event;
      violate(Invariant::seq_agreement, [&] {
        return Example{{msg_name(mi)}, {event.line, line},
                       "seq " + std::to_string(seq) + " is also the " + (event.join ? "join" : "leave") + " of " +
                           user_name(event.user)};
      });
    }
    const int64_t causal_floor = message_cold[mi].causal_floor();
    if (causal_floor != kNoSeq && seq <= causal_floor) report_causal(mi, line32());
    // A delivered receipt written before this seq was known covered it if its up_to reaches it.
    if (seq > c.max_delivered_checked_up_to) return;  // none reaches it (nearly always)
    for (const uint32_t ri : c.readers) {
      ReaderConv& rc = readers[ri];
      if (rc.delivered_checked_up_to >= seq && meant_for_user(m, rc.user) && !handled_by_user(m, rc.user)) {
        violate(Invariant::receipts, [&] {
          return Example{{msg_name(mi)}, {rc.delivered_line, line},
                         "delivered receipt for " + user_name(rc.user) + " up to " +
                             std::to_string(rc.delivered_checked_up_to) + " before seq " + std::to_string(seq) +
                             " was shown on any of its devices"};
        });
      }
    }
  }

  void report_causal(uint32_t mi, uint32_t seq_line) {
    const Message& m = messages[mi];
    const MessageCold& cold = message_cold[mi];
    violate(Invariant::causal, [&] {
      Example e;
      e.msgs = {msg_name(mi)};
      if (cold.causal_floor_msg != kNone) e.msgs.push_back(msg_name(cold.causal_floor_msg));
      e.lines = {m.send_line, seq_line};
      e.detail = "sent after its device had seen seq " + std::to_string(cold.causal_floor()) + " but got seq " +
                 std::to_string(m.seq);
      return e;
    });
  }

  // ---- events ----
  void on_send(const EventView& e, const EventIdKeys& h) {
    ++stats.sends;
    const uint32_t user = user_of(e.user, h.user);
    const uint32_t device = device_of(e.device, h.device, user);
    const uint32_t conv = conv_of(e.conv, h.conv);
    bool added = false;
    const uint32_t mi = message_of(e.msg, h.msg, conv, added);
    Message& m = messages[mi];
    if (m.has(kSent)) return;  // a repeated send of the same msg id: the first one counts
    m.flags |= kSent;
    if (added) m.flags |= kInternedAtSend;
    m.sender_user = user;
    m.sender_device = device;
    m.send_t = e.t;
    m.send_line = line32();
    m.body_hash = body_hash(e.body);
    if (e.expires_at && *e.expires_at != kNoExpiry) {
      m.flags |= kExpiring;
      message_cold[mi].expires_at = *e.expires_at;
    }
    if (e.view_once) m.flags |= kViewOnce;
    if (e.to) {
      // The members of a 1:1 conversation: the two users of its first send with `to`.
      const uint32_t to = user_of(*e.to, h.to);
      Conv& c = convs[conv];
      if (!c.one_to_one) {
        c.one_to_one = true;
        c.user_a = user;
        c.user_b = to;
      }
    }
    if (m.conv != conv) return;  // first seen in another conversation; no-phantom reports it
    DeviceConv& dc = device_conv(device, conv);
    MessageCold& cold = message_cold[mi];
    if (dc.max_shown_seq >= dc.max_acked_own_seq) {
      cold.set_causal_floor(dc.max_shown_seq);
      cold.causal_floor_msg = dc.max_shown_msg;
    } else {
      cold.set_causal_floor(dc.max_acked_own_seq);
      cold.causal_floor_msg = dc.max_acked_own_msg;
    }
    const int64_t causal_floor = cold.causal_floor();
    if (m.seq != kNoSeq && causal_floor != kNoSeq && m.seq <= causal_floor) report_causal(mi, seq_line(mi));
  }

  void on_ack(const EventView& e, const EventIdKeys& h) {
    ++stats.acks;
    uint32_t device = h.device.id;
    uint32_t conv = kNone;
    uint32_t mi = h.msg.id;
    // An ack usually comes right after its send, which added the message after the look-ahead
    // had missed it: the message is that one when its name is the line's (names are unique).
    if (mi == kNone && last_added_msg != kNone && messages[last_added_msg].name.is(e.msg)) mi = last_added_msg;
    // The conv through the message's record when the line names the same one (as for deliver).
    if (device != kNone && mi != kNone && conv_ids.name_is(messages[mi].conv, e.conv)) {
      conv = messages[mi].conv;
    } else {
      device = device_of(e.device, h.device);
      conv = conv_of(e.conv, h.conv);
      bool added = false;
      mi = message_of(e.msg, h.msg, conv, added);
    }
    Message& m = messages[mi];
    if (m.has(kRejected)) {
      violate(Invariant::no_rejected_delivery, [&] {
        return Example{{msg_name(mi)}, {message_cold[mi].reject_line, line}, "acked after it was rejected"};
      });
    }
    if (!m.has(kAcked)) {
      m.flags |= kAcked;
      message_cold[mi].ack_line = line32();
    }
    if (m.conv != conv) return;
    assign_seq(mi, e.seq, "ack");
    // Found ahead for exactly this (device, conv) when h.device_conv is set.
    DeviceConv& dc = h.device_conv != kNone ? device_convs[h.device_conv] : device_conv(device, conv);
    if (m.seq > dc.max_acked_own_seq) {
      dc.max_acked_own_seq = m.seq;
      dc.max_acked_own_msg = mi;
    }
  }

  void on_reject(const EventView& e, const EventIdKeys& h) {
    device_of(e.device, h.device);
    const uint32_t conv = conv_of(e.conv, h.conv);
    bool added = false;
    const uint32_t mi = message_of(e.msg, h.msg, conv, added);
    Message& m = messages[mi];
    if (m.has(kAcked)) {
      violate(Invariant::no_rejected_delivery, [&] {
        return Example{{msg_name(mi)}, {message_cold[mi].ack_line, line}, "rejected after it was acked"};
      });
    }
    if (m.has(kShownAnywhere)) {
      violate(Invariant::no_rejected_delivery, [&] {
        return Example{{msg_name(mi)}, {message_cold[mi].first_show_line, line}, "rejected after it was shown"};
      });
    }
    if (!m.has(kRejected)) {
      m.flags |= kRejected;
      message_cold[mi].reject_line = line32();
    }
  }

  // A deliver's user, conv and sender as the records of its device and message name them, when
  // the line names the same ones (true): then each is what interning its text would give, with
  // no hash and no table probe. Otherwise (false) the caller interns them all, in the usual
  // order, since one may be new.
  bool deliver_ids_from_records(const EventView& e, const EventIdKeys& h, uint32_t& user, uint32_t& conv,
                                uint32_t& from) const {
    if (h.device.id == kNone || h.msg.id == kNone) return false;
    const uint32_t device_user = devices[h.device.id].user;
    if (device_user == kNone || !users_ids.name_is(device_user, e.user)) return false;
    const Message& m = messages[h.msg.id];
    if (!conv_ids.name_is(m.conv, e.conv)) return false;
    if (m.sender_user == kNone || !users_ids.name_is(m.sender_user, e.from)) return false;
    user = device_user;
    conv = m.conv;
    from = m.sender_user;
    return true;
  }

  void on_deliver(const EventView& e, const EventIdKeys& h) {
    ++stats.delivers;
    uint32_t user = kNone;
    uint32_t device = h.device.id;
    uint32_t conv = kNone;
    uint32_t from = kNone;
    uint32_t mi = h.msg.id;
    if (!deliver_ids_from_records(e, h, user, conv, from)) {
      user = user_of(e.user, h.user);
      device = device_of(e.device, h.device, user);
      conv = conv_of(e.conv, h.conv);
      from = user_of(e.from, h.from);
      bool added = false;
      mi = message_of(e.msg, h.msg, conv, added);
    }
    Message& m = messages[mi];

    if (!m.has(kSent)) {
      violate(Invariant::no_phantom, [&] { return Example{{msg_name(mi)}, {line}, "shown but never sent"}; });
    } else if (m.conv != conv || m.sender_user != from || m.body_hash != body_hash(e.body)) {
      violate(Invariant::no_phantom, [&] {
        std::string what = m.conv != conv ? "conv " + conv_name(conv) + " but it was sent in " + conv_name(m.conv)
                           : m.sender_user != from ? "from " + user_name(from) + " but " + user_name(m.sender_user) + " sent it"
                                                   : std::string("a body that differs from the one sent");
        return Example{{msg_name(mi)}, {m.send_line, line}, "shown with " + what};
      });
    }
    if (m.conv != conv) return;  // nothing else can be placed in a conversation it was not sent in

    assign_seq(mi, e.seq, "deliver");
    if (m.has(kRejected)) {
      violate(Invariant::no_rejected_delivery, [&] {
        return Example{{msg_name(mi)}, {message_cold[mi].reject_line, line}, "shown on " + device_name(device) + " after it was rejected"};
      });
    }
    // Judged with what is known now. A non-member now may be made one by a join written later,
    // so that case waits for finish(); a member now may be made a non-member by a leave written
    // later, which marks the conversation for a full re-judgement at finish().
    Conv& shown_conv = convs[conv];
    if (m.seq > shown_conv.max_shown_seq) shown_conv.max_shown_seq = m.seq;
    // Found ahead for exactly this (device, conv) when h.device_conv is set.
    DeviceConv& dc = h.device_conv != kNone ? device_convs[h.device_conv] : device_conv(device, conv);
    if (devices[device].user == user && !member_for_device_conv(m, user, dc)) {
      membership_suspects.push_back({user, device, mi, line32()});
      if (membership_suspects.size() >= kMembershipSuspectsMax) judge_membership_suspects();
    }
    if (m.has(kExpiring) && e.t >= message_cold[mi].expires_at) {
      violate(Invariant::expiry, [&] {
        return Example{{msg_name(mi)}, {m.send_line, line},
                       "shown on " + device_name(device) + " at t=" + std::to_string(e.t) + ", at or after expires_at=" +
                           std::to_string(message_cold[mi].expires_at)};
      });
    }

    if (dc.shown(m.ordinal)) {
      // A second show of the same message is a duplicate, not a new step in the order.
      violate(Invariant::no_duplicate, [&] {
        return Example{{msg_name(mi)}, {message_cold[mi].first_show_line, line}, "shown twice on " + device_name(device)};
      });
      if (m.has(kViewOnce)) {
        violate(Invariant::expiry, [&] {
          return Example{{msg_name(mi)}, {line}, "view-once message shown twice on " + device_name(device)};
        });
      }
      return;
    }
    dc.set_shown(m.ordinal);
    if (!m.has(kShownAnywhere)) {
      m.flags |= kShownAnywhere;
      message_cold[mi].first_show_line = line32();
    }

    if (e.seq <= dc.max_shown_seq) {
      violate(Invariant::order, [&] {
        return Example{{msg_name(dc.max_shown_msg), msg_name(mi)}, {dc.max_shown_line, line},
                       "seq " + std::to_string(e.seq) + " shown on " + device_name(device) + " after seq " +
                           std::to_string(dc.max_shown_seq)};
      });
      if (!dc.expired(m.ordinal) && meant_for(m, device)) {
        violate(Invariant::gap_free, [&] {
          return Example{{msg_name(dc.max_shown_msg), msg_name(mi)}, {dc.max_shown_line, line},
                         device_name(device) + " showed seq " + std::to_string(dc.max_shown_seq) + " before seq " +
                             std::to_string(e.seq) + " was shown or expired there"};
        });
      }
    } else {
      dc.max_shown_seq = e.seq;
      dc.max_shown_msg = mi;
      dc.max_shown_line = line32();
    }

    Device& d = devices[device];
    if (d.pending_view_once_msg != kNone) {
      const uint32_t pending = d.pending_view_once_msg;
      violate(Invariant::expiry, [&] {
        return Example{{msg_name(pending), msg_name(mi)}, {d.pending_view_once_line, line},
                       "view-once message not expired on " + device_name(device) + " before it showed another"};
      });
      d.pending_view_once_msg = kNone;
    }
    if (m.has(kViewOnce)) {
      d.pending_view_once_msg = mi;
      d.pending_view_once_line = line32();
      d.pending_view_once_t = e.t;
    }

    if (m.has(kSent) && m.sender_device != kNone) {
      const Device& sender = devices[m.sender_device];
      const bool quiet = active_faults.empty() && last_heal_t <= m.send_t;
      if (quiet && d.online && d.online_since_t <= m.send_t && sender.online && sender.online_since_t <= m.send_t) {
        const int64_t latency_ns = e.t - m.send_t;
        latency.add(latency_ns);
        if (options.latency_p99_bound_ns && latency_ns <= *options.latency_p99_bound_ns) ++latency_within_bound;
      }
    }
  }

  void on_read(const EventView& e, const EventIdKeys& h) {
    const uint32_t user = user_of(e.user, h.user);
    device_of(e.device, h.device, user);
    const uint32_t conv = conv_of(e.conv, h.conv);
    ReaderConv& rc = reader_conv(user, conv);
    if (e.up_to > rc.max_read_up_to) {
      rc.max_read_up_to = e.up_to;
      rc.max_read_line = line32();
    }
  }

  void on_receipt(const EventView& e, const EventIdKeys& h) {
    const uint32_t device = device_of(e.device, h.device);
    const uint32_t conv = conv_of(e.conv, h.conv);
    const uint32_t reader = user_of(e.reader, h.reader);
    // Keyed by (the receiving device's DeviceConv, reader, kind): 31 + 32 + 1 bits.
    const uint64_t key = (uint64_t{device_conv_index_of(device, conv)} << 33) | (uint64_t{reader} << 1) |
                         (e.kind == ReceiptKind::read ? 1u : 0u);
    const auto fresh = static_cast<uint32_t>(receipt_states.size());
    const uint32_t index = receipt_index.insert(key, fresh);
    if (index == fresh) {
      receipt_states.push_back(ReceiptState{e.up_to, line32()});
    } else {
      ReceiptState* it = &receipt_states[index];
      if (e.up_to < it->max_up_to) {
        const uint32_t earlier = it->line;
        const int64_t earlier_up_to = it->max_up_to;
        violate(Invariant::receipts, [&] {
          return Example{{}, {earlier, line},
                         std::string(to_string(e.kind)) + " receipt for " + user_name(reader) + " on " +
                             device_name(device) + " went back from " + std::to_string(earlier_up_to) + " to " +
                             std::to_string(e.up_to)};
        });
      } else {
        *it = ReceiptState{e.up_to, line32()};
      }
    }
    ReaderConv& rc = reader_conv(reader, conv);
    if (e.kind == ReceiptKind::read) {
      if (e.up_to > rc.max_read_up_to) {
        violate(Invariant::receipts, [&] {
          std::vector<uint64_t> lines;
          if (rc.max_read_line != 0) lines.push_back(rc.max_read_line);
          lines.push_back(line);
          return Example{{}, lines,
                         "read receipt for " + user_name(reader) + " up to " + std::to_string(e.up_to) +
                             " but it had read only up to " + seq_text(rc.max_read_up_to)};
        });
      }
      return;
    }
    if (e.up_to > rc.delivered_checked_up_to) {
      check_delivered_range(rc, conv, e.up_to);
      rc.delivered_checked_up_to = e.up_to;
      Conv& c = convs[conv];
      c.max_delivered_checked_up_to = std::max(c.max_delivered_checked_up_to, e.up_to);
    }
    rc.delivered_line = line32();
    if (!rc.listed) {
      rc.listed = true;
      convs[conv].readers.push_back(*reader_index.find(pack(reader, conv)));
    }
  }

  // Every message meant for the reader with a seq in (checked, up_to] must have been shown or
  // expired on one of the reader's devices by now.
  void check_delivered_range(ReaderConv& rc, uint32_t conv, int64_t up_to) {
    const Conv& c = convs[conv];
    auto check = [&](uint32_t mi) {
      const Message& m = messages[mi];
      if (m.seq == kNoSeq || m.seq > up_to || (rc.delivered_checked_up_to != kNoSeq && m.seq <= rc.delivered_checked_up_to))
        return;
      if (meant_for_user(m, rc.user) && !handled_by_user(m, rc.user)) {
        violate(Invariant::receipts, [&] {
          return Example{{msg_name(mi)}, {seq_line(mi), line},
                         "delivered receipt for " + user_name(rc.user) + " up to " + std::to_string(up_to) +
                             " but seq " + std::to_string(m.seq) + " was not shown on any of its devices"};
        });
      }
    };
    const bool bounded = rc.delivered_checked_up_to != kNoSeq && up_to - rc.delivered_checked_up_to > 0 &&
                         static_cast<uint64_t>(up_to - rc.delivered_checked_up_to) <= c.messages.size();
    if (bounded) {
      for (int64_t s = rc.delivered_checked_up_to + 1; s <= up_to; ++s) {
        const uint32_t mi = find_seq(conv, s);
        if (mi != kNone) check(mi);
      }
    } else {
      for (const uint32_t mi : c.messages) check(mi);
    }
  }

  void on_membership(const EventView& e, const EventIdKeys& h, bool join) {
    const uint32_t conv = conv_of(e.conv, h.conv);
    const uint32_t user = user_of(e.user, h.user);
    bool inserted = false;
    const MembershipEventRecord& record = insert_membership_event(conv, e.seq, MembershipEvent{user, join, line32()}, inserted);
    if (!inserted) {
      if (record.event.user == user && record.event.join == join) return;  // the same change, seen again
      const MembershipEvent first = record.event;
      violate(Invariant::seq_agreement, [&] {
        return Example{{}, {first.line, line},
                       "seq " + std::to_string(e.seq) + " in conv " + conv_name(conv) + " is both the " +
                           (first.join ? "join" : "leave") + " of " + user_name(first.user) + " and the " +
                           (join ? "join" : "leave") + " of " + user_name(user)};
      });
      return;
    }
    if (e.seq < convs[conv].max_shown_seq) convs[conv].late_membership = true;
    const uint32_t mi = find_seq(conv, e.seq);
    if (mi != kNone) {
      violate(Invariant::seq_agreement, [&] {
        return Example{{msg_name(mi)}, {seq_line(mi), line},
                       "seq " + std::to_string(e.seq) + " is both a message and the " + (join ? "join" : "leave") +
                           " of " + user_name(user)};
      });
    }
    const uint32_t index = membership_index.insert(pack(conv, user), static_cast<uint32_t>(memberships.size()));
    if (index == memberships.size()) {
      Membership ms;
      ms.conv = conv;
      ms.user = user;
      memberships.push_back(std::move(ms));
      convs[conv].memberships.push_back(index);
    }
    auto& changes = memberships[index].changes;
    const Change change{e.seq, join, line32()};
    auto at = std::upper_bound(changes.begin(), changes.end(), e.seq,
                               [](int64_t s, const Change& c) { return s < c.seq; });
    changes.insert(at, change);
  }

  void on_expire(const EventView& e, const EventIdKeys& h) {
    const uint32_t device = device_of(e.device, h.device);
    const std::optional<uint32_t> found = find_message(e.msg, h.msg);
    if (!found) return;  // nothing known about it: nothing to judge
    const uint32_t mi = *found;
    const Message& m = messages[mi];
    // Found ahead for exactly this (device, conv) when h.device_conv is set.
    DeviceConv& dc = h.device_conv != kNone ? device_convs[h.device_conv] : device_conv(device, m.conv);
    const bool shown = dc.shown(m.ordinal);
    dc.set_expired(m.ordinal);
    if (shown && m.has(kExpiring) && e.t > message_cold[mi].expires_at + kExpirySlack_ns) {
      violate(Invariant::expiry, [&] {
        return Example{{msg_name(mi)}, {m.send_line, line},
                       "expired on " + device_name(device) + " at t=" + std::to_string(e.t) + ", more than 1 s after expires_at=" +
                           std::to_string(message_cold[mi].expires_at)};
      });
    }
    Device& d = devices[device];
    if (d.pending_view_once_msg == mi) {
      if (e.t > d.pending_view_once_t + kExpirySlack_ns) {
        violate(Invariant::expiry, [&] {
          return Example{{msg_name(mi)}, {d.pending_view_once_line, line},
                         "view-once message expired on " + device_name(device) + " more than 1 s after it was shown"};
        });
      }
      d.pending_view_once_msg = kNone;
    }
  }

  void on_decrypt_error(const EventView& e, const EventIdKeys& h) {
    device_of(e.device, h.device);
    const std::optional<uint32_t> found = find_message(e.msg, h.msg);
    if (!found) return;
    const Message& m = messages[*found];
    if (!m.has(kSent)) return;  // the sender is unknown
    bool current_member = false;
    uint32_t a = kNone;
    uint32_t b = kNone;
    if (pair_conversation(m, a, b)) {
      current_member = m.sender_user == a || m.sender_user == b;
    } else {
      const Membership* ms = find_membership(m.conv, m.sender_user);
      current_member = ms != nullptr && !ms->changes.empty() && ms->changes.back().join;
    }
    if (current_member) {
      violate(Invariant::decrypt, [&] {
        return Example{{msg_name(*found)}, {m.send_line, line},
                       "decrypt_error on " + std::string(e.device) + " (" + std::string(e.reason) + ") for a message from member " +
                           user_name(m.sender_user)};
      });
    }
  }

  void on_online(const EventView& e, const EventIdKeys& h, bool online) {
    uint32_t device = h.device.id;
    // The user through the device's record when the line names the device's user (as for
    // deliver); otherwise both are interned as usual.
    if (device == kNone || devices[device].user == kNone || !users_ids.name_is(devices[device].user, e.user)) {
      const uint32_t user = user_of(e.user, h.user);
      device = device_of(e.device, h.device, user);
    }
    Device& d = devices[device];
    if (online && !d.online) d.online_since_t = e.t;
    d.online = online;
  }

  void on_fault(const EventView& e, bool begins) {
    if (begins) {
      auto [it, added] = active_faults.try_emplace(std::string(e.name), 0);
      ++it->second;
      return;
    }
    auto it = active_faults.find(e.name);
    if (it == active_faults.end()) return;
    if (--it->second == 0) active_faults.erase(it);
    last_heal_t = e.t;
  }

  // The first look-ahead step on a line, the one switch on its type before it is judged: writes
  // `h` afresh with the hashes of the ids `e` names (those its type's look-ahead and handler use;
  // the others stay 0 and are hashed only if observing needs them) and starts loading their
  // id-table slots, which are far bigger than the caches: the lookups of several lines then
  // wait for their misses together. `h` is written in place (it is the ring slot's, or the
  // caller's): returning it cost a 120-byte copy a line. Changes no state of the checker.
  // `before` is the line before's (when there is one still in the ring: LineFeed), whose keys
  // this start wrote one push earlier.
  void start_look_ahead(const EventView& e, EventIdKeys& h, const EventView* before = nullptr,
                        const EventIdKeys* before_keys = nullptr) const {
    h = EventIdKeys{};
    switch (e.type) {
      case EventType::deliver:
      case EventType::ack:
      case EventType::expire:
      case EventType::decrypt_error:
        // A deliver's or an ack's user, conv and sender come through the device's and the
        // message's records (deliver_ids_from_records), and are hashed only when those do not
        // name them. The device is the line before's 3 times in 4 (BM_Oracle's history: 72% of
        // delivers, every ack, 81% of expires): then its hash is that line's, whose slot that
        // line loaded.
        if (before_keys != nullptr && before_keys->device.hash != 0 && same_text(before->device, e.device)) {
          h.device.hash = before_keys->device.hash;
          h.device_as_line_before = true;
        } else {
          h.device.hash = text_hash(e.device);
          device_ids.prefetch(h.device.hash);
        }
        h.msg.hash = text_hash(e.msg);
        msg_slots.prefetch(h.msg.hash);
        break;
      case EventType::send:
        h.user.hash = text_hash(e.user);
        h.device.hash = text_hash(e.device);
        h.conv.hash = text_hash(e.conv);
        h.msg.hash = text_hash(e.msg);
        if (e.to) h.to.hash = text_hash(*e.to);
        users_ids.prefetch(h.user.hash);
        device_ids.prefetch(h.device.hash);
        conv_ids.prefetch(h.conv.hash);
        msg_slots.prefetch(h.msg.hash);
        break;
      case EventType::reject:
        h.device.hash = text_hash(e.device);
        h.conv.hash = text_hash(e.conv);
        h.msg.hash = text_hash(e.msg);
        device_ids.prefetch(h.device.hash);
        conv_ids.prefetch(h.conv.hash);
        msg_slots.prefetch(h.msg.hash);
        break;
      case EventType::receipt:
        h.reader.hash = text_hash(e.reader);
        h.device.hash = text_hash(e.device);
        h.conv.hash = text_hash(e.conv);
        users_ids.prefetch(h.reader.hash);
        device_ids.prefetch(h.device.hash);
        conv_ids.prefetch(h.conv.hash);
        break;
      case EventType::read:
        h.user.hash = text_hash(e.user);
        h.device.hash = text_hash(e.device);
        h.conv.hash = text_hash(e.conv);
        users_ids.prefetch(h.user.hash);
        device_ids.prefetch(h.device.hash);
        conv_ids.prefetch(h.conv.hash);
        break;
      case EventType::online:
      case EventType::offline:
        h.device.hash = text_hash(e.device);  // the user comes through the device's record
        device_ids.prefetch(h.device.hash);
        break;
      case EventType::join:
      case EventType::leave:
        h.user.hash = text_hash(e.user);
        h.conv.hash = text_hash(e.conv);
        users_ids.prefetch(h.user.hash);
        conv_ids.prefetch(h.conv.hash);
        break;
      case EventType::fault:
      case EventType::heal:
      case EventType::end:
        break;
    }
  }

  // Between the slots and the records stage (lines with a msg id: kAheadStages): the message
  // id's slot is in the cache now; start loading the record of its first candidate (nearly
  // always the message itself), which the records stage compares with the id. Changes no state.
  void prefetch_msg_candidates(EventIdKeys& h) const {
    h.msg.candidate = msg_slots.first_candidate(h.msg.hash);
    if (h.msg.candidate != kNone) messages.prefetch(h.msg.candidate);
  }

  // The second stage, a few events later, once the slots are in the cache: looks the ids up
  // without adding any and starts loading the records observing `e` will touch. An id found
  // here is kept in `h` (it is final: ids are never removed or renumbered), so observing does
  // not look it up again; an id that an event in between adds is simply not found here, and
  // observing interns it as usual. Changes no state of the checker.
  // (Lines with a device id: kAheadStages.) `before_keys` are the line before's, whose records
  // stage ran one push earlier.
  void prefetch_records(const EventView& e, EventIdKeys& h, const EventIdKeys& before_keys) const {
    if (h.device_as_line_before && before_keys.device.id != kNone) {
      h.device.id = before_keys.device.id;  // the same text, so the same id; its record is loaded
    } else if (const std::optional<uint32_t> d = device_ids.find(e.device, h.device.hash)) {
      h.device.id = *d;
      devices.prefetch(*d);
    }
    if (e.type == EventType::online || e.type == EventType::offline) return;
    // The candidates' records were loaded by the stage before (prefetch_msg_candidates). Names
    // are unique, so a candidate that has the id is its message (nearly always: every line but
    // a send's names a message there is already); a candidate with another name is followed by
    // probing the table. No candidate: the probe met an empty slot two pushes ago, so the
    // message is new (a send's) or was added since by a line observed in between (mostly an ack
    // right after its send, which on_ack takes as the message added last); observing finds
    // either itself, as it does any id not found here (probing again here, 242,385 times over
    // the 1 M history, cost ~15 instructions a line).
    uint32_t m = h.msg.candidate;
    if (m != kNone && !messages[m].name.is(e.msg)) m = find_msg(e.msg, h.msg.hash);
    if (m != kNone) {
      h.msg.id = m;
      // An ack usually gives its message its seq, and assign_seq reads the causal floor.
      if (e.type == EventType::ack) message_cold.prefetch(m);
    }
    // A deliver's or an ack's conv comes through its message (prefetch_conv_records).
    if (e.type == EventType::send || e.type == EventType::reject) {
      if (const std::optional<uint32_t> c = conv_ids.find(e.conv, h.conv.hash)) {
        h.conv.id = *c;
        convs.prefetch(*c);
        if (h.device.id != kNone) prefetch_device_conv_index(h.device.id, *c);
      }
      if (e.type == EventType::send) {
        if (const std::optional<uint32_t> u = users_ids.find(e.user, h.user.hash)) h.user.id = *u;
      }
    }
  }

  void prefetch_seq_slot(uint32_t conv, int64_t seq) const {
    seq_slots.prefetch(seq_hash(conv, seq));
  }

  // The third stage, once the message's and the device's records are in the cache: starts
  // loading what observing reads through them: the (device, conv) index slot, the
  // conversation, the (conv, user) membership slot and the sender's device (latency), and the
  // (conv, seq) slot of a message that has no seq yet. A (device, conv) record found in the
  // device's inline conversations is kept in `h`. Changes no state of the checker.
  // (Deliver, ack and expire lines: kAheadStages.)
  // `before_keys` are the line before's, whose stage here ran one push earlier.
  void prefetch_conv_records(const EventView& e, EventIdKeys& h, const EventIdKeys& before_keys) const {
    if (h.msg.id == kNone) return;
    const Message& m = messages[h.msg.id];
    const uint32_t conv = m.conv;
    h.msg_conv = conv;
    // A deliver in a burst: the same device and conversation as the line before, whose (device,
    // conv) record, conversation, names and membership slot that line found and loaded.
    if (e.type == EventType::deliver && h.device_as_line_before && h.device.id != kNone &&
        before_keys.device.id == h.device.id && before_keys.msg_conv == conv && before_keys.device_conv != kNone) {
      h.device_conv = before_keys.device_conv;
      if (m.has(kExpiring) || !m.has(kShownAnywhere)) message_cold.prefetch(h.msg.id);
      if (m.seq == kNoSeq) prefetch_seq_slot(conv, e.seq);
      if (m.sender_device != kNone) devices.prefetch(m.sender_device);
      if (m.sender_user != kNone) users_ids.prefetch_name(m.sender_user);
      return;
    }
    if (h.device.id != kNone) {
      // The device's record is loaded: a conversation inline there is found now (final, as ids
      // are), and its record starts loading; otherwise the index slot does.
      bool all_inline = false;
      const uint32_t inline_index = devices[h.device.id].inline_device_conv(conv, all_inline);
      if (inline_index != kNone) {
        h.device_conv = inline_index;
        device_convs.prefetch(inline_index);
      } else if (!all_inline) {
        device_conv_index.prefetch(pack(h.device.id, conv));
      }
    }
    // MessageCold: a disappearing message's expires_at, a first show's line.
    if (m.has(kExpiring) || (e.type == EventType::deliver && !m.has(kShownAnywhere))) message_cold.prefetch(h.msg.id);
    if (e.type == EventType::expire) return;
    convs.prefetch(conv);
    if (m.seq == kNoSeq) prefetch_seq_slot(conv, e.seq);
    if (e.type != EventType::deliver) {
      conv_ids.prefetch_name(conv);  // the ack's name_is of its conv
      return;
    }
    if (h.device.id != kNone) {
      const uint32_t user = devices[h.device.id].user;
      if (user != kNone) {
        membership_index.prefetch(pack(conv, user));
        users_ids.prefetch_name(user);
      }
    }
    if (m.sender_device != kNone) devices.prefetch(m.sender_device);
    // deliver_ids_from_records compares the line's user, conv and sender with these names.
    conv_ids.prefetch_name(conv);
    if (m.sender_user != kNone) users_ids.prefetch_name(m.sender_user);
  }

  // The fourth stage, once the (device, conversation) index slot is in the cache: finds the
  // record a deliver, ack or expire touches (kept in `h`, as ids are: observing uses it when the
  // line's conv is the message's, the only case that reaches it) and starts loading it.
  // Changes no state.
  void prefetch_device_conv(const EventView& e, EventIdKeys& h, const EventIdKeys& before_keys) const {
    if (e.type == EventType::send) {
      // A send reads its (device, conv) record for the causal floor; the records stage loaded
      // the index slot. Prefetch only: on_send looks the record up itself.
      if (h.device.id == kNone || h.conv.id == kNone) return;
      if (const uint32_t index = find_device_conv_index(h.device.id, h.conv.id); index != kNone) device_convs.prefetch(index);
      return;
    }
    // Otherwise a deliver, ack or expire (kAheadStages).
    if (h.msg.id == kNone) return;
    const Message& m = messages[h.msg.id];
    // (The names the stage before started loading are copies by id: nothing more to load.)
    if (e.type == EventType::deliver && h.device_conv != kNone && h.device_conv == before_keys.device_conv &&
        before_keys.membership != kNone) {
      // The line before's (device, conv) record, so its device's user's Membership, which that
      // line's stage here (one push earlier) found and loaded.
      h.membership = before_keys.membership;
    } else if (e.type == EventType::deliver) {
      const uint32_t user = h.device.id == kNone ? kNone : devices[h.device.id].user;
      if (user != kNone) {
        // A group's member_for reads the user's Membership record and then its changes.
        if (m.conv < convs.size() && !convs[m.conv].one_to_one) {
          // Through the (device, conv) record when it was found (and loaded) a stage before and
          // knows it; else through the index.
          const uint32_t known = h.device_conv == kNone ? kNone : device_convs[h.device_conv].membership;
          if (known != kNone) {
            h.membership = known;
            memberships.prefetch(known);
          } else if (const uint32_t* index = membership_index.find(pack(m.conv, user))) {
            h.membership = *index;
            memberships.prefetch(*index);
          }
        }
      }
    }
    if (h.device.id == kNone || h.device_conv != kNone) return;  // found inline a stage before
    if (const uint32_t index = find_device_conv_index(h.device.id, m.conv); index != kNone) {
      h.device_conv = index;
      device_convs.prefetch(index);
    }
  }

  // Starts loading what finding (device, conv)'s record reads past the device's own record.
  void prefetch_device_conv_index(uint32_t device, uint32_t conv) const {
    bool all_inline = false;
    if (devices[device].inline_device_conv(conv, all_inline) == kNone && !all_inline) {
      device_conv_index.prefetch(pack(device, conv));
    }
  }

  // The last stage (deliver and expire lines: kAheadStages), once that record is in the cache:
  // starts loading the word of its shown and expired bits that observing reads, and a group
  // member's membership changes. Changes no state.
  void prefetch_shown_bits(const EventIdKeys& h) const {
    if (h.membership != kNone) {
      const std::vector<Change>& changes = memberships[h.membership].changes;
      if (!changes.empty()) prefetch_address(changes.data());
    }
    if (h.device_conv == kNone) return;
    const DeviceConv& dc = device_convs[h.device_conv];
    const uint32_t ordinal = messages[h.msg.id].ordinal;
    // The newest word is inline (already loaded); an earlier one is on the heap.
    if (const uint64_t* word = dc.bits.find(ordinal)) prefetch_address(word);
  }

  void observe(const EventView& e) {
    EventIdKeys h;
    start_look_ahead(e, h);
    observe(e, h);
  }

  void observe(const EventView& e, const EventIdKeys& h) {
    if (input_error) return;
    if (line >= kLinesMax) {
      input_error = make_error(ErrorCode::bad_input, "line " + std::to_string(line + 1) + ": history longer than " +
                                                         std::to_string(kLinesMax) + " events");
      return;
    }
    if (line > 0 && e.t < last_t) {
      input_error = make_error(ErrorCode::bad_input, "line " + std::to_string(line + 1) + ": t decreases (from " +
                                                         std::to_string(last_t) + " to " + std::to_string(e.t) + ")");
      return;
    }
    ++line;
    last_t = e.t;
    ++stats.events;
    switch (e.type) {
      case EventType::send: on_send(e, h); break;
      case EventType::ack: on_ack(e, h); break;
      case EventType::reject: on_reject(e, h); break;
      case EventType::deliver: on_deliver(e, h); break;
      case EventType::read: on_read(e, h); break;
      case EventType::receipt: on_receipt(e, h); break;
      case EventType::join: on_membership(e, h, true); break;
      case EventType::leave: on_membership(e, h, false); break;
      case EventType::expire: on_expire(e, h); break;
      case EventType::decrypt_error: on_decrypt_error(e, h); break;
      case EventType::online: on_online(e, h, true); break;
      case EventType::offline: on_online(e, h, false); break;
      case EventType::fault: on_fault(e, true); break;
      case EventType::heal: on_fault(e, false); break;
      case EventType::end:
        stats.ended = true;
        stats.quiescent = e.quiescent;
        break;
    }
  }

  // ---- finish ----
  void judge_membership_suspects() {
    for (const MembershipSuspect& s : membership_suspects) {
      const Message& m = messages[s.msg];
      // A message never sent, in a conversation with neither a 1:1 send nor a membership
      // change, has no known membership to judge it by (no-phantom reports it).
      const Conv& c = convs[m.conv];
      if (c.late_membership) continue;  // judge_late_membership covers every delivery there
      if (!m.has(kSent) && !c.one_to_one && c.memberships.empty()) continue;
      if (member_for(m, s.user)) continue;
      violate(Invariant::membership, [&] {
        return Example{{msg_name(s.msg)}, {s.line},
                       "shown on " + device_name(s.device) + " of " + user_name(s.user) + ", not a member of " +
                           conv_name(m.conv) + " at seq " + seq_text(m.seq)};
      });
    }
    membership_suspects.clear();
  }

  // Conversations whose membership changed behind shown messages: every (device, message)
  // shown there is judged against the final membership. The line of the delivery is not kept
  // per device, so the example names the message's send line.
  void judge_late_membership() {
    for (size_t dci = 0; dci < device_convs.size(); ++dci) {
      const DeviceConv& dc = device_convs[dci];
      const Conv& c = convs[dc.conv];
      if (!c.late_membership) continue;
      const uint32_t user = devices[dc.device].user;
      if (user == kNone) continue;
      for (size_t w = 0; w < dc.bits.words(); ++w) {
        uint64_t shown = dc.bits.word(w) & 0x5555555555555555ULL;
        while (shown != 0) {
          const int bit = __builtin_ctzll(shown);
          shown &= shown - 1;
          const size_t ordinal = dc.bits.base() + w * 32 + static_cast<size_t>(bit / 2);
          if (ordinal >= c.messages.size()) continue;
          const uint32_t mi = c.messages[ordinal];
          const Message& m = messages[mi];
          if (m.seq == kNoSeq || (!m.has(kSent) && !c.one_to_one && c.memberships.empty())) continue;
          if (member_for(m, user)) continue;
          violate(Invariant::membership, [&] {
            return Example{{msg_name(mi)}, {m.send_line},
                           "shown on " + device_name(dc.device) + " of " + user_name(user) + ", not a member of " +
                               conv_name(m.conv) + " at seq " + seq_text(m.seq)};
          });
        }
      }
    }
  }

  // The candidate devices of a conversation for judge_meant_for (its members' devices, each with
  // its DeviceConv looked up once), listed per conversation first, so that judging does no hash
  // lookups: members in pair or membership order, then each member's devices in order of
  // appearance (the order of the checks, and so of the examples).
  struct Candidate {
    uint32_t user;
    uint32_t device;
    uint32_t device_conv;  // kNone: the device never did anything in the conversation
    uint32_t membership;   // kNone: a member of the 1:1 pair
    uint32_t first_line;   // the device's, copied here so the loop over messages skips its record
  };

  void list_candidates(std::vector<uint32_t>& starts, std::vector<Candidate>& candidates) {
    starts.assign(convs.size() + 1, 0);
    auto add_user = [&](uint32_t conv, uint32_t user, uint32_t membership) {
      if (user == kNone) return;
      for (const uint32_t device : users[user].devices) {
        candidates.push_back({user, device, find_device_conv_index(device, conv), membership, devices[device].first_line});
      }
    };
    for (size_t ci = 0; ci < convs.size(); ++ci) {
      const auto conv = static_cast<uint32_t>(ci);
      const Conv& c = convs[ci];
      starts[ci] = static_cast<uint32_t>(candidates.size());
      if (c.one_to_one) {
        add_user(conv, c.user_a, kNone);
        if (c.user_b != c.user_a) add_user(conv, c.user_b, kNone);
      } else {
        for (const uint32_t index : c.memberships) add_user(conv, memberships[index].user, index);
      }
    }
    starts[convs.size()] = static_cast<uint32_t>(candidates.size());
  }

  // Whether judge_meant_for's checks of the pair (message m, candidate) get past every exemption:
  // the message judged at all, the device meant for it (a member at its seq, not the sender's,
  // there by the send) and the message neither shown nor expired there. `dc` is the candidate's
  // record, or nullptr.
  bool unsettled(const Message& m, const Candidate& cand, const DeviceConv* dc) const {
    if (!m.has(kSent) || m.seq == kNoSeq || m.sender_user == kNone) return false;
    if (cand.membership != kNone && !member_in(memberships[cand.membership], m.seq)) return false;
    if (cand.device == m.sender_device || cand.first_line > m.send_line) return false;
    return dc == nullptr || !dc->handled(m.ordinal);
  }
  static bool owed(const Message& m, bool judge_no_loss) {
    return judge_no_loss && m.has(kAcked) && !m.has(kRejected);
  }

  // Every (message, device) pair the message was meant for must have been shown or expired
  // there. Two passes, so that the examples come in the order of the checks (messages in id
  // order; per message its members in pair or membership order, then each member's devices in
  // order of appearance) while the common case, a pair shown there, costs a bit test:
  // 1. Per conversation and candidate device, the ordinals whose two bits are both clear (a
  //    word of the (device, conv) record's bits covers 32 messages), and of those the messages
  //    whose pair would be reported: a bitmap by message id. A valid history has none.
  // 2. Those messages in id order, each with all its candidates, exactly as a single pass over
  //    every message would check them (the others have no pair to report).
  // Before this (session 14) the single pass visited ~13 candidates per message three times
  // (two of them prefetching): ~950 instructions a message.
  void judge_meant_for(bool judge_no_loss) {
    std::vector<uint32_t> starts;
    std::vector<Candidate> candidates;
    list_candidates(starts, candidates);
    const size_t count = messages.size();
    std::vector<uint64_t> reported((count + 63) / 64, 0);
    // Pass 1: the unsettled-looking pairs (bits clear) of each conversation and candidate, then
    // their messages' records, read kAhead pairs after being listed (they lie at random).
    struct Pair {
      uint32_t msg;
      uint32_t candidate;
    };
    std::vector<Pair> pairs;
    for (size_t ci = 0; ci < convs.size(); ++ci) {
      const std::vector<uint32_t>& ordered = convs[ci].messages;
      const auto n = static_cast<uint32_t>(ordered.size());
      for (uint32_t k = starts[ci]; k < starts[ci + 1]; ++k) {
        const Candidate& cand = candidates[k];
        const DeviceConv* dc = cand.device_conv == kNone ? nullptr : &device_convs[cand.device_conv];
        for (uint32_t first = 0; first < n; first += 32) {
          const uint64_t* word = dc == nullptr ? nullptr : dc->bits.find(first);
          const uint64_t bits = word == nullptr ? 0 : *word;
          // Even bits: neither shown (bit 2k) nor expired (bit 2k+1); only ordinals below n.
          uint64_t clear = ~(bits | (bits >> 1)) & 0x5555555555555555ULL;
          if (n - first < 32) clear &= (uint64_t{1} << (2 * (n - first))) - 1;
          while (clear != 0) {
            const int bit = __builtin_ctzll(clear);
            clear &= clear - 1;
            pairs.push_back({ordered[first + static_cast<uint32_t>(bit / 2)], k});
          }
        }
      }
    }
    constexpr size_t kAhead = 8;
    for (size_t j = 0; j < pairs.size(); ++j) {
      if (j + kAhead < pairs.size()) messages.prefetch(pairs[j + kAhead].msg);
      const Pair& pair = pairs[j];
      const Message& m = messages[pair.msg];
      const Candidate& cand = candidates[pair.candidate];
      const DeviceConv* dc = cand.device_conv == kNone ? nullptr : &device_convs[cand.device_conv];
      if (!unsettled(m, cand, dc)) continue;
      if ((dc != nullptr && dc->max_shown_seq > m.seq) || owed(m, judge_no_loss)) {
        reported[pair.msg / 64] |= uint64_t{1} << (pair.msg % 64);
      }
    }
    // Pass 2, in message id order.
    for (size_t w = 0; w < reported.size(); ++w) {
      for (uint64_t left = reported[w]; left != 0; left &= left - 1) {
        const auto id = static_cast<uint32_t>(w * 64 + static_cast<size_t>(__builtin_ctzll(left)));
        const Message& m = messages[id];
        for (uint32_t k = starts[m.conv]; k < starts[m.conv + 1]; ++k) {
          const Candidate& cand = candidates[k];
          const DeviceConv* dc = cand.device_conv == kNone ? nullptr : &device_convs[cand.device_conv];
          if (!unsettled(m, cand, dc)) continue;
          const uint32_t device = cand.device;
          const uint32_t user = cand.user;
          if (dc != nullptr && dc->max_shown_seq > m.seq) {
            violate(Invariant::gap_free, [&] {
              return Example{{msg_name(dc->max_shown_msg), msg_name(id)}, {dc->max_shown_line, seq_line(id)},
                             device_name(device) + " showed seq " + std::to_string(dc->max_shown_seq) + " but never seq " +
                                 std::to_string(m.seq)};
            });
          }
          if (owed(m, judge_no_loss)) {
            violate(Invariant::no_loss, [&] {
              return Example{{msg_name(id)}, {m.send_line, message_cold[id].ack_line},
                             "acked but never shown on " + device_name(device) + " (" + user_name(user) + ")"};
            });
          }
        }
      }
    }
  }

  void judge_expiry_at_end() {
    const int64_t end_t = last_t;
    // The messages overdue at the end, by conversation and ordinal: bit 2k of a conversation's
    // word j for its message of ordinal 32j + k, where a (device, conv) record's shown bit for it
    // is. The loop below then takes a whole word of a record's shown-and-not-expired bits at a
    // time, and looks at a message only when it is overdue: it visited every shown (device,
    // message) pair before (session 14), and reading each message's record at random instead of
    // this (a quarter of a byte per message, in the cache) would cost a miss per pair.
    std::vector<size_t> first_word(convs.size() + 1, 0);
    for (size_t ci = 0; ci < convs.size(); ++ci) first_word[ci + 1] = first_word[ci] + (convs[ci].messages.size() + 31) / 32;
    std::vector<uint64_t> overdue(first_word.back(), 0);
    for (size_t mi = 0; mi < messages.size(); ++mi) {
      const Message& m = messages[mi];
      if (!m.has(kExpiring)) continue;
      const int64_t expires_at = message_cold[mi].expires_at;
      if (end_t > expires_at + kExpirySlack_ns) overdue[first_word[m.conv] + m.ordinal / 32] |= uint64_t{1} << DeviceConv::shift(m.ordinal);
    }
    for (size_t dci = 0; dci < device_convs.size(); ++dci) {
      const DeviceConv& dc = device_convs[dci];
      const Conv& c = convs[dc.conv];
      const size_t conv_words = first_word[dc.conv + 1] - first_word[dc.conv];
      for (size_t w = 0; w < dc.bits.words(); ++w) {
        const size_t conv_word = dc.bits.base() / 32 + w;
        if (conv_word >= conv_words) break;
        const uint64_t word = dc.bits.word(w);
        // Shown (even bits), not expired (odd bits shifted down) and overdue.
        uint64_t pending = word & ~(word >> 1) & overdue[first_word[dc.conv] + conv_word];
        while (pending != 0) {
          const int bit = __builtin_ctzll(pending);
          pending &= pending - 1;
          const size_t ordinal = dc.bits.base() + w * 32 + static_cast<size_t>(bit / 2);
          const uint32_t mi = c.messages[ordinal];
          const Message& m = messages[mi];
          violate(Invariant::expiry, [&] {
            return Example{{msg_name(mi)}, {m.send_line},
                           "shown on " + device_name(dc.device) + " and not expired within 1 s of expires_at=" +
                               std::to_string(message_cold[mi].expires_at)};
          });
        }
      }
    }
    for (size_t di = 0; di < devices.size(); ++di) {
      const Device& d = devices[di];
      if (d.pending_view_once_msg == kNone || end_t <= d.pending_view_once_t + kExpirySlack_ns) continue;
      violate(Invariant::expiry, [&] {
        return Example{{msg_name(d.pending_view_once_msg)}, {d.pending_view_once_line},
                       "view-once message never expired on " + device_name(static_cast<uint32_t>(di))};
      });
    }
  }

  // Acked messages of one device in one conversation, in send order, must have rising seqs.
  void judge_sender_fifo() {
    std::vector<uint32_t> late;  // acked messages first seen before their send
    for (size_t mi = 0; mi < messages.size(); ++mi) {
      const Message& m = messages[mi];
      if (m.has(kSent) && m.has(kAcked) && !m.has(kInternedAtSend) && m.seq != kNoSeq) late.push_back(static_cast<uint32_t>(mi));
    }
    std::sort(late.begin(), late.end(),
              [&](uint32_t a, uint32_t b) { return messages[a].send_line < messages[b].send_line; });
    size_t next_late = 0;
    // Per (device, conversation): the highest seq among its acked messages so far, in send order.
    std::vector<int64_t> max_seq(device_convs.size(), kNoSeq);
    std::vector<uint32_t> max_msg(device_convs.size(), kNone);
    auto visit = [&](uint32_t mi) {
      const Message& m = messages[mi];
      const uint32_t dci = find_device_conv_index(m.sender_device, m.conv);
      if (dci == kNone) return;
      int64_t& fifo_max_seq = max_seq[dci];
      uint32_t& fifo_max_msg = max_msg[dci];
      if (fifo_max_seq != kNoSeq && m.seq < fifo_max_seq) {
        const Message& earlier = messages[fifo_max_msg];
        violate(Invariant::sender_fifo, [&] {
          return Example{{msg_name(fifo_max_msg), msg_name(mi)}, {earlier.send_line, m.send_line},
                         "sent in this order by " + device_name(m.sender_device) + " but got seqs " +
                             std::to_string(earlier.seq) + " and " + std::to_string(m.seq)};
        });
      } else if (m.seq > fifo_max_seq) {
        fifo_max_seq = m.seq;
        fifo_max_msg = mi;
      }
    };
    for (size_t mi = 0; mi < messages.size(); ++mi) {
      const Message& m = messages[mi];
      if (!m.has(kSent) || !m.has(kAcked) || !m.has(kInternedAtSend) || m.seq == kNoSeq || m.conv == kNone) continue;
      while (next_late < late.size() && messages[late[next_late]].send_line < m.send_line) visit(late[next_late++]);
      visit(static_cast<uint32_t>(mi));
    }
    while (next_late < late.size()) visit(late[next_late++]);
  }

  size_t memory_bytes() const {
    size_t bytes = sizeof(State);
    bytes += users_ids.memory_bytes() + device_ids.memory_bytes() + conv_ids.memory_bytes() + msg_slots.memory_bytes() +
             msg_arena.memory_bytes();
    bytes += messages.memory_bytes() + message_cold.memory_bytes();
    bytes += users.memory_bytes() + devices.memory_bytes() + convs.memory_bytes() + device_convs.memory_bytes() +
             memberships.memory_bytes() + readers.memory_bytes();
    for (size_t i = 0; i < users.size(); ++i) bytes += users[i].devices.capacity() * sizeof(uint32_t);
    for (size_t i = 0; i < convs.size(); ++i) {
      const Conv& c = convs[i];
      bytes += (c.messages.capacity() + c.memberships.capacity() + c.readers.capacity()) * sizeof(uint32_t);
    }
    for (size_t i = 0; i < device_convs.size(); ++i) bytes += device_convs[i].bits.heap_bytes();
    for (size_t i = 0; i < memberships.size(); ++i) bytes += memberships[i].changes.capacity() * sizeof(Change);
    bytes += device_conv_index.memory_bytes() + membership_index.memory_bytes() + reader_index.memory_bytes();
    // Hash and tree nodes: the element plus two pointers and the allocator's header.
    bytes += receipt_index.memory_bytes() + receipt_states.memory_bytes();
    bytes += membership_events.capacity() * sizeof(MembershipEventRecord) +
             membership_event_slots.memory_bytes();
    bytes += membership_suspects.capacity() * sizeof(MembershipSuspect);
    bytes += seq_slots.memory_bytes();
    bytes += latency.memory_bytes();
    return bytes;
  }

  Verdict finish() {
    judge_membership_suspects();
    judge_late_membership();
    judge_meant_for(stats.ended && stats.quiescent);
    judge_expiry_at_end();
    judge_sender_fifo();

    Verdict verdict;
    InvariantResult& no_loss = results[static_cast<size_t>(Invariant::no_loss)];
    no_loss.judged = stats.ended && stats.quiescent;

    LatencyStats& ls = stats.latency;
    ls.samples = latency.samples();
    ls.p50_ns = latency.quantile(0.50);
    ls.p99_ns = latency.quantile(0.99);
    ls.max_ns = latency.max_ns();
    ls.bound_p99_ns = options.latency_p99_bound_ns;
    if (options.latency_p99_bound_ns) {
      ls.over_bound = ls.samples - latency_within_bound;
      // The p99 (nearest rank) exceeds the bound exactly when fewer samples than its rank are
      // within the bound.
      if (ls.samples > 0 && latency_within_bound < latency.rank_of(0.99)) {
        InvariantResult& r = results[static_cast<size_t>(Invariant::latency)];
        r.valid = false;
        r.count = ls.over_bound;
        if (options.examples_max > 0) {
          r.examples.push_back(Example{{}, {},
                                       "p99 delivery time exceeds the bound of " +
                                           std::to_string(*options.latency_p99_bound_ns) + " ns: " +
                                           std::to_string(ls.over_bound) + " of " + std::to_string(ls.samples) +
                                           " deliveries are slower"});
        }
      }
    }

    stats.messages = messages.size();
    stats.users = users.size();
    stats.devices = devices.size();
    stats.convs = convs.size();
    stats.last_t = line > 0 ? last_t : 0;
    stats.checker_bytes = memory_bytes();
    verdict.stats = stats;
    for (InvariantResult& r : results) {
      if (!r.judged) {
        r.valid = true;
        r.count = 0;
        r.examples.clear();
      }
      if (!r.valid) verdict.valid = false;
      verdict.invariants.push_back(std::move(r));
    }
    return verdict;
  }
};

Checker::Checker(CheckerOptions options) : state_(std::make_unique<State>(options)) {}
Checker::~Checker() = default;
void Checker::observe(const Event& event) { state_->observe(EventView(event)); }
void Checker::observe(const EventView& event) { state_->observe(event); }
void Checker::prefetch(const EventView& event) {
  EventIdKeys h;
  state_->start_look_ahead(event, h);
}
Verdict Checker::finish() { return state_->finish(); }
const std::optional<Error>& Checker::input_error() const { return state_->input_error; }
uint64_t Checker::events_observed() const { return state_->line; }
size_t Checker::memory_bytes() const { return state_->memory_bytes(); }

namespace {

// Which later look-ahead stages have work on a line, by its type: set once when the line is
// pushed, so that each stage on each push is one bit test instead of a switch on the type (one
// per stage, five a push, as before). A stage function is called only for the types named here.
enum AheadStage : uint8_t {
  kAheadCandidates = 1,   // prefetch_msg_candidates: lines with a msg id
  kAheadRecords = 2,      // prefetch_records: lines with a device id
  kAheadConvRecords = 4,  // prefetch_conv_records: deliver, ack, expire
  kAheadDeviceConv = 8,   // prefetch_device_conv: deliver, ack, expire, send
  kAheadShownBits = 16,   // prefetch_shown_bits: deliver, expire
};
constexpr uint8_t kAheadStages[kEventTypeCount] = {
    /* send */ kAheadCandidates | kAheadRecords | kAheadDeviceConv,
    /* ack */ kAheadCandidates | kAheadRecords | kAheadConvRecords | kAheadDeviceConv,
    /* reject */ kAheadCandidates | kAheadRecords,
    /* deliver */ kAheadCandidates | kAheadRecords | kAheadConvRecords | kAheadDeviceConv | kAheadShownBits,
    /* read */ 0,
    /* receipt */ 0,
    /* join */ 0,
    /* leave */ 0,
    /* expire */ kAheadCandidates | kAheadRecords | kAheadConvRecords | kAheadDeviceConv | kAheadShownBits,
    /* decrypt_error */ kAheadCandidates | kAheadRecords,
    /* online */ kAheadRecords,
    /* offline */ kAheadRecords,
    /* fault */ 0,
    /* heal */ 0,
    /* end */ 0,
};
static_assert(static_cast<int>(EventType::deliver) == 3 && static_cast<int>(EventType::expire) == 8 &&
                  static_cast<int>(EventType::offline) == 11 && static_cast<int>(EventType::end) == kEventTypeCount - 1,
              "kAheadStages is indexed by EventType");

}  // namespace

// One slot per line in flight. The event's views stay valid until the line is observed, at most
// kLinesAhead + 1 lines later: the LineReader keeps that many lines (check_stream's does), or
// else the slot's parser keeps a copy of the line.
struct LineFeed::Ring {
  // At most kLinesInFlight lines are held at once; the slots are the next power of two, so that
  // a line's slot is its number masked (the modulo by 13 it was cost ~45 instructions an event
  // over the six slot lookups of a push).
  static constexpr size_t kSlots = std::bit_ceil(kLinesInFlight);
  // How many lines before it is observed each later stage runs on a line: the records of the msg
  // id's candidates (its slot was loaded at the push), records (ids looked up, their records
  // and the (device, conv) index slot loaded), then the (device, conv) record, then its word of
  // shown bits; each stage reads what the one before loaded.
  static constexpr size_t kMsgCandidatesAhead = 10;
  static constexpr size_t kRecordsAhead = 8;
  static constexpr size_t kConvRecordsAhead = 5;
  static constexpr size_t kDeviceConvAhead = 3;
  static constexpr size_t kShownBitsAhead = 1;
  static_assert(kLinesAhead > kMsgCandidatesAhead && kMsgCandidatesAhead > kRecordsAhead && kRecordsAhead > kConvRecordsAhead &&
                kConvRecordsAhead > kDeviceConvAhead && kDeviceConvAhead > kShownBitsAhead);
  // A stage's line is at most kLinesAhead - 1 back from the newest, so before the ring has filled
  // it falls on a slot no line has used yet (its stages are 0): the stages need no bounds checks.
  static_assert(kLinesAhead - 1 < kSlots);
  struct Slot {
    EventParser parser;
    EventView event;
    EventIdKeys hashes;
    uint8_t stages = 0;  // the AheadStage bits still to run on this line; 0 once it is observed by drain()
  };
  Slot slots[kSlots];
  uint64_t pushed = 0;    // lines parsed into the ring
  uint64_t observed = 0;  // lines observed (always <= pushed)

  Slot& at(uint64_t index) { return slots[index & (kSlots - 1)]; }
  // The line that the stage running `lines_ahead` lines before observing works on at this push
  // (the newest line is kLinesAhead ahead). Before the ring has filled, a slot no line has used.
  // The line before a stage's line is stage_line(lines_ahead - 1): one line nearer to being
  // observed, which this stage worked on at the push before.
  Slot& stage_line(size_t lines_ahead) { return at(pushed - 1 - (kLinesAhead - lines_ahead)); }
};

LineFeed::LineFeed(Checker& checker, const LineReader* source)
    : checker_(checker), ring_(std::make_unique<Ring>()),
      copy_lines_(source == nullptr || source->lines_kept() < kLinesInFlight) {
  static_assert(Ring::kSlots >= kLinesInFlight);
}
LineFeed::~LineFeed() = default;

// The per-line flow (oracle/README.md "Session 11"): observe the oldest line when the ring is
// full; parse the new line into its slot; one switch on its type hashes its ids, starts loading
// their slots and sets its stage bits; then each later stage runs on the line it is due for,
// when that line's bit says the stage has work there.
Status LineFeed::push(std::string_view line) {
  Ring& ring = *ring_;
  Checker::State& state = *checker_.state_;
  // The slot the new line takes must be free: observe the oldest line when the ring is full.
  if (ring.pushed - ring.observed == kLinesInFlight) {
    Ring::Slot& oldest = ring.at(ring.observed++);
    state.observe(oldest.event, oldest.hashes);
  }
  Ring::Slot& slot = ring.at(ring.pushed);
  // The view must stay valid until the line is observed: the reader keeps it, or the parser
  // keeps a copy.
  Status parsed = copy_lines_ ? slot.parser.parse_copy(line, slot.event) : slot.parser.parse(line, slot.event);
  if (!parsed.ok()) {
    drain();
    return parsed;
  }
  const Ring::Slot& before = ring.at(ring.pushed - 1);  // a fresh slot (no hashes) before the first line
  state.start_look_ahead(slot.event, slot.hashes, &before.event, &before.hashes);
  slot.stages = kAheadStages[static_cast<size_t>(slot.event.type)];
  ++ring.pushed;
  // In steady state the stages' lines are all pushed and none observed yet (the oldest in flight
  // is kLinesAhead back; the farthest stage kLinesAhead - 2).
  if (Ring::Slot& s = ring.stage_line(Ring::kMsgCandidatesAhead); s.stages & kAheadCandidates) {
    state.prefetch_msg_candidates(s.hashes);
  }
  if (Ring::Slot& s = ring.stage_line(Ring::kRecordsAhead); s.stages & kAheadRecords) {
    state.prefetch_records(s.event, s.hashes, ring.stage_line(Ring::kRecordsAhead - 1).hashes);  // and the line before's
  }
  if (Ring::Slot& s = ring.stage_line(Ring::kConvRecordsAhead); s.stages & kAheadConvRecords) {
    state.prefetch_conv_records(s.event, s.hashes, ring.stage_line(Ring::kConvRecordsAhead - 1).hashes);
  }
  if (Ring::Slot& s = ring.stage_line(Ring::kDeviceConvAhead); s.stages & kAheadDeviceConv) {
    state.prefetch_device_conv(s.event, s.hashes, ring.stage_line(Ring::kDeviceConvAhead - 1).hashes);
  }
  if (Ring::Slot& s = ring.stage_line(Ring::kShownBitsAhead); s.stages & kAheadShownBits) {
    state.prefetch_shown_bits(s.hashes);
  }
  return {};
}

void LineFeed::drain() {
  Ring& ring = *ring_;
  while (ring.observed < ring.pushed) {
    Ring::Slot& slot = ring.at(ring.observed++);
    checker_.state_->observe(slot.event, slot.hashes);
  }
  // Lines pushed after this find no stage left on an observed line (see Ring::stage_line).
  for (Ring::Slot& slot : ring.slots) slot.stages = 0;
}

namespace {

// check_stream and check_text: every line of `reader` through a LineFeed; `in` is the stream
// under the reader, if any.
Result<Verdict> check_lines(LineReader& reader, const std::istream* in, CheckerOptions options) {
  Checker checker(options);
  LineFeed feed(checker, &reader);
  std::string_view line;
  for (;;) {
    Result<bool> more = reader.next(line);
    if (!more.ok()) {
      feed.drain();
      if (checker.input_error()) return *checker.input_error();
      return more.error();
    }
    if (!*more) break;
    Status parsed = feed.push(line);
    // The checker's error is on an earlier line than a parse error of this one.
    if (checker.input_error()) return *checker.input_error();
    if (!parsed.ok()) {
      return make_error(ErrorCode::bad_input,
                        "line " + std::to_string(reader.line_number()) + ": " + parsed.error().message);
    }
  }
  feed.drain();
  if (checker.input_error()) return *checker.input_error();
  if (in != nullptr && in->bad()) return make_error(ErrorCode::io_error, "reading the history failed");
  return checker.finish();
}

}  // namespace

Result<Verdict> check_stream(std::istream& in, CheckerOptions options) {
  LineReader reader(in, LineFeed::kLinesInFlight);
  return check_lines(reader, &in, options);
}

Result<Verdict> check_text(std::string_view text, CheckerOptions options) {
  LineReader reader(text);
  return check_lines(reader, nullptr, options);
}

}  // namespace msgsim::history
