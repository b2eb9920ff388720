// The primitives of spec/e2ee.md on libsodium 1.0.18: X25519, HMAC-SHA256, HKDF (RFC 5869),
// XChaCha20-Poly1305-IETF and Ed25519, plus the bounds-checked byte reader and writer the wire
// formats and the session serialisation use.
//
// libsodium must be initialised by the runtime before anything here runs (the simulator
// installs its deterministic randombytes first, then calls sodium_init): this library never
// calls sodium_init itself, so it cannot initialise libsodium with the wrong generator.
#pragma once

#include <sodium.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/result.h"
#include "impl/crypto/sha256.h"

namespace msgsim::crypto {

using Bytes = std::vector<uint8_t>;
using ByteSpan = std::span<const uint8_t>;
using MutableByteSpan = std::span<uint8_t>;

using Key32 = std::array<uint8_t, 32>;            // symmetric keys, X25519 keys, Ed25519 publics
using Ed25519Secret = std::array<uint8_t, 64>;    // libsodium's seed || public form
using Signature = std::array<uint8_t, 64>;

inline constexpr size_t kAeadTagBytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
inline constexpr size_t kAeadNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
static_assert(kAeadTagBytes == 16 && kAeadNonceBytes == 24);

inline ByteSpan as_bytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

// Wipes secret material that goes out of scope (sodium_memzero cannot be optimised away).
template <typename T, size_t N>
void wipe(std::array<T, N>& secret) {
  sodium_memzero(secret.data(), sizeof(T) * N);
}

// An X25519 key pair.
struct X25519KeyPair {
  Key32 secret{};
  Key32 public_key{};
};

// Draws 32 bytes from randombytes and derives the public key.
X25519KeyPair generate_x25519_key_pair();
// The public key of a given secret (for restored or transcript-provided secrets): the bytes of
// crypto_scalarmult_base, computed through the Edwards fixed-base table (x25519_base.h).
Key32 x25519_public_of(const Key32& secret);

// DH(priv, pub): X25519 (crypto_scalarmult's bytes; x25519.h's vector ladder where the CPU has
// AVX-512 IFMA). An all-zero result (a low-order peer key) is an error, as the spec says; the
// peer key comes from outside, so this is a crypto_error, not an assertion.
Result<Key32> dh(const Key32& own_secret, const Key32& peer_public);

// Several independent DHs at once: shared[i] = dh(*pairs[i].own_secret, *pairs[i].peer_public),
// the same bytes, computed by x25519_jobs (four at a time on the vector ladder where the CPU has
// it, x25519.h). Returns dh()'s error for the first pair, in order, whose result is all zero
// (the shared keys are wiped then). At most kDhPairsMax pairs.
struct DhPair {
  const Key32* own_secret = nullptr;
  const Key32* peer_public = nullptr;
};
constexpr size_t kDhPairsMax = 8;
Status dh_all(std::span<const DhPair> pairs, std::span<Key32> shared);

// An Ed25519 key pair with its X25519 form cached (the identity DH form of the spec).
struct Ed25519KeyPair {
  Ed25519Secret secret{};
  Key32 public_key{};
};
Ed25519KeyPair generate_ed25519_key_pair();
Signature sign(const Ed25519Secret& secret, ByteSpan message);
bool verify(const Key32& public_key, ByteSpan message, const Signature& signature);
// crypto_sign_ed25519_pk_to_curve25519's bytes and refusals, through our own decoding and
// subgroup check where the key is ordinary (ed25519_verify.h).
Result<Key32> ed25519_public_to_x25519(const Key32& public_key);
Error invalid_identity_error(const Key32& public_key);
Key32 ed25519_secret_to_x25519(const Ed25519Secret& secret);

// HMAC-SHA256 with the key's inner and outer states computed once: KDF_CK computes two MACs
// under one key, and HKDF's extract uses a constant salt, so reusing the keyed states saves
// two SHA-256 compressions per MAC on the message path. The SHA-256 engine is the SHA-NI one
// where the CPU has it (sha256.h), libsodium's otherwise; tests pick each explicitly.
class HmacKey {
 public:
  explicit HmacKey(ByteSpan key, Sha256Engine engine = Sha256Engine::fastest);
  ~HmacKey();
  HmacKey(const HmacKey&) = default;
  HmacKey& operator=(const HmacKey&) = default;

