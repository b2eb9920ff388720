// The E2EE confidentiality check (DESIGN.md "Oracle": what only the simulator can see): no
// plaintext of any message body appears in any frame a server sends or receives, nor in any
// server's database files.
//
// Devices tell the scanner each plaintext as it is written (chat::PlaintextObserver), before
// any frame can carry it. The scanner keeps a fingerprint of each: its first 16 bytes (bodies
// are random bytes, so 16 of them are distinctive; a body shorter than 16 bytes is
// fingerprinted whole, down to 8 bytes). A buffer contains a plaintext when it contains its
// fingerprint.
//
// Scanning does not look at every byte offset. With every fingerprint at least L bytes long,
// an occurrence starting at offset p covers the 8-byte window at the first multiple of
// stride = min(8, L - 7) at or after p, which starts at most stride - 1 bytes into the
// fingerprint. So each fingerprint registers its 8-byte windows at offsets 0..stride-1 in a
// hash table, and a scan probes only the windows at multiples of the stride (one in 8 offsets
// when bodies are 16 bytes or longer): a load, two multiplies and a test of two bits in one
// word of a Bloom-style bitmap, the hash table and a 16-byte comparison only on a hit.
// The bitmap grows with the table (4 bits a slot: 8 to 16 bits a window), so its false hits
// stay near 1 in 20 probes however many bodies a run tracks. A fixed 2 Mbit bitmap with one
// bit a window was 16% full at 42,000 bodies (BM_MessagePath_E2EE) and nearly all ones at
// 700,000, and each false hit is a cache miss in the table: 60% of the scan's time.
// Frames are scanned as they are sent, the databases once at the end of the run.
//
// Memory (a full-scale run tracks ~700,000 bodies, 5.6 million windows): a table slot is 4
// bytes, not the window's 8-byte key plus its index and offset: the fingerprint's index, the
// window's offset and 7 bits of the key's hash (so only one probed slot in 128 whose key
// differs costs a look at its fingerprint). The key itself is read from the fingerprint when
// the tag matches. Fingerprints live in fixed chunks, so growing never copies them nor holds
// two copies at once. About 80 bytes a body (plus 4-8 for the bitmap) against 330 with 16-byte slots; the search is the
// same (same slots, same probe order, same answers).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "impl/chat/device.h"

namespace msgsim::sim {

class PlaintextScanner final : public chat::PlaintextObserver {
 public:
  // Fingerprints kept; past it new plaintexts are not tracked (counted in `untracked`).
  static constexpr size_t kFingerprintsMax = 4'000'000;  // ~1 GB of windows at most
  static constexpr size_t kMinimumBytes = 8;      // shorter plaintexts cannot be told from noise
  static constexpr size_t kFingerprintBytes = 16;
  static constexpr size_t kNotFound = SIZE_MAX;

  PlaintextScanner();
  void on_plaintext(ByteView plaintext) override;

  // Where the first tracked plaintext found in `bytes` starts, or kNotFound. Counts the bytes.
  size_t find(ByteView bytes);

  // Counts a hit when `bytes` contains a tracked plaintext; `where()` names the buffer for the
  // report, called only for the first hit (building names for every frame would cost more
  // than the scan).
  template <class Where>
  void scan(ByteView bytes, Where&& where) {
    const size_t at = find(bytes);
    if (at == kNotFound) return;
    if (hits_++ == 0) first_hit_ = where() + " at byte " + std::to_string(at);
  }

  uint64_t hits() const { return hits_; }
  uint64_t bytes_scanned() const { return bytes_scanned_; }
  uint64_t tracked() const { return fingerprints_; }
  uint64_t untracked() const { return untracked_; }
  const std::string& first_hit() const { return first_hit_; }

 private:
  struct Fingerprint {
    uint8_t bytes[kFingerprintBytes];
    uint8_t length;  // kMinimumBytes..kFingerprintBytes
  };
  // A table slot: bits 0-2 the window's offset into its fingerprint, bits 3-24 the
  // fingerprint's index (kFingerprintsMax < 2^22), bits 25-31 a tag from the key's hash.
  using Slot = uint32_t;
  static constexpr Slot kEmptySlot = UINT32_MAX;  // its index bits exceed kFingerprintsMax
  static constexpr int kIndexBits = 22;
  static_assert(kFingerprintsMax < (size_t{1} << kIndexBits));
  static uint64_t mix(uint64_t key) { return key * 0x9E3779B97F4A7C15ull; }
  static uint64_t mix2(uint64_t key) { return key * 0xC2B2AE3D27D4EB4Full; }
  // The tag: the top 7 bits of a second multiplicative hash, independent of the bits that
  // place the slot and choose the bitmap word (both taken from mix()).
  static Slot tag_of(uint64_t key) { return static_cast<Slot>(mix2(key) >> 57); }
  // The window's two bits in its bitmap word: the next 12 bits of the second hash.
  static uint64_t bits_of(uint64_t key) {
    const uint64_t h = mix2(key);
    return uint64_t{1} << (h >> 51 & 63) | uint64_t{1} << (h >> 45 & 63);
  }
  static Slot make_slot(uint64_t key, uint32_t index, uint32_t offset) {
    return tag_of(key) << 25 | index << 3 | offset;
  }
  uint64_t& bitmap_word(uint64_t hash) { return bits_[hash >> bits_shift_]; }
  bool bits_set(uint64_t hash, uint64_t key) const {
    const uint64_t want = bits_of(key);
    return (bits_[hash >> bits_shift_] & want) == want;
  }
  const Fingerprint& fingerprint(uint32_t index) const {
    return chunks_[index >> kChunkLog2][index & (kChunkFingerprints - 1)];
  }
  // The window's key recomputed from its fingerprint.
  uint64_t key_of(Slot slot) const;
  void insert_slot(uint64_t key, Slot slot);
  void grow_table();
  void size_bitmap();  // an empty bitmap for the table's current size
  // Whether fingerprint `index` occurs in `bytes` at `at`.
  bool occurs(ByteView bytes, size_t at, uint32_t index) const;

  static constexpr size_t kSlotsPerBitmapWord = 16;  // 4 bits a slot
  static constexpr int kChunkLog2 = 14;  // 16,384 fingerprints (272 KiB) a chunk
  static constexpr size_t kChunkFingerprints = size_t{1} << kChunkLog2;
  std::vector<uint64_t> bits_;  // table_.size() / kSlotsPerBitmapWord words
  int bits_shift_ = 64;         // 64 - log2(words): a hash's top bits choose its word
  std::vector<std::unique_ptr<Fingerprint[]>> chunks_;
  size_t fingerprints_ = 0;
  // Open addressing with linear probing; empty slots hold kEmptySlot. Lookups only, never
  // iterated for output: its order cannot change anything.
  std::vector<Slot> table_;
  size_t table_used_ = 0;
  size_t stride_ = 8;  // min over fingerprints of min(8, length - 7)
  uint64_t hits_ = 0;
  uint64_t bytes_scanned_ = 0;
  uint64_t untracked_ = 0;
  std::string first_hit_;
};

}  // namespace msgsim::sim
