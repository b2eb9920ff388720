#include "impl/crypto/ed25519_verify.h"

#include <sodium.h>

#include <algorithm>
#include <utility>

#include "impl/base/assert.h"
#include "impl/crypto/field25519.h"
#include "impl/crypto/x25519_base.h"

namespace msgsim::crypto {

using namespace field;

namespace {

// Points of the twisted Edwards curve -x^2 + y^2 = 1 + d x^2 y^2 in ref10's representations.
struct P3 {  // extended: x = X/Z, y = Y/Z, x*y = T/Z
  Fe X, Y, Z, T;
};
struct P1P1 {  // completed: x = X/Z, y = Y/T
  Fe X, Y, Z, T;
};
struct Cached {  // an addend: Y+X, Y-X, Z, 2d*T
  Fe y_plus_x, y_minus_x, Z, t2d;
};

Fe fe_small(uint64_t value) { return {{value, 0, 0, 0, 0}}; }

struct Constants {
  Fe d;
  Fe d2;
  Fe sqrtm1;
};

P3 identity() { return {fe_small(0), fe_small(1), fe_small(1), fe_small(0)}; }

P3 to_p3(const P1P1& p) {
  return {fe_mul(p.X, p.T), fe_mul(p.Y, p.Z), fe_mul(p.Z, p.T), fe_mul(p.X, p.Y)};
}

// The same without T (one multiplication less), for a point whose next use is a doubling,
// which reads only X, Y and Z (ref10's ge_p1p1_to_p2). T is left zero.
P3 to_p3_for_doubling(const P1P1& p) {
  return {fe_mul(p.X, p.T), fe_mul(p.Y, p.Z), fe_mul(p.Z, p.T), fe_small(0)};
}

// 2p (ref10's ge_p2_dbl; T of the input is not used).
P1P1 dbl(const P3& p) {
  P1P1 r;
  r.X = fe_square(p.X);
  r.Z = fe_square(p.Y);
  const Fe zz = fe_square(p.Z);
  r.T = fe_add(zz, zz);
  const Fe t0 = fe_square(fe_add(p.X, p.Y));
  r.Y = fe_add(r.Z, r.X);
  r.Z = fe_sub(r.Z, r.X);
  r.X = fe_sub(t0, r.Y);
  r.T = fe_sub(r.T, r.Z);
  return r;
}

// p + q and p - q (ref10's ge_add and ge_sub).
P1P1 add(const P3& p, const Cached& q) {
  P1P1 r;
  const Fe sum = fe_add(p.Y, p.X);
  const Fe difference = fe_sub(p.Y, p.X);
  r.Z = fe_mul(sum, q.y_plus_x);
  r.Y = fe_mul(difference, q.y_minus_x);
  r.T = fe_mul(q.t2d, p.T);
  const Fe zz = fe_mul(p.Z, q.Z);
  const Fe t0 = fe_add(zz, zz);
  r.X = fe_sub(r.Z, r.Y);
  r.Y = fe_add(r.Z, r.Y);
  r.Z = fe_add(t0, r.T);
  r.T = fe_sub(t0, r.T);
  return r;
}

P1P1 sub(const P3& p, const Cached& q) {
  P1P1 r;
  const Fe sum = fe_add(p.Y, p.X);
  const Fe difference = fe_sub(p.Y, p.X);
  r.Z = fe_mul(sum, q.y_minus_x);
  r.Y = fe_mul(difference, q.y_plus_x);
  r.T = fe_mul(q.t2d, p.T);
  const Fe zz = fe_mul(p.Z, q.Z);
  const Fe t0 = fe_add(zz, zz);
  r.X = fe_sub(r.Z, r.Y);
  r.Y = fe_add(r.Z, r.Y);
  r.Z = fe_sub(t0, r.T);
  r.T = fe_add(t0, r.T);
  return r;
}

// The encoding of p given 1/Z (which a caller may have from a batched inversion).
std::array<uint8_t, 32> encode(const P3& p, const Fe& z_inverse) {
  std::array<uint8_t, 32> out = fe_to_bytes(fe_mul(p.Y, z_inverse));
  if (fe_is_negative(fe_mul(p.X, z_inverse))) out[31] |= 0x80;
  return out;
}

std::array<uint8_t, 32> encode(const P3& p) { return encode(p, fe_invert(p.Z)); }

// [8]p is the identity: p has small order (1, 2, 4 or 8). [8]p has X = 0 only as (0, 1) or
// (0, -1), and (0, -1) has order 2, which would give p order 16: no such point exists.
bool has_small_order(const P3& p) {
  P3 eight = to_p3_for_doubling(dbl(p));
  eight = to_p3_for_doubling(dbl(eight));
  eight = to_p3_for_doubling(dbl(eight));
  return fe_is_zero(eight.X);
}

const Constants& constants();

// RFC 8032 5.1.3 decoding, without the sign-bit-on-zero rule (libsodium's
// ge25519_frombytes_negate_vartime has none either; x = 0 points have small order, and the
// callers send those to libsodium). False when y >= p (not canonical) or no x exists.
bool decode(const std::array<uint8_t, 32>& encoded, P3& out) {
  const Constants& c = constants();
  const Fe y = fe_from_bytes(encoded.data());
  std::array<uint8_t, 32> canonical = fe_to_bytes(y);
  canonical[31] |= encoded[31] & 0x80;
  if (canonical != encoded) return false;
  const Fe yy = fe_square(y);
  const Fe u = fe_sub(yy, fe_small(1));
  const Fe v = fe_add(fe_mul(c.d, yy), fe_small(1));
  const Fe v3 = fe_mul(fe_square(v), v);
  Fe x = fe_mul(fe_mul(fe_square(v3), v), u);  // u v^7
  x = fe_mul(fe_mul(fe_pow22523(x), v3), u);   // u v^3 (u v^7)^((p - 5) / 8)
  const Fe vxx = fe_mul(fe_square(x), v);
  if (!fe_is_zero(fe_sub(vxx, u))) {
    if (!fe_is_zero(fe_add(vxx, u))) return false;
    x = fe_mul(x, c.sqrtm1);
  }
  if (fe_is_negative(x) != ((encoded[31] >> 7) != 0)) x = fe_neg(x);
  out = {x, y, fe_small(1), fe_mul(x, y)};
  return true;
}

const Constants& constants() {
  static const Constants computed = [] {
    Constants c;
    c.d = fe_mul(fe_neg(fe_small(121665)), fe_invert(fe_small(121666)));
    c.d2 = fe_add(c.d, c.d);
    // 2^((p - 1) / 4) = 2^(2^253 - 5) = (2^(2^252 - 3))^2 * 2.
    c.sqrtm1 = fe_mul(fe_square(fe_pow22523(fe_small(2))), fe_small(2));
    MSGSIM_ASSERT(fe_equal(fe_square(c.sqrtm1), fe_neg(fe_small(1))));
    return c;
  }();
  return computed;
}

const P3& base_point() {
  static const P3 base = [] {
    std::array<uint8_t, 32> encoded;
    encoded.fill(0x66);
    encoded[0] = 0x58;  // y = 4/5, x even: RFC 8032's B
    P3 point;
    MSGSIM_ASSERT(decode(encoded, point));
    return point;
  }();
  return base;
}

Cached to_cached(const P3& p) {
  return {fe_add(p.Y, p.X), fe_sub(p.Y, p.X), p.Z, fe_mul(p.T, constants().d2)};
}

// The odd multiples [1], [3], ..., [2 kOdd - 1] of P, [2^64]P, [2^128]P and [2^192]P: with
// the scalar's wNAF digits split into four 64-digit segments, a double-scalar multiplication
// needs 63 doublings instead of 253.
constexpr int kSegments = 4;
constexpr int kSegmentDigits = 64;

// The width-w NAF of a little-endian scalar below 2^253 (defined below).
constexpr int kDigits = 256;
void wnaf(const uint8_t* scalar, int width, int8_t (&digits)[kDigits]);

// L - 2^252 (little-endian, 125 bits): [L]A = [2^252]A + [kGroupOrderLow]A.
constexpr uint8_t kGroupOrderLow[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
                                        0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14};

bool is_identity(const P3& p) { return fe_is_zero(p.X) && fe_equal(p.Y, p.Z); }

template <int kOdd>
struct SegmentTable {
  Cached points[kSegments][kOdd];
  // Set when built with the subgroup check: [L]P is the identity, i.e. P is in the subgroup of
  // prime order L (crypto_sign_ed25519_pk_to_curve25519's ge25519_is_on_main_subgroup).
  bool in_prime_order_subgroup = false;

