// Ed25519 signature verification with a precomputed table per signing key, giving exactly
// libsodium 1.0.18's crypto_sign_verify_detached verdicts.
//
// Why: a sender-key chain (spec/e2ee.md, Sender Keys) signs every group message with one
// Ed25519 key, and libsodium's verify (~47 us here) was most of a group message's cost. The
// verify equation R = [S]B - [k]A has A fixed for the whole chain, so a table of multiples of
// A and of [2^64]A, [2^128]A, [2^192]A (and a static one for the base point B) turns the 253
// doublings of a double-scalar multiplication into 64. libsodium does not expose its group
// arithmetic, so the field (field25519.h) and group code are ours.
//
// Exactly libsodium's verdicts: the fast path decides only ordinary inputs, those where
// libsodium's checks are known to pass (S < L; A a canonical, decodable encoding of a point
// that is not of small order; a computed R that is not of small order) and where the verdict
// is then the byte comparison of the encoding of [S]B - [k]A with R, as libsodium's is.
// Anything else (a non-canonical S, a small-order or undecodable key, a small-order R) goes to
// crypto_sign_verify_detached itself. tests/crypto_test compares the verdicts on RFC 8032's
// vectors and many thousands of valid, corrupted and malformed signatures; tests/fuzz
// fuzz_ed25519 does so differentially.
//
// Only public data flows through this code (keys, messages, signatures), so it runs in
// variable time (wNAF digits, early exits); signing, which handles secret scalars, stays on
// libsodium.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace msgsim::crypto {

// The multiples of one Ed25519 public key that verification with it adds (about 5 KB).
class Ed25519VerifyingKey;

// What the fast path decided, for the tests (which check that ordinary signatures never
// reach libsodium, so that the comparisons exercise our code).
enum class Ed25519FastVerdict { valid, invalid, unusual };

// Decodes and tables a public key; null when the key is unusual (not canonical, not a point,
// of small order), for which every verification goes to libsodium. With the subgroup check,
// the table's doubling chain also finds whether [L]A is the identity.
enum class Ed25519SubgroupCheck { no, yes };
std::shared_ptr<const Ed25519VerifyingKey> ed25519_verifying_key(
    const std::array<uint8_t, 32>& public_key,
    Ed25519SubgroupCheck subgroup_check = Ed25519SubgroupCheck::no);
// For a key tabled with the subgroup check: [L]A is the identity.
bool ed25519_key_in_prime_order_subgroup(const Ed25519VerifyingKey& key);

// The fast path alone: valid or invalid exactly as libsodium would say, or unusual.
Ed25519FastVerdict ed25519_verify_fast(const Ed25519VerifyingKey& key,
                                       std::span<const uint8_t> message,
                                       const std::array<uint8_t, 64>& signature);

// crypto_sign_verify_detached's verdict (true: valid). Keys' tables live in a small cache
// (kVerifyingKeysCached per thread, replaced round-robin) so that a chain's messages share one;
// a key seen for the first time costs about what libsodium's verification does.
inline constexpr size_t kVerifyingKeysCached = 8;
bool ed25519_verify_cached(const std::array<uint8_t, 32>& public_key,
                           std::span<const uint8_t> message,
                           const std::array<uint8_t, 64>& signature);

// X3DH's first contact with a peer (spec/e2ee.md): the signed prekey's signature under the
// identity key, and the identity key's X25519 form, on one decoding and one doubling chain.
// Exactly what crypto_sign_verify_detached and crypto_sign_ed25519_pk_to_curve25519 say (and
// the latter's bytes): where our code finds anything unusual, it asks them.
struct Ed25519IdentityCheck {
  bool signature_valid = false;
  bool converted = false;  // the key has an X25519 form (a point of prime order)
  std::array<uint8_t, 32> x25519{};
};
Ed25519IdentityCheck ed25519_verify_and_convert(const std::array<uint8_t, 32>& public_key,
                                                std::span<const uint8_t> message,
                                                const std::array<uint8_t, 64>& signature);
// The conversion alone: crypto_sign_ed25519_pk_to_curve25519's verdict and bytes.
bool ed25519_public_to_x25519_checked(const std::array<uint8_t, 32>& public_key,
                                      std::array<uint8_t, 32>& x25519);

// [scalar]B for a 32-byte little-endian scalar below 2^253 through the static base-point table
// (the tests compare it with libsodium's crypto_scalarmult_ed25519_base_noclamp).
std::array<uint8_t, 32> ed25519_base_multiple_for_tests(const std::array<uint8_t, 32>& scalar);

}  // namespace msgsim::crypto
