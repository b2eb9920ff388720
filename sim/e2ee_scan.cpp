#include "sim/e2ee_scan.h"

#include <cstring>

namespace msgsim::sim {

namespace {

uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

PlaintextScanner::PlaintextScanner() : bits_(size_t{1} << (kBitsLog2 - 6), 0) {}

void PlaintextScanner::on_plaintext(ByteView plaintext) {
  if (plaintext.size() < kMinimumBytes) return;
  if (fingerprints_.size() >= kFingerprintsMax) {
    untracked_++;
    return;
  }
  const uint64_t head = load64(plaintext.data());
  Tail tail{0, static_cast<uint8_t>(std::min<size_t>(8, plaintext.size() - 8))};
  std::memcpy(&tail.bytes, plaintext.data() + 8, tail.length);
  fingerprints_.emplace(head, tail);
  const uint32_t bit = bit_of(head);
  bits_[bit >> 6] |= uint64_t{1} << (bit & 63);
}

void PlaintextScanner::scan(ByteView bytes, const std::string& where) {
  bytes_scanned_ += bytes.size();
  if (bytes.size() < kMinimumBytes || fingerprints_.empty()) return;
  const uint8_t* data = bytes.data();
  const size_t last = bytes.size() - kMinimumBytes;
  for (size_t i = 0; i <= last; ++i) {
    const uint64_t window = load64(data + i);
    const uint32_t bit = bit_of(window);
    if (!((bits_[bit >> 6] >> (bit & 63)) & 1)) continue;
    auto [begin, end] = fingerprints_.equal_range(window);
    for (auto it = begin; it != end; ++it) {
      const Tail& tail = it->second;
      if (i + 8 + tail.length > bytes.size()) continue;
      uint64_t following = 0;
      std::memcpy(&following, data + i + 8, tail.length);
      if (following != tail.bytes) continue;
      if (hits_++ == 0) first_hit_ = where + " at byte " + std::to_string(i);
      return;  // one hit per buffer is enough to fail the check
    }
  }
}

}  // namespace msgsim::sim
