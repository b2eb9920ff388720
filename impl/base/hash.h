// Deterministic 64-bit hashing: the same bytes give the same value on every machine and
// standard library (std::hash gives no such promise). Used for trace digests, partitioning by
// conversation id and sticky load balancing by user id. Not a cryptographic hash.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace msgsim {

// GCC and clang's 128-bit integer; __extension__ keeps -Wpedantic quiet about it.
__extension__ typedef unsigned __int128 uint128_t;
__extension__ typedef __int128 int128_t;

// The 128-bit multiply-fold at the heart of wyhash-style mixers.
inline uint64_t mix_mul(uint64_t a, uint64_t b) {
  const uint128_t product = static_cast<uint128_t>(a) * b;
  return static_cast<uint64_t>(product) ^ static_cast<uint64_t>(product >> 64);
}

// A strong 64-bit finaliser (the SplitMix64 one): every input bit affects every output bit.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

namespace detail {
inline uint64_t load_le64(const uint8_t* p) {
  return uint64_t{p[0]} | uint64_t{p[1]} << 8 | uint64_t{p[2]} << 16 | uint64_t{p[3]} << 24 |
         uint64_t{p[4]} << 32 | uint64_t{p[5]} << 40 | uint64_t{p[6]} << 48 | uint64_t{p[7]} << 56;
}
}  // namespace detail

inline uint64_t hash_bytes(std::span<const uint8_t> bytes, uint64_t seed = 0) {
  constexpr uint64_t k0 = 0xa0761d6478bd642fULL;
  constexpr uint64_t k1 = 0xe7037ed1a0b428dbULL;
  uint64_t h = seed ^ k0 ^ (bytes.size() * k1);
  const uint8_t* p = bytes.data();
  size_t left = bytes.size();
  while (left >= 16) {
    h = mix_mul(detail::load_le64(p) ^ k1, detail::load_le64(p + 8) ^ h);
    p += 16;
    left -= 16;
  }
  uint8_t tail[16] = {};
  if (left > 0) std::memcpy(tail, p, left);
  h = mix_mul(detail::load_le64(tail) ^ k1 ^ left, detail::load_le64(tail + 8) ^ h);
  return mix64(h);
}

inline uint64_t hash_string(std::string_view text, uint64_t seed = 0) {
  return hash_bytes({reinterpret_cast<const uint8_t*>(text.data()), text.size()}, seed);
}

// A running digest: fold values in order; the same sequence gives the same digest everywhere.
class Digest {
 public:
  void fold(uint64_t value) { state_ = mix_mul(state_ ^ value, 0x9e3779b97f4a7c15ULL) + value; }
  uint64_t value() const { return mix64(state_); }
  std::string hex() const {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(16, '0');
    uint64_t v = value();
    for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<size_t>(i)] = digits[v & 15];
    return out;
  }

 private:
  uint64_t state_ = 0x243f6a8885a308d3ULL;
};

}  // namespace msgsim