  // The doubling chain P, [2]P, ..., [2^192]P gives the segments' bases; with the subgroup
  // check it runs on to [2^252]P and adds up [L - 2^252]P from the chain's points on the way
  // (60 more doublings and about 42 additions, where a separate [L]P would cost 252 doublings).
  SegmentTable(const P3& point, bool check_subgroup) {
    int8_t low_digits[kDigits] = {};
    if (check_subgroup) wnaf(kGroupOrderLow, 2, low_digits);
    P3 low_multiple = identity();
    P3 chain = point;
    int position = 0;
    auto fold = [&] {
      if (low_digits[position] > 0) low_multiple = to_p3(add(low_multiple, to_cached(chain)));
      if (low_digits[position] < 0) low_multiple = to_p3(sub(low_multiple, to_cached(chain)));
    };
    // T is needed where the chain's point is added (a folded digit, a segment's base, the
    // last point); elsewhere the next use is the next doubling.
    auto double_chain = [&] {
      position += 1;
      const bool added = (check_subgroup && low_digits[position] != 0) ||
                         position % kSegmentDigits == 0 || position == 252;
      chain = added ? to_p3(dbl(chain)) : to_p3_for_doubling(dbl(chain));
      if (check_subgroup) fold();
    };
    if (check_subgroup) fold();
    for (int segment = 0; segment < kSegments; ++segment) {
      if (segment > 0) {
        for (int i = 0; i < kSegmentDigits; ++i) double_chain();
      }
      const Cached twice = to_cached(to_p3(dbl(chain)));
      P3 multiple = chain;
      points[segment][0] = to_cached(multiple);
      for (int i = 1; i < kOdd; ++i) {
        multiple = to_p3(add(multiple, twice));
        points[segment][i] = to_cached(multiple);
      }
    }
    if (check_subgroup) {
      while (position < 252) double_chain();
      in_prime_order_subgroup = is_identity(to_p3(add(low_multiple, to_cached(chain))));
    }
  }
};

// Window widths: the base table is static, so it can be wide (64 odd multiples per segment,
// 40 KB); a key's table is per key and cache-resident (8 per segment, 5 KB).
constexpr int kBaseWindow = 8;
constexpr int kKeyWindow = 5;
using BaseTable = SegmentTable<1 << (kBaseWindow - 2)>;
using KeyTable = SegmentTable<1 << (kKeyWindow - 2)>;

const BaseTable& base_table() {
  static const BaseTable table(base_point(), false);
  return table;
}

// The width-w NAF of a little-endian scalar below 2^253: odd digits of magnitude below
// 2^(w-1), at least w - 1 zeros after each nonzero one, sum of digits[i] 2^i = scalar.
void wnaf(const uint8_t* scalar, int width, int8_t (&digits)[kDigits]) {
  uint64_t limbs[5] = {load_le64(scalar), load_le64(scalar + 8), load_le64(scalar + 16),
                       load_le64(scalar + 24), 0};
  MSGSIM_ASSERT(limbs[3] >> 61 == 0, "wNAF scalar not below 2^253");
  std::fill(std::begin(digits), std::end(digits), int8_t{0});
  const int64_t window = int64_t{1} << width;
  // Shifts the scalar right by 1..63 bits.
  auto shift_right = [&limbs](int bits) {
    for (int l = 0; l < 4; ++l) limbs[l] = limbs[l] >> bits | limbs[l + 1] << (64 - bits);
    limbs[4] >>= bits;
  };
  int i = 0;
  while (i < kDigits && (limbs[0] | limbs[1] | limbs[2] | limbs[3] | limbs[4]) != 0) {
    if ((limbs[0] & 1) == 0) {
      // Runs of zero digits are skipped a word at a time.
      const int zeros = limbs[0] == 0 ? 63 : __builtin_ctzll(limbs[0]);
      shift_right(zeros);
      i += zeros;
      continue;
    }
    int64_t digit = static_cast<int64_t>(limbs[0] & static_cast<uint64_t>(window - 1));
    if (digit >= window / 2) digit -= window;
    digits[i] = static_cast<int8_t>(digit);
    // scalar -= digit: the low `width` bits become zero.
    if (digit > 0) {
      uint64_t borrow = static_cast<uint64_t>(digit);
      for (uint64_t& limb : limbs) {
        const uint64_t before = limb;
        limb -= borrow;
        borrow = limb > before ? 1 : 0;
        if (borrow == 0) break;
      }
    } else {
      uint64_t carry = static_cast<uint64_t>(-digit);
      for (uint64_t& limb : limbs) {
        limb += carry;
        carry = limb < carry ? 1 : 0;
        if (carry == 0) break;
      }
    }
    shift_right(width);
    i += width;
  }
  MSGSIM_ASSERT((limbs[0] | limbs[1] | limbs[2] | limbs[3] | limbs[4]) == 0,
                "wNAF longer than 256 digits");
}

// S < L = 2^252 + 27742317777372353535851937790883648493 (little-endian comparison).
bool scalar_is_canonical(const uint8_t* s) {
  static constexpr uint8_t kGroupOrder[32] = {
      0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};
  for (int i = 31; i >= 0; --i) {
    if (s[i] != kGroupOrder[i]) return s[i] < kGroupOrder[i];
  }
  return false;  // S = L
}

template <int kOdd>
void add_digit(P3& acc, const SegmentTable<kOdd>& table, int segment, int digit) {
  if (digit > 0) acc = to_p3(add(acc, table.points[segment][digit >> 1]));
  if (digit < 0) acc = to_p3(sub(acc, table.points[segment][(-digit) >> 1]));
}

// sum over segments of [digits] * table, the digits' segments processed in step.
template <int kOddA, int kOddB>
P3 double_multiple(const int8_t (&digits_a)[kDigits],
                   const SegmentTable<kOddA>& table_a,
                   const int8_t (&digits_b)[kDigits],
                   const SegmentTable<kOddB>& table_b) {
  P3 acc = identity();
  bool started = false;
  for (int r = kSegmentDigits - 1; r >= 0; --r) {
    if (started) {
      // T only when this row adds something (additions read T, doublings do not).
      bool row_adds = false;
      for (int segment = 0; segment < kSegments; ++segment) {
        row_adds = row_adds || digits_a[segment * kSegmentDigits + r] != 0 ||
                   digits_b[segment * kSegmentDigits + r] != 0;
      }
      acc = row_adds ? to_p3(dbl(acc)) : to_p3_for_doubling(dbl(acc));
    }
    for (int segment = 0; segment < kSegments; ++segment) {
      const int a = digits_a[segment * kSegmentDigits + r];
      const int b = digits_b[segment * kSegmentDigits + r];
      add_digit(acc, table_a, segment, a);
      add_digit(acc, table_b, segment, b);
      started = started || a != 0 || b != 0;
    }
  }
  return acc;
}

}  // namespace

class Ed25519VerifyingKey {
 public:
  Ed25519VerifyingKey(const std::array<uint8_t, 32>& encoded, const P3& negated_point,
                      bool check_subgroup)
      : encoded_(encoded), negated_table_(negated_point, check_subgroup) {}

