#include "impl/crypto/chacha20poly1305.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "impl/base/assert.h"

namespace msgsim::crypto {

namespace {

// Four 32-bit lanes; GCC lowers the operations to SSE2 on x86-64 and to NEON or scalar code
// elsewhere.
using V4 = uint32_t __attribute__((vector_size(16)));
__extension__ using U128 = unsigned __int128;

uint32_t load_le32(const uint8_t* in) {
  return uint32_t{in[0]} | uint32_t{in[1]} << 8 | uint32_t{in[2]} << 16 | uint32_t{in[3]} << 24;
}

uint64_t load_le64(const uint8_t* in) {
  return uint64_t{load_le32(in)} | uint64_t{load_le32(in + 4)} << 32;
}

void store_le32(uint8_t* out, uint32_t value) {
  out[0] = static_cast<uint8_t>(value);
  out[1] = static_cast<uint8_t>(value >> 8);
  out[2] = static_cast<uint8_t>(value >> 16);
  out[3] = static_cast<uint8_t>(value >> 24);
}

void store_le64(uint8_t* out, uint64_t value) {
  store_le32(out, static_cast<uint32_t>(value));
  store_le32(out + 4, static_cast<uint32_t>(value >> 32));
}

V4 load_row(const uint8_t* in) {
  return V4{load_le32(in), load_le32(in + 4), load_le32(in + 8), load_le32(in + 12)};
}

void store_row(uint8_t* out, V4 row) {
  for (int i = 0; i < 4; ++i) store_le32(out + 4 * i, row[i]);
}

template <int kBits>
V4 rotate_left(V4 x) {
  return (x << kBits) | (x >> (32 - kBits));
}

// Lane j of the result is lane (j + kShift) % 4 of `v`.
template <int kShift>
V4 rotate_lanes(V4 v) {
#if defined(__clang__)
  return __builtin_shufflevector(v, v, kShift % 4, (kShift + 1) % 4, (kShift + 2) % 4,
                                 (kShift + 3) % 4);
#else
  return __builtin_shuffle(v, V4{kShift % 4, (kShift + 1) % 4, (kShift + 2) % 4,
                                 (kShift + 3) % 4});
#endif
}

// "expand 32-byte k"
constexpr V4 kConstants = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574};

// The rows of a ChaCha state: a = constants, b and c = key, d = counter and nonce.
struct Rows {
  V4 a, b, c, d;
};

// The 20 ChaCha rounds on kBlocks independent states, interleaved so that each one's dependency
// chain fills the others' idle issue slots. Rows hold one state each (the row-wise form): a
// column round is one vector quarter round, and lane rotations turn diagonals into columns.
template <int kBlocks>
void chacha_rounds(Rows (&s)[kBlocks]) {
  for (int double_round = 0; double_round < 10; ++double_round) {
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
#pragma GCC unroll 4
      for (int i = 0; i < kBlocks; ++i) {
        s[i].a += s[i].b;
        s[i].d = rotate_left<16>(s[i].d ^ s[i].a);
        s[i].c += s[i].d;
        s[i].b = rotate_left<12>(s[i].b ^ s[i].c);
        s[i].a += s[i].b;
        s[i].d = rotate_left<8>(s[i].d ^ s[i].a);
        s[i].c += s[i].d;
        s[i].b = rotate_left<7>(s[i].b ^ s[i].c);
        if (half == 0) {
          // Diagonals to columns: lane j of b, c, d takes lane j+1, j+2, j+3.
          s[i].b = rotate_lanes<1>(s[i].b);
          s[i].c = rotate_lanes<2>(s[i].c);
          s[i].d = rotate_lanes<3>(s[i].d);
        } else {
          s[i].b = rotate_lanes<3>(s[i].b);
          s[i].c = rotate_lanes<2>(s[i].c);
          s[i].d = rotate_lanes<1>(s[i].d);
        }
      }
    }
  }
}

