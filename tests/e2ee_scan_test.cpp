// The confidentiality scanner (sim/e2ee_scan.*) against the obvious search: a buffer contains
// a plaintext when it contains the plaintext's first 16 bytes (the whole of a shorter one)
// anywhere. The scanner probes only every stride-th offset, so the cases that matter are
// occurrences at every alignment, at the ends of buffers, cut short by the end, and
// fingerprints shorter than 16 bytes (a smaller stride). A two-letter alphabet makes near
// misses and shared windows common.
#include "sim/e2ee_scan.h"

#include <algorithm>
#include <vector>

#include <gtest/gtest.h>

#include "impl/base/prng.h"

namespace msgsim::sim {
namespace {

Bytes random_bytes(Prng& rng, size_t size, uint64_t alphabet) {
  Bytes out(size);
  for (uint8_t& byte : out) byte = static_cast<uint8_t>(rng.below(alphabet));
  return out;
}

// Whether `fingerprint` (the first 16 bytes of a plaintext) occurs in `buffer` at `at`.
bool occurs_at(const Bytes& buffer, const Bytes& plaintext, size_t at) {
  const size_t length = std::min<size_t>(plaintext.size(), PlaintextScanner::kFingerprintBytes);
  return at + length <= buffer.size() && std::equal(plaintext.begin(), plaintext.begin() + static_cast<long>(length),
                                                    buffer.begin() + static_cast<long>(at));
}

bool naive_contains(const Bytes& buffer, const std::vector<Bytes>& plaintexts) {
  for (const Bytes& plaintext : plaintexts) {
    for (size_t at = 0; at < buffer.size(); ++at) {
      if (occurs_at(buffer, plaintext, at)) return true;
    }
  }
  return false;
}

void check_against_naive(uint64_t seed, size_t length_min, size_t length_max, uint64_t alphabet) {
  Prng rng(seed);
  PlaintextScanner scanner;
  std::vector<Bytes> plaintexts;
  for (int i = 0; i < 40; ++i) {
    plaintexts.push_back(random_bytes(rng, static_cast<size_t>(rng.range(static_cast<int64_t>(length_min),
                                                                         static_cast<int64_t>(length_max))),
                                      alphabet));
    scanner.on_plaintext(plaintexts.back());
  }
  int found = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    Bytes buffer = random_bytes(rng, static_cast<size_t>(rng.below(120)), alphabet);
    if (rng.below(2) == 0) {
      // Plant a plaintext (whole or cut short) at any offset, possibly running past the end.
      const Bytes& plaintext = plaintexts[rng.below(plaintexts.size())];
      const size_t at = static_cast<size_t>(rng.below(buffer.size() + 1));
      const size_t keep = static_cast<size_t>(rng.below(plaintext.size() + 1));
      buffer.resize(std::max(buffer.size(), at + keep));
      std::copy(plaintext.begin(), plaintext.begin() + static_cast<long>(keep), buffer.begin() + static_cast<long>(at));
      if (rng.below(2) == 0) buffer.resize(at + keep);  // ends right after the planted part
    }
    const bool expected = naive_contains(buffer, plaintexts);
    const size_t at = scanner.find(buffer);
    ASSERT_EQ(at != PlaintextScanner::kNotFound, expected) << "seed " << seed << " trial " << trial;
    if (expected) {
      found++;
      const bool some_plaintext_there = std::any_of(plaintexts.begin(), plaintexts.end(),
                                                    [&](const Bytes& p) { return occurs_at(buffer, p, at); });
      EXPECT_TRUE(some_plaintext_there) << "seed " << seed << " trial " << trial << " at " << at;
    }
  }
  EXPECT_GT(found, 200) << "the planted plaintexts must be found often enough to test something";
}

TEST(PlaintextScanner, FindsWhatANaiveSearchFindsWithBodiesOf16BytesOrMore) {
  for (uint64_t seed = 1; seed <= 4; ++seed) check_against_naive(seed, 16, 64, 256);
}

TEST(PlaintextScanner, FindsWhatANaiveSearchFindsOnATwoLetterAlphabet) {
  // Many fingerprints share windows and near misses abound.
  for (uint64_t seed = 1; seed <= 4; ++seed) check_against_naive(seed, 16, 24, 2);
}

TEST(PlaintextScanner, FindsShortPlaintextsAtEveryOffset) {
  // 8..15-byte bodies are fingerprinted whole and shrink the stride.
  for (uint64_t seed = 1; seed <= 4; ++seed) check_against_naive(seed, 8, 20, 4);
}

TEST(PlaintextScanner, FindsEachOfManyPlaintextsWhereItWasPlanted) {
  // 40,000 bodies: the fingerprints span three chunks and the table grows from 4,096 slots to
  // 2^20, so every body's windows were moved by several growths. Random bytes on 256 letters:
  // a 16-byte fingerprint occurs by chance with probability ~2^-128, so a planted body is
  // found exactly where it was put and a buffer of fresh random bytes holds none.
  Prng rng(7);
  PlaintextScanner scanner;
  std::vector<Bytes> plaintexts;
  for (int i = 0; i < 40'000; ++i) {
    plaintexts.push_back(random_bytes(rng, static_cast<size_t>(rng.range(16, 64)), 256));
    scanner.on_plaintext(plaintexts.back());
  }
  ASSERT_EQ(scanner.tracked(), 40'000u);
  for (int trial = 0; trial < 20'000; ++trial) {
    Bytes buffer = random_bytes(rng, static_cast<size_t>(rng.range(16, 200)), 256);
    ASSERT_EQ(scanner.find(buffer), PlaintextScanner::kNotFound) << "trial " << trial;
    const Bytes& plaintext = plaintexts[rng.below(plaintexts.size())];
    const size_t keep = std::min<size_t>(plaintext.size(), PlaintextScanner::kFingerprintBytes);
    const size_t at = static_cast<size_t>(rng.below(buffer.size() + 1));
    buffer.resize(std::max(buffer.size(), at + keep));
    std::copy(plaintext.begin(), plaintext.begin() + static_cast<long>(keep), buffer.begin() + static_cast<long>(at));
    ASSERT_EQ(scanner.find(buffer), at) << "trial " << trial;
    // One byte short of the fingerprint is not an occurrence.
    buffer.resize(at + keep - 1);
    ASSERT_EQ(scanner.find(buffer), PlaintextScanner::kNotFound) << "trial " << trial;
  }
}

TEST(PlaintextScanner, IgnoresPlaintextsShorterThan8BytesAndCountsEveryByte) {
  PlaintextScanner scanner;
  const Bytes tiny{1, 2, 3, 4, 5, 6, 7};
  scanner.on_plaintext(tiny);
  EXPECT_EQ(scanner.tracked(), 0u);
  EXPECT_EQ(scanner.find(tiny), PlaintextScanner::kNotFound);

  const Bytes body{10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27};
  scanner.on_plaintext(body);
  Bytes frame(37, 0);
  std::copy(body.begin(), body.end(), frame.begin() + 13);
  int named = 0;
  scanner.scan(frame, [&] {
    named++;
    return std::string("frame");
  });
  scanner.scan(frame, [&] {
    named++;
    return std::string("again");
  });
  EXPECT_EQ(scanner.hits(), 2u);
  EXPECT_EQ(named, 1) << "only the first hit is named";
  EXPECT_EQ(scanner.first_hit(), "frame at byte 13");
  EXPECT_EQ(scanner.bytes_scanned(), 7u + 2 * 37u);
}

}  // namespace
}  // namespace msgsim::sim
