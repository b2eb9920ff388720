// Compact containers for the checker's per-message state: the bar is 200 bytes per message,
// so ids live in an arena, records in one reserved address range per table made usable a chunk
// at a time (no doubling slack), and lookups go through open-addressing tables of small slots.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <algorithm>
#include <bit>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/assert.h"
#include "impl/base/hash.h"

#include <sys/mman.h>
#include <unistd.h>

namespace msgsim::history::detail {

inline constexpr uint32_t kNone = UINT32_MAX;

// Starts loading the cache line holding `p`. GCC 12 at -O2 silently dropped the builtin
// prefetch from the checker's inlined lookups (its object code had no prefetch instruction at
// all), so on x86 the instruction is written out and marked volatile.
inline void prefetch_address(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p);
#endif
}

// Asks the kernel to back the 2 MB-aligned part of a large table with huge pages (Linux with
// transparent huge pages in "madvise" mode, as here): lookups at random in tables of tens of
// megabytes then miss the TLB far less (about 10% of the checker's time on the 10-million-event
// history). Best effort: nothing changes when the kernel declines. Call it before the memory
// is first written.
inline void advise_huge_pages(const void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const auto start = reinterpret_cast<uintptr_t>(data);
  const uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (start + bytes) & ~(kHugePage - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

// v = n copies of value, with huge pages advised before the first write.
template <typename T>
void assign_advised(std::vector<T>& v, size_t n, const T& value) {
  std::vector<T> fresh;
  fresh.reserve(n);
  advise_huge_pages(fresh.data(), n * sizeof(T));
  fresh.assign(n, value);
  v.swap(fresh);
}

inline uint64_t load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline uint64_t load32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The hash of an id (or a body) for the checker's tables. Ids are mostly short, so up to 16
// bytes are read as two (possibly overlapping) fixed-size loads and folded by one multiply:
// no loop and no variable-length copy, a few nanoseconds. Longer texts take 16 bytes a round.
// Never persisted: any good 64-bit mix will do, and collisions are settled by comparing bytes.
inline constexpr uint64_t kTextHashK0 = 0xa0761d6478bd642fULL;
inline constexpr uint64_t kTextHashK1 = 0xe7037ed1a0b428dbULL;
inline uint64_t text_hash(std::string_view text) {
  constexpr uint64_t k0 = kTextHashK0;
  constexpr uint64_t k1 = kTextHashK1;
  const char* p = text.data();
  const size_t n = text.size();
  uint64_t a = 0;
  uint64_t b = 0;
  uint64_t h = k0 ^ (n * k1);
  if (n <= 16) {
    if (n >= 8) {
      a = load64(p);
      b = load64(p + n - 8);
    } else if (n >= 4) {
      a = load32(p);
      b = load32(p + n - 4);
    } else if (n > 0) {
      const auto byte = [&](size_t i) { return uint64_t{static_cast<uint8_t>(p[i])}; };
      a = (byte(0) << 16) | (byte(n >> 1) << 8) | byte(n - 1);
    }
  } else {
    size_t i = 0;
    for (; n - i > 16; i += 16) h = mix_mul(load64(p + i) ^ k1, load64(p + i + 8) ^ h);
    a = load64(p + n - 16);
    b = load64(p + n - 8);
  }
  return mix_mul(a ^ k1, b ^ h) ^ h;
}

// text_hash of 64 bytes (a body as the simulator writes it: a hex digest): text_hash's four
// rounds unrolled, with no length tests or loop. The same value as text_hash.
[[gnu::noinline]] inline uint64_t text_hash_of_64(const char* p) {
  uint64_t h = kTextHashK0 ^ (64 * kTextHashK1);
  h = mix_mul(load64(p) ^ kTextHashK1, load64(p + 8) ^ h);
  h = mix_mul(load64(p + 16) ^ kTextHashK1, load64(p + 24) ^ h);
  h = mix_mul(load64(p + 32) ^ kTextHashK1, load64(p + 40) ^ h);
  return mix_mul(load64(p + 48) ^ kTextHashK1, load64(p + 56) ^ h) ^ h;
}
inline uint64_t body_hash(std::string_view body) {
  return body.size() == 64 ? text_hash_of_64(body.data()) : text_hash(body);
}

// Whether two texts are equal; ids of 8 to 16 bytes (most here) by two fixed-size loads each,
// without a call to memcmp.
inline bool same_text(std::string_view a, std::string_view b) {
  const size_t n = a.size();
  if (n != b.size()) return false;
  if (n >= 8 && n <= 16) return load64(a.data()) == load64(b.data()) && load64(a.data() + n - 8) == load64(b.data() + n - 8);
  return a == b;
}

// A vector whose elements lie in one range of address space, so that an element is one load
// away (base + index): the checker reads records at random on every event, and the chunked
// layout this replaces spent two dependent loads and the index arithmetic on each access
// (~125 instructions a line over the benchmark's history). The range is reserved without
// memory (PROT_NONE, MAP_NORESERVE) and made usable kChunk elements at a time, so the table
// holds no capacity beyond its last chunk (memory_bytes counts exactly what is usable); large
// tables are advised huge pages. When the reservation is full it is doubled and the usable
// pages are moved there by the kernel (mremap: no copy, no second copy held at once). So, as
// with std::vector, a push_back may move every element: hold indices, not references, across
// a push_back to the same table. Elements are moved as bytes: the record types here hold
// values, indices and heap pointers (std::vector, ShownBits), none pointing into themselves.
template <typename T, size_t kChunkBits = 12>
class ReservedVector {
 public:
  static constexpr size_t kChunk = size_t{1} << kChunkBits;

  ReservedVector() = default;
  ReservedVector(const ReservedVector&) = delete;
  ReservedVector& operator=(const ReservedVector&) = delete;
  ~ReservedVector() {
    for (size_t i = 0; i < size_; ++i) data_[i].~T();
    if (data_ != nullptr) (void)munmap(data_, reserved_bytes_);
  }

  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  size_t size() const { return size_; }
  // Starts loading element i into the cache (nothing when it does not exist yet).
  void prefetch(size_t i) const {
    if (i < size_) prefetch_address(&data_[i]);
  }
  T& push_back(T value) {
    if (size_ == usable_) grow();
    T* slot = &data_[size_];
    ::new (static_cast<void*>(slot)) T(std::move(value));
    ++size_;
    return *slot;
  }
  // The usable (committed) bytes: whole chunks, rounded up to pages.
  size_t memory_bytes() const { return usable_bytes_; }
  // The address space reserved (for tests).
  size_t reserved_bytes() const { return reserved_bytes_; }

 private:
  static size_t round_up(size_t n, size_t unit) { return (n + unit - 1) / unit * unit; }
  static size_t page_bytes() {
    static const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return page;
  }
  static constexpr size_t kHugePage = size_t{2} << 20;

  // A fresh PROT_NONE range of at least `bytes` (set to its size). From 2 MB on it is whole
  // huge pages, 2 MB-aligned and all advised: huge pages can then back all of it, and it stays
  // one mapping (one set of flags) as it becomes usable, which the move in grow() needs.
  static char* reserve_range(size_t& bytes) {
    const size_t align = bytes >= kHugePage ? kHugePage : page_bytes();
    bytes = round_up(bytes, align);
    const size_t padded = bytes + align - page_bytes();
    void* raw = mmap(nullptr, padded, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    MSGSIM_ASSERT(raw != MAP_FAILED, "cannot reserve " + std::to_string(padded) + " bytes of address space");
    const auto start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t begin = (start + align - 1) & ~(uintptr_t{align} - 1);
    if (begin > start) (void)munmap(raw, begin - start);
    const uintptr_t tail = start + padded - (begin + bytes);
    if (tail > 0) (void)munmap(reinterpret_cast<void*>(begin + bytes), tail);
    advise_huge_pages(reinterpret_cast<void*>(begin), bytes);
    return reinterpret_cast<char*>(begin);
  }

  void grow() {
    const size_t step = round_up(kChunk * sizeof(T), page_bytes());
    if (usable_bytes_ + step > reserved_bytes_) {
      // Double the reservation (the first holds 4 chunks) and move the usable pages there.
      size_t bytes = std::max(2 * reserved_bytes_, 4 * step);
      char* fresh = reserve_range(bytes);
      if (data_ != nullptr) {
        bool moved = false;
#if defined(__linux__)
        moved = mremap(data_, usable_bytes_, usable_bytes_, MREMAP_MAYMOVE | MREMAP_FIXED, fresh) == fresh;
        if (moved) advise_huge_pages(fresh, bytes);  // the moved pages keep their old range's flags
#endif
        if (!moved) {  // not Linux, or the usable part was not one mapping: copy it
          const int usable = mprotect(fresh, usable_bytes_, PROT_READ | PROT_WRITE);
          MSGSIM_ASSERT(usable == 0, "cannot commit " + std::to_string(usable_bytes_) + " bytes");
          std::memcpy(fresh, static_cast<void*>(data_), usable_bytes_);
        }
        if (!moved) {
          (void)munmap(data_, reserved_bytes_);
        } else if (reserved_bytes_ > usable_bytes_) {
          (void)munmap(reinterpret_cast<char*>(data_) + usable_bytes_, reserved_bytes_ - usable_bytes_);
        }
      }
      data_ = reinterpret_cast<T*>(fresh);
      reserved_bytes_ = bytes;
    }
    const int made_usable = mprotect(reinterpret_cast<char*>(data_) + usable_bytes_, step, PROT_READ | PROT_WRITE);
    MSGSIM_ASSERT(made_usable == 0, "cannot commit " + std::to_string(step) + " more bytes after " +
                                        std::to_string(usable_bytes_));
    usable_bytes_ += step;
    usable_ = usable_bytes_ / sizeof(T);
  }

  T* data_ = nullptr;
  size_t size_ = 0;
  size_t usable_ = 0;  // elements that fit in the usable bytes
  size_t usable_bytes_ = 0;
  size_t reserved_bytes_ = 0;
};

// Length-prefixed texts in blocks of 64 KB that never move (a text's pointer stays valid for
// the arena's life); a text longer than a block gets a block of its own.
class NameArena {
 public:
  const char* store(std::string_view text) {
    const size_t need = sizeof(uint32_t) + text.size();
    if (need > kBlockBytes) {
      blocks_.push_back(std::make_unique<char[]>(need));
      bytes_ += need;
      write(blocks_.back().get(), text);
      return blocks_.back().get();
    }
    if (current_ == nullptr || block_used_ + need > kBlockBytes) {
      blocks_.push_back(std::make_unique<char[]>(kBlockBytes));
      bytes_ += kBlockBytes;
      current_ = blocks_.back().get();
      block_used_ = 0;
    }
    char* p = current_ + block_used_;
    block_used_ += need;
    write(p, text);
    return p;
  }
  // The text stored at p (what store returned).
  static std::string_view text_at(const char* p) {
    uint32_t length = 0;
    std::memcpy(&length, p, sizeof length);
    return {p + sizeof length, length};
  }
  size_t memory_bytes() const { return bytes_ + blocks_.capacity() * sizeof(std::unique_ptr<char[]>); }

 private:
  static constexpr size_t kBlockBytes = 64 * 1024;
  static void write(char* p, std::string_view text) {
    const auto length = static_cast<uint32_t>(text.size());
    std::memcpy(p, &length, sizeof length);
    if (!text.empty()) std::memcpy(p + sizeof length, text.data(), text.size());
  }

  std::vector<std::unique_ptr<char[]>> blocks_;
  char* current_ = nullptr;  // the block being filled
  size_t block_used_ = 0;
  size_t bytes_ = 0;
};

// A name kept inside a record (15 bytes, no alignment): up to 14 bytes inline, zero-padded, or a
// mark and a pointer to the text in a NameArena. Comparing a short name with a text reads only
// the record.
class InlineName {
 public:
  static constexpr size_t kInlineMax = 14;

  InlineName() = default;
  InlineName(std::string_view text, NameArena& arena) {
    if (text.size() <= kInlineMax) {
      length_ = static_cast<uint8_t>(text.size());
      if (!text.empty()) std::memcpy(bytes_, text.data(), text.size());
    } else {
      length_ = kLong;
      const char* stored = arena.store(text);
      std::memcpy(bytes_, &stored, sizeof stored);
    }
  }
  std::string_view view() const {
    if (length_ != kLong) return {bytes_, length_};
    const char* p = nullptr;
    std::memcpy(&p, bytes_, sizeof p);
    return NameArena::text_at(p);
  }
  // Whether the name is `text`: the n inline bytes by two (possibly overlapping) fixed-size loads.
  bool is(std::string_view text) const {
    const size_t n = text.size();
    if (n > kInlineMax) return length_ == kLong && view() == text;
    if (length_ != n) return false;
    const char* p = text.data();
    if (n >= 8) {
      uint64_t a, b, c, d;
      std::memcpy(&a, bytes_, 8);
      std::memcpy(&b, p, 8);
      std::memcpy(&c, bytes_ + n - 8, 8);
      std::memcpy(&d, p + n - 8, 8);
      return a == b && c == d;
    }
    if (n >= 4) {
      uint32_t a, b, c, d;
      std::memcpy(&a, bytes_, 4);
      std::memcpy(&b, p, 4);
      std::memcpy(&c, bytes_ + n - 4, 4);
      std::memcpy(&d, p + n - 4, 4);
      return a == b && c == d;
    }
    for (size_t i = 0; i < n; ++i) {
      if (bytes_[i] != p[i]) return false;
    }
    return true;
  }

 private:
  static constexpr uint8_t kLong = 255;
  uint8_t length_ = 0;  // <= kInlineMax, or kLong
  char bytes_[kInlineMax] = {};
};
static_assert(sizeof(InlineName) == 15 && alignof(InlineName) == 1);

// Interns strings to dense ids 0, 1, 2... The table's 16-byte slots hold ids of up to 11 bytes
// inline, so a lookup costs one cache miss; longer ids live, length-prefixed, in an arena of
// blocks and their slots hold a hash tag and a pointer. For printing names and for name_is,
// the interner keeps either id -> slot position (4 bytes an id: the message ids, millions of
// them) or a copy of each id's slot by id (16 bytes an id: users, devices and conversations,
// few, whose names a deliver compares): name_is then reads one line of a dense array instead
// of a position and then a slot somewhere in the table.
class Interner {
 public:
  enum class Names : bool { by_position, by_id };
  explicit Interner(Names names = Names::by_position) : by_id_(names == Names::by_id) { slots_.assign(16, Slot{}); }

  // The id of `text` (whose text_hash is `h`), adding it when new; `added` tells which.
  uint32_t intern(std::string_view text, uint64_t h, bool& added) {
    const ProbeWords probe = probe_words(text, h);
    size_t mask = slots_.size() - 1;
    size_t i = h & mask;
    for (;; i = (i + 1) & mask) {
      const Slot& slot = slots_[i];
      if (slot.id_plus1 == 0) break;
      if (matches(slot, probe, text)) {
        added = false;
        return slot.id_plus1 - 1;
      }
    }
    added = true;
    const auto id = static_cast<uint32_t>(size());
    MSGSIM_ASSERT(id < kNone - 1, "more than 4 billion distinct ids");
    Slot slot;
    slot.id_plus1 = id + 1;
    std::memcpy(reinterpret_cast<char*>(&slot) + offsetof(Slot, length), &probe.head, sizeof probe.head);
    std::memcpy(slot.bytes + kInlineMax - sizeof probe.tail, &probe.tail, sizeof probe.tail);
    if (slot.length == kLong) {
      const char* stored = arena_.store(text);
      std::memcpy(slot.bytes + 3, &stored, sizeof stored);
    }
    slots_[i] = slot;
    if (by_id_) {
      names_.push_back(slot);
    } else {
      positions_.push_back(static_cast<uint32_t>(i));
    }
    if (size() * 4 > slots_.size() * 3) grow();
    return id;
  }
  uint32_t intern(std::string_view text, bool& added) { return intern(text, text_hash(text), added); }
  uint32_t intern(std::string_view text) {
    bool added = false;
    return intern(text, added);
  }

  // Starts loading the table slot where the text of hash `h` would be found, so that the lookups
  // of one event wait for their cache misses together rather than one after another.
  void prefetch(uint64_t h) const { prefetch_address(&slots_[h & (slots_.size() - 1)]); }

  std::optional<uint32_t> find(std::string_view text) const { return find(text, text_hash(text)); }
  std::optional<uint32_t> find(std::string_view text, uint64_t h) const {
    const uint32_t id_plus1 = find_id_plus1(text, h);
    if (id_plus1 == 0) return std::nullopt;
    return id_plus1 - 1;
  }

  std::string_view name(uint32_t id) const { return name_of(slot_of(id)); }
  // Starts loading what name_is(id, ...) reads: with names by id, all of it; by position, the
  // position (prefetch_slot_of then loads the slot, once the position is in the cache).
  void prefetch_name(uint32_t id) const {
    if (by_id_) {
      names_.prefetch(id);
    } else {
      positions_.prefetch(id);
    }
  }
  void prefetch_slot_of(uint32_t id) const {
    if (!by_id_ && id < positions_.size()) prefetch_address(&slots_[positions_[id]]);
  }
  // Whether id's text is `text`: what intern(text) == id says when the text is known, without
  // hashing it or probing the table (a short id compares as one 12-byte block).
  bool name_is(uint32_t id, std::string_view text) const {
    const Slot& slot = slot_of(id);
    const size_t n = text.size();
    if (n > kInlineMax) return slot.length == kLong && name_of(slot) == text;
    if (slot.length != n) return false;
    // The n inline bytes against the text by two (possibly overlapping) fixed-size loads.
    const char* p = text.data();
    if (n >= 8) return load64(slot.bytes) == load64(p) && load64(slot.bytes + n - 8) == load64(p + n - 8);
    if (n >= 4) return load32(slot.bytes) == load32(p) && load32(slot.bytes + n - 4) == load32(p + n - 4);
    for (size_t i = 0; i < n; ++i) {
      if (slot.bytes[i] != p[i]) return false;
    }
    return true;
  }

  size_t size() const { return by_id_ ? names_.size() : positions_.size(); }

  size_t memory_bytes() const {
    return slots_.capacity() * sizeof(Slot) + positions_.memory_bytes() + names_.memory_bytes() + arena_.memory_bytes();
  }

 private:
  static constexpr uint8_t kInlineMax = 11;
  static constexpr uint8_t kLong = 255;

  struct Slot {
    uint32_t id_plus1 = 0;  // 0: empty
    uint8_t length = 0;     // <= kInlineMax: the bytes are inline; kLong: tag + arena pointer
    char bytes[11] = {};
  };
  static_assert(sizeof(Slot) == 16 && offsetof(Slot, length) == 4 && offsetof(Slot, bytes) == 5);

  // id's slot: its copy by id, or the table's slot at its position. (A copy stays exact: a slot
  // never changes once written, and a long id's arena bytes never move.)
  const Slot& slot_of(uint32_t id) const { return by_id_ ? names_[id] : slots_[positions_[id]]; }

  // What a slot for `text` (of hash h) holds after its id, as head_word and tail_word read it,
  // computed in registers: built as a Slot on the stack and read back as words, it cost a
  // store-forwarding stall per lookup (perf put a quarter of find's samples there).
  struct ProbeWords {
    uint64_t head;  // the length (or kLong), then the first 7 inline bytes (or the 3-byte tag)
    uint32_t tail;  // inline bytes 7 to 10
  };
  static ProbeWords probe_words(std::string_view text, uint64_t h) {
    const size_t n = text.size();
    const char* p = text.data();
    if (n > kInlineMax) return {kLong | ((h >> 40) & 0xFFFFFF) << 8, 0};
    // The n bytes, zero above them, by fixed-size (possibly overlapping) little-endian loads.
    uint64_t low = 0;   // bytes 0..7
    uint64_t high = 0;  // bytes 8..10
    if (n >= 8) {
      low = load64(p);
      // Bytes n-8..n-1, shifted so that byte 8 comes first (none when n is 8).
      if (n > 8) high = load64(p + n - 8) >> (8 * (16 - n));
    } else if (n >= 4) {
      low = load32(p) | (load32(p + n - 4) << (8 * (n - 4)));
    } else if (n > 0) {
      const auto byte = [&](size_t i) { return uint64_t{static_cast<uint8_t>(p[i])} << (8 * i); };
      low = byte(0) | byte(n >> 1) | byte(n - 1);
    }
    return {n | (low << 8), static_cast<uint32_t>((low >> 56) | (high << 8))};
  }
  uint32_t find_id_plus1(std::string_view text, uint64_t h) const {
    const ProbeWords probe = probe_words(text, h);
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& slot = slots_[i];
      if (slot.id_plus1 == 0) return 0;
      if (matches(slot, probe, text)) return slot.id_plus1;
    }
  }

  // The length and the first 7 bytes, and the last 4 bytes, of a slot as two words: an inline
  // id (its unused bytes are zero) matches when both words do, a long one when the first word's
  // low 4 bytes (the length mark and the 3-byte tag) do and then its text.
  static uint64_t head_word(const Slot& slot) {
    uint64_t w;
    std::memcpy(&w, reinterpret_cast<const char*>(&slot) + offsetof(Slot, length), sizeof w);
    return w;
  }
  static uint32_t tail_word(const Slot& slot) {
    uint32_t w;
    std::memcpy(&w, slot.bytes + kInlineMax - sizeof w, sizeof w);
    return w;
  }
  static bool matches(const Slot& slot, const ProbeWords& probe, std::string_view text) {
    const uint64_t head = head_word(slot);
    if ((probe.head & 0xFF) != kLong) return head == probe.head && tail_word(slot) == probe.tail;
    if (static_cast<uint32_t>(head) != static_cast<uint32_t>(probe.head)) return false;
    return name_of(slot) == text;
  }

  static std::string_view name_of(const Slot& slot) {
    if (slot.length != kLong) return {slot.bytes, slot.length};
    const char* p = nullptr;
    std::memcpy(&p, slot.bytes + 3, sizeof p);
    return NameArena::text_at(p);
  }

  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    assign_advised(slots_, old.size() * 2, Slot{});
    const size_t mask = slots_.size() - 1;
    for (const Slot& slot : old) {
      if (slot.id_plus1 == 0) continue;
      size_t i = text_hash(name_of(slot)) & mask;
      while (slots_[i].id_plus1 != 0) i = (i + 1) & mask;
      slots_[i] = slot;
      if (!by_id_) positions_[slot.id_plus1 - 1] = static_cast<uint32_t>(i);
    }
  }

  bool by_id_ = false;
  std::vector<Slot> slots_;
  ReservedVector<uint32_t> positions_;  // id -> slot index (names by position)
  ReservedVector<Slot> names_;          // id -> a copy of its slot (names by id)
  NameArena arena_;  // the texts of ids longer than kInlineMax
};

// uint64 key -> uint32 value, open addressing. The all-ones key is reserved (never a key here:
// keys pack two 32-bit ids that are below kNone). Key and value share one 12-byte entry, so a
// lookup usually costs one cache miss, not one for the key and one for the value.
class FlatMap64 {
 public:
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  FlatMap64() { entries_.assign(16, Entry{}); }

  uint32_t* find(uint64_t key) {
    const size_t mask = entries_.size() - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
      Entry& entry = entries_[i];
      const uint64_t stored = entry.key();
      if (stored == key) return &entry.value;
      if (stored == kEmpty) return nullptr;
    }
  }
  const uint32_t* find(uint64_t key) const { return const_cast<FlatMap64*>(this)->find(key); }
  // Starts loading the entry where `key` would be found.
  void prefetch(uint64_t key) const { prefetch_address(&entries_[mix64(key) & (entries_.size() - 1)]); }

  // Inserts key -> value unless present; returns the stored value.
  uint32_t insert(uint64_t key, uint32_t value) {
    MSGSIM_ASSERT(key != kEmpty);
    const size_t mask = entries_.size() - 1;
    size_t i = mix64(key) & mask;
    for (;; i = (i + 1) & mask) {
      const uint64_t stored = entries_[i].key();
      if (stored == key) return entries_[i].value;
      if (stored == kEmpty) break;
    }
    entries_[i] = Entry(key, value);
    if (++size_ * 4 > entries_.size() * 3) grow();
    return value;
  }

  size_t memory_bytes() const { return entries_.capacity() * sizeof(Entry); }

 private:
  struct Entry {
    uint32_t key_low = UINT32_MAX;
    uint32_t key_high = UINT32_MAX;
    uint32_t value = 0;

    Entry() = default;
    Entry(uint64_t key, uint32_t v)
        : key_low(static_cast<uint32_t>(key)), key_high(static_cast<uint32_t>(key >> 32)), value(v) {}
    uint64_t key() const { return (uint64_t{key_high} << 32) | key_low; }
  };
  static_assert(sizeof(Entry) == 12);

  void grow() {
    std::vector<Entry> old;
    old.swap(entries_);
    assign_advised(entries_, old.size() * 2, Entry{});
    const size_t mask = entries_.size() - 1;
    for (const Entry& entry : old) {
      const uint64_t key = entry.key();
      if (key == kEmpty) continue;
      size_t i = mix64(key) & mask;
      while (entries_[i].key() != kEmpty) i = (i + 1) & mask;
      entries_[i] = entry;
    }
  }

  std::vector<Entry> entries_;
  size_t size_ = 0;
};

