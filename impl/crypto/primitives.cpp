#include "impl/crypto/primitives.h"

#include <algorithm>

#include "impl/base/assert.h"
#include "impl/crypto/chacha20poly1305.h"
#include "impl/crypto/ed25519_verify.h"
#include "impl/crypto/x25519.h"
#include "impl/crypto/x25519_base.h"

namespace msgsim::crypto {

namespace {

Error all_zero_dh_error(const Key32& peer_public) {
  return make_error(ErrorCode::crypto_error,
                    "X25519 with the peer key " + to_hex(peer_public) +
                        " gave the all-zero result (a low-order point)");
}

}  // namespace

X25519KeyPair generate_x25519_key_pair() {
  X25519KeyPair pair;
  randombytes_buf(pair.secret.data(), pair.secret.size());
  pair.public_key = x25519_public_of(pair.secret);
  return pair;
}

Key32 x25519_public_of(const Key32& secret) {
  // crypto_scalarmult_base's bytes, through the Edwards fixed-base table (x25519_base.h).
  return x25519_base_via_edwards(secret);
}

Result<Key32> dh(const Key32& own_secret, const Key32& peer_public) {
  // crypto_scalarmult's bytes and verdict, on the vector ladder where the CPU has it (x25519.h).
  X25519Job job{&own_secret, &peer_public, {}, false};
  x25519_jobs(std::span<X25519Job>(&job, 1));
  if (!job.ok) return all_zero_dh_error(peer_public);
  Key32 shared = job.shared;
  wipe(job.shared);
  return shared;
}

Status dh_all(std::span<const DhPair> pairs, std::span<Key32> shared) {
  MSGSIM_ASSERT(pairs.size() <= kDhPairsMax && shared.size() == pairs.size());
  std::array<X25519Job, kDhPairsMax> jobs;
  for (size_t i = 0; i < pairs.size(); ++i) jobs[i] = {pairs[i].own_secret, pairs[i].peer_public, {}, false};
  x25519_jobs(std::span<X25519Job>(jobs.data(), pairs.size()));
  for (size_t i = 0; i < pairs.size(); ++i) {
    shared[i] = jobs[i].shared;
    wipe(jobs[i].shared);
  }
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (!jobs[i].ok) {
      for (Key32& key : shared) wipe(key);
      return all_zero_dh_error(*pairs[i].peer_public);
    }
  }
  return {};
}

Ed25519KeyPair generate_ed25519_key_pair() {
  Ed25519KeyPair pair;
  MSGSIM_ASSERT(crypto_sign_keypair(pair.public_key.data(), pair.secret.data()) == 0);
  return pair;
}

Signature sign(const Ed25519Secret& secret, ByteSpan message) {
  Signature signature;
  MSGSIM_ASSERT(crypto_sign_detached(signature.data(), nullptr, message.data(), message.size(),
                                     secret.data()) == 0);
  return signature;
}

bool verify(const Key32& public_key, ByteSpan message, const Signature& signature) {
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                     public_key.data()) == 0;
}

Error invalid_identity_error(const Key32& public_key) {
  return make_error(ErrorCode::crypto_error,
                    "identity key " + to_hex(public_key) + " is not a valid Ed25519 point");
}

Result<Key32> ed25519_public_to_x25519(const Key32& public_key) {
  Key32 out;
  if (!ed25519_public_to_x25519_checked(public_key, out)) return invalid_identity_error(public_key);
  return out;
}

Key32 ed25519_secret_to_x25519(const Ed25519Secret& secret) {
  Key32 out;
  MSGSIM_ASSERT(crypto_sign_ed25519_sk_to_curve25519(out.data(), secret.data()) == 0);
  return out;
}

namespace {

Sha256State load_state(const uint32_t (&state)[8]) {
  Sha256State out;
  std::copy_n(state, 8, out.begin());
  return out;
}

}  // namespace

HmacKey::HmacKey(ByteSpan key, Sha256Engine engine) : engine_(resolve_sha256_engine(engine)) {
  if (engine_ == Sha256Engine::libsodium) {
    crypto_auth_hmacsha256_init(&keyed_, key.data(), key.size());
    return;
  }
  // RFC 2104: a key longer than the block is hashed first, a shorter one padded with zeros.
  sodium_memzero(&keyed_, sizeof keyed_);
  std::array<uint8_t, 64> block{};
  if (key.size() > block.size()) {
    Sha256NiStream long_key(kSha256InitialState, 0);
    long_key.update(key);
    long_key.finish(block.data());
    long_key.wipe();
  } else {
    std::copy(key.begin(), key.end(), block.begin());
  }
  for (uint8_t& b : block) b ^= 0x36;
  std::array<uint8_t, 64> outer_block;
  for (size_t i = 0; i < block.size(); ++i) outer_block[i] = block[i] ^ (0x36 ^ 0x5c);
  Sha256State inner = kSha256InitialState;
  Sha256State outer = kSha256InitialState;
  sha256_compress_two_sha_ni(inner, block.data(), outer, outer_block.data());
  std::copy(inner.begin(), inner.end(), keyed_.ictx.state);
  std::copy(outer.begin(), outer.end(), keyed_.octx.state);
  keyed_.ictx.count = 512;  // bits, as libsodium counts: one block
  keyed_.octx.count = 512;
  wipe(block);
  wipe(outer_block);
  wipe(inner);
  wipe(outer);
}

