#include "sim/e2ee_scan.h"

#include <algorithm>
#include <cstring>

#include "impl/base/assert.h"

namespace msgsim::sim {

namespace {

constexpr uint32_t kEmpty = UINT32_MAX;
constexpr size_t kTableInitialSlots = 1 << 12;

uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

PlaintextScanner::PlaintextScanner()
    : bits_(size_t{1} << (kBitsLog2 - 6), 0), table_(kTableInitialSlots, Window{0, kEmpty, 0}) {}

void PlaintextScanner::on_plaintext(ByteView plaintext) {
  if (plaintext.size() < kMinimumBytes) return;
  if (fingerprints_.size() >= kFingerprintsMax) {
    untracked_++;
    return;
  }
  Fingerprint fingerprint{};
  fingerprint.length = static_cast<uint8_t>(std::min(plaintext.size(), kFingerprintBytes));
  std::memcpy(fingerprint.bytes, plaintext.data(), fingerprint.length);
  const auto index = static_cast<uint32_t>(fingerprints_.size());
  fingerprints_.push_back(fingerprint);
  const size_t windows = std::min<size_t>(8, fingerprint.length - 7);
  stride_ = std::min(stride_, windows);
  for (size_t offset = 0; offset < windows; ++offset) {
    insert_window(Window{load64(fingerprint.bytes + offset), index, static_cast<uint32_t>(offset)});
  }
}

void PlaintextScanner::insert_window(const Window& window) {
  // At most half full, so every probe sequence ends at an empty slot soon.
  if ((table_used_ + 1) * 2 > table_.size()) grow_table();
  const size_t mask = table_.size() - 1;
  for (size_t slot = mix(window.key) >> 32 & mask;; slot = (slot + 1) & mask) {
    if (table_[slot].index == kEmpty) {
      table_[slot] = window;
      break;
    }
  }
  table_used_++;
  const uint64_t bit = mix(window.key) >> (64 - kBitsLog2);
  bits_[bit >> 6] |= uint64_t{1} << (bit & 63);
}

void PlaintextScanner::grow_table() {
  std::vector<Window> old = std::move(table_);
  table_.assign(old.size() * 2, Window{0, kEmpty, 0});
  table_used_ = 0;
  for (const Window& window : old) {
    if (window.index != kEmpty) insert_window(window);
  }
}

bool PlaintextScanner::occurs(ByteView bytes, size_t at, uint32_t index) const {
  const Fingerprint& fingerprint = fingerprints_[index];
  return at + fingerprint.length <= bytes.size() &&
         std::memcmp(bytes.data() + at, fingerprint.bytes, fingerprint.length) == 0;
}

size_t PlaintextScanner::find(ByteView bytes) {
  bytes_scanned_ += bytes.size();
  if (bytes.size() < kMinimumBytes || fingerprints_.empty()) return kNotFound;
  const uint8_t* data = bytes.data();
  const size_t mask = table_.size() - 1;
  const size_t stride = stride_;
  MSGSIM_ASSERT(stride >= 1 && stride <= 8);
  for (size_t i = 0; i + 8 <= bytes.size(); i += stride) {
    const uint64_t window = load64(data + i);
    if (!bit_set(window)) continue;
    for (size_t slot = mix(window) >> 32 & mask; table_[slot].index != kEmpty; slot = (slot + 1) & mask) {
      const Window& candidate = table_[slot];
      if (candidate.key != window || candidate.offset > i) continue;
      if (occurs(bytes, i - candidate.offset, candidate.index)) return i - candidate.offset;
    }
  }
  return kNotFound;
}

}  // namespace msgsim::sim
