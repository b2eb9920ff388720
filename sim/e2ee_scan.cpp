#include "sim/e2ee_scan.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "impl/base/assert.h"

namespace msgsim::sim {

namespace {

constexpr size_t kTableInitialSlots = 1 << 12;

uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

PlaintextScanner::PlaintextScanner() : table_(kTableInitialSlots, kEmptySlot) { size_bitmap(); }

void PlaintextScanner::size_bitmap() {
  const size_t words = table_.size() / kSlotsPerBitmapWord;
  MSGSIM_ASSERT_EQ(words & (words - 1), size_t{0});  // a power of two, as the table's size
  bits_.assign(words, 0);
  bits_shift_ = 64 - std::countr_zero(words);
}

void PlaintextScanner::on_plaintext(ByteView plaintext) {
  if (plaintext.size() < kMinimumBytes) return;
  if (fingerprints_ >= kFingerprintsMax) {
    untracked_++;
    return;
  }
  const auto index = static_cast<uint32_t>(fingerprints_);
  if ((index & (kChunkFingerprints - 1)) == 0) chunks_.push_back(std::make_unique<Fingerprint[]>(kChunkFingerprints));
  fingerprints_++;
  Fingerprint& fingerprint = chunks_.back()[index & (kChunkFingerprints - 1)];
  fingerprint = Fingerprint{};
  fingerprint.length = static_cast<uint8_t>(std::min(plaintext.size(), kFingerprintBytes));
  std::memcpy(fingerprint.bytes, plaintext.data(), fingerprint.length);
  const size_t windows = std::min<size_t>(8, fingerprint.length - 7);
  stride_ = std::min(stride_, windows);
  for (size_t offset = 0; offset < windows; ++offset) {
    const uint64_t key = load64(fingerprint.bytes + offset);
    insert_slot(key, make_slot(key, index, static_cast<uint32_t>(offset)));
  }
}

uint64_t PlaintextScanner::key_of(Slot slot) const {
  const uint32_t index = (slot >> 3) & ((uint32_t{1} << kIndexBits) - 1);
  return load64(fingerprint(index).bytes + (slot & 7));
}

void PlaintextScanner::insert_slot(uint64_t key, Slot slot) {
  // At most half full, so every probe sequence ends at an empty slot soon.
  if ((table_used_ + 1) * 2 > table_.size()) grow_table();
  const uint64_t hash = mix(key);
  const size_t mask = table_.size() - 1;
  for (size_t at = hash >> 32 & mask;; at = (at + 1) & mask) {
    if (table_[at] == kEmptySlot) {
      table_[at] = slot;
      break;
    }
  }
  table_used_++;
  bitmap_word(hash) |= bits_of(key);
}

void PlaintextScanner::grow_table() {
  // Reinserted in the old table's slot order, as the 16-byte slots were: the same layout.
  // The bitmap doubles with it and is set again by the reinsertions.
  std::vector<Slot> old = std::move(table_);
  table_.assign(old.size() * 2, kEmptySlot);
  size_bitmap();
  table_used_ = 0;
  for (const Slot slot : old) {
    if (slot != kEmptySlot) insert_slot(key_of(slot), slot);
  }
}

bool PlaintextScanner::occurs(ByteView bytes, size_t at, uint32_t index) const {
  const Fingerprint& candidate = fingerprint(index);
  return at + candidate.length <= bytes.size() &&
         std::memcmp(bytes.data() + at, candidate.bytes, candidate.length) == 0;
}

size_t PlaintextScanner::find(ByteView bytes) {
  bytes_scanned_ += bytes.size();
  if (bytes.size() < kMinimumBytes || fingerprints_ == 0) return kNotFound;
  const uint8_t* data = bytes.data();
  const size_t mask = table_.size() - 1;
  const size_t stride = stride_;
  MSGSIM_ASSERT(stride >= 1 && stride <= 8);
  for (size_t i = 0; i + 8 <= bytes.size(); i += stride) {
    const uint64_t window = load64(data + i);
    const uint64_t hash = mix(window);
    if (!bits_set(hash, window)) continue;
    const Slot tag = tag_of(window);
    for (size_t at = hash >> 32 & mask; table_[at] != kEmptySlot; at = (at + 1) & mask) {
      const Slot candidate = table_[at];
      const uint32_t offset = candidate & 7;
      if (candidate >> 25 != tag || offset > i) continue;
      // A fingerprint that occurs at i - offset has this window at `offset`: no key to compare.
      const uint32_t index = (candidate >> 3) & ((uint32_t{1} << kIndexBits) - 1);
      if (occurs(bytes, i - offset, index)) return i - offset;
    }
  }
  return kNotFound;
}

}  // namespace msgsim::sim
