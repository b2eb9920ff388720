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
// when bodies are 16 bytes or longer): a load, a multiply and a bit test in a Bloom-style
// table that fits in the cache, the hash table and a 16-byte comparison only on a bit hit.
// Frames are scanned as they are sent, the databases once at the end of the run.
#pragma once

#include <cstdint>
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
  uint64_t tracked() const { return fingerprints_.size(); }
  uint64_t untracked() const { return untracked_; }
  const std::string& first_hit() const { return first_hit_; }

 private:
  struct Fingerprint {
    uint8_t bytes[kFingerprintBytes];
    uint8_t length;  // kMinimumBytes..kFingerprintBytes
  };
  // A window of a fingerprint: its 8 bytes at `offset` into fingerprint `index`.
  struct Window {
    uint64_t key;
    uint32_t index;
    uint32_t offset;
  };
  static uint64_t mix(uint64_t key) { return key * 0x9E3779B97F4A7C15ull; }
  bool bit_set(uint64_t key) const {
    const uint64_t bit = mix(key) >> (64 - kBitsLog2);
    return (bits_[bit >> 6] >> (bit & 63)) & 1;
  }
  void insert_window(const Window& window);
  void grow_table();
  // Whether fingerprint `index` occurs in `bytes` at `at`.
  bool occurs(ByteView bytes, size_t at, uint32_t index) const;

  static constexpr int kBitsLog2 = 21;  // 2 Mbit = 256 KiB: stays in the L2 cache
  std::vector<uint64_t> bits_;
  std::vector<Fingerprint> fingerprints_;
  // Open addressing with linear probing; empty slots have index UINT32_MAX. Lookups only,
  // never iterated for output: its order cannot change anything.
  std::vector<Window> table_;
  size_t table_used_ = 0;
  size_t stride_ = 8;  // min over fingerprints of min(8, length - 7)
  uint64_t hits_ = 0;
  uint64_t bytes_scanned_ = 0;
  uint64_t untracked_ = 0;
  std::string first_hit_;
};

}  // namespace msgsim::sim
