// Differential fuzzing of our Ed25519 verification (impl/crypto/ed25519_verify.h) against
// libsodium's crypto_sign_verify_detached. The first input byte picks the mode:
//   even: the input is a raw key, signature and message (mostly invalid, odd encodings);
//   odd:  the input's first 32 bytes seed a key pair that signs the message, and the next bytes
//         pick up to three bits of key, signature or message to flip (0xffff: no flip), so that
//         valid signatures and near-misses are reached too.
// Our verdict must be libsodium's in both modes, and so must the first-contact check's
// conversion of the key to X25519 (crypto_sign_ed25519_pk_to_curve25519); a valid signature must be decided by our fast
// path, not by its fallback to libsodium.
#include <sodium.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "impl/base/assert.h"
#include "impl/crypto/ed25519_verify.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  MSGSIM_ASSERT(sodium_init() >= 0, "libsodium failed to initialise");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace msgsim::crypto;
  constexpr size_t kFixed = 1 + 32 + 64;
  if (size < kFixed) return 0;
  const bool sign_mode = (data[0] & 1) != 0;
  std::array<uint8_t, 32> key;
  std::array<uint8_t, 64> signature;
  std::memcpy(key.data(), data + 1, 32);
  std::memcpy(signature.data(), data + 33, 64);
  std::vector<uint8_t> message(data + kFixed, data + size);
  bool signed_intact = false;
  if (sign_mode) {
    // Bytes 33..38 of the input pick three bit flips; the rest of the raw signature is unused.
    uint8_t secret[64];
    std::array<uint8_t, 32> seed = key;
    MSGSIM_ASSERT(crypto_sign_seed_keypair(key.data(), secret, seed.data()) == 0);
    MSGSIM_ASSERT(crypto_sign_detached(signature.data(), nullptr, message.data(), message.size(),
                                       secret) == 0);
    signed_intact = true;
    const size_t total_bits = (32 + 64 + message.size()) * 8;
    for (int flip = 0; flip < 3; ++flip) {
      const unsigned pick = unsigned{data[33 + 2 * flip]} << 8 | data[34 + 2 * flip];
      if (pick == 0xffff) continue;
      const size_t bit = pick % total_bits;
      const size_t byte = bit / 8;
      const uint8_t mask = static_cast<uint8_t>(1u << (bit % 8));
      if (byte < 32) {
        key[byte] ^= mask;
      } else if (byte < 96) {
        signature[byte - 32] ^= mask;
      } else {
        message[byte - 96] ^= mask;
      }
      signed_intact = false;
    }
  }
  const bool theirs = crypto_sign_verify_detached(signature.data(), message.data(),
                                                  message.size(), key.data()) == 0;
  MSGSIM_ASSERT(ed25519_verify_cached(key, message, signature) == theirs,
                "Ed25519 verdict differs from libsodium's");
  const auto table = ed25519_verifying_key(key);
  if (table != nullptr) {
    const Ed25519FastVerdict fast = ed25519_verify_fast(*table, message, signature);
    if (fast != Ed25519FastVerdict::unusual) {
      MSGSIM_ASSERT((fast == Ed25519FastVerdict::valid) == theirs,
                    "Ed25519 fast-path verdict differs from libsodium's");
    }
  }
  // X3DH's first-contact check: libsodium's verdict, and its conversion's verdict and bytes.
  const Ed25519IdentityCheck identity = ed25519_verify_and_convert(key, message, signature);
  MSGSIM_ASSERT(identity.signature_valid == theirs, "first-contact verdict differs");
  std::array<uint8_t, 32> converted;
  const bool their_conversion =
      crypto_sign_ed25519_pk_to_curve25519(converted.data(), key.data()) == 0;
  MSGSIM_ASSERT(identity.converted == their_conversion, "conversion verdict differs");
  MSGSIM_ASSERT(!their_conversion || identity.x25519 == converted, "conversion bytes differ");
  if (signed_intact) {
    MSGSIM_ASSERT(theirs && table != nullptr &&
                      ed25519_verify_fast(*table, message, signature) == Ed25519FastVerdict::valid,
                  "a valid signature was not decided by the fast path");
  }
  return 0;
}