  const std::array<uint8_t, 32>& encoded() const { return encoded_; }
  // Multiples of -A: verification adds [k](-A).
  const KeyTable& negated_table() const { return negated_table_; }
  // [L]A = O (-A is in the subgroup exactly when A is); false when not checked.
  bool in_prime_order_subgroup() const { return negated_table_.in_prime_order_subgroup; }

 private:
  std::array<uint8_t, 32> encoded_;
  KeyTable negated_table_;
};

std::shared_ptr<const Ed25519VerifyingKey> ed25519_verifying_key(
    const std::array<uint8_t, 32>& public_key, Ed25519SubgroupCheck subgroup_check) {
  P3 point;
  if (!decode(public_key, point) || has_small_order(point)) return nullptr;
  const P3 negated = {fe_neg(point.X), point.Y, point.Z, fe_neg(point.T)};
  return std::make_shared<const Ed25519VerifyingKey>(
      public_key, negated, subgroup_check == Ed25519SubgroupCheck::yes);
}

bool ed25519_key_in_prime_order_subgroup(const Ed25519VerifyingKey& key) {
  return key.in_prime_order_subgroup();
}

namespace {

// [S]B - [k]A for a signature (R, S) under the key A, k = SHA-512(R || A || M) mod L as
// libsodium computes it; false when S >= L (libsodium refuses those: left to it).
bool r_check_of(const Ed25519VerifyingKey& key, std::span<const uint8_t> message,
                const std::array<uint8_t, 64>& signature, P3& r_check) {
  const uint8_t* s = signature.data() + 32;
  if (!scalar_is_canonical(s)) return false;
  crypto_hash_sha512_state hash;
  crypto_hash_sha512_init(&hash);
  crypto_hash_sha512_update(&hash, signature.data(), 32);
  crypto_hash_sha512_update(&hash, key.encoded().data(), 32);
  crypto_hash_sha512_update(&hash, message.data(), message.size());
  uint8_t digest[64];
  crypto_hash_sha512_final(&hash, digest);
  uint8_t k[32];
  crypto_core_ed25519_scalar_reduce(k, digest);

  int8_t s_digits[kDigits];
  int8_t k_digits[kDigits];
  wnaf(s, kBaseWindow, s_digits);
  wnaf(k, kKeyWindow, k_digits);
  r_check = double_multiple(s_digits, base_table(), k_digits, key.negated_table());
  return true;
}

// The verdict once [S]B - [k]A is known: libsodium compares its encoding with R byte for byte.
Ed25519FastVerdict judge(const P3& r_check, const Fe& z_inverse,
                         const std::array<uint8_t, 64>& signature) {
  if (!std::equal(signature.begin(), signature.begin() + 32,
                  encode(r_check, z_inverse).begin())) {
    return Ed25519FastVerdict::invalid;
  }
  // libsodium refuses a small-order R whatever the equation says; let it decide those.
  if (has_small_order(r_check)) return Ed25519FastVerdict::unusual;
  return Ed25519FastVerdict::valid;
}

}  // namespace

Ed25519FastVerdict ed25519_verify_fast(const Ed25519VerifyingKey& key,
                                       std::span<const uint8_t> message,
                                       const std::array<uint8_t, 64>& signature) {
  P3 r_check;
  if (!r_check_of(key, message, signature, r_check)) return Ed25519FastVerdict::unusual;
  return judge(r_check, fe_invert(r_check.Z), signature);
}

bool ed25519_verify_cached(const std::array<uint8_t, 32>& public_key,
                           std::span<const uint8_t> message,
                           const std::array<uint8_t, 64>& signature) {
  // Per thread, so that no lock is needed; the verdicts do not depend on what is cached.
  struct Cache {
    std::array<std::pair<std::array<uint8_t, 32>, std::shared_ptr<const Ed25519VerifyingKey>>,
               kVerifyingKeysCached>
        entries;
    size_t used = 0;
    size_t next_replaced = 0;
  };
  thread_local Cache cache;
  const Ed25519VerifyingKey* key = nullptr;
  bool found = false;
  for (size_t i = 0; i < cache.used; ++i) {
    if (cache.entries[i].first == public_key) {
      key = cache.entries[i].second.get();
      found = true;
      break;
    }
  }
  if (!found) {
    // An unusual key is cached as null: its verifications all go to libsodium.
    auto made = ed25519_verifying_key(public_key);
    key = made.get();
    size_t slot = cache.used;
    if (cache.used < kVerifyingKeysCached) {
      cache.used += 1;
    } else {
      slot = cache.next_replaced;
      cache.next_replaced = (slot + 1) % kVerifyingKeysCached;
    }
    cache.entries[slot] = {public_key, std::move(made)};
  }
  if (key != nullptr) {
    const Ed25519FastVerdict verdict = ed25519_verify_fast(*key, message, signature);
    if (verdict != Ed25519FastVerdict::unusual) return verdict == Ed25519FastVerdict::valid;
  }
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                     public_key.data()) == 0;
}