// Keystream blocks counter .. counter + kBlocks - 1 of `key` rows (b, c) and nonce words.
template <int kBlocks>
void chacha_blocks(const Rows& key_rows, uint32_t counter, uint8_t* out) {
  Rows s[kBlocks];
  for (int i = 0; i < kBlocks; ++i) {
    s[i] = key_rows;
    s[i].d[0] = counter + static_cast<uint32_t>(i);
  }
  chacha_rounds<kBlocks>(s);
  for (int i = 0; i < kBlocks; ++i) {
    Rows input = key_rows;
    input.d[0] = counter + static_cast<uint32_t>(i);
    store_row(out + 64 * i, s[i].a + input.a);
    store_row(out + 64 * i + 16, s[i].b + input.b);
    store_row(out + 64 * i + 32, s[i].c + input.c);
    store_row(out + 64 * i + 48, s[i].d + input.d);
  }
}

// 1 to 4 blocks into `out` (64 bytes each).
void chacha_blocks_upto4(const Rows& key_rows, uint32_t counter, size_t blocks, uint8_t* out) {
  switch (blocks) {
    case 1: chacha_blocks<1>(key_rows, counter, out); break;
    case 2: chacha_blocks<2>(key_rows, counter, out); break;
    case 3: chacha_blocks<3>(key_rows, counter, out); break;
    default: chacha_blocks<4>(key_rows, counter, out); break;
  }
}

Rows ietf_rows(const uint8_t* key, const uint8_t* nonce12, uint32_t counter) {
  return {kConstants, load_row(key), load_row(key + 16),
          V4{counter, load_le32(nonce12), load_le32(nonce12 + 4), load_le32(nonce12 + 8)}};
}

// XORs `bytes` of `in` with the keystream from block `counter` on.
void xor_keystream(const Rows& rows, uint32_t counter, const uint8_t* in, uint8_t* out,
                   size_t bytes) {
  alignas(16) uint8_t stream[256];
  while (bytes > 0) {
    const size_t blocks = std::min<size_t>(4, (bytes + 63) / 64);
    chacha_blocks_upto4(rows, counter, blocks, stream);
    const size_t take = std::min(bytes, blocks * 64);
    for (size_t i = 0; i < take; ++i) out[i] = static_cast<uint8_t>(in[i] ^ stream[i]);
    in += take;
    out += take;
    bytes -= take;
    counter += static_cast<uint32_t>(blocks);
  }
  sodium_memzero(stream, sizeof stream);
}

// Poly1305 with 44/44/42-bit limbs and 128-bit products (the "donna" 64-bit layout).
class Poly1305 {
 public:
  explicit Poly1305(const uint8_t* key) {
    const uint64_t t0 = load_le64(key), t1 = load_le64(key + 8);
    r0_ = t0 & 0xffc0fffffffULL;
    r1_ = ((t0 >> 44) | (t1 << 20)) & 0xfffffc0ffffULL;
    r2_ = (t1 >> 24) & 0x00ffffffc0fULL;
    pad0_ = load_le64(key + 16);
    pad1_ = load_le64(key + 24);
  }
  ~Poly1305() { sodium_memzero(this, sizeof *this); }
  Poly1305(const Poly1305&) = delete;
  Poly1305& operator=(const Poly1305&) = delete;

  // Whole 16-byte blocks; `high_bit` is 2^128 (as 1 << 40 in the top limb) for every block but
  // a final short one, which the caller pads with 0x01 and zeros.
  void blocks(const uint8_t* m, size_t count, uint64_t high_bit = uint64_t{1} << 40) {
    const uint64_t s1 = r1_ * (5 << 2), s2 = r2_ * (5 << 2);
    uint64_t h0 = h0_, h1 = h1_, h2 = h2_;
    for (size_t i = 0; i < count; ++i, m += 16) {
      const uint64_t t0 = load_le64(m), t1 = load_le64(m + 8);
      h0 += t0 & kMask44;
      h1 += ((t0 >> 44) | (t1 << 20)) & kMask44;
      h2 += ((t1 >> 24) & kMask42) | high_bit;
      U128 d0 = U128{h0} * r0_ + U128{h1} * s2 + U128{h2} * s1;
      U128 d1 = U128{h0} * r1_ + U128{h1} * r0_ + U128{h2} * s2;
      U128 d2 = U128{h0} * r2_ + U128{h1} * r1_ + U128{h2} * r0_;
      uint64_t c = static_cast<uint64_t>(d0 >> 44);
      h0 = static_cast<uint64_t>(d0) & kMask44;
      d1 += c;
      c = static_cast<uint64_t>(d1 >> 44);
      h1 = static_cast<uint64_t>(d1) & kMask44;
      d2 += c;
      c = static_cast<uint64_t>(d2 >> 42);
      h2 = static_cast<uint64_t>(d2) & kMask42;
      h0 += c * 5;
      c = h0 >> 44;
      h0 &= kMask44;
      h1 += c;
    }
    h0_ = h0;
    h1_ = h1;
    h2_ = h2;
  }

