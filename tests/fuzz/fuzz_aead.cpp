// Differential fuzzing of our XChaCha20-Poly1305 (impl/crypto/chacha20poly1305.h) against
// libsodium's: the input picks a key, a nonce, associated data, a message and a bit to flip.
// Encryption, HChaCha20, ChaCha20 and Poly1305 must give libsodium's bytes; decryption must
// accept libsodium's ciphertext and refuse it with the chosen bit flipped, as libsodium does.
#include <sodium.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "impl/base/assert.h"
#include "impl/crypto/chacha20poly1305.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  MSGSIM_ASSERT(sodium_init() >= 0, "libsodium failed to initialise");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace msgsim::crypto;
  constexpr size_t kFixed = 32 + 24 + 2 + 4;  // key, nonce, ad length, flip position + counter
  if (size < kFixed) return 0;
  const uint8_t* key = data;
  const uint8_t* nonce = data + 32;
  const size_t rest = size - kFixed;
  const size_t ad_bytes = (size_t{data[56]} << 8 | data[57]) % (rest + 1);
  const uint32_t flip = uint32_t{data[58]} << 16 | uint32_t{data[59]} << 8 | data[60];
  const uint32_t counter = data[61];
  const std::span<const uint8_t> ad(data + kFixed, ad_bytes);
  const std::span<const uint8_t> message(data + kFixed + ad_bytes, rest - ad_bytes);

  std::vector<uint8_t> ours(message.size() + 16), theirs(message.size() + 16);
  xchacha20poly1305_encrypt(key, nonce, ad, message, ours.data());
  unsigned long long written = 0;
  MSGSIM_ASSERT(crypto_aead_xchacha20poly1305_ietf_encrypt(theirs.data(), &written, message.data(),
                                                          message.size(), ad.data(), ad.size(),
                                                          nullptr, nonce, key) == 0);
  MSGSIM_ASSERT(ours == theirs, "XChaCha20-Poly1305 differs from libsodium");

  std::vector<uint8_t> opened(message.size());
  MSGSIM_ASSERT(xchacha20poly1305_decrypt(key, nonce, ad, theirs, opened.data()),
                "refused libsodium's ciphertext");
  MSGSIM_ASSERT(std::memcmp(opened.data(), message.data(), message.size()) == 0 ||
                message.empty());
  theirs[flip % theirs.size()] ^= static_cast<uint8_t>(1u << (flip >> 20 & 7));
  const bool ours_accepts = xchacha20poly1305_decrypt(key, nonce, ad, theirs, opened.data());
  const bool sodium_accepts =
      crypto_aead_xchacha20poly1305_ietf_decrypt(opened.data(), nullptr, nullptr, theirs.data(),
                                                 theirs.size(), ad.data(), ad.size(), nonce,
                                                 key) == 0;
  MSGSIM_ASSERT(!ours_accepts && !sodium_accepts, "a flipped bit was accepted");

  uint8_t sub_ours[32], sub_theirs[32];
  hchacha20(key, nonce, sub_ours);
  MSGSIM_ASSERT(crypto_core_hchacha20(sub_theirs, nonce, key, nullptr) == 0);
  MSGSIM_ASSERT(std::memcmp(sub_ours, sub_theirs, 32) == 0, "HChaCha20 differs");

  std::vector<uint8_t> stream_ours(message.size()), stream_theirs(message.size());
  chacha20_ietf_xor(key, nonce, counter, message, stream_ours.data());
  MSGSIM_ASSERT(crypto_stream_chacha20_ietf_xor_ic(stream_theirs.data(), message.data(),
                                                   message.size(), nonce, counter, key) == 0);
  MSGSIM_ASSERT(stream_ours == stream_theirs, "ChaCha20 differs");

  uint8_t tag_ours[16], tag_theirs[16];
  poly1305(key, message, tag_ours);
  crypto_onetimeauth_poly1305(tag_theirs, message.data(), message.size(), key);
  MSGSIM_ASSERT(std::memcmp(tag_ours, tag_theirs, 16) == 0, "Poly1305 differs");
  return 0;
}
