// Our Ed25519 verification (impl/crypto/ed25519_verify.h) against libsodium's
// crypto_sign_verify_detached: RFC 8032's vectors, thousands of valid signatures and of
// signatures with a flipped bit in R, S, the message or the key, non-canonical S, R and A
// encodings, small-order and mixed-order keys and R values. Every verdict must be libsodium's,
// and ordinary signatures (valid or corrupted) must be decided by our fast path, not by the
// fallback to libsodium, or the comparisons would prove nothing.
#include <gtest/gtest.h>

#include <sodium.h>

#include <array>
#include <string>
#include <vector>

#include "impl/base/prng.h"
#include "impl/crypto/ed25519_verify.h"
#include "impl/crypto/primitives.h"
#include "sim/randombytes.h"
#include "tests/hex_test_support.h"

namespace msgsim::crypto {
namespace {

using test::from_hex;

template <size_t N>
std::array<uint8_t, N> array_from_hex(std::string_view hex) {
  const Bytes bytes = from_hex(hex);
  std::array<uint8_t, N> out{};
  EXPECT_EQ(bytes.size(), N) << hex;
  std::copy_n(bytes.begin(), std::min(N, bytes.size()), out.begin());
  return out;
}

bool libsodium_verdict(const Key32& key, ByteSpan message, const Signature& signature) {
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                     key.data()) == 0;
}

// Our verdict (through the cache, as the sender keys call it), which must be libsodium's.
void expect_same_verdict(const Key32& key, ByteSpan message, const Signature& signature,
                         const std::string& what) {
  ASSERT_EQ(ed25519_verify_cached(key, message, signature),
            libsodium_verdict(key, message, signature))
      << what << ": key " << to_hex(key) << " signature " << to_hex(signature) << " message "
      << to_hex(message);
}

class CryptoEd25519 : public ::testing::Test {
 protected:
  void SetUp() override { sim::reseed_randombytes(8032); }
};

// RFC 8032 section 7.1, tests 1-3 and the 1023-byte test... the first three (short messages).
TEST_F(CryptoEd25519, Rfc8032Vectors) {
  struct Vector {
    const char* seed;
    const char* public_key;
    const char* message;
    const char* signature;
  };
  const Vector vectors[] = {
      {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
       "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
       "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf"
       "9b46bd25bf5f0595bbe24655141438e7a100b"},
      {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
       "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
       "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f"
       "11d8c387b2eaeb4302aeeb00d291612bb0c00"},
      {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
       "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
       "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f76098"
       "4dc6594a7c15e9716ed28dc027beceea1ec40a"},
  };
  for (const Vector& v : vectors) {
    const auto seed = array_from_hex<32>(v.seed);
    const auto public_key = array_from_hex<32>(v.public_key);
    const Bytes message = from_hex(v.message);
    const auto signature = array_from_hex<64>(v.signature);
    // The vector is what libsodium makes of the seed, so it cannot be mistyped silently.
    Key32 derived_public;
    Ed25519Secret secret;
    ASSERT_EQ(crypto_sign_seed_keypair(derived_public.data(), secret.data(), seed.data()), 0);
    ASSERT_EQ(to_hex(derived_public), to_hex(public_key));
    ASSERT_EQ(to_hex(sign(secret, message)), to_hex(signature));

    const auto key = ed25519_verifying_key(public_key);
    ASSERT_NE(key, nullptr);
    EXPECT_EQ(ed25519_verify_fast(*key, message, signature), Ed25519FastVerdict::valid);
    EXPECT_TRUE(ed25519_verify_cached(public_key, message, signature));
    Signature corrupted = signature;
    corrupted[63] ^= 0x01;
    EXPECT_EQ(ed25519_verify_fast(*key, message, corrupted), Ed25519FastVerdict::invalid);
    EXPECT_FALSE(ed25519_verify_cached(public_key, message, corrupted));
  }
}

TEST_F(CryptoEd25519, BaseTableMatchesLibsodiumScalarMultiplication) {
  Prng prng(8033);
  for (int i = 0; i < 300; ++i) {
    Key32 scalar;
    prng.fill(scalar);
    scalar[31] &= i % 2 == 0 ? 0x1f : 0x0f;  // below 2^253 (and below L on odd i)
    if (i < 8) {
      scalar.fill(0);
      scalar[0] = static_cast<uint8_t>(i + 1);  // small multiples: 1..8
    }
    Key32 theirs;
    ASSERT_EQ(crypto_scalarmult_ed25519_base_noclamp(theirs.data(), scalar.data()), 0);
    ASSERT_EQ(to_hex(ed25519_base_multiple_for_tests(scalar)), to_hex(theirs)) << to_hex(scalar);
  }
}

// Many keys, several messages each: valid signatures and one flipped bit anywhere.
TEST_F(CryptoEd25519, ValidAndCorruptedSignaturesGiveLibsodiumsVerdicts) {
  Prng prng(8034);
  int fast_valid = 0;
  int fast_invalid = 0;
  for (int key_index = 0; key_index < 200; ++key_index) {
    const Ed25519KeyPair pair = generate_ed25519_key_pair();
    const auto table = ed25519_verifying_key(pair.public_key);
    ASSERT_NE(table, nullptr) << to_hex(pair.public_key);
    for (int m = 0; m < 6; ++m) {
      Bytes message(prng.below(200));
      prng.fill(message);
      const Signature signature = sign(pair.secret, message);
      ASSERT_EQ(ed25519_verify_fast(*table, message, signature), Ed25519FastVerdict::valid);
      ++fast_valid;
      expect_same_verdict(pair.public_key, message, signature, "valid");

      Signature bad_r = signature;
      bad_r[prng.below(32)] ^= static_cast<uint8_t>(1u << prng.below(8));
      expect_same_verdict(pair.public_key, message, bad_r, "bit flipped in R");
      Signature bad_s = signature;
      bad_s[32 + prng.below(32)] ^= static_cast<uint8_t>(1u << prng.below(8));
      expect_same_verdict(pair.public_key, message, bad_s, "bit flipped in S");
      if (ed25519_verify_fast(*table, message, bad_s) == Ed25519FastVerdict::invalid) {
        ++fast_invalid;
      }
      if (!message.empty()) {
        Bytes bad_message = message;
        bad_message[prng.below(bad_message.size())] ^= static_cast<uint8_t>(1u << prng.below(8));
        expect_same_verdict(pair.public_key, bad_message, signature, "bit flipped in message");
        ASSERT_EQ(ed25519_verify_fast(*table, bad_message, signature),
                  Ed25519FastVerdict::invalid);
        ++fast_invalid;
      }
      Key32 bad_key = pair.public_key;
      bad_key[prng.below(32)] ^= static_cast<uint8_t>(1u << prng.below(8));
      expect_same_verdict(bad_key, message, signature, "bit flipped in key");
    }
  }
  // S flips that leave S below L are decided by the fast path: most of them.
  EXPECT_EQ(fast_valid, 1200);
  EXPECT_GT(fast_invalid, 1500);
}

// L, little-endian.
constexpr std::array<uint8_t, 32> kGroupOrder = {
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};

// a + b on 32-byte little-endian numbers (mod 2^256).
std::array<uint8_t, 32> add_le(const uint8_t* a, const std::array<uint8_t, 32>& b) {
  std::array<uint8_t, 32> out;
  unsigned carry = 0;
  for (size_t i = 0; i < 32; ++i) {
    carry += unsigned{a[i]} + b[i];
    out[i] = static_cast<uint8_t>(carry);
    carry >>= 8;
  }
  return out;
}

// S + L verifies the same equation as S, but libsodium refuses S >= L: so must we.
TEST_F(CryptoEd25519, NonCanonicalScalarsAreRefusedAsLibsodiumRefusesThem) {
  Prng prng(8035);
  for (int i = 0; i < 100; ++i) {
    const Ed25519KeyPair pair = generate_ed25519_key_pair();
    Bytes message(prng.below(64));
    prng.fill(message);
    const Signature signature = sign(pair.secret, message);
    Signature plus_l = signature;
    const auto s_plus_l = add_le(signature.data() + 32, kGroupOrder);
    std::copy(s_plus_l.begin(), s_plus_l.end(), plus_l.begin() + 32);
    ASSERT_FALSE(libsodium_verdict(pair.public_key, message, plus_l));
    expect_same_verdict(pair.public_key, message, plus_l, "S + L");
    const auto table = ed25519_verifying_key(pair.public_key);
    EXPECT_EQ(ed25519_verify_fast(*table, message, plus_l), Ed25519FastVerdict::unusual);

    for (const uint8_t top : {uint8_t{0x10}, uint8_t{0x1f}, uint8_t{0x20}, uint8_t{0x80},
                              uint8_t{0xff}}) {
      Signature high = signature;
      high[63] = top;
      expect_same_verdict(pair.public_key, message, high, "S with high bits");
    }
    Signature s_is_l = signature;
    std::copy(kGroupOrder.begin(), kGroupOrder.end(), s_is_l.begin() + 32);
    expect_same_verdict(pair.public_key, message, s_is_l, "S = L");
  }
}

// The encodings of the eight points of small order (y in {1, -1, 0, +-y8}, either x sign) and
// non-canonical encodings (y + p for y < 19, y = p - 1 + 2^255 ...).
std::vector<Key32> odd_encodings() {
  std::vector<Key32> out;
  auto with_sign_variants = [&](Key32 encoding) {
    encoding[31] &= 0x7f;
    out.push_back(encoding);
    encoding[31] |= 0x80;
    out.push_back(encoding);
  };
  Key32 y{};
  y[0] = 1;  // identity
  with_sign_variants(y);
  y[0] = 0;  // order 4
  with_sign_variants(y);
  Key32 minus_one;
  minus_one.fill(0xff);
  minus_one[0] = 0xec;  // p - 1: order 2
  with_sign_variants(minus_one);
  // Order 8 (libsodium's blacklist).
  with_sign_variants(array_from_hex<32>(
      "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"));
  with_sign_variants(array_from_hex<32>(
      "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"));
  // y + p for y = 0..18: not canonical.
  for (uint8_t low = 0xed; low != 0; ++low) {
    Key32 encoding;
    encoding.fill(0xff);
    encoding[0] = low;
    with_sign_variants(encoding);
  }
  Key32 all_ones;
  all_ones.fill(0xff);
  out.push_back(all_ones);
  return out;
}

TEST_F(CryptoEd25519, SmallOrderAndNonCanonicalKeysGoToLibsodium) {
  Prng prng(8036);
  const Ed25519KeyPair pair = generate_ed25519_key_pair();
  const Bytes message = {1, 2, 3};
  const Signature signature = sign(pair.secret, message);
  const std::vector<Key32> odd = odd_encodings();
  for (const Key32& key : odd) {
    EXPECT_EQ(ed25519_verifying_key(key), nullptr) << to_hex(key);
    expect_same_verdict(key, message, signature, "odd key");
    // R = the identity and S = 0 satisfy [S]B = R + [k]A for the identity key A: libsodium
    // refuses (A of small order), and so must we.
    Signature trivial{};
    trivial[0] = 1;
    expect_same_verdict(key, message, trivial, "identity R, zero S");
    for (const Key32& r : odd) {
      Signature odd_r = signature;
      std::copy(r.begin(), r.end(), odd_r.begin());
      expect_same_verdict(key, message, odd_r, "odd key and R");
    }
  }
  // The small-order ones decode as points: adding them to a valid key gives mixed-order keys,
  // which libsodium's verification accepts as keys, so our fast path decides them.
  int mixed = 0;
  for (size_t i = 0; i < 10; ++i) {
    Key32 mixed_key;
    if (crypto_core_ed25519_add(mixed_key.data(), pair.public_key.data(), odd[i].data()) != 0) {
      continue;
    }
    if (mixed_key == pair.public_key) continue;
    ++mixed;
    ASSERT_NE(ed25519_verifying_key(mixed_key), nullptr) << to_hex(mixed_key);
    expect_same_verdict(mixed_key, message, signature, "mixed-order key");
    for (int j = 0; j < 20; ++j) {
      Signature random_signature;
      prng.fill(random_signature);
      random_signature[63] &= 0x0f;
      expect_same_verdict(mixed_key, message, random_signature, "mixed-order key, random");
    }
  }
  EXPECT_GE(mixed, 6);  // the order-2, 4 and 8 points (the identity adds nothing)
  // Valid R and S with an odd R substituted were covered above; finally, small-order R
  // values against a valid key.
  for (const Key32& r : odd) {
    Signature odd_r = signature;
    std::copy(r.begin(), r.end(), odd_r.begin());
    expect_same_verdict(pair.public_key, message, odd_r, "odd R");
  }
}

// R = the identity (small order) with S = k a mod L satisfies the verification equation
// [S]B = R + [k]A for the key A = [a]B: libsodium refuses it for its small-order R, so the
// fast path must not call it valid (it leaves the verdict to libsodium).
TEST_F(CryptoEd25519, IdentityRThatSatisfiesTheEquationIsRefused) {
  Prng prng(8038);
  for (int i = 0; i < 20; ++i) {
    Key32 seed;
    prng.fill(seed);
    Key32 public_key;
    Ed25519Secret secret;
    ASSERT_EQ(crypto_sign_seed_keypair(public_key.data(), secret.data(), seed.data()), 0);
    // a = the clamped first half of SHA-512(seed) (RFC 8032 5.1.5), reduced mod L.
    uint8_t expanded[64];
    crypto_hash_sha512(expanded, seed.data(), seed.size());
    expanded[0] &= 248;
    expanded[31] &= 127;
    expanded[31] |= 64;
    uint8_t wide[64] = {};
    std::copy_n(expanded, 32, wide);
    uint8_t a[32];
    crypto_core_ed25519_scalar_reduce(a, wide);
    Signature forged{};
    forged[0] = 1;  // the identity's encoding
    Bytes message(prng.below(50));
    prng.fill(message);
    crypto_hash_sha512_state hash;
    crypto_hash_sha512_init(&hash);
    crypto_hash_sha512_update(&hash, forged.data(), 32);
    crypto_hash_sha512_update(&hash, public_key.data(), 32);
    crypto_hash_sha512_update(&hash, message.data(), message.size());
    uint8_t digest[64];
    crypto_hash_sha512_final(&hash, digest);
    uint8_t k[32];
    crypto_core_ed25519_scalar_reduce(k, digest);
    crypto_core_ed25519_scalar_mul(forged.data() + 32, k, a);

    const auto table = ed25519_verifying_key(public_key);
    ASSERT_NE(table, nullptr);
    EXPECT_EQ(ed25519_verify_fast(*table, message, forged), Ed25519FastVerdict::unusual);
    ASSERT_FALSE(libsodium_verdict(public_key, message, forged));
    expect_same_verdict(public_key, message, forged, "identity R");
  }
}

// Random bytes everywhere: keys that are not points, random R and S.
TEST_F(CryptoEd25519, RandomBytesGiveLibsodiumsVerdicts) {
  Prng prng(8037);
  int points = 0;
  for (int i = 0; i < 2000; ++i) {
    Key32 key;
    prng.fill(key);
    Signature signature;
    prng.fill(signature);
    if (i % 2 == 0) signature[63] &= 0x0f;
    Bytes message(prng.below(40));
    prng.fill(message);
    if (ed25519_verifying_key(key) != nullptr) ++points;
    expect_same_verdict(key, message, signature, "random");
  }
  EXPECT_GT(points, 800);  // about half of all y values are on the curve
}

// X3DH's first-contact check against libsodium's two calls: the verdict of
// crypto_sign_verify_detached, and crypto_sign_ed25519_pk_to_curve25519's verdict and bytes.
void expect_same_identity_check(const Key32& key, ByteSpan message, const Signature& signature,
                                const std::string& what) {
  const Ed25519IdentityCheck ours = ed25519_verify_and_convert(key, message, signature);
  ASSERT_EQ(ours.signature_valid, libsodium_verdict(key, message, signature))
      << what << ": key " << to_hex(key) << " signature " << to_hex(signature);
  Key32 theirs{};
  const bool converted = crypto_sign_ed25519_pk_to_curve25519(theirs.data(), key.data()) == 0;
  ASSERT_EQ(ours.converted, converted) << what << ": key " << to_hex(key);
  if (converted) {
    ASSERT_EQ(to_hex(ours.x25519), to_hex(theirs)) << what;
  }
  Key32 alone{};
  ASSERT_EQ(ed25519_public_to_x25519_checked(key, alone), converted) << what;
  if (converted) {
    ASSERT_EQ(to_hex(alone), to_hex(theirs)) << what;
  }
}

TEST_F(CryptoEd25519, VerifyAndConvertGivesLibsodiumsVerdictsAndBytes) {
  Prng prng(8039);
  for (int i = 0; i < 150; ++i) {
    const Ed25519KeyPair pair = generate_ed25519_key_pair();
    Bytes message(prng.below(80));
    prng.fill(message);
    const Signature signature = sign(pair.secret, message);
    // Ordinary keys: our subgroup check must say yes (so the fast path is what is compared).
    const auto table = ed25519_verifying_key(pair.public_key, Ed25519SubgroupCheck::yes);
    ASSERT_NE(table, nullptr);
    ASSERT_TRUE(ed25519_key_in_prime_order_subgroup(*table));
    expect_same_identity_check(pair.public_key, message, signature, "valid");
    Signature bad = signature;
    bad[prng.below(64)] ^= static_cast<uint8_t>(1u << prng.below(8));
    expect_same_identity_check(pair.public_key, message, bad, "bit flipped in signature");
    Key32 bad_key = pair.public_key;
    bad_key[prng.below(32)] ^= static_cast<uint8_t>(1u << prng.below(8));
    expect_same_identity_check(bad_key, message, signature, "bit flipped in key");
  }
}

TEST_F(CryptoEd25519, MixedOrderSmallOrderAndNonCanonicalKeysAreNotConverted) {
  const Ed25519KeyPair pair = generate_ed25519_key_pair();
  const Bytes message = {4, 5, 6};
  const Signature signature = sign(pair.secret, message);
  const std::vector<Key32> odd = odd_encodings();
  for (const Key32& key : odd) expect_same_identity_check(key, message, signature, "odd key");
  int mixed = 0;
  for (const Key32& torsion : odd) {
    Key32 mixed_key;
    if (crypto_core_ed25519_add(mixed_key.data(), pair.public_key.data(), torsion.data()) != 0 ||
        mixed_key == pair.public_key) {
      continue;
    }
    // A point of order 2L, 4L or 8L: a point, not of small order, but outside the subgroup.
    const auto table = ed25519_verifying_key(mixed_key, Ed25519SubgroupCheck::yes);
    ASSERT_NE(table, nullptr) << to_hex(mixed_key);
    EXPECT_FALSE(ed25519_key_in_prime_order_subgroup(*table)) << to_hex(mixed_key);
    expect_same_identity_check(mixed_key, message, signature, "mixed-order key");
    ++mixed;
  }
  EXPECT_GE(mixed, 6);
}

TEST_F(CryptoEd25519, VerifyAndConvertOnRandomBytes) {
  Prng prng(8040);
  for (int i = 0; i < 300; ++i) {
    Key32 key;
    prng.fill(key);
    Signature signature;
    prng.fill(signature);
    signature[63] &= 0x0f;
    const Bytes message = {static_cast<uint8_t>(i)};
    expect_same_identity_check(key, message, signature, "random");
  }
}

// The cache holds kVerifyingKeysCached keys; cycling through more keeps every verdict right.
TEST_F(CryptoEd25519, CacheReplacementKeepsVerdicts) {
  std::vector<Ed25519KeyPair> pairs;
  for (size_t i = 0; i < kVerifyingKeysCached * 2 + 3; ++i) {
    pairs.push_back(generate_ed25519_key_pair());
  }
  const Bytes message = {9, 8, 7};
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < pairs.size(); ++i) {
      const Signature signature = sign(pairs[i].secret, message);
      EXPECT_TRUE(ed25519_verify_cached(pairs[i].public_key, message, signature));
      const Ed25519KeyPair& other = pairs[(i + 1) % pairs.size()];
      EXPECT_FALSE(ed25519_verify_cached(other.public_key, message, signature));
    }
  }
}

}  // namespace
}  // namespace msgsim::crypto