Ed25519IdentityCheck ed25519_verify_and_convert(const std::array<uint8_t, 32>& public_key,
                                                std::span<const uint8_t> message,
                                                const std::array<uint8_t, 64>& signature) {
  Ed25519IdentityCheck check;
  const auto key = ed25519_verifying_key(public_key, Ed25519SubgroupCheck::yes);
  Ed25519FastVerdict verdict = Ed25519FastVerdict::unusual;
  if (key != nullptr && key->in_prime_order_subgroup()) {
    // A canonical encoding of a point of prime order: libsodium's conversion checks all pass,
    // and its result is u = (1 + y) / (1 - y) of the same y. Its inversion and the one that
    // encodes [S]B - [k]A are batched (1/(ab) gives 1/a and 1/b with two multiplications).
    // 1 - y is not zero: y = 1 is the identity, of small order.
    const Fe y = fe_from_bytes(public_key.data());
    const Fe one_minus_y = fe_sub(fe_small(1), y);
    Fe one_minus_y_inverse;
    P3 r_check;
    if (r_check_of(*key, message, signature, r_check)) {
      const Fe both_inverse = fe_invert(fe_mul(r_check.Z, one_minus_y));
      one_minus_y_inverse = fe_mul(both_inverse, r_check.Z);
      verdict = judge(r_check, fe_mul(both_inverse, one_minus_y), signature);
    } else {
      one_minus_y_inverse = fe_invert(one_minus_y);
    }
    check.x25519 = fe_to_bytes(fe_mul(fe_add(fe_small(1), y), one_minus_y_inverse));
    check.converted = true;
  } else {
    if (key != nullptr) verdict = ed25519_verify_fast(*key, message, signature);
    check.converted = crypto_sign_ed25519_pk_to_curve25519(check.x25519.data(),
                                                           public_key.data()) == 0;
  }
  check.signature_valid = verdict != Ed25519FastVerdict::unusual
                              ? verdict == Ed25519FastVerdict::valid
                              : crypto_sign_verify_detached(signature.data(), message.data(),
                                                            message.size(),
                                                            public_key.data()) == 0;
  return check;
}

bool ed25519_public_to_x25519_checked(const std::array<uint8_t, 32>& public_key,
                                      std::array<uint8_t, 32>& x25519) {
  const auto key = ed25519_verifying_key(public_key, Ed25519SubgroupCheck::yes);
  if (key != nullptr && key->in_prime_order_subgroup()) {
    x25519 = montgomery_u_of_edwards_y(public_key);
    return true;
  }
  return crypto_sign_ed25519_pk_to_curve25519(x25519.data(), public_key.data()) == 0;
}

std::array<uint8_t, 32> ed25519_base_multiple_for_tests(const std::array<uint8_t, 32>& scalar) {
  int8_t digits[kDigits];
  wnaf(scalar.data(), kBaseWindow, digits);
  int8_t zero[kDigits] = {};
  return encode(double_multiple(digits, base_table(), zero, base_table()));
}

}  // namespace msgsim::crypto
