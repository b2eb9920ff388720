// The E2EE confidentiality check (DESIGN.md "Oracle": what only the simulator can see): no
// plaintext of any message body appears in any frame a server sends or receives, nor in any
// server's database files.
//
// Devices tell the scanner each plaintext as it is written (chat::PlaintextObserver), before
// any frame can carry it. The scanner keeps a 16-byte fingerprint of each (bodies are random
// bytes, so 16 of them are distinctive; a body shorter than 16 bytes is fingerprinted whole):
// the first 8 bytes as a key into a Bloom-style bit table and an exact set, the next 8 to
// confirm. Scanning a buffer reads every 8-byte window once: a load, a multiply and a bit test
// per byte, the exact lookup only on a bit-table hit. Frames are scanned as they are sent, the
// databases once at the end of the run.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "impl/chat/device.h"

namespace msgsim::sim {

class PlaintextScanner final : public chat::PlaintextObserver {
 public:
  // Fingerprints kept; past it new plaintexts are not tracked (counted in `untracked`).
  static constexpr size_t kFingerprintsMax = 50'000'000;
  static constexpr size_t kMinimumBytes = 8;  // shorter plaintexts cannot be told from noise

  PlaintextScanner();
  void on_plaintext(ByteView plaintext) override;
  // Counts a hit when `bytes` contains a tracked plaintext; `where` names it for the report.
  void scan(ByteView bytes, const std::string& where);

  uint64_t hits() const { return hits_; }
  uint64_t bytes_scanned() const { return bytes_scanned_; }
  uint64_t tracked() const { return fingerprints_.size(); }
  uint64_t untracked() const { return untracked_; }
  const std::string& first_hit() const { return first_hit_; }

 private:
  static uint32_t bit_of(uint64_t window) { return static_cast<uint32_t>((window * 0x9E3779B97F4A7C15ull) >> (64 - kBitsLog2)); }
  static constexpr int kBitsLog2 = 24;  // 16 Mbit = 2 MiB
  struct Tail {
    uint64_t bytes;   // the 8 bytes after the first 8 (zero-padded)
    uint8_t length;   // how many of them belong to the plaintext (0..8)
  };
  std::vector<uint64_t> bits_;
  // Lookups only, never iterated: its order cannot change anything.
  std::unordered_multimap<uint64_t, Tail> fingerprints_;
  uint64_t hits_ = 0;
  uint64_t bytes_scanned_ = 0;
  uint64_t untracked_ = 0;
  std::string first_hit_;
};

}  // namespace msgsim::sim