  // A message part followed by zeros up to a 16-byte boundary (the AEAD's padding).
  void padded(const uint8_t* m, size_t bytes) {
    blocks(m, bytes / 16);
    if (bytes % 16 != 0) {
      uint8_t last[16] = {};
      std::memcpy(last, m + bytes / 16 * 16, bytes % 16);
      blocks(last, 1);
    }
  }

  // The last bytes of a message as Poly1305 itself pads them (0x01, then zeros, no 2^128).
  void final_short(const uint8_t* m, size_t bytes) {
    MSGSIM_ASSERT(bytes < 16);
    if (bytes == 0) return;
    uint8_t last[16] = {};
    std::memcpy(last, m, bytes);
    last[bytes] = 1;
    blocks(last, 1, 0);
  }

  void finish(uint8_t* tag16) {
    uint64_t h0 = h0_, h1 = h1_, h2 = h2_;
    // Fully carry h.
    uint64_t c = h1 >> 44;
    h1 &= kMask44;
    h2 += c;
    c = h2 >> 42;
    h2 &= kMask42;
    h0 += c * 5;
    c = h0 >> 44;
    h0 &= kMask44;
    h1 += c;
    c = h1 >> 44;
    h1 &= kMask44;
    h2 += c;
    c = h2 >> 42;
    h2 &= kMask42;
    h0 += c * 5;
    c = h0 >> 44;
    h0 &= kMask44;
    h1 += c;
    // g = h + -p = h - (2^130 - 5); take g when it does not borrow (h >= p), without a branch.
    uint64_t g0 = h0 + 5;
    c = g0 >> 44;
    g0 &= kMask44;
    uint64_t g1 = h1 + c;
    c = g1 >> 44;
    g1 &= kMask44;
    uint64_t g2 = h2 + c - (uint64_t{1} << 42);
    c = (g2 >> 63) - 1;  // all ones when g did not borrow
    g0 &= c;
    g1 &= c;
    g2 &= c;
    c = ~c;
    h0 = (h0 & c) | g0;
    h1 = (h1 & c) | g1;
    h2 = (h2 & c) | g2;
    // h + s mod 2^128.
    h0 += pad0_ & kMask44;
    c = h0 >> 44;
    h0 &= kMask44;
    h1 += (((pad0_ >> 44) | (pad1_ << 20)) & kMask44) + c;
    c = h1 >> 44;
    h1 &= kMask44;
    h2 += ((pad1_ >> 24) & kMask42) + c;
    h2 &= kMask42;
    store_le64(tag16, h0 | (h1 << 44));
    store_le64(tag16 + 8, (h1 >> 20) | (h2 << 24));
  }

 private:
  static constexpr uint64_t kMask44 = (uint64_t{1} << 44) - 1;
  static constexpr uint64_t kMask42 = (uint64_t{1} << 42) - 1;
  uint64_t r0_ = 0, r1_ = 0, r2_ = 0;
  uint64_t pad0_ = 0, pad1_ = 0;
  uint64_t h0_ = 0, h1_ = 0, h2_ = 0;
};

// The tag of the ChaCha20-Poly1305-IETF construction (RFC 8439 section 2.8).
void aead_tag(const uint8_t* poly_key, std::span<const uint8_t> associated_data,
              const uint8_t* ciphertext, size_t ciphertext_bytes, uint8_t* tag16) {
  Poly1305 mac(poly_key);
  mac.padded(associated_data.data(), associated_data.size());
  mac.padded(ciphertext, ciphertext_bytes);
  uint8_t lengths[16];
  store_le64(lengths, associated_data.size());
  store_le64(lengths + 8, ciphertext_bytes);
  mac.blocks(lengths, 1);
  mac.finish(tag16);
}