// Open-addressing slots of 32 bits that map a 64-bit hash to the index of a record kept
// elsewhere (the caller compares the record itself). A slot holds index + 1 in its low
// `index_bits` bits and bits of the hash in the rest, so a probe reads a record only when those
// hash bits agree: the records are scattered over tens of megabytes, and comparing every record
// on a probe path (8 or so at three-quarters load when the key is absent) cost a cache miss
// each. The index bits grow with the largest index stored (the table is rebuilt then, at most
// 32 times); with 2^20 records 12 bits of hash remain, so a stray compare is 1 in 4,096.
class HashedIndexSlots {
 public:
  // Dense: the indices stored are exactly 0, 1, 2... in insertion order (the message ids), so a
  // rebuild rehashes them in index order, reading their records one after another instead of
  // at random in slot order.
  enum class Indices : bool { sparse, dense };
  explicit HashedIndexSlots(size_t initial_slots, Indices indices = Indices::sparse)
      : dense_(indices == Indices::dense) {
    slots_.assign(initial_slots, 0);
  }

  // The index whose record `matches`, among those stored under hash `h`, or kNone.
  template <typename Matches>
  uint32_t find(uint64_t h, Matches&& matches) const {
    const size_t mask = slots_.size() - 1;
    const uint32_t tag = tag_of(h);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const uint32_t slot = slots_[i];
      if (slot == 0) return kNone;
      if ((slot & ~index_mask_) == tag) {
        const uint32_t index = (slot & index_mask_) - 1;
        if (matches(index)) return index;
      }
    }
  }
  // The first index on h's probe path whose hash bits agree with h's, or kNone: the record
  // find() compares first (and, but for a 1 in 2^tag-bits stray agreement, the only one), so
  // that a caller can start loading it before the compare.
  uint32_t first_candidate(uint64_t h) const {
    const size_t mask = slots_.size() - 1;
    const uint32_t tag = tag_of(h);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const uint32_t slot = slots_[i];
      if (slot == 0) return kNone;
      if ((slot & ~index_mask_) == tag) return (slot & index_mask_) - 1;
    }
  }
  // Stores `index` under `h` (the caller has found it absent). `hash_of(index)` gives the hash
  // of a stored index again, for rebuilding the table when it grows; `prefetch_record(index)`,
  // when given, starts loading what hash_of(index) reads, so that a rebuild of a sparse table
  // (whose records are visited at random) has several of those loads in flight.
  template <typename HashOf, typename PrefetchRecord = void (*)(uint32_t)>
  void insert(uint64_t h, uint32_t index, HashOf&& hash_of, PrefetchRecord&& prefetch_record = [](uint32_t) {}) {
    MSGSIM_ASSERT(index < kNone - 1, "more than 4 billion records");
    MSGSIM_ASSERT(!dense_ || index == used_, "dense indices are stored in order");
    const int need_bits = std::max(static_cast<int>(std::bit_width(uint64_t{index} + 1)), index_bits_);
    if ((used_ + 1) * 4 > slots_.size() * 3) {
      rebuild(slots_.size() * 2, need_bits, hash_of, prefetch_record);
    } else if (need_bits > index_bits_) {
      retag(need_bits);
    }
    place(h, index);
    ++used_;
  }
  // find(h, matches); when nothing matches, also insert(h, index, ...). Where the table has room
  // for one more without a rebuild or a retag, that is one probe: the empty slot that ends the
  // search is the one insert would fill. Otherwise the two calls, so the table grows exactly
  // when find and insert would make it grow, and holds the same slots.
  template <typename Matches, typename HashOf, typename PrefetchRecord = void (*)(uint32_t)>
  uint32_t find_or_insert(uint64_t h, uint32_t index, Matches&& matches, HashOf&& hash_of,
                          PrefetchRecord&& prefetch_record = [](uint32_t) {}) {
    if ((used_ + 1) * 4 > slots_.size() * 3 || static_cast<int>(std::bit_width(uint64_t{index} + 1)) > index_bits_) {
      const uint32_t found = find(h, matches);
      if (found == kNone) insert(h, index, hash_of, prefetch_record);
      return found;
    }
    MSGSIM_ASSERT(!dense_ || index == used_, "dense indices are stored in order");
    const size_t mask = slots_.size() - 1;
    const uint32_t tag = tag_of(h);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const uint32_t slot = slots_[i];
      if (slot == 0) {
        slots_[i] = tag | (index + 1);
        ++used_;
        return kNone;
      }
      if ((slot & ~index_mask_) == tag) {
        const uint32_t found = (slot & index_mask_) - 1;
        if (matches(found)) return found;
      }
    }
  }
  void prefetch(uint64_t h) const { prefetch_address(&slots_[h & (slots_.size() - 1)]); }
  size_t memory_bytes() const { return slots_.capacity() * sizeof(uint32_t); }

 private:
  uint32_t tag_of(uint64_t h) const { return static_cast<uint32_t>(h >> 32) & ~index_mask_; }
  void place(uint64_t h, uint32_t index) {
    const size_t mask = slots_.size() - 1;
    size_t i = h & mask;
    while (slots_[i] != 0) i = (i + 1) & mask;
    slots_[i] = tag_of(h) | (index + 1);
  }
  void set_index_bits(int index_bits) {
    index_bits_ = index_bits;
    index_mask_ = index_bits >= 32 ? ~uint32_t{0} : (uint32_t{1} << index_bits) - 1;
  }
  // More index bits in a table of the same size: each slot keeps its place and loses the lowest
  // of its hash bits (a tag is the hash's bits above the index bits, so the new tag is the old
  // one without the bits the index now takes). No record is read.
  void retag(int index_bits) {
    const uint32_t old_mask = index_mask_;
    set_index_bits(index_bits);
    for (uint32_t& slot : slots_) {
      if (slot != 0) slot = (slot & ~old_mask & ~index_mask_) | (slot & old_mask);
    }
  }
  template <typename HashOf, typename PrefetchRecord>
  void rebuild(size_t size, int index_bits, HashOf&& hash_of, PrefetchRecord&& prefetch_record) {
    std::vector<uint32_t> old;
    old.swap(slots_);
    const uint32_t old_mask = index_mask_;
    set_index_bits(index_bits);
    assign_advised(slots_, size, uint32_t{0});
    if (dense_) {
      for (uint32_t index = 0; index < used_; ++index) place(hash_of(index), index);
      return;
    }
    // The records of the slots kAhead further on start loading while this one is rehashed.
    constexpr size_t kAhead = 16;
    for (size_t k = 0; k < old.size(); ++k) {
      if (k + kAhead < old.size() && old[k + kAhead] != 0) prefetch_record((old[k + kAhead] & old_mask) - 1);
      const uint32_t slot = old[k];
      if (slot == 0) continue;
      const uint32_t index = (slot & old_mask) - 1;
      place(hash_of(index), index);
    }
  }

  bool dense_ = false;
  std::vector<uint32_t> slots_;
  size_t used_ = 0;
  int index_bits_ = 1;
  uint32_t index_mask_ = 1;
};

inline uint64_t pack(uint32_t high, uint32_t low) { return (uint64_t{high} << 32) | low; }

}  // namespace msgsim::history::detail