HmacKey::~HmacKey() { sodium_memzero(&keyed_, sizeof keyed_); }

Key32 HmacKey::mac(ByteSpan message) const { return mac_parts({message}); }

Key32 HmacKey::mac(ByteSpan part1, ByteSpan part2, ByteSpan part3) const {
  return mac_parts({part1, part2, part3});
}

namespace {

// The inner hash's last blocks of an HMAC over a message of at most 119 bytes: the message,
// the 0x80 byte, and the bit length of ipad block + message. Returns the block count (1 or 2).
size_t pad_inner_blocks(std::initializer_list<ByteSpan> parts, size_t message_bytes,
                        std::array<uint8_t, 128>& blocks) {
  size_t at = 0;
  for (ByteSpan part : parts) {
    std::copy(part.begin(), part.end(), blocks.begin() + static_cast<ptrdiff_t>(at));
    at += part.size();
  }
  blocks[at] = 0x80;
  const size_t block_count = message_bytes <= 55 ? 1 : 2;
  store_u64be(blocks.data() + 64 * block_count - 8, (64 + message_bytes) * 8);
  return block_count;
}

// The outer hash's block: the inner digest, padding, and the length of opad block + digest.
void pad_outer_block(const Sha256State& inner, std::array<uint8_t, 128>& blocks) {
  std::fill(blocks.begin(), blocks.begin() + 64, uint8_t{0});
  for (size_t i = 0; i < 8; ++i) store_u32be(blocks.data() + 4 * i, inner[i]);
  blocks[32] = 0x80;
  store_u64be(blocks.data() + 56, (64 + 32) * 8);
}

void store_digest(const Sha256State& state, Key32& out) {
  for (size_t i = 0; i < 8; ++i) store_u32be(out.data() + 4 * i, state[i]);
}

}  // namespace

void HmacKey::mac_pair(ByteSpan message_a, ByteSpan message_b, Key32& out_a,
                       Key32& out_b) const {
  if (engine_ == Sha256Engine::libsodium || message_a.size() > 55 || message_b.size() > 55) {
    out_a = mac(message_a);
    out_b = mac(message_b);
    return;
  }
  // Both inner hashes are one block after the ipad block, both outer ones one block after the
  // opad block: two interleaved compressions each.
  std::array<uint8_t, 128> blocks_a{}, blocks_b{};
  pad_inner_blocks({message_a}, message_a.size(), blocks_a);
  pad_inner_blocks({message_b}, message_b.size(), blocks_b);
  Sha256State state_a = load_state(keyed_.ictx.state);
  Sha256State state_b = state_a;
  sha256_compress_two_sha_ni(state_a, blocks_a.data(), state_b, blocks_b.data());
  pad_outer_block(state_a, blocks_a);
  pad_outer_block(state_b, blocks_b);
  state_a = load_state(keyed_.octx.state);
  state_b = state_a;
  sha256_compress_two_sha_ni(state_a, blocks_a.data(), state_b, blocks_b.data());
  store_digest(state_a, out_a);
  store_digest(state_b, out_b);
  wipe(blocks_a);
  wipe(blocks_b);
  wipe(state_a);
  wipe(state_b);
}

Key32 HmacKey::mac_parts(std::initializer_list<ByteSpan> parts) const {
  Key32 out;
  if (engine_ == Sha256Engine::libsodium) {
    crypto_auth_hmacsha256_state state = keyed_;
    for (ByteSpan part : parts) crypto_auth_hmacsha256_update(&state, part.data(), part.size());
    crypto_auth_hmacsha256_final(&state, out.data());
    sodium_memzero(&state, sizeof state);
    return out;
  }
  size_t message_bytes = 0;
  for (ByteSpan part : parts) message_bytes += part.size();
  if (message_bytes > 119) {
    // Long messages (only tests and long HKDF inputs): the general streaming code.
    Sha256NiStream inner(load_state(keyed_.ictx.state), 64);
    for (ByteSpan part : parts) inner.update(part);
    Key32 inner_digest;
    inner.finish(inner_digest.data());
    Sha256NiStream outer(load_state(keyed_.octx.state), 64);
    outer.update(inner_digest);
    outer.finish(out.data());
    inner.wipe();
    outer.wipe();
    wipe(inner_digest);
    return out;
  }
  // Every MAC of the message path is this case: the message and its padding fill one or two
  // blocks after the ipad block, and the outer hash is one block after the opad block.
  std::array<uint8_t, 128> blocks{};
  const size_t block_count = pad_inner_blocks(parts, message_bytes, blocks);
  Sha256State inner = load_state(keyed_.ictx.state);
  sha256_compress_sha_ni(inner, blocks.data(), block_count);
  pad_outer_block(inner, blocks);
  Sha256State outer = load_state(keyed_.octx.state);
  sha256_compress_sha_ni(outer, blocks.data(), 1);
  store_digest(outer, out);
  wipe(blocks);
  wipe(inner);
  wipe(outer);
  return out;
}