// The subkey rows and the first keystream blocks of a message: block 0 (the Poly1305 key) and
// as many message blocks as fit in four, computed together.
struct MessageStream {
  Rows rows;
  alignas(16) uint8_t first[256];
  size_t first_message_bytes = 0;  // message bytes the first blocks cover

  MessageStream(const uint8_t* key, const uint8_t* nonce24, size_t message_bytes) {
    MSGSIM_ASSERT(message_bytes <= (uint64_t{1} << 32) * 64 - 128,
                  "XChaCha20 message longer than its block counter allows");
    uint8_t subkey[32];
    hchacha20(key, nonce24, subkey);
    uint8_t nonce12[12] = {0, 0, 0, 0};
    std::memcpy(nonce12 + 4, nonce24 + 16, 8);
    rows = ietf_rows(subkey, nonce12, 0);
    sodium_memzero(subkey, sizeof subkey);
    const size_t blocks = std::min<size_t>(4, 1 + (message_bytes + 63) / 64);
    chacha_blocks_upto4(rows, 0, blocks, first);
    first_message_bytes = std::min(message_bytes, (blocks - 1) * 64);
  }
  ~MessageStream() { sodium_memzero(this, sizeof *this); }
  MessageStream(const MessageStream&) = delete;
  MessageStream& operator=(const MessageStream&) = delete;

  const uint8_t* poly_key() const { return first; }

  void xor_message(const uint8_t* in, uint8_t* out, size_t bytes) const {
    for (size_t i = 0; i < first_message_bytes; ++i) {
      out[i] = static_cast<uint8_t>(in[i] ^ first[64 + i]);
    }
    if (bytes > first_message_bytes) {
      xor_keystream(rows, 4, in + first_message_bytes, out + first_message_bytes,
                    bytes - first_message_bytes);
    }
  }
};

}  // namespace

void hchacha20(const uint8_t* key, const uint8_t* input16, uint8_t* out32) {
  Rows s[1] = {{kConstants, load_row(key), load_row(key + 16), load_row(input16)}};
  chacha_rounds<1>(s);
  store_row(out32, s[0].a);
  store_row(out32 + 16, s[0].d);
  sodium_memzero(s, sizeof s);
}

void chacha20_ietf_xor(const uint8_t* key, const uint8_t* nonce12, uint32_t counter,
                       std::span<const uint8_t> in, uint8_t* out) {
  MSGSIM_ASSERT((in.size() + 63) / 64 <= uint64_t{0xFFFFFFFF} - counter + 1,
                "ChaCha20 block counter would wrap");
  Rows rows = ietf_rows(key, nonce12, counter);
  xor_keystream(rows, counter, in.data(), out, in.size());
  sodium_memzero(&rows, sizeof rows);
}

void poly1305(const uint8_t* key, std::span<const uint8_t> message, uint8_t* tag16) {
  Poly1305 mac(key);
  mac.blocks(message.data(), message.size() / 16);
  mac.final_short(message.data() + message.size() / 16 * 16, message.size() % 16);
  mac.finish(tag16);
}

void xchacha20poly1305_encrypt(const uint8_t* key, const uint8_t* nonce24,
                               std::span<const uint8_t> associated_data,
                               std::span<const uint8_t> plaintext, uint8_t* out) {
  const MessageStream stream(key, nonce24, plaintext.size());
  stream.xor_message(plaintext.data(), out, plaintext.size());
  aead_tag(stream.poly_key(), associated_data, out, plaintext.size(), out + plaintext.size());
}

bool xchacha20poly1305_decrypt(const uint8_t* key, const uint8_t* nonce24,
                               std::span<const uint8_t> associated_data,
                               std::span<const uint8_t> ciphertext, uint8_t* out) {
  MSGSIM_ASSERT(ciphertext.size() >= 16);
  const size_t message_bytes = ciphertext.size() - 16;
  const MessageStream stream(key, nonce24, message_bytes);
  uint8_t tag[16];
  aead_tag(stream.poly_key(), associated_data, ciphertext.data(), message_bytes, tag);
  const bool match = crypto_verify_16(tag, ciphertext.data() + message_bytes) == 0;
  sodium_memzero(tag, sizeof tag);
  if (!match) return false;
  stream.xor_message(ciphertext.data(), out, message_bytes);
  return true;
}

}  // namespace msgsim::crypto
