// Fixed-base X25519 (public key generation) through libsodium's Edwards fixed-base table.
//
// crypto_scalarmult_curve25519_base in libsodium 1.0.18 runs the same Montgomery ladder as a
// variable-base X25519 (about 29 us here), while crypto_scalarmult_ed25519_base_noclamp uses
// the precomputed multiples of the Ed25519 base point (about 18.5 us). Both curves are the
// same group: for the clamped scalar s, the X25519 public key is the Montgomery u of [s]B,
// u = (1 + y) / (1 - y) from the Edwards y of [s]B, one field inversion (a few us with the
// radix-2^51 arithmetic here). Every new ratchet pair, ephemeral and prekey pays this.
// tests/crypto_test checks it against crypto_scalarmult_curve25519_base on many scalars.
#pragma once

#include <array>
#include <cstdint>

namespace msgsim::crypto {

// The X25519 public key of `secret` (clamped here as X25519 clamps it): the same 32 bytes as
// crypto_scalarmult_curve25519_base.
std::array<uint8_t, 32> x25519_base_via_edwards(const std::array<uint8_t, 32>& secret);

// The Montgomery u (canonical little-endian bytes) of an Ed25519 point given by its canonical
// encoding, u = (1 + y) / (1 - y); the sign bit of x is ignored. y = 1 (the identity) gives 0,
// as the inversion of zero does. Exposed for the tests.
std::array<uint8_t, 32> montgomery_u_of_edwards_y(const std::array<uint8_t, 32>& encoded_point);

}  // namespace msgsim::crypto
