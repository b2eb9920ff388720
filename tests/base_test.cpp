// The base layer: hashing, the seeded PRNG and its distributions, Result.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "impl/base/hash.h"
#include "impl/base/prng.h"
#include "impl/base/result.h"

namespace msgsim {
namespace {

TEST(Mix64, IsSplitMix64) {
  // SplitMix64 reference outputs for seed 1234567 (Vigna's splitmix64.c, also Java's
  // SplittableRandom): state += golden gamma, then the finaliser.
  uint64_t state = 1234567;
  const uint64_t expected[] = {6457827717110365317ULL, 3203168211198807973ULL,
                               9817491932198370423ULL, 4593380528125082431ULL,
                               16408922859458223821ULL};
  for (uint64_t want : expected) {
    state += 0x9e3779b97f4a7c15ULL;
    EXPECT_EQ(mix64(state), want);
  }
}

TEST(Prng, SameSeedSameStream) {
  Prng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t x = a.next_u64();
    EXPECT_EQ(x, b.next_u64());
    differs |= x != c.next_u64();
  }
  EXPECT_TRUE(differs);
}

TEST(Prng, SplitDoesNotAdvanceParentAndIsIndependent) {
  Prng parent(7);
  Prng reference(7);
  Prng child_a = parent.split("network");
  Prng child_b = parent.split("disk");
  EXPECT_EQ(parent.next_u64(), reference.next_u64());
  EXPECT_NE(child_a.next_u64(), child_b.next_u64());
  EXPECT_EQ(Prng(7).split("network").next_u64(), Prng(7).split("network").next_u64());
}

TEST(Prng, BelowIsInRangeAndCoversIt) {
  Prng rng(1);
  std::set<uint64_t> seen;
  for (int i = 0; i < 10000; ++i) {
    const uint64_t x = rng.below(10);
    ASSERT_LT(x, 10u);
    seen.insert(x);
  }
  EXPECT_EQ(seen.size(), 10u);
  for (int i = 0; i < 1000; ++i) {
    const int64_t y = rng.range(-3, 3);
    ASSERT_GE(y, -3);
    ASSERT_LE(y, 3);
  }
}

TEST(Prng, DistributionsHaveTheirMoments) {
  Prng rng(2);
  constexpr int n = 200000;
  double sum_u = 0, sum_e = 0, sum_n = 0, sum_n2 = 0;
  for (int i = 0; i < n; ++i) {
    const double u = rng.uniform01();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum_u += u;
    sum_e += rng.exponential(3.0);
    const double z = rng.normal(5.0, 2.0);
    sum_n += z;
    sum_n2 += z * z;
  }
  EXPECT_NEAR(sum_u / n, 0.5, 0.005);
  EXPECT_NEAR(sum_e / n, 3.0, 0.05);
  const double mean = sum_n / n;
  EXPECT_NEAR(mean, 5.0, 0.02);
  EXPECT_NEAR(std::sqrt(sum_n2 / n - mean * mean), 2.0, 0.02);
}

TEST(DetMath, LogAndExpMatchLibmClosely) {
  for (double x : {1e-300, 1e-9, 0.1, 0.5, 0.7071, 1.0, 1.5, 2.0, 10.0, 12345.678, 1e300}) {
    EXPECT_NEAR(det_log(x), std::log(x), 4e-16 * std::max(1.0, std::fabs(std::log(x)))) << x;
  }
  for (double x : {-700.0, -20.0, -1.0, -1e-9, 0.0, 1e-9, 0.5, 1.0, 3.3, 20.0, 700.0}) {
    EXPECT_NEAR(det_exp(x) / std::exp(x), 1.0, 4e-15) << x;
  }
}

TEST(Hash, DependsOnEveryByteAndTheSeed) {
  const std::string a = "conversation-1";
  std::string b = a;
  b[3] ^= 1;
  EXPECT_NE(hash_string(a), hash_string(b));
  EXPECT_NE(hash_string(a), hash_string(a, 1));
  EXPECT_EQ(hash_string(a), hash_string(std::string(a)));
  EXPECT_NE(hash_string(""), hash_string(std::string(1, '\0')));
}

TEST(Digest, OrderMatters) {
  Digest x, y;
  x.fold(1);
  x.fold(2);
  y.fold(2);
  y.fold(1);
  EXPECT_NE(x.value(), y.value());
  EXPECT_EQ(x.hex().size(), 16u);
}

TEST(Result, CarriesValueOrError) {
  Result<int> good = 3;
  Result<int> bad = make_error(ErrorCode::bad_input, "line 3: expected a number");
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::bad_input);
  EXPECT_DEATH((void)bad.value(), "expected a number");
}

}  // namespace
}  // namespace msgsim
