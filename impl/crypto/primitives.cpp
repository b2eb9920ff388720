#include "impl/crypto/primitives.h"

#include <algorithm>

#include "impl/base/assert.h"

namespace msgsim::crypto {

X25519KeyPair generate_x25519_key_pair() {
  X25519KeyPair pair;
  randombytes_buf(pair.secret.data(), pair.secret.size());
  pair.public_key = x25519_public_of(pair.secret);
  return pair;
}

Key32 x25519_public_of(const Key32& secret) {
  Key32 public_key;
  // Only fails for a secret that clamps to zero, which clamping makes impossible.
  MSGSIM_ASSERT(crypto_scalarmult_base(public_key.data(), secret.data()) == 0);
  return public_key;
}

Result<Key32> dh(const Key32& own_secret, const Key32& peer_public) {
  Key32 shared;
  if (crypto_scalarmult(shared.data(), own_secret.data(), peer_public.data()) != 0) {
    return make_error(ErrorCode::crypto_error,
                      "X25519 with the peer key " + to_hex(peer_public) +
                          " gave the all-zero result (a low-order point)");
  }
  return shared;
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

Result<Key32> ed25519_public_to_x25519(const Key32& public_key) {
  Key32 out;
  if (crypto_sign_ed25519_pk_to_curve25519(out.data(), public_key.data()) != 0) {
    return make_error(ErrorCode::crypto_error,
                      "identity key " + to_hex(public_key) + " is not a valid Ed25519 point");
  }
  return out;
}

Key32 ed25519_secret_to_x25519(const Ed25519Secret& secret) {
  Key32 out;
  MSGSIM_ASSERT(crypto_sign_ed25519_sk_to_curve25519(out.data(), secret.data()) == 0);
  return out;
}

HmacKey::HmacKey(ByteSpan key) {
  crypto_auth_hmacsha256_init(&keyed_, key.data(), key.size());
}

HmacKey::~HmacKey() { sodium_memzero(&keyed_, sizeof keyed_); }

Key32 HmacKey::mac(ByteSpan message) const {
  crypto_auth_hmacsha256_state state = keyed_;
  Key32 out;
  crypto_auth_hmacsha256_update(&state, message.data(), message.size());
  crypto_auth_hmacsha256_final(&state, out.data());
  sodium_memzero(&state, sizeof state);
  return out;
}

Key32 HmacKey::mac(ByteSpan part1, ByteSpan part2, ByteSpan part3) const {
  crypto_auth_hmacsha256_state state = keyed_;
  Key32 out;
  crypto_auth_hmacsha256_update(&state, part1.data(), part1.size());
  crypto_auth_hmacsha256_update(&state, part2.data(), part2.size());
  crypto_auth_hmacsha256_update(&state, part3.data(), part3.size());
  crypto_auth_hmacsha256_final(&state, out.data());
  sodium_memzero(&state, sizeof state);
  return out;
}

Key32 hmac_sha256(ByteSpan key, ByteSpan message) { return HmacKey(key).mac(message); }

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
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out.data(), &written, plaintext.data(),
                                             plaintext.size(), associated_data.data(),
                                             associated_data.size(), nullptr, nonce.data(),
                                             key.data());
  MSGSIM_ASSERT_EQ(written, out.size());
}

bool aead_decrypt(const Key32& key, ByteSpan nonce, ByteSpan associated_data, ByteSpan ciphertext,
                  MutableByteSpan out) {
  MSGSIM_ASSERT_EQ(nonce.size(), kAeadNonceBytes);
  MSGSIM_ASSERT_GE(ciphertext.size(), kAeadTagBytes);
  MSGSIM_ASSERT_EQ(out.size(), ciphertext.size() - kAeadTagBytes);
  unsigned long long written = 0;
  const int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
      out.data(), &written, nullptr, ciphertext.data(), ciphertext.size(), associated_data.data(),
      associated_data.size(), nonce.data(), key.data());
  if (rc != 0) {
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