  Key32 mac(ByteSpan message) const;
  Key32 mac(ByteSpan part1, ByteSpan part2, ByteSpan part3) const;
  // Two MACs under this key at once (KDF_CK's message and chain keys): with SHA-NI and
  // messages of at most 55 bytes, their compressions run interleaved.
  void mac_pair(ByteSpan message_a, ByteSpan message_b, Key32& out_a, Key32& out_b) const;

 private:
  Key32 mac_parts(std::initializer_list<ByteSpan> parts) const;

  Sha256Engine engine_;  // resolved: libsodium or sha_ni
  // The states after the ipad and opad blocks, in libsodium's layout for either engine.
  crypto_auth_hmacsha256_state keyed_;
};

Key32 hmac_sha256(ByteSpan key, ByteSpan message,
                  Sha256Engine engine = Sha256Engine::fastest);
// Plain SHA-256 with a chosen engine (the tests' check of the engines against NIST vectors).
Key32 sha256(ByteSpan message, Sha256Engine engine = Sha256Engine::fastest);

// HKDF (RFC 5869) with HMAC-SHA256. `output` may be at most 255 * 32 bytes (asserted: every
// caller asks for a fixed length).
void hkdf_sha256(ByteSpan salt, ByteSpan ikm, ByteSpan info, MutableByteSpan output);
// The same with salt = 32 zero bytes, whose keyed HMAC state is computed once per process.
void hkdf_sha256_zero_salt(ByteSpan ikm, ByteSpan info, MutableByteSpan output);

// AEAD(key, nonce, ad, pt) into `out` (pt.size() + 16 bytes): XChaCha20-Poly1305-IETF, our own
// code byte-exact to libsodium's (chacha20poly1305.h says why). `out` may alias `plaintext`
// exactly (in place).
void aead_encrypt(const Key32& key, ByteSpan nonce, ByteSpan associated_data, ByteSpan plaintext,
                  MutableByteSpan out);
// Opens `ciphertext` (tag included) into `out` (ciphertext.size() - 16 bytes). False on a tag
// mismatch; `out` is then zeroed.
bool aead_decrypt(const Key32& key, ByteSpan nonce, ByteSpan associated_data, ByteSpan ciphertext,
                  MutableByteSpan out);

// Big-endian integer helpers.
inline void store_u32be(uint8_t* out, uint32_t value) {
  out[0] = static_cast<uint8_t>(value >> 24);
  out[1] = static_cast<uint8_t>(value >> 16);
  out[2] = static_cast<uint8_t>(value >> 8);
  out[3] = static_cast<uint8_t>(value);
}
inline void store_u64be(uint8_t* out, uint64_t value) {
  store_u32be(out, static_cast<uint32_t>(value >> 32));
  store_u32be(out + 4, static_cast<uint32_t>(value));
}
inline uint32_t load_u32be(const uint8_t* in) {
  return uint32_t{in[0]} << 24 | uint32_t{in[1]} << 16 | uint32_t{in[2]} << 8 | uint32_t{in[3]};
}

// Appends to a growing buffer (serialisation of sessions and distribution messages).
class ByteWriter {
 public:
  explicit ByteWriter(Bytes& out) : out_(out) {}
  void u8(uint8_t value) { out_.push_back(value); }
  void u32(uint32_t value) {
    uint8_t buffer[4];
    store_u32be(buffer, value);
    out_.insert(out_.end(), buffer, buffer + 4);
  }
  void bytes(ByteSpan data) { out_.insert(out_.end(), data.begin(), data.end()); }

 private:
  Bytes& out_;
};

// Reads from untrusted bytes: every read is bounds-checked and a short input becomes an error
// naming what was being read and at which offset.
class ByteReader {
 public:
  ByteReader(ByteSpan data, std::string_view what) : data_(data), what_(what) {}

  Status u8(uint8_t& value, std::string_view field);
  Status u32(uint32_t& value, std::string_view field);
  Status bytes(MutableByteSpan out, std::string_view field);
  template <size_t N>
  Status array(std::array<uint8_t, N>& out, std::string_view field) {
    return bytes(out, field);
  }
  // A view of the next `size` bytes (no copy).
  Result<ByteSpan> view(size_t size, std::string_view field);
  ByteSpan rest() const { return data_.subspan(offset_); }
  size_t offset() const { return offset_; }
  size_t remaining() const { return data_.size() - offset_; }
  Status expect_end() const;
  Error error(ErrorCode code, std::string_view field, std::string_view problem) const;

 private:
  ByteSpan data_;
  std::string_view what_;
  size_t offset_ = 0;
};

std::string to_hex(ByteSpan bytes);

}  // namespace msgsim::crypto
