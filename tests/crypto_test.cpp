// The E2EE library (impl/crypto) against spec/e2ee.md: HKDF vectors, the Double Ratchet under
// reordering, loss, duplication and tampering, X3DH and one-time prekeys, Sender Keys with
// rotation, session serialisation, and the transcripts re-derived from their JSON alone.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "impl/base/prng.h"
#include "impl/crypto/chacha20poly1305.h"
#include "impl/crypto/primitives.h"
#include "impl/crypto/ratchet.h"
#include "impl/crypto/sender_key.h"
#include "impl/crypto/transcript.h"
#include "impl/crypto/x25519.h"
#include "impl/crypto/x25519_base.h"
#include "impl/crypto/x3dh.h"
#include "sim/randombytes.h"
#include "tests/hex_test_support.h"

namespace msgsim::crypto {
namespace {

using test::from_hex;

Bytes range_bytes(uint8_t first, uint8_t last) {
  Bytes out;
  for (int b = first; b <= last; ++b) out.push_back(static_cast<uint8_t>(b));
  return out;
}

Bytes text(std::string_view s) { return Bytes(s.begin(), s.end()); }

// --- HKDF: RFC 5869, appendix A, test cases 1-3 (SHA-256) ---------------------------------------

TEST(Hkdf, Rfc5869Case1) {
  const Bytes ikm(22, 0x0b);
  const Bytes salt = range_bytes(0x00, 0x0c);
  const Bytes info = range_bytes(0xf0, 0xf9);
  Bytes okm(42);
  hkdf_sha256(salt, ikm, info, okm);
  EXPECT_EQ(to_hex(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

TEST(Hkdf, Rfc5869Case2) {
  const Bytes ikm = range_bytes(0x00, 0x4f);
  const Bytes salt = range_bytes(0x60, 0xaf);
  const Bytes info = range_bytes(0xb0, 0xff);
  Bytes okm(82);
  hkdf_sha256(salt, ikm, info, okm);
  EXPECT_EQ(to_hex(okm),
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
            "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
            "cc30c58179ec3e87c14c01d5c1f3434f1d87");
}

TEST(Hkdf, Rfc5869Case3EmptySaltAndInfo) {
  const Bytes ikm(22, 0x0b);
  Bytes okm(42);
  hkdf_sha256({}, ikm, {}, okm);
  EXPECT_EQ(to_hex(okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
  // The cached zero-salt variant is the same function (an empty salt means 32 zero bytes).
  Bytes cached(42);
  hkdf_sha256_zero_salt(ikm, {}, cached);
  EXPECT_EQ(cached, okm);
}

TEST(Hmac, Rfc4231Case2) {
  // "Jefe" / "what do ya want for nothing?" (RFC 4231 test case 2).
  EXPECT_EQ(to_hex(hmac_sha256(text("Jefe"), text("what do ya want for nothing?"))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

// --- SHA-256 engines: SHA-NI and libsodium against NIST / RFC 4231 vectors and each other -------

std::vector<Sha256Engine> engines_here() {
  std::vector<Sha256Engine> out{Sha256Engine::libsodium};
  if (sha_ni_available()) out.push_back(Sha256Engine::sha_ni);
  return out;
}

TEST(Sha256, NistVectorsWithEachEngine) {
  const std::string million_a(1000000, 'a');
  const std::vector<std::pair<std::string, std::string>> vectors = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlm"
       "nopqrsmnopqrstnopqrstu",
       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
      {million_a, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (Sha256Engine engine : engines_here()) {
    for (const auto& [message, digest] : vectors) {
      EXPECT_EQ(to_hex(sha256(as_bytes(message), engine)), digest)
          << "engine " << static_cast<int>(engine) << ", " << message.size() << " bytes";
    }
  }
  if (!sha_ni_available()) GTEST_SKIP() << "no SHA extensions on this CPU: libsodium checked only";
}

TEST(Hmac, Rfc4231WithEachEngine) {
  const Bytes long_key(131, 0xaa);
  struct Case {
    Bytes key;
    Bytes data;
    std::string mac;
  };
  const std::vector<Case> cases = {
      {Bytes(20, 0x0b), text("Hi There"),
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {text("Jefe"), text("what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {Bytes(20, 0xaa), Bytes(50, 0xdd),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {range_bytes(0x01, 0x19), Bytes(50, 0xcd),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {long_key, text("Test Using Larger Than Block-Size Key - Hash Key First"),
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {long_key,
       text("This is a test using a larger than block-size key and a larger than block-size "
            "data. The key needs to be hashed before being used by the HMAC algorithm."),
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  for (Sha256Engine engine : engines_here()) {
    for (size_t i = 0; i < cases.size(); ++i) {
      EXPECT_EQ(to_hex(hmac_sha256(cases[i].key, cases[i].data, engine)), cases[i].mac)
          << "engine " << static_cast<int>(engine) << ", case " << i;
    }
  }
  if (!sha_ni_available()) GTEST_SKIP() << "no SHA extensions on this CPU: libsodium checked only";
}

// Key lengths around the 64-byte block and every message length up to 130 (one-block,
// two-block and streamed MACs), split into three parts at varying points: the SHA-NI engine
// must give libsodium's MAC, and that the plain libsodium HMAC's.
TEST(Hmac, ShaNiEngineMatchesLibsodiumOnRandomInput) {
  if (!sha_ni_available()) GTEST_SKIP() << "no SHA extensions on this CPU";
  Prng prng(42);
  Bytes key(150), message(300);
  prng.fill(key);
  prng.fill(message);
  int compared = 0;
  for (size_t key_bytes : {0, 1, 31, 32, 33, 63, 64, 65, 100, 150}) {
    const ByteSpan k(key.data(), key_bytes);
    const HmacKey ni(k, Sha256Engine::sha_ni), sodium(k, Sha256Engine::libsodium);
    for (size_t bytes = 0; bytes <= message.size(); bytes += bytes < 130 ? 1 : 7) {
      const ByteSpan m(message.data(), bytes);
      const size_t cut1 = prng.below(bytes + 1);
      const size_t cut2 = cut1 + prng.below(bytes - cut1 + 1);
      const Key32 expected = sodium.mac(m);
      Key32 reference;
      crypto_auth_hmacsha256_state state;
      crypto_auth_hmacsha256_init(&state, k.data(), k.size());
      crypto_auth_hmacsha256_update(&state, m.data(), m.size());
      crypto_auth_hmacsha256_final(&state, reference.data());
      ASSERT_EQ(expected, reference);
      ASSERT_EQ(ni.mac(m), expected) << key_bytes << "-byte key, " << bytes << " bytes";
      ASSERT_EQ(ni.mac(m.first(cut1), m.subspan(cut1, cut2 - cut1), m.subspan(cut2)), expected)
          << key_bytes << "-byte key, " << bytes << " bytes cut at " << cut1 << ", " << cut2;
      ASSERT_EQ(sha256(m, Sha256Engine::sha_ni), sha256(m, Sha256Engine::libsodium));
      ++compared;
    }
  }
  EXPECT_GT(compared, 1000);
}

// The interleaved two-block compression against two single ones from random states, and
// mac_pair against two mac calls for every message length pair around the one-block limit
// (55 bytes) with each engine; with libsodium mac_pair is two plain MACs.
TEST(Hmac, PairedCompressionAndMacPairMatchSingleOnes) {
  Prng prng(43);
  if (sha_ni_available()) {
    for (int round = 0; round < 2000; ++round) {
      Sha256State a, b;
      for (auto& word : a) word = static_cast<uint32_t>(prng.next_u64());
      for (auto& word : b) word = static_cast<uint32_t>(prng.next_u64());
      std::array<uint8_t, 64> block_a, block_b;
      prng.fill(block_a);
      prng.fill(block_b);
      Sha256State single_a = a, single_b = b;
      sha256_compress_sha_ni(single_a, block_a.data(), 1);
      sha256_compress_sha_ni(single_b, block_b.data(), 1);
      sha256_compress_two_sha_ni(a, block_a.data(), b, block_b.data());
      ASSERT_EQ(a, single_a) << "round " << round;
      ASSERT_EQ(b, single_b) << "round " << round;
    }
  }
  Bytes key(70), message_a(70), message_b(70);
  prng.fill(key);
  prng.fill(message_a);
  prng.fill(message_b);
  int compared = 0;
  for (Sha256Engine engine : engines_here()) {
    for (size_t key_bytes : {0, 1, 32, 64, 70}) {
      const HmacKey keyed(ByteSpan(key.data(), key_bytes), engine);
      const HmacKey reference(ByteSpan(key.data(), key_bytes), Sha256Engine::libsodium);
      for (size_t bytes_a = 0; bytes_a <= 70; bytes_a += bytes_a < 50 ? 7 : 1) {
        for (size_t bytes_b : {size_t{0}, size_t{1}, size_t{54}, size_t{55}, size_t{56},
                               size_t{70}}) {
          const ByteSpan a(message_a.data(), bytes_a), b(message_b.data(), bytes_b);
          Key32 out_a, out_b;
          keyed.mac_pair(a, b, out_a, out_b);
          ASSERT_EQ(out_a, reference.mac(a)) << bytes_a << ", " << bytes_b;
          ASSERT_EQ(out_b, reference.mac(b)) << bytes_a << ", " << bytes_b;
          ++compared;
        }
      }
    }
  }
  EXPECT_GT(compared, 300);
}

// --- XChaCha20-Poly1305: our code against libsodium, byte for byte -----------------------------

TEST(Aead, Poly1305Rfc8439Vector) {
  const Bytes key =
      from_hex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b");
  const Bytes message = text("Cryptographic Forum Research Group");
  uint8_t tag[16];
  poly1305(key.data(), message, tag);
  EXPECT_EQ(to_hex(ByteSpan(tag, 16)), "a8061dc1305136c6c22b8baf0c0127a9");
}

TEST(Aead, HChaCha20AndChaCha20MatchLibsodium) {
  Prng prng(45);
  for (int round = 0; round < 2000; ++round) {
    Key32 key;
    prng.fill(key);
    std::array<uint8_t, 16> input;
    prng.fill(input);
    Key32 ours, theirs;
    hchacha20(key.data(), input.data(), ours.data());
    ASSERT_EQ(crypto_core_hchacha20(theirs.data(), input.data(), key.data(), nullptr), 0);
    ASSERT_EQ(ours, theirs) << "round " << round;
  }
  for (int round = 0; round < 1500; ++round) {
    Key32 key;
    prng.fill(key);
    std::array<uint8_t, 12> nonce;
    prng.fill(nonce);
    const size_t bytes = round < 700 ? static_cast<size_t>(round) : prng.next_u64() % 2000;
    // Counters near the top of the range as well as small ones (not wrapping: RFC 8439).
    const uint32_t counter =
        round % 2 == 0 ? static_cast<uint32_t>(prng.next_u64() % 8)
                       : static_cast<uint32_t>(0xFFFFFFFFu - (bytes + 63) / 64 -
                                               prng.next_u64() % 4 + 1);
    Bytes in(bytes), ours(bytes), theirs(bytes);
    prng.fill(in);
    chacha20_ietf_xor(key.data(), nonce.data(), counter, in, ours.data());
    ASSERT_EQ(crypto_stream_chacha20_ietf_xor_ic(theirs.data(), in.data(), in.size(), nonce.data(),
                                                 counter, key.data()),
              0);
    ASSERT_EQ(ours, theirs) << bytes << " bytes from block " << counter;
    // In place.
    chacha20_ietf_xor(key.data(), nonce.data(), counter, in, in.data());
    ASSERT_EQ(in, theirs);
  }
}

// Random keys and lengths, plus crafted cases the final reduction depends on: r = 1 with
// all-0xFF blocks makes the accumulator reach [p, 2^130) (h = the sum of the blocks), the
// largest clamped r, and s = all 0xFF so that h + s wraps mod 2^128.
TEST(Aead, Poly1305MatchesLibsodiumOnRandomAndCraftedInputs) {
  Prng prng(46);
  const auto check = [](const Key32& key, ByteSpan message, const std::string& what) {
    std::array<uint8_t, 16> ours, theirs;
    poly1305(key.data(), message, ours.data());
    crypto_onetimeauth_poly1305(theirs.data(), message.data(), message.size(), key.data());
    EXPECT_EQ(to_hex(ours), to_hex(theirs)) << what << ", " << message.size() << " bytes";
    return ours == theirs;
  };
  for (int round = 0; round < 3000; ++round) {
    Key32 key;
    prng.fill(key);
    Bytes message(round < 300 ? static_cast<size_t>(round) : prng.next_u64() % 1000);
    prng.fill(message);
    if (round % 5 == 0) std::fill(message.begin(), message.end(), uint8_t{0xFF});
    ASSERT_TRUE(check(key, message, "random round " + std::to_string(round)));
  }
  for (const bool s_all_ones : {false, true}) {
    for (const int r_kind : {0, 1, 2}) {
      Key32 key{};
      if (r_kind == 0) key[0] = 1;                      // r = 1
      if (r_kind == 1) std::fill_n(key.begin(), 16, uint8_t{0xFF});  // clamps to the largest r
      if (r_kind == 2) key[0] = 2;                      // r = 2
      if (s_all_ones) std::fill(key.begin() + 16, key.end(), uint8_t{0xFF});
      for (size_t blocks = 0; blocks <= 40; ++blocks) {
        for (const size_t extra : {size_t{0}, size_t{1}, size_t{15}}) {
          Bytes message(blocks * 16 + extra, uint8_t{0xFF});
          ASSERT_TRUE(check(key, message,
                            "crafted r kind " + std::to_string(r_kind) + ", s all ones " +
                                std::to_string(s_all_ones)));
        }
      }
    }
  }
}

TEST(Aead, XChaCha20Poly1305MatchesLibsodiumAndRejectsEveryTamperedByte) {
  Prng prng(47);
  for (int round = 0; round < 1500; ++round) {
    Key32 key;
    prng.fill(key);
    std::array<uint8_t, 24> nonce;
    prng.fill(nonce);
    Bytes ad(round % 7 == 0 ? 0 : prng.next_u64() % 300);
    Bytes plaintext(round < 400 ? static_cast<size_t>(round) : prng.next_u64() % 1500);
    prng.fill(ad);
    prng.fill(plaintext);
    Bytes ours(plaintext.size() + 16), theirs(plaintext.size() + 16);
    xchacha20poly1305_encrypt(key.data(), nonce.data(), ad, plaintext, ours.data());
    unsigned long long written = 0;
    ASSERT_EQ(crypto_aead_xchacha20poly1305_ietf_encrypt(
                  theirs.data(), &written, plaintext.data(), plaintext.size(), ad.data(),
                  ad.size(), nullptr, nonce.data(), key.data()),
              0);
    ASSERT_EQ(ours, theirs) << "round " << round << ": " << ad.size() << " ad bytes, "
                            << plaintext.size() << " plaintext bytes";
    Bytes opened(plaintext.size(), 0xAA);
    ASSERT_TRUE(xchacha20poly1305_decrypt(key.data(), nonce.data(), ad, theirs, opened.data()));
    ASSERT_EQ(opened, plaintext);
    // In place, as the message path encrypts.
    Bytes in_place(plaintext.size() + 16);
    std::copy(plaintext.begin(), plaintext.end(), in_place.begin());
    xchacha20poly1305_encrypt(key.data(), nonce.data(), ad, ByteSpan(in_place.data(), plaintext.size()),
                              in_place.data());
    ASSERT_EQ(in_place, theirs);
    // One flipped bit anywhere (ciphertext, tag, AD, nonce, key): both refuse, ours leaves the
    // output untouched.
    for (int flip = 0; flip < 4; ++flip) {
      Bytes bad_ct = theirs, bad_ad = ad;
      auto bad_nonce = nonce;
      Key32 bad_key = key;
      const uint8_t bit = static_cast<uint8_t>(1u << (prng.next_u64() % 8));
      switch ((round + flip) % 4) {
        case 0: bad_ct[prng.next_u64() % bad_ct.size()] ^= bit; break;
        case 1:
          if (bad_ad.empty()) bad_ad.push_back(0); else bad_ad[prng.next_u64() % bad_ad.size()] ^= bit;
          break;
        case 2: bad_nonce[prng.next_u64() % bad_nonce.size()] ^= bit; break;
        default: bad_key[prng.next_u64() % bad_key.size()] ^= bit; break;
      }
      Bytes out(plaintext.size(), 0x5A);
      ASSERT_FALSE(xchacha20poly1305_decrypt(bad_key.data(), bad_nonce.data(), bad_ad, bad_ct,
                                             out.data()));
      ASSERT_EQ(out, Bytes(plaintext.size(), 0x5A));
      ASSERT_NE(crypto_aead_xchacha20poly1305_ietf_decrypt(
                    out.data(), nullptr, nullptr, bad_ct.data(), bad_ct.size(), bad_ad.data(),
                    bad_ad.size(), bad_nonce.data(), bad_key.data()),
                0);
    }
  }
}

// --- Variable-base X25519 (our Montgomery ladder): RFC 7748 and libsodium's bytes and verdicts ---

Key32 key_from_hex(std::string_view hex) {
  const Bytes bytes = from_hex(hex);
  Key32 key{};
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return key;
}

// One X25519 on the vector ladder when this CPU has it (else through x25519_jobs' libsodium).
bool x25519_ladder(Key32& shared, const Key32& scalar, const Key32& u) {
  X25519Job job{&scalar, &u, {}, false};
  if (x25519_vector_ladder_available()) {
    x25519_jobs_on_vector_ladder(std::span<X25519Job>(&job, 1));
  } else {
    x25519_jobs(std::span<X25519Job>(&job, 1));
  }
  shared = job.shared;
  return job.ok;
}

// crypto_scalarmult's verdict and bytes against ours for one (scalar, u).
void expect_ladder_matches_libsodium(const Key32& scalar, const Key32& u) {
  Key32 theirs{};
  const bool their_ok = crypto_scalarmult(theirs.data(), scalar.data(), u.data()) == 0;
  Key32 ours{};
  const bool our_ok = x25519_ladder(ours, scalar, u);
  ASSERT_EQ(our_ok, their_ok) << "scalar " << to_hex(scalar) << " u " << to_hex(u);
  if (their_ok) {
    ASSERT_EQ(to_hex(ours), to_hex(theirs)) << "scalar " << to_hex(scalar) << " u " << to_hex(u);
  } else {
    ASSERT_EQ(ours, Key32{}) << "a refused result is all zero";
  }
}

// RFC 7748 section 5.2: the two single vectors and the iterated one after 1 and 1,000 steps
// (k, u <- X25519(k, u), k), and section 6.1's key exchange (public keys from base point 9).
TEST(CryptoX25519, Rfc7748Vectors) {
  Key32 out{};
  ASSERT_TRUE(x25519_ladder(
      out, key_from_hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
      key_from_hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")));
  EXPECT_EQ(to_hex(out), "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
  ASSERT_TRUE(x25519_ladder(
      out, key_from_hex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
      key_from_hex("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")));
  EXPECT_EQ(to_hex(out), "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957");

  Key32 k{};
  k[0] = 9;
  Key32 u = k;
  for (int i = 1; i <= 1000; ++i) {
    Key32 next{};
    ASSERT_TRUE(x25519_ladder(next, k, u));
    u = k;
    k = next;
    if (i == 1) {
      EXPECT_EQ(to_hex(k), "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079");
    }
  }
  EXPECT_EQ(to_hex(k), "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");

  Key32 nine{};
  nine[0] = 9;
  const Key32 alice = key_from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const Key32 bob = key_from_hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  Key32 alice_public{}, bob_public{}, alice_shared{}, bob_shared{};
  ASSERT_TRUE(x25519_ladder(alice_public, alice, nine));
  ASSERT_TRUE(x25519_ladder(bob_public, bob, nine));
  EXPECT_EQ(to_hex(alice_public), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(to_hex(bob_public), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  ASSERT_TRUE(x25519_ladder(alice_shared, alice, bob_public));
  ASSERT_TRUE(x25519_ladder(bob_shared, bob, alice_public));
  EXPECT_EQ(to_hex(alice_shared), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  EXPECT_EQ(bob_shared, alice_shared);
}

// Thousands of random scalars against random u (about half of them on the twist, which X25519
// accepts), against public keys of the curve, and against u with the top bit set.
// Each case runs alone (the one-job ladder) and in groups of four (the four-job ladder).
TEST(CryptoX25519, MatchesLibsodiumOnRandomScalarsAndPoints) {
  Prng prng(50);
  std::vector<Key32> scalars, points;
  for (int i = 0; i < 3000; ++i) {
    Key32 scalar, u;
    prng.fill(scalar);
    prng.fill(u);
    expect_ladder_matches_libsodium(scalar, u);
    scalars.push_back(scalar);
    points.push_back(u);
    u[31] |= 0x80;
    expect_ladder_matches_libsodium(scalar, u);
    scalars.push_back(scalar);
    points.push_back(u);
    Key32 on_curve;
    ASSERT_EQ(crypto_scalarmult_base(on_curve.data(), u.data()), 0);
    expect_ladder_matches_libsodium(scalar, on_curve);
    scalars.push_back(scalar);
    points.push_back(on_curve);
  }
  std::vector<X25519Job> jobs(scalars.size());
  for (size_t i = 0; i < jobs.size(); ++i) jobs[i] = {&scalars[i], &points[i], {}, false};
  if (x25519_vector_ladder_available()) {
    x25519_jobs_on_vector_ladder(jobs);
  } else {
    x25519_jobs(jobs);
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    Key32 theirs{};
    ASSERT_EQ(crypto_scalarmult(theirs.data(), scalars[i].data(), points[i].data()), 0);
    ASSERT_TRUE(jobs[i].ok) << i;
    ASSERT_EQ(jobs[i].shared, theirs) << i;
  }
}

// The encodings a peer can choose to be odd: u >= p (p .. 2^255 - 1, taken modulo p), the same
// with the ignored top bit set, every small-order point of libsodium's blacklist (refused, the
// all-zero result, with our verdict its), and u whose square-and-reduce paths carry the most.
TEST(CryptoX25519, NonCanonicalAndSmallOrderPointsGiveLibsodiumsVerdicts) {
  const Key32 p = key_from_hex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
  std::vector<Key32> points;
  for (int offset = -3; offset <= 18; ++offset) {  // p - 3 .. 2^255 - 1
    Key32 u = p;
    u[0] = static_cast<uint8_t>(0xed + offset);
    points.push_back(u);
  }
  const Key32 order_8_a = key_from_hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
  const Key32 order_8_b = key_from_hex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157");
  Key32 zero{}, one{};
  one[0] = 1;
  const std::vector<Key32> small_order = {zero, one, order_8_a, order_8_b, points[2] /* p - 1 */,
                                          points[3] /* p */, points[4] /* p + 1 */};
  for (const Key32& u : small_order) {
    Key32 scalar{};
    scalar.fill(0x5a);
    Key32 out{};
    Key32 libsodium_out{};
    EXPECT_NE(crypto_scalarmult(libsodium_out.data(), scalar.data(), u.data()), 0) << to_hex(u);
    EXPECT_FALSE(x25519_ladder(out, scalar, u)) << to_hex(u);
    EXPECT_EQ(out, Key32{});
  }
  Key32 all_ones;
  all_ones.fill(0xFF);
  points.push_back(all_ones);
  points.push_back(order_8_a);
  points.push_back(order_8_b);
  points.push_back(zero);
  points.push_back(one);
  const size_t plain = points.size();
  for (size_t i = 0; i < plain; ++i) {
    Key32 high = points[i];
    high[31] |= 0x80;
    points.push_back(high);
  }
  Prng prng(51);
  for (const Key32& u : points) {
    for (int i = 0; i < 20; ++i) {
      Key32 scalar;
      prng.fill(scalar);
      expect_ladder_matches_libsodium(scalar, u);
    }
  }
}

// The lanes are independent: batches of 1 to 9 jobs (a partial last group of four, lanes that
// repeat job 0) mixing valid and small-order points, each job's bytes and verdict libsodium's.
TEST(CryptoX25519, BatchesOfAnySizeMixValidAndRefusedLanes) {
  Prng prng(52);
  Key32 zero{};
  for (size_t count = 1; count <= 9; ++count) {
    for (int round = 0; round < 20; ++round) {
      std::vector<Key32> scalars(count), points(count);
      std::vector<X25519Job> jobs(count);
      for (size_t i = 0; i < count; ++i) {
        prng.fill(scalars[i]);
        prng.fill(points[i]);
        if (prng.next_u64() % 4 == 0) points[i] = zero;
        jobs[i].scalar = &scalars[i];
        jobs[i].u = &points[i];
      }
      if (x25519_vector_ladder_available()) {
        x25519_jobs_on_vector_ladder(jobs);
      } else {
        x25519_jobs(jobs);
      }
      for (size_t i = 0; i < count; ++i) {
        Key32 theirs{};
        const bool their_ok =
            crypto_scalarmult(theirs.data(), scalars[i].data(), points[i].data()) == 0;
        ASSERT_EQ(jobs[i].ok, their_ok) << count << " jobs, lane " << i;
        ASSERT_EQ(jobs[i].shared, their_ok ? theirs : zero) << count << " jobs, lane " << i;
      }
    }
  }
}

// dh(), the path X3DH and the ratchet take, refuses a small-order key with an error naming it.
TEST(CryptoX25519, DhRefusesSmallOrderKeysWithAnError) {
  Key32 secret;
  secret.fill(0x33);
  const auto refused = dh(secret, Key32{});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("all-zero"), std::string::npos);
  Key32 nine{};
  nine[0] = 9;
  Key32 theirs;
  ASSERT_EQ(crypto_scalarmult(theirs.data(), secret.data(), nine.data()), 0);
  const auto accepted = dh(secret, nine);
  ASSERT_TRUE(accepted.ok());
  EXPECT_EQ(*accepted, theirs);
}

// --- Fixed-base X25519 through the Edwards table: libsodium's bytes ---------------------------

// Random secrets and the edge cases of clamping (all zero bytes, all 0xFF, only the bits that
// clamping clears or sets), against crypto_scalarmult_curve25519_base.
TEST(X25519Base, ViaEdwardsMatchesLibsodiumOnManyScalars) {
  Prng prng(48);
  std::vector<Key32> secrets;
  for (const uint8_t fill : {uint8_t{0x00}, uint8_t{0xFF}, uint8_t{0x07}, uint8_t{0x80},
                             uint8_t{0x40}, uint8_t{0x01}}) {
    Key32 secret;
    secret.fill(fill);
    secrets.push_back(secret);
  }
  Key32 low_bits_only{};
  low_bits_only[0] = 7;
  low_bits_only[31] = 0x80;
  secrets.push_back(low_bits_only);
  for (int i = 0; i < 5000; ++i) {
    Key32 secret;
    prng.fill(secret);
    secrets.push_back(secret);
  }
  for (const Key32& secret : secrets) {
    Key32 theirs;
    ASSERT_EQ(crypto_scalarmult_curve25519_base(theirs.data(), secret.data()), 0);
    ASSERT_EQ(to_hex(x25519_base_via_edwards(secret)), to_hex(theirs)) << to_hex(secret);
    ASSERT_EQ(x25519_public_of(secret), theirs);
  }
}

// The birational map alone against libsodium's conversion of valid Ed25519 public keys.
TEST(X25519Base, MontgomeryUMatchesLibsodiumConversion) {
  sim::reseed_randombytes(49);
  for (int i = 0; i < 500; ++i) {
    const Ed25519KeyPair pair = generate_ed25519_key_pair();
    Key32 theirs;
    ASSERT_EQ(crypto_sign_ed25519_pk_to_curve25519(theirs.data(), pair.public_key.data()), 0);
    ASSERT_EQ(montgomery_u_of_edwards_y(pair.public_key), theirs) << to_hex(pair.public_key);
  }
}

// The cache's record of verified signed prekeys: a bundle verifies the first time and from the
// record after; any change to the identity, id, key or signature of a recorded bundle is
// verified afresh (and refused when the signature does not match); a bad signature is never
// recorded, not even after the good one was; the records stay within their bound.
TEST(X3dh, PeerIdentityCacheRecordsOnlyVerifiedSignedPrekeys) {
  sim::reseed_randombytes(78);
  PeerIdentityCache cache;
  PrekeyStore bob = make_prekey_store(7, 0);
  const IdentityKeyPair alice = generate_identity();
  const X25519KeyPair ephemeral = generate_x25519_key_pair();
  const PrekeyBundle good = bob.bundle(std::nullopt);
  EXPECT_TRUE(cache.signed_prekey_valid(good));
  EXPECT_EQ(cache.verified_signed_prekeys(), 1u);
  EXPECT_TRUE(cache.signed_prekey_valid(good));
  EXPECT_EQ(cache.verified_signed_prekeys(), 1u);

  std::vector<PrekeyBundle> forged(4, good);
  forged[0].signed_prekey_signature[5] ^= 1;
  forged[1].signed_prekey_id += 1;
  forged[2].signed_prekey[0] ^= 0x40;
  forged[3].identity = alice.signing.public_key;
  for (size_t i = 0; i < forged.size(); ++i) {
    EXPECT_FALSE(cache.signed_prekey_valid(forged[i])) << "forgery " << i;
    auto secret = x3dh_initiator_secret(alice, forged[i], ephemeral, &cache);
    ASSERT_FALSE(secret.ok()) << "forgery " << i;
    EXPECT_EQ(secret.error().code, ErrorCode::crypto_error);
  }
  EXPECT_EQ(cache.verified_signed_prekeys(), 1u);

  // The same secret with and without the record.
  auto plain = x3dh_initiator_secret(alice, good, ephemeral);
  auto recorded = x3dh_initiator_secret(alice, good, ephemeral, &cache);
  ASSERT_TRUE(plain.ok() && recorded.ok());
  EXPECT_EQ(*plain, *recorded);

  // The bound: more valid bundles than records, each still valid after its record was replaced.
  std::vector<PrekeyBundle> bundles;
  for (uint32_t id = 0; id < PeerIdentityCache::kSignedPrekeysMax + 10; ++id) {
    PrekeyBundle bundle = good;
    bundle.signed_prekey_id = 100 + id;
    bundle.signed_prekey_signature =
        sign(bob.identity.signing.secret, signed_prekey_message(bundle.signed_prekey_id,
                                                                bundle.signed_prekey));
    bundles.push_back(bundle);
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (const PrekeyBundle& bundle : bundles) ASSERT_TRUE(cache.signed_prekey_valid(bundle));
    EXPECT_EQ(cache.verified_signed_prekeys(), PeerIdentityCache::kSignedPrekeysMax);
  }
  // The memory figure counts every record: identity, id, key and signature each.
  EXPECT_GE(cache.memory_bytes(),
            cache.verified_signed_prekeys() * (2 * sizeof(Key32) + sizeof(uint32_t) + sizeof(Signature)));
}

// Clients on one thread share what they computed (x3dh.cpp's shared memo): a second client
// gets the same conversions and verdicts as the first, a forged bundle is refused by a client
// after another verified the genuine one, and a bad key fails for every client.
TEST(X3dh, ClientsOnOneThreadShareConversionsAndVerificationsButNotForgeries) {
  sim::reseed_randombytes(79);
  PeerIdentityCache first, second;
  PrekeyStore bob = make_prekey_store(3, 0);
  const PrekeyBundle good = bob.bundle(std::nullopt);
  ASSERT_TRUE(first.signed_prekey_valid(good));
  auto by_first = first.x25519_of(good.identity);
  ASSERT_TRUE(by_first.ok());
  for (int field = 0; field < 4; ++field) {
    PrekeyBundle forged = good;
    if (field == 0) forged.signed_prekey_signature[9] ^= 1;
    if (field == 1) forged.signed_prekey_id += 1;
    if (field == 2) forged.signed_prekey[3] ^= 0x10;
    if (field == 3) forged.identity = generate_ed25519_key_pair().public_key;
    EXPECT_FALSE(second.signed_prekey_valid(forged)) << "forgery " << field;
  }
  EXPECT_TRUE(second.signed_prekey_valid(good));
  auto by_second = second.x25519_of(good.identity);
  auto direct = ed25519_public_to_x25519(good.identity);
  ASSERT_TRUE(by_second.ok() && direct.ok());
  EXPECT_EQ(*by_second, *direct);
  EXPECT_EQ(*by_first, *direct);
  const Key32 low_order{};
  EXPECT_FALSE(first.x25519_of(low_order).ok());
  EXPECT_FALSE(second.x25519_of(low_order).ok());
}

TEST(X3dh, PeerIdentityCacheGivesTheConversionAndKeepsOnlyValidKeys) {
  sim::reseed_randombytes(77);
  PeerIdentityCache cache;
  const Key32 low_order{};  // y = 0: a point of order 4, refused by the conversion
  EXPECT_FALSE(cache.x25519_of(low_order).ok());
  EXPECT_EQ(cache.size(), 0u);
  std::vector<Key32> identities;
  for (size_t i = 0; i < PeerIdentityCache::kEntriesMax + 20; ++i) {
    identities.push_back(generate_ed25519_key_pair().public_key);
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (const Key32& identity : identities) {
      auto cached = cache.x25519_of(identity);
      auto direct = ed25519_public_to_x25519(identity);
      ASSERT_TRUE(cached.ok() && direct.ok());
      ASSERT_EQ(*cached, *direct);
    }
    EXPECT_EQ(cache.size(), PeerIdentityCache::kEntriesMax);
  }
  // Sessions made through the cache are the same sessions.
  PrekeyStore bob = make_prekey_store(1, 0);
  const IdentityKeyPair alice = generate_identity();
  const X25519KeyPair ephemeral = generate_x25519_key_pair();
  auto plain = x3dh_initiator_secret(alice, bob.bundle(std::nullopt), ephemeral);
  auto through_cache = x3dh_initiator_secret(alice, bob.bundle(std::nullopt), ephemeral, &cache);
  auto again = x3dh_initiator_secret(alice, bob.bundle(std::nullopt), ephemeral, &cache);
  ASSERT_TRUE(plain.ok() && through_cache.ok() && again.ok());
  EXPECT_EQ(*plain, *through_cache);
  EXPECT_EQ(*plain, *again);
}

Bytes group_seal(OwnSenderKey& key, std::string_view plaintext);
Result<std::string> group_open(PeerSenderKey& key, ByteSpan wire);

// --- Sessions -----------------------------------------------------------------------------------

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sim::reseed_randombytes(1234);
    bob_store_ = make_prekey_store(7, 4);
    alice_id_ = generate_identity();
    auto session = initiate_session(alice_id_, bob_store_.bundle(bob_store_.one_time_prekeys[0].id));
    ASSERT_TRUE(session.ok()) << session.error().message;
    alice_ = std::move(*session);
  }

  static Bytes seal(Session& s, std::string_view plaintext) {
    Bytes envelope(s.envelope_size(plaintext.size()));
    auto status = s.encrypt(text(plaintext), envelope);
    EXPECT_TRUE(status.ok()) << status.error().message;
    return envelope;
  }

  static Result<std::string> open(Session& s, ByteSpan envelope) {
    Bytes out(envelope.size());
    auto size = s.decrypt(envelope, out);
    if (!size) return size.error();
    return std::string(out.begin(), out.begin() + static_cast<ptrdiff_t>(*size));
  }

  // Bob accepts alice's first message and becomes the responder.
  void accept(ByteSpan envelope, std::string_view expected) {
    Bytes out(envelope.size());
    auto accepted = accept_prekey_message(bob_store_, envelope, out);
    ASSERT_TRUE(accepted.ok()) << accepted.error().message;
    EXPECT_EQ(std::string(out.begin(), out.begin() + static_cast<ptrdiff_t>(accepted->plaintext_size)),
              expected);
    bob_ = std::move(accepted->session);
  }

  PrekeyStore bob_store_;
  IdentityKeyPair alice_id_;
  Session alice_;
  std::optional<Session> bob_;
};

TEST_F(SessionTest, BothDirectionsAcrossManyDhSteps) {
  accept(seal(alice_, "hello bob"), "hello bob");
  Prng shape(99);
  for (int round = 0; round < 60; ++round) {
    Session& sender = round % 2 == 0 ? *bob_ : alice_;
    Session& receiver = round % 2 == 0 ? alice_ : *bob_;
    const Key32 ratchet_before = sender.ratchet.own_ratchet.public_key;
    const int count = 1 + static_cast<int>(shape.below(4));
    for (int i = 0; i < count; ++i) {
      const std::string msg = "round " + std::to_string(round) + " message " + std::to_string(i);
      auto got = open(receiver, seal(sender, msg));
      ASSERT_TRUE(got.ok()) << got.error().message;
      EXPECT_EQ(*got, msg);
    }
    // Every change of direction is a DH ratchet step for the next sender.
    EXPECT_EQ(sender.ratchet.own_ratchet.public_key, ratchet_before);
    EXPECT_NE(receiver.ratchet.own_ratchet.public_key, sender.ratchet.peer_ratchet_public);
  }
  EXPECT_FALSE(alice_.has_pending_prekey_header);
}

TEST_F(SessionTest, PrekeyHeaderUntilFirstReply) {
  const Bytes first = seal(alice_, "one");
  const Bytes second = seal(alice_, "two");
  EXPECT_EQ(first[0], kEnvelopePrekey);
  EXPECT_EQ(second[0], kEnvelopePrekey);
  accept(first, "one");
  // A prekey message for the now existing session is decrypted by it and does not reset it.
  const Bytes bob_before = bob_->serialize();
  auto got = open(*bob_, second);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(*got, "two");
  EXPECT_EQ(bob_->ratchet.root_key, Session::deserialize(bob_before)->ratchet.root_key);
  ASSERT_TRUE(open(alice_, seal(*bob_, "reply")).ok());
  const Bytes third = seal(alice_, "three");
  EXPECT_EQ(third[0], kEnvelopeNormal);
  EXPECT_EQ(*open(*bob_, third), "three");
}

TEST_F(SessionTest, NewPrekeyMessageDoesNotResetExistingSession) {
  accept(seal(alice_, "one"), "one");
  ASSERT_TRUE(open(alice_, seal(*bob_, "reply")).ok());
  // Alice (say, after losing her state) starts over with a fresh X3DH; bob's existing session
  // must not be replaced by it.
  auto fresh = initiate_session(alice_id_, bob_store_.bundle(bob_store_.one_time_prekeys[0].id));
  ASSERT_TRUE(fresh.ok());
  const Bytes restart = seal(*fresh, "restart");
  const Bytes before = bob_->serialize();
  auto got = open(*bob_, restart);
  EXPECT_FALSE(got.ok());
  EXPECT_EQ(bob_->serialize(), before);
  // The old session still works.
  EXPECT_EQ(*open(*bob_, seal(alice_, "still here")), "still here");
}

TEST_F(SessionTest, OutOfOrderLostAndDuplicated) {
  accept(seal(alice_, "start"), "start");
  std::vector<Bytes> a;
  for (int i = 0; i < 6; ++i) a.push_back(seal(alice_, "a" + std::to_string(i)));
  // Delivered 4, 1, 0, 5; 2 and 3 still in flight.
  for (int i : {4, 1, 0, 5}) EXPECT_EQ(*open(*bob_, a[static_cast<size_t>(i)]), "a" + std::to_string(i));
  // Bob replies; alice steps; alice sends more under a new ratchet key.
  EXPECT_EQ(*open(alice_, seal(*bob_, "b0")), "b0");
  const Bytes a_new = seal(alice_, "a-new");
  EXPECT_EQ(*open(*bob_, a_new), "a-new");
  // The late messages of the old chain still decrypt, once.
  EXPECT_EQ(*open(*bob_, a[3]), "a3");
  EXPECT_EQ(*open(*bob_, a[2]), "a2");
  for (int i = 0; i < 6; ++i) {
    auto again = open(*bob_, a[static_cast<size_t>(i)]);
    ASSERT_FALSE(again.ok());
    EXPECT_TRUE(is_duplicate_message(again.error())) << again.error().message;
  }
  // A lost message (never delivered) costs only its skipped key.
  (void)seal(alice_, "lost");
  EXPECT_EQ(*open(*bob_, seal(alice_, "after loss")), "after loss");
  EXPECT_EQ(bob_->ratchet.skipped.size(), 1u);
}

TEST_F(SessionTest, ReplayOfDecryptedMessageIsAnExplicitDuplicate) {
  const Bytes first = seal(alice_, "x");
  accept(first, "x");
  const Bytes m = seal(alice_, "y");
  EXPECT_EQ(*open(*bob_, m), "y");
  const Bytes before = bob_->serialize();
  auto replay = open(*bob_, m);
  ASSERT_FALSE(replay.ok());
  EXPECT_EQ(replay.error().code, ErrorCode::not_found);
  EXPECT_TRUE(is_duplicate_message(replay.error()));
  EXPECT_EQ(bob_->serialize(), before);
  // The very first (prekey) message replayed to the existing session: also a duplicate.
  auto replay_first = open(*bob_, first);
  ASSERT_FALSE(replay_first.ok());
  EXPECT_TRUE(is_duplicate_message(replay_first.error())) << replay_first.error().message;
  // A replay from a chain two DH steps back is still recognised.
  EXPECT_EQ(*open(alice_, seal(*bob_, "b")), "b");
  EXPECT_EQ(*open(*bob_, seal(alice_, "c")), "c");
  auto old = open(*bob_, m);
  ASSERT_FALSE(old.ok());
  EXPECT_TRUE(is_duplicate_message(old.error())) << old.error().message;
}

TEST_F(SessionTest, RetransmissionNeitherBreaksNorShowsTwice) {
  accept(seal(alice_, "hi"), "hi");
  // At-least-once delivery: a message may arrive 1-3 times within the retry window (the last 8
  // messages), interleaved with replies.
  Prng shape(5);
  std::map<std::string, int> shown;
  std::vector<Bytes> sent_by_alice;
  for (int round = 0; round < 30; ++round) {
    const std::string msg = "m" + std::to_string(round);
    sent_by_alice.push_back(seal(alice_, msg));
    const int copies = 1 + static_cast<int>(shape.below(3));
    for (int c = 0; c < copies; ++c) {
      const size_t window = std::min<size_t>(sent_by_alice.size(), 8);
      const Bytes& envelope = sent_by_alice[sent_by_alice.size() - 1 - shape.below(window)];
      auto got = open(*bob_, envelope);
      if (got.ok()) {
        shown[*got] += 1;
      } else {
        ASSERT_TRUE(is_duplicate_message(got.error())) << got.error().message;
      }
    }
    auto latest = open(*bob_, sent_by_alice.back());
    if (latest.ok()) shown[*latest] += 1;
    if (round % 3 == 0) {
      auto reply = open(alice_, seal(*bob_, "r" + std::to_string(round)));
      ASSERT_TRUE(reply.ok()) << reply.error().message;
    }
  }
  for (const auto& [msg, times] : shown) EXPECT_EQ(times, 1) << msg;
  EXPECT_EQ(shown.size(), 30u);
  // A retransmission from before the remembered chains is still rejected without a change.
  const Bytes before = bob_->serialize();
  auto ancient = open(*bob_, sent_by_alice.front());
  ASSERT_FALSE(ancient.ok());
  EXPECT_EQ(bob_->serialize(), before);
}

TEST_F(SessionTest, TamperedHeaderOrCiphertextLeavesStateUnchanged) {
  accept(seal(alice_, "start"), "start");
  EXPECT_EQ(*open(alice_, seal(*bob_, "b")), "b");
  // Both a same-chain message and a DH-step message, each byte flipped in turn.
  const Bytes same_chain = seal(alice_, "same chain");
  ASSERT_EQ(*open(*bob_, same_chain), "same chain");
  const Bytes next_same_chain = seal(alice_, "next");
  for (const Bytes* original : {&next_same_chain}) {
    const Bytes before = bob_->serialize();
    for (size_t i = 1; i < original->size(); ++i) {
      Bytes tampered = *original;
      tampered[i] ^= 0x20;
      auto got = open(*bob_, tampered);
      EXPECT_FALSE(got.ok()) << "byte " << i;
      ASSERT_EQ(bob_->serialize(), before) << "state changed by a tampered byte " << i;
    }
    EXPECT_EQ(*open(*bob_, *original), "next");
  }
  const Bytes step = seal(*bob_, "dh step");
  const Bytes alice_before = alice_.serialize();
  for (size_t i = 1; i < step.size(); ++i) {
    Bytes tampered = step;
    tampered[i] ^= 0x01;
    EXPECT_FALSE(open(alice_, tampered).ok()) << "byte " << i;
    ASSERT_EQ(alice_.serialize(), alice_before) << "state changed by a tampered byte " << i;
  }
  // Truncations are malformed, not crashes.
  for (size_t length = 0; length < step.size(); ++length) {
    EXPECT_FALSE(open(alice_, ByteSpan(step.data(), length)).ok());
  }
  EXPECT_EQ(alice_.serialize(), alice_before);
  EXPECT_EQ(*open(alice_, step), "dh step");
}

TEST_F(SessionTest, MaxSkipBound) {
  accept(seal(alice_, "start"), "start");
  std::vector<Bytes> a;
  for (uint32_t i = 0; i <= kMaxSkip + 1; ++i) a.push_back(seal(alice_, "m"));
  // Message 1 was sent first after "start", so a[k] has number k + 1; bob expects 1.
  const Bytes before = bob_->serialize();
  auto too_far = open(*bob_, a[kMaxSkip + 1]);  // skips 1001 keys
  ASSERT_FALSE(too_far.ok());
  EXPECT_EQ(too_far.error().code, ErrorCode::too_large);
  EXPECT_EQ(bob_->serialize(), before);
  auto at_bound = open(*bob_, a[kMaxSkip]);  // skips exactly 1000 keys
  ASSERT_TRUE(at_bound.ok()) << at_bound.error().message;
  EXPECT_EQ(bob_->ratchet.skipped.size(), kMaxSkip);
  EXPECT_EQ(*open(*bob_, a[0]), "m");
  EXPECT_EQ(bob_->ratchet.skipped.size(), kMaxSkip - 1);
}

TEST_F(SessionTest, SkippedKeyCapDropsOldestFirst) {
  accept(seal(alice_, "start"), "start");
  // Three chains, each leaving 1000 skipped keys behind: the session keeps the newest 2000.
  std::vector<std::vector<Bytes>> chains;
  for (int chain = 0; chain < 3; ++chain) {
    std::vector<Bytes> sent;
    for (uint32_t i = 0; i <= kMaxSkip; ++i) sent.push_back(seal(alice_, "c" + std::to_string(chain)));
    ASSERT_TRUE(open(*bob_, sent.back()).ok());
    ASSERT_TRUE(open(alice_, seal(*bob_, "turn")).ok());
    chains.push_back(std::move(sent));
  }
  EXPECT_EQ(bob_->ratchet.skipped.size(), kSkippedKeysMax);
  // The oldest chain's keys were dropped first...
  auto dropped = open(*bob_, chains[0][0]);
  ASSERT_FALSE(dropped.ok());
  // ...the newer ones are kept.
  EXPECT_EQ(*open(*bob_, chains[1][0]), "c1");
  EXPECT_EQ(*open(*bob_, chains[2][5]), "c2");
  EXPECT_EQ(bob_->ratchet.skipped.size(), kSkippedKeysMax - 2);
}

TEST_F(SessionTest, ReusedOneTimePrekeyIsRejected) {
  const uint32_t opk_id = bob_store_.one_time_prekeys[0].id;
  accept(seal(alice_, "first"), "first");
  EXPECT_EQ(bob_store_.one_time_prekeys.size(), 3u);
  EXPECT_EQ(bob_store_.used_one_time_prekey_ids, std::vector<uint32_t>{opk_id});
  // Another initiator (or a replayed first message) naming the same OPK fails.
  IdentityKeyPair mallory = generate_identity();
  PrekeyBundle stale = bob_store_.bundle(std::nullopt);
  stale.one_time_prekey_id = opk_id;
  stale.one_time_prekey = alice_.ratchet.peer_ratchet_public;  // any key: the OPK is gone
  auto second = initiate_session(mallory, stale);
  ASSERT_TRUE(second.ok());
  const Bytes envelope = seal(*second, "second");
  Bytes out(envelope.size());
  auto rejected = accept_prekey_message(bob_store_, envelope, out);
  ASSERT_FALSE(rejected.ok());
  EXPECT_EQ(rejected.error().code, ErrorCode::crypto_error);
  EXPECT_NE(rejected.error().message.find("already used"), std::string::npos);
}

TEST_F(SessionTest, ForgedFirstMessageBurnsNoOneTimePrekey) {
  Bytes envelope = seal(alice_, "first");
  envelope.back() ^= 1;
  Bytes out(envelope.size());
  EXPECT_FALSE(accept_prekey_message(bob_store_, envelope, out).ok());
  EXPECT_EQ(bob_store_.one_time_prekeys.size(), 4u);
  envelope.back() ^= 1;
  accept(envelope, "first");
}

TEST_F(SessionTest, BadSignedPrekeySignatureAborts) {
  PrekeyBundle bundle = bob_store_.bundle(std::nullopt);
  bundle.signed_prekey_signature[10] ^= 1;
  auto session = initiate_session(alice_id_, bundle);
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.error().code, ErrorCode::crypto_error);
}

TEST_F(SessionTest, WithoutOneTimePrekey) {
  auto session = initiate_session(alice_id_, bob_store_.bundle(std::nullopt));
  ASSERT_TRUE(session.ok());
  alice_ = std::move(*session);
  accept(seal(alice_, "no opk"), "no opk");
  EXPECT_EQ(bob_store_.one_time_prekeys.size(), 4u);
}

TEST_F(SessionTest, SerializeRoundTripAndMalformedBlobs) {
  accept(seal(alice_, "s"), "s");
  std::vector<Bytes> late;
  for (int i = 0; i < 3; ++i) late.push_back(seal(alice_, "late" + std::to_string(i)));
  EXPECT_EQ(*open(*bob_, seal(alice_, "now")), "now");
  const Bytes blob = bob_->serialize();
  auto restored = Session::deserialize(blob);
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  EXPECT_EQ(restored->serialize(), blob);
  EXPECT_EQ(*open(*restored, late[1]), "late1");
  EXPECT_EQ(*open(alice_, seal(*restored, "from restored")), "from restored");
  // Every truncation and every single-byte corruption of the structure is an error or a
  // well-formed session, never a crash.
  for (size_t length = 0; length < blob.size(); ++length) {
    EXPECT_FALSE(Session::deserialize(ByteSpan(blob.data(), length)).ok()) << length;
  }
  Bytes extended = blob;
  extended.push_back(0);
  EXPECT_FALSE(Session::deserialize(extended).ok());
  Bytes huge_count = blob;
  // The skipped-key count sits after the fixed part (no pending prekey header on bob's side).
  const size_t count_offset = 2 + 6 * 32 + 12 + kAssociatedDataBytes;
  store_u32be(huge_count.data() + count_offset, 0xFFFFFFFF);
  auto refused = Session::deserialize(huge_count);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::bad_input);
}

TEST_F(SessionTest, IdleSessionIsSmall) {
  accept(seal(alice_, "s"), "s");
  ASSERT_TRUE(open(alice_, seal(*bob_, "r")).ok());
  // A session with no skipped keys: a few hundred bytes in memory and serialised.
  EXPECT_LE(sizeof(Session), 512u);
  EXPECT_LE(bob_->serialize().size(), 512u);
  EXPECT_TRUE(bob_->ratchet.skipped.empty());
}

TEST_F(SessionTest, SameSeedSameKeysAndCiphertexts) {
  auto run = [] {
    sim::reseed_randombytes(77);
    PrekeyStore store = make_prekey_store(1, 1);
    IdentityKeyPair a = generate_identity();
    auto s = initiate_session(a, store.bundle(store.one_time_prekeys[0].id));
    Bytes envelope(s->envelope_size(5));
    EXPECT_TRUE(s->encrypt(text("hello"), envelope).ok());
    return envelope;
  };
  EXPECT_EQ(run(), run());
}

TEST_F(SessionTest, InPlaceEncryptAndDecrypt) {
  accept(seal(alice_, "s"), "s");
  const std::string msg = "encrypted where it lies";
  Bytes buffer(alice_.envelope_size(msg.size()));
  const size_t offset = buffer.size() - msg.size() - kAeadTagBytes;
  std::copy(msg.begin(), msg.end(), buffer.begin() + static_cast<ptrdiff_t>(offset));
  ASSERT_TRUE(alice_.encrypt(ByteSpan(buffer.data() + offset, msg.size()), buffer).ok());
  auto parsed = parse_envelope(buffer);
  ASSERT_TRUE(parsed.ok());
  // Decrypt into the ciphertext's own bytes.
  MutableByteSpan in_place(const_cast<uint8_t*>(parsed->ciphertext.data()), parsed->ciphertext.size());
  auto size = bob_->decrypt_parts(parsed->ratchet_header, parsed->ciphertext, in_place);
  ASSERT_TRUE(size.ok()) << size.error().message;
  EXPECT_EQ(std::string(in_place.begin(), in_place.begin() + static_cast<ptrdiff_t>(*size)), msg);
}

// Random corruptions of every decoder's input: each gives an error or a valid value and leaves
// the state it was offered to unchanged (run under -DMSGSIM_SANITIZE=ON for memory safety).
TEST_F(SessionTest, RandomCorruptionsNeverCrashNorChangeState) {
  accept(seal(alice_, "s"), "s");
  ASSERT_TRUE(open(alice_, seal(*bob_, "r")).ok());
  const Bytes envelope = seal(alice_, "corrupt me, please");
  const Bytes blob = bob_->serialize();
  auto own = create_sender_key("g", 1);
  ASSERT_TRUE(own.ok());
  const Bytes distribution = distribution_message(*own);
  auto peer = parse_distribution_message(distribution);
  ASSERT_TRUE(peer.ok());
  const Bytes wire = group_seal(*own, "group");
  const Bytes peer_before = serialize_peer_sender_key(*peer);

  Prng rng(2024);
  auto corrupt = [&](const Bytes& original) {
    Bytes out = original;
    switch (rng.below(4)) {
      case 0: out.resize(rng.below(original.size() + 1)); break;           // truncate
      case 1: out[rng.below(out.size())] ^= static_cast<uint8_t>(1 + rng.below(255)); break;
      case 2: out.insert(out.begin() + static_cast<ptrdiff_t>(rng.below(out.size() + 1)),
                         static_cast<uint8_t>(rng.below(256))); break;      // insert a byte
      default:
        for (auto& b : out) {
          if (rng.below(8) == 0) b = static_cast<uint8_t>(rng.below(256));
        }
    }
    return out;
  };
  for (int i = 0; i < 3000; ++i) {
    const Bytes bad_envelope = corrupt(envelope);
    if (bad_envelope != envelope) {
      EXPECT_FALSE(open(*bob_, bad_envelope).ok());
      ASSERT_EQ(bob_->serialize(), blob);
    }
    const Bytes bad_blob = corrupt(blob);
    auto restored = Session::deserialize(bad_blob);
    if (restored.ok()) {
      EXPECT_EQ(restored->serialize(), bad_blob);
    }
    (void)parse_distribution_message(corrupt(distribution));
    const Bytes bad_wire = corrupt(wire);
    if (bad_wire != wire) {
      EXPECT_FALSE(group_open(*peer, bad_wire).ok());
      ASSERT_EQ(serialize_peer_sender_key(*peer), peer_before);
    }
    Bytes out(bad_envelope.size());
    (void)accept_prekey_message(bob_store_, corrupt(seal(alice_, "x")), out);
  }
  EXPECT_EQ(*open(*bob_, envelope), "corrupt me, please");
  EXPECT_EQ(*group_open(*peer, wire), "group");
}

// --- Sender keys --------------------------------------------------------------------------------

Bytes group_seal(OwnSenderKey& key, std::string_view plaintext) {
  Bytes wire(sender_key_wire_size(key.group_id, plaintext.size()));
  EXPECT_TRUE(sender_key_encrypt(key, text(plaintext), wire).ok());
  return wire;
}

Result<std::string> group_open(PeerSenderKey& key, ByteSpan wire) {
  Bytes out(wire.size());
  auto size = sender_key_decrypt(key, wire, out);
  if (!size) return size.error();
  return std::string(out.begin(), out.begin() + static_cast<ptrdiff_t>(*size));
}

TEST(SenderKeys, RoundTripOutOfOrderDuplicateAndTampering) {
  sim::reseed_randombytes(3);
  auto own = create_sender_key("friends", 1);
  ASSERT_TRUE(own.ok());
  auto peer = parse_distribution_message(distribution_message(*own));
  ASSERT_TRUE(peer.ok()) << peer.error().message;
  std::vector<Bytes> wires;
  for (int i = 0; i < 5; ++i) wires.push_back(group_seal(*own, "g" + std::to_string(i)));
  EXPECT_EQ(*group_open(*peer, wires[3]), "g3");
  EXPECT_EQ(*group_open(*peer, wires[0]), "g0");
  auto dup = group_open(*peer, wires[3]);
  ASSERT_FALSE(dup.ok());
  EXPECT_TRUE(is_duplicate_message(dup.error()));
  // Any flipped byte fails (the signature is checked first) and leaves the key as it was.
  const PeerSenderKey before = *peer;
  for (size_t i = 0; i < wires[4].size(); ++i) {
    Bytes tampered = wires[4];
    tampered[i] ^= 0x04;
    EXPECT_FALSE(group_open(*peer, tampered).ok()) << i;
    ASSERT_EQ(peer->chain_key, before.chain_key);
    ASSERT_EQ(peer->next_iteration, before.next_iteration);
    ASSERT_EQ(peer->skipped.size(), before.skipped.size());
  }
  EXPECT_EQ(*group_open(*peer, wires[4]), "g4");
  EXPECT_EQ(*group_open(*peer, wires[1]), "g1");
  EXPECT_EQ(*group_open(*peer, wires[2]), "g2");
  // More than MAX_SKIP ahead is refused.
  for (uint32_t i = 0; i <= kMaxSkip; ++i) (void)group_seal(*own, "skip");
  auto too_far = group_open(*peer, group_seal(*own, "far"));
  ASSERT_FALSE(too_far.ok());
  EXPECT_EQ(too_far.error().code, ErrorCode::too_large);
  // Malformed distribution messages are errors.
  const Bytes distribution = distribution_message(*own);
  for (size_t length = 0; length < distribution.size(); ++length) {
    EXPECT_FALSE(parse_distribution_message(ByteSpan(distribution.data(), length)).ok());
  }
}

TEST(SenderKeys, RotationAfterRemovalReachesCurrentMembersOnly) {
  sim::reseed_randombytes(4);
  const std::vector<std::string> names = {"alice", "bob", "carol"};
  std::map<std::string, GroupKeys> groups;
  for (const auto& n : names) groups.emplace(n, GroupKeys("g", n, names));
  auto send = [&](const std::string& sender, const std::string& msg) {
    GroupKeys& g = groups.at(sender);
    auto distribution = g.prepare_send();
    EXPECT_TRUE(distribution.ok());
    if (*distribution) {
      for (const auto& r : (*distribution)->recipients) {
        EXPECT_TRUE(groups.at(r).accept_distribution(sender, (*distribution)->message).ok());
      }
    }
    return group_seal(g.own_key(), msg);
  };
  const Bytes before_removal = send("alice", "to all");
  Bytes out(256);
  EXPECT_TRUE(groups.at("carol").decrypt("alice", before_removal, out).ok());
  EXPECT_TRUE(groups.at("bob").decrypt("alice", before_removal, out).ok());
  const uint32_t old_key_id = groups.at("alice").own_key().key_id;

  ASSERT_TRUE(groups.at("alice").remove_member("carol").ok());
  ASSERT_TRUE(groups.at("bob").remove_member("carol").ok());
  EXPECT_TRUE(groups.at("alice").rotation_pending());
  auto distribution = groups.at("alice").prepare_send();
  ASSERT_TRUE(distribution.ok() && distribution->has_value());
  EXPECT_EQ((*distribution)->recipients, std::vector<std::string>{"bob"});
  ASSERT_TRUE(groups.at("bob").accept_distribution("alice", (*distribution)->message).ok());
  EXPECT_NE(groups.at("alice").own_key().key_id, old_key_id);
  const Bytes after_removal = group_seal(groups.at("alice").own_key(), "without carol");
  auto bob_got = groups.at("bob").decrypt("alice", after_removal, out);
  ASSERT_TRUE(bob_got.ok());
  EXPECT_FALSE(groups.at("carol").decrypt("alice", after_removal, out).ok());
  // Bob no longer accepts anything from carol.
  EXPECT_FALSE(groups.at("bob").accept_distribution("carol", (*distribution)->message).ok());
  // A joiner gets the current key only: it cannot read messages from before it joined.
  ASSERT_TRUE(groups.at("alice").add_member("dave").ok());
  GroupKeys dave("g", "dave", {"alice", "bob", "dave"});
  ASSERT_TRUE(dave.accept_distribution("alice", distribution_message(groups.at("alice").own_key())).ok());
  EXPECT_FALSE(dave.decrypt("alice", after_removal, out).ok());
  const Bytes later = group_seal(groups.at("alice").own_key(), "hi dave");
  EXPECT_TRUE(dave.decrypt("alice", later, out).ok());
}

TEST(SenderKeys, SerializeRoundTripAndMalformedBlobs) {
  sim::reseed_randombytes(8);
  auto own = create_sender_key("family", 3);
  ASSERT_TRUE(own.ok());
  auto peer = parse_distribution_message(distribution_message(*own));
  ASSERT_TRUE(peer.ok());
  const Bytes early = group_seal(*own, "early");
  EXPECT_EQ(*group_open(*peer, group_seal(*own, "later")), "later");  // leaves one skipped key

  const Bytes own_blob = serialize_own_sender_key(*own);
  auto own_back = deserialize_own_sender_key(own_blob);
  ASSERT_TRUE(own_back.ok()) << own_back.error().message;
  EXPECT_EQ(serialize_own_sender_key(*own_back), own_blob);
  EXPECT_EQ(own_back->signing.public_key, own->signing.public_key);
  const Bytes peer_blob = serialize_peer_sender_key(*peer);
  auto peer_back = deserialize_peer_sender_key(peer_blob);
  ASSERT_TRUE(peer_back.ok()) << peer_back.error().message;
  EXPECT_EQ(serialize_peer_sender_key(*peer_back), peer_blob);
  // The restored keys carry on: the late message and a new one.
  EXPECT_EQ(*group_open(*peer_back, early), "early");
  EXPECT_EQ(*group_open(*peer_back, group_seal(*own_back, "restored")), "restored");
  for (size_t length = 0; length < own_blob.size(); ++length) {
    EXPECT_FALSE(deserialize_own_sender_key(ByteSpan(own_blob.data(), length)).ok());
  }
  for (size_t length = 0; length < peer_blob.size(); ++length) {
    EXPECT_FALSE(deserialize_peer_sender_key(ByteSpan(peer_blob.data(), length)).ok());
  }
}

TEST(SenderKeys, StaleOrRepeatedDistributionDoesNotReplaceTheCurrentKey) {
  sim::reseed_randombytes(9);
  GroupKeys alice("g", "alice", {"alice", "bob", "carol"});
  GroupKeys bob("g", "bob", {"alice", "bob", "carol"});
  auto first = alice.prepare_send();
  ASSERT_TRUE(first.ok() && first->has_value());
  const Bytes old_distribution = (*first)->message;
  ASSERT_TRUE(bob.accept_distribution("alice", old_distribution).ok());
  Bytes out(256);
  ASSERT_TRUE(bob.decrypt("alice", group_seal(alice.own_key(), "one"), out).ok());
  // A retransmitted distribution must not rewind the chain (the message would decrypt twice).
  const Bytes two = group_seal(alice.own_key(), "two");
  ASSERT_TRUE(bob.accept_distribution("alice", old_distribution).ok());
  ASSERT_TRUE(bob.decrypt("alice", two, out).ok());
  auto again = bob.decrypt("alice", two, out);
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(is_duplicate_message(again.error()));
  // After a rotation, the old distribution is refused as stale.
  ASSERT_TRUE(alice.remove_member("carol").ok());
  ASSERT_TRUE(bob.remove_member("carol").ok());
  auto rotated = alice.prepare_send();
  ASSERT_TRUE(rotated.ok() && rotated->has_value());
  ASSERT_TRUE(bob.accept_distribution("alice", (*rotated)->message).ok());
  EXPECT_FALSE(bob.accept_distribution("alice", old_distribution).ok());
  EXPECT_TRUE(bob.decrypt("alice", group_seal(alice.own_key(), "three"), out).ok());
}

// --- Transcripts --------------------------------------------------------------------------------

std::string transcript(uint64_t seed) {
  sim::reseed_randombytes(seed);
  return make_transcript_json(seed);
}

TEST(Transcript, SameSeedSameBytes) {
  EXPECT_EQ(transcript(5), transcript(5));
  EXPECT_NE(transcript(5), transcript(6));
}

Key32 key_at(const nlohmann::json& j, const char* field) {
  const Bytes raw = from_hex(j.at(field).get<std::string>());
  EXPECT_EQ(raw.size(), 32u) << field;
  Key32 out{};
  std::copy_n(raw.begin(), std::min<size_t>(32, raw.size()), out.begin());
  return out;
}

// Re-derives every header, ciphertext and group wire message from the JSON alone, with the
// spec's KDFs and libsodium directly (not the Session or GroupKeys code that wrote them).
TEST(Transcript, ReDerivedFromJsonAlone) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const auto t = nlohmann::json::parse(transcript(seed));
    const Key32 sk = key_at(t["x3dh"], "sk");
    const Bytes ad = from_hex(t["x3dh"]["ad"].get<std::string>());
    const Key32 spk_pk = key_at(t["bob"], "spk_pk");

    // Ratchet keys in order of first use: chain j's key is KDF_RK(RK, DH(key_j, key_{j-1})).
    std::vector<Key32> sequence;
    for (const auto& m : t["messages"]) {
      const Key32 k = key_at(m, "dh_sk");
      if (std::find(sequence.begin(), sequence.end(), k) == sequence.end()) sequence.push_back(k);
    }
    ASSERT_GE(sequence.size(), 4u);
    std::map<Key32, Key32> chain_of;  // ratchet secret -> current chain key
    Key32 root = sk, previous_public = spk_pk;
    for (const Key32& k : sequence) {
      RootStep step = kdf_rk(root, *dh(k, previous_public));
      root = step.root_key;
      chain_of[k] = step.chain_key;
      previous_public = x25519_public_of(k);
    }
    std::map<Key32, uint32_t> sent_under;
    std::map<std::string, Key32> current, previous;
    for (const auto& m : t["messages"]) {
      const Key32 k = key_at(m, "dh_sk");
      const std::string from = m["from"];
      if (!current.count(from) || current[from] != k) {
        if (current.count(from)) previous[from] = current[from];
        current[from] = k;
      }
      const uint32_t pn = previous.count(from) ? sent_under[previous[from]] : 0;
      std::array<uint8_t, 40> header;
      encode_ratchet_header({x25519_public_of(k), pn, sent_under[k]}, header.data());
      EXPECT_EQ(to_hex(header), m["header"].get<std::string>());
      sent_under[k] += 1;
      ChainStep step = kdf_ck(chain_of[k]);
      chain_of[k] = step.next_chain_key;
      std::array<uint8_t, 56> o;
      hkdf_sha256(Bytes(32, 0), step.message_key, as_bytes("msgsim.msgkey.v1"), o);
      const Bytes plaintext = from_hex(m["plaintext"].get<std::string>());
      Bytes full_ad = ad;
      full_ad.insert(full_ad.end(), header.begin(), header.end());
      Bytes ct(plaintext.size() + 16);
      unsigned long long ct_size = 0;
      crypto_aead_xchacha20poly1305_ietf_encrypt(ct.data(), &ct_size, plaintext.data(),
                                                 plaintext.size(), full_ad.data(), full_ad.size(),
                                                 nullptr, o.data() + 32, o.data());
      EXPECT_EQ(to_hex(ct), m["ciphertext"].get<std::string>());
    }
    EXPECT_EQ(t["delivery_order"].size(), t["messages"].size());

    const std::string group_id = t["group"]["group_id"];
    bool rotated = false;
    for (const auto& g : t["group"]["messages"]) {
      ChainStep step = kdf_ck(key_at(g, "ck"));
      std::array<uint8_t, 56> o;
      hkdf_sha256(Bytes(32, 0), step.message_key, as_bytes("msgsim.senderkey.v1"), o);
      Bytes wire{static_cast<uint8_t>(group_id.size())};
      wire.insert(wire.end(), group_id.begin(), group_id.end());
      wire.resize(wire.size() + 8);
      store_u32be(wire.data() + wire.size() - 8, g["key_id"].get<uint32_t>());
      store_u32be(wire.data() + wire.size() - 4, g["iteration"].get<uint32_t>());
      const size_t header_size = wire.size();
      const Bytes plaintext = from_hex(g["plaintext"].get<std::string>());
      wire.resize(header_size + plaintext.size() + 16);
      unsigned long long ct_size = 0;
      crypto_aead_xchacha20poly1305_ietf_encrypt(wire.data() + header_size, &ct_size,
                                                 plaintext.data(), plaintext.size(), wire.data(),
                                                 header_size, nullptr, o.data() + 32, o.data());
      const Bytes sg_sk = from_hex(g["sg_sk"].get<std::string>());
      std::array<uint8_t, 64> sig;
      crypto_sign_detached(sig.data(), nullptr, wire.data(), wire.size(), sg_sk.data());
      wire.insert(wire.end(), sig.begin(), sig.end());
      EXPECT_EQ(to_hex(wire), g["wire"].get<std::string>());
      rotated = rotated || !g["after_removal_of"].is_null();
    }
    EXPECT_TRUE(rotated);
  }
}

}  // namespace
}  // namespace msgsim::crypto