Key32 hmac_sha256(ByteSpan key, ByteSpan message, Sha256Engine engine) {
  return HmacKey(key, engine).mac(message);
}

Key32 sha256(ByteSpan message, Sha256Engine engine) {
  Key32 out;
  if (resolve_sha256_engine(engine) == Sha256Engine::libsodium) {
    crypto_hash_sha256(out.data(), message.data(), message.size());
    return out;
  }
  Sha256NiStream stream(kSha256InitialState, 0);
  stream.update(message);
  stream.finish(out.data());
  stream.wipe();
  return out;
}

namespace {

void hkdf_expand(const HmacKey& prk, ByteSpan info, MutableByteSpan output) {
  MSGSIM_ASSERT(output.size() <= 255 * 32, "HKDF output longer than 255 blocks");
  Key32 block{};
  size_t block_size = 0;  // T(0) is empty
  size_t written = 0;
  for (uint8_t counter = 1; written < output.size(); ++counter) {
    block = prk.mac(ByteSpan(block.data(), block_size), info, ByteSpan(&counter, 1));
    block_size = block.size();
    const size_t take = std::min(block.size(), output.size() - written);
    std::copy_n(block.begin(), take, output.begin() + static_cast<ptrdiff_t>(written));
    written += take;
  }
  wipe(block);
}

}  // namespace

void hkdf_sha256(ByteSpan salt, ByteSpan ikm, ByteSpan info, MutableByteSpan output) {
  // RFC 5869: an absent salt is HashLen zero bytes.
  static constexpr std::array<uint8_t, 32> zero_salt{};
  Key32 prk = hmac_sha256(salt.empty() ? ByteSpan(zero_salt) : salt, ikm);
  hkdf_expand(HmacKey(prk), info, output);
  wipe(prk);
}

void hkdf_sha256_zero_salt(ByteSpan ikm, ByteSpan info, MutableByteSpan output) {
  static constexpr std::array<uint8_t, 32> zero_salt{};
  static const HmacKey zero_salt_key{zero_salt};
  Key32 prk = zero_salt_key.mac(ikm);
  hkdf_expand(HmacKey(prk), info, output);
  wipe(prk);
}

void aead_encrypt(const Key32& key, ByteSpan nonce, ByteSpan associated_data, ByteSpan plaintext,
                  MutableByteSpan out) {
  MSGSIM_ASSERT_EQ(nonce.size(), kAeadNonceBytes);
  MSGSIM_ASSERT_EQ(out.size(), plaintext.size() + kAeadTagBytes);
  xchacha20poly1305_encrypt(key.data(), nonce.data(), associated_data, plaintext, out.data());
}

bool aead_decrypt(const Key32& key, ByteSpan nonce, ByteSpan associated_data, ByteSpan ciphertext,
                  MutableByteSpan out) {
  MSGSIM_ASSERT_EQ(nonce.size(), kAeadNonceBytes);
  MSGSIM_ASSERT_GE(ciphertext.size(), kAeadTagBytes);
  MSGSIM_ASSERT_EQ(out.size(), ciphertext.size() - kAeadTagBytes);
  if (!xchacha20poly1305_decrypt(key.data(), nonce.data(), associated_data, ciphertext,
                                 out.data())) {
    if (!out.empty()) sodium_memzero(out.data(), out.size());
    return false;
  }
  return true;
}

Status ByteReader::u8(uint8_t& value, std::string_view field) {
  if (remaining() < 1) return error(ErrorCode::bad_input, field, "truncated");
  value = data_[offset_++];
  return {};
}

Status ByteReader::u32(uint32_t& value, std::string_view field) {
  if (remaining() < 4) return error(ErrorCode::bad_input, field, "truncated");
  value = load_u32be(data_.data() + offset_);
  offset_ += 4;
  return {};
}

Status ByteReader::bytes(MutableByteSpan out, std::string_view field) {
  if (remaining() < out.size()) return error(ErrorCode::bad_input, field, "truncated");
  std::copy_n(data_.begin() + static_cast<ptrdiff_t>(offset_), out.size(), out.begin());
  offset_ += out.size();
  return {};
}

Result<ByteSpan> ByteReader::view(size_t size, std::string_view field) {
  if (remaining() < size) return error(ErrorCode::bad_input, field, "truncated");
  ByteSpan out = data_.subspan(offset_, size);
  offset_ += size;
  return out;
}

Status ByteReader::expect_end() const {
  if (remaining() != 0) {
    return error(ErrorCode::bad_input, "end", std::to_string(remaining()) + " trailing bytes");
  }
  return {};
}

Error ByteReader::error(ErrorCode code, std::string_view field, std::string_view problem) const {
  return make_error(code, std::string(what_) + ": " + std::string(field) + " at byte " +
                              std::to_string(offset_) + " of " + std::to_string(data_.size()) +
                              ": " + std::string(problem));
}

std::string to_hex(ByteSpan bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

}  // namespace msgsim::crypto
