// Arithmetic in GF(2^255 - 19) with five 51-bit limbs and unsigned __int128 products, as
// ref10/donna's 64-bit code does: shared by the fixed-base X25519 key generation
// (x25519_base.h) and the Ed25519 verification (ed25519_verify.h). Internal to impl/crypto.
//
// Every function here runs in constant time (no branch or index depends on the values), so the
// code may handle secret values; the callers decide what runs in variable time.
#pragma once

#include <array>
#include <cstdint>

namespace msgsim::crypto::field {

__extension__ using U128 = unsigned __int128;

constexpr uint64_t kMask51 = (uint64_t{1} << 51) - 1;

// An element of GF(2^255 - 19) as five 51-bit limbs (limbs may run a few bits over 51 between
// operations; mul and square accept limbs below 2^54 and return them below 2^52).
struct Fe {
  uint64_t v[5];
};

inline uint64_t load_le64(const uint8_t* in) {
  uint64_t out = 0;
  for (int i = 7; i >= 0; --i) out = out << 8 | in[i];
  return out;
}

inline Fe fe_from_bytes(const uint8_t* s) {
  // The top bit (the x sign of an Edwards encoding) is ignored.
  return {{load_le64(s) & kMask51, (load_le64(s + 6) >> 3) & kMask51,
           (load_le64(s + 12) >> 6) & kMask51, (load_le64(s + 19) >> 1) & kMask51,
           (load_le64(s + 24) >> 12) & kMask51}};
}

inline Fe fe_carry(U128 r0, U128 r1, U128 r2, U128 r3, U128 r4) {
  r1 += static_cast<uint64_t>(r0 >> 51);
  r2 += static_cast<uint64_t>(r1 >> 51);
  r3 += static_cast<uint64_t>(r2 >> 51);
  r4 += static_cast<uint64_t>(r3 >> 51);
  uint64_t h0 = (static_cast<uint64_t>(r0) & kMask51) + 19 * static_cast<uint64_t>(r4 >> 51);
  uint64_t h1 = (static_cast<uint64_t>(r1) & kMask51) + (h0 >> 51);
  return {{h0 & kMask51, h1, static_cast<uint64_t>(r2) & kMask51,
           static_cast<uint64_t>(r3) & kMask51, static_cast<uint64_t>(r4) & kMask51}};
}

[[gnu::always_inline]] inline Fe fe_mul(const Fe& a, const Fe& b) {
  const uint64_t b1_19 = b.v[1] * 19, b2_19 = b.v[2] * 19, b3_19 = b.v[3] * 19,
                 b4_19 = b.v[4] * 19;
  const U128 r0 = U128{a.v[0]} * b.v[0] + U128{a.v[1]} * b4_19 + U128{a.v[2]} * b3_19 +
                  U128{a.v[3]} * b2_19 + U128{a.v[4]} * b1_19;
  const U128 r1 = U128{a.v[0]} * b.v[1] + U128{a.v[1]} * b.v[0] + U128{a.v[2]} * b4_19 +
                  U128{a.v[3]} * b3_19 + U128{a.v[4]} * b2_19;
  const U128 r2 = U128{a.v[0]} * b.v[2] + U128{a.v[1]} * b.v[1] + U128{a.v[2]} * b.v[0] +
                  U128{a.v[3]} * b4_19 + U128{a.v[4]} * b3_19;
  const U128 r3 = U128{a.v[0]} * b.v[3] + U128{a.v[1]} * b.v[2] + U128{a.v[2]} * b.v[1] +
                  U128{a.v[3]} * b.v[0] + U128{a.v[4]} * b4_19;
  const U128 r4 = U128{a.v[0]} * b.v[4] + U128{a.v[1]} * b.v[3] + U128{a.v[2]} * b.v[2] +
                  U128{a.v[3]} * b.v[1] + U128{a.v[4]} * b.v[0];
  return fe_carry(r0, r1, r2, r3, r4);
}

[[gnu::always_inline]] inline Fe fe_square(const Fe& a) {
  const uint64_t a0_2 = a.v[0] * 2, a1_2 = a.v[1] * 2, a3_19 = a.v[3] * 19,
                 a4_19 = a.v[4] * 19;
  const U128 r0 = U128{a.v[0]} * a.v[0] + U128{a1_2} * a4_19 + U128{a.v[2] * 2} * a3_19;
  const U128 r1 = U128{a0_2} * a.v[1] + U128{a.v[2] * 2} * a4_19 + U128{a.v[3]} * a3_19;
  const U128 r2 = U128{a0_2} * a.v[2] + U128{a.v[1]} * a.v[1] + U128{a.v[3] * 2} * a4_19;
  const U128 r3 = U128{a0_2} * a.v[3] + U128{a1_2} * a.v[2] + U128{a.v[4]} * a4_19;
  const U128 r4 = U128{a0_2} * a.v[4] + U128{a1_2} * a.v[3] + U128{a.v[2]} * a.v[2];
  return fe_carry(r0, r1, r2, r3, r4);
}

inline Fe fe_square_times(Fe a, int times) {
  for (int i = 0; i < times; ++i) a = fe_square(a);
  return a;
}

// z^(2^250 - 1), and z^11 on the way: the common part of ref10's addition chains for the
// inverse and for the square root's exponent below.
struct FePow250 {
  Fe z_250_0;  // z^(2^250 - 1)
  Fe z11;      // z^11
};
inline FePow250 fe_pow_2_250_minus_1(const Fe& z) {
  const Fe z2 = fe_square(z);
  const Fe z9 = fe_mul(fe_square_times(z2, 2), z);
  const Fe z11 = fe_mul(z9, z2);
  const Fe z_5_0 = fe_mul(fe_square(z11), z9);                  // z^(2^5 - 1)
  const Fe z_10_0 = fe_mul(fe_square_times(z_5_0, 5), z_5_0);   // z^(2^10 - 1)
  const Fe z_20_0 = fe_mul(fe_square_times(z_10_0, 10), z_10_0);
  const Fe z_40_0 = fe_mul(fe_square_times(z_20_0, 20), z_20_0);
  const Fe z_50_0 = fe_mul(fe_square_times(z_40_0, 10), z_10_0);
  const Fe z_100_0 = fe_mul(fe_square_times(z_50_0, 50), z_50_0);
  const Fe z_200_0 = fe_mul(fe_square_times(z_100_0, 100), z_100_0);
  const Fe z_250_0 = fe_mul(fe_square_times(z_200_0, 50), z_50_0);
  return FePow250{z_250_0, z11};
}

// z^(p - 2) = 1 / z (0 for z = 0), by the addition chain of ref10.
inline Fe fe_invert(const Fe& z) {
  const FePow250 pow = fe_pow_2_250_minus_1(z);
  return fe_mul(fe_square_times(pow.z_250_0, 5), pow.z11);  // z^(2^255 - 21)
}

// a - b: b is carried first (limbs below 2^51, the bottom one below 2^51 + 2^18), so that
// a + 2p - b keeps every limb positive; the result's limbs are below a's + 2^52. No carry of
// the result (libsodium's fe25519_sub does the same).
inline Fe fe_sub(const Fe& a, const Fe& b) {
  uint64_t b0 = b.v[0], b1 = b.v[1], b2 = b.v[2], b3 = b.v[3], b4 = b.v[4];
  b1 += b0 >> 51;
  b0 &= kMask51;
  b2 += b1 >> 51;
  b1 &= kMask51;
  b3 += b2 >> 51;
  b2 &= kMask51;
  b4 += b3 >> 51;
  b3 &= kMask51;
  b0 += 19 * (b4 >> 51);
  b4 &= kMask51;
  return {{a.v[0] + 0xFFFFFFFFFFFDAULL - b0, a.v[1] + 0xFFFFFFFFFFFFEULL - b1,
           a.v[2] + 0xFFFFFFFFFFFFEULL - b2, a.v[3] + 0xFFFFFFFFFFFFEULL - b3,
           a.v[4] + 0xFFFFFFFFFFFFEULL - b4}};
}

// a + b without a carry: with inputs below 2^52 (the outputs of mul, square and from_bytes)
// the limbs stay below 2^53, and mul and square accept limbs below 2^54. Callers keep sums of
// sums within that (the group formulas add at most an output of add to one of mul).
inline Fe fe_add(const Fe& a, const Fe& b) {
  return {{a.v[0] + b.v[0], a.v[1] + b.v[1], a.v[2] + b.v[2], a.v[3] + b.v[3], a.v[4] + b.v[4]}};
}

// The canonical (fully reduced, < p) little-endian encoding.
inline std::array<uint8_t, 32> fe_to_bytes(const Fe& a) {
  Fe h = a;
  // Two carry passes (the top limb's carry wraps to the bottom times 19) leave every limb below
  // 2^51 but the bottom one, which stays below 2^51 + 19: h < 2^255 + 19 < 2p.
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < 4; ++i) {
      h.v[i + 1] += h.v[i] >> 51;
      h.v[i] &= kMask51;
    }
    h.v[0] += 19 * (h.v[4] >> 51);
    h.v[4] &= kMask51;
  }
  // q = 1 exactly when h >= p: the carry out of the top limb of h + 19.
  uint64_t q = (h.v[0] + 19) >> 51;
  q = (h.v[1] + q) >> 51;
  q = (h.v[2] + q) >> 51;
  q = (h.v[3] + q) >> 51;
  q = (h.v[4] + q) >> 51;
  h.v[0] += 19 * q;  // h - q * p = h + 19 q - q * 2^255: add, carry, drop bit 255
  h.v[1] += h.v[0] >> 51;
  h.v[0] &= kMask51;
  h.v[2] += h.v[1] >> 51;
  h.v[1] &= kMask51;
  h.v[3] += h.v[2] >> 51;
  h.v[2] &= kMask51;
  h.v[4] += h.v[3] >> 51;
  h.v[3] &= kMask51;
  h.v[4] &= kMask51;
  const uint64_t w0 = h.v[0] | h.v[1] << 51;
  const uint64_t w1 = h.v[1] >> 13 | h.v[2] << 38;
  const uint64_t w2 = h.v[2] >> 26 | h.v[3] << 25;
  const uint64_t w3 = h.v[3] >> 39 | h.v[4] << 12;
  std::array<uint8_t, 32> out;
  const uint64_t words[4] = {w0, w1, w2, w3};
  for (int w = 0; w < 4; ++w) {
    for (int i = 0; i < 8; ++i) out[8 * w + i] = static_cast<uint8_t>(words[w] >> (8 * i));
  }
  return out;
}


// -a (reduced input): 2p - a, carried.
inline Fe fe_neg(const Fe& a) { return fe_sub(Fe{{0, 0, 0, 0, 0}}, a); }

inline bool fe_is_zero(const Fe& a) {
  const std::array<uint8_t, 32> bytes = fe_to_bytes(a);
  uint8_t any = 0;
  for (uint8_t b : bytes) any |= b;
  return any == 0;
}

inline bool fe_equal(const Fe& a, const Fe& b) { return fe_to_bytes(a) == fe_to_bytes(b); }

// The "sign" of RFC 8032: the low bit of the canonical encoding.
inline bool fe_is_negative(const Fe& a) { return (fe_to_bytes(a)[0] & 1) != 0; }

// z^((p - 5) / 8) = z^(2^252 - 3), the exponent of the square root in RFC 8032's decoding
// (ref10's addition chain).
inline Fe fe_pow22523(const Fe& z) {
  return fe_mul(fe_square_times(fe_pow_2_250_minus_1(z).z_250_0, 2), z);  // z^(2^252 - 3)
}

}  // namespace msgsim::crypto::field
