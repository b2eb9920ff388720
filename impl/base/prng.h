// The seeded, splittable pseudo-random generator every random choice in msgsim comes from.
//
// xoshiro256** for the stream, SplitMix64 to seed it. `split(label)` derives an independent
// child stream from the parent's *seed* and a label, without drawing from the parent, so adding
// a new consumer of randomness never shifts the numbers an existing one sees.
//
// Distributions are our own: std:: distributions differ between standard libraries, and libm's
// exp/log/pow differ in their last bits between versions. Everything here uses integers or
// floating point limited to + - * / and sqrt (all correctly rounded by IEEE 754), and the build
// turns off FMA contraction, so a seed gives the same numbers on every machine.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>

#include "impl/base/assert.h"
#include "impl/base/hash.h"

namespace msgsim {

// Natural logarithm from + - * / only (frexp/ldexp are exact). Accurate to a few ulps.
inline double det_log(double x) {
  MSGSIM_ASSERT(x > 0.0 && std::isfinite(x), "det_log needs a positive finite argument");
  constexpr double ln2 = 0.693147180559945309417232121458;
  constexpr double sqrt_half = 0.707106781186547524400844362105;
  int exponent = 0;
  double m = std::frexp(x, &exponent);  // x = m * 2^exponent, m in [0.5, 1)
  if (m < sqrt_half) {
    m *= 2.0;
    exponent -= 1;
  }
  // log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double term = s;
  double sum = 0.0;
  for (int k = 1; k <= 41; k += 2) {
    sum += term / k;
    term *= s2;
  }
  return 2.0 * sum + exponent * ln2;
}

// e^x from + - * / only. Accurate to a few ulps for |x| < 700.
inline double det_exp(double x) {
  MSGSIM_ASSERT(std::isfinite(x), "det_exp needs a finite argument");
  if (x > 700.0) x = 700.0;
  if (x < -700.0) return 0.0;
  constexpr double ln2 = 0.693147180559945309417232121458;
  const double kd = x / ln2;
  const int k = static_cast<int>(kd >= 0 ? kd + 0.5 : kd - 0.5);
  // Cody-Waite: ln2 split so that k * ln2_hi is exact and the reduction loses nothing.
  constexpr double ln2_hi = 6.93147180369123816490e-01;
  constexpr double ln2_lo = 1.90821492927058770002e-10;
  const double r = (x - k * ln2_hi) - k * ln2_lo;  // |r| <= ln2 / 2
  double term = 1.0;
  double sum = 1.0;
  for (int n = 1; n <= 24; ++n) {
    term = term * r / n;
    sum += term;
  }
  return std::ldexp(sum, k);
}

class Prng {
 public:
  explicit Prng(uint64_t seed = 0) : seed_(seed) {
    uint64_t x = seed;
    for (uint64_t& word : state_) {
      x += 0x9e3779b97f4a7c15ULL;
      word = mix64(x);
    }
  }

  uint64_t seed() const { return seed_; }

  // An independent stream named by `label`; does not advance this one.
  Prng split(uint64_t label) const { return Prng(mix64(seed_ ^ mix64(label + 0x632be59bd9b4e019ULL))); }
  Prng split(std::string_view label) const { return split(hash_string(label)); }

  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  uint32_t next_u32() { return static_cast<uint32_t>(next_u64() >> 32); }

  // Uniform in [0, n), unbiased (Lemire's multiply-and-reject).
  uint64_t below(uint64_t n) {
    MSGSIM_ASSERT_GT(n, 0u);
    uint128_t m = static_cast<uint128_t>(next_u64()) * n;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<uint128_t>(next_u64()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

  // Uniform in [lo, hi], both inclusive.
  int64_t range(int64_t lo, int64_t hi) {
    MSGSIM_ASSERT_LE(lo, hi);
    const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
    if (span == UINT64_MAX) return static_cast<int64_t>(next_u64());
    return static_cast<int64_t>(static_cast<uint64_t>(lo) + below(span + 1));
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform01() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  // True with probability p (p outside [0, 1] is clamped).
  bool chance(double p) { return uniform01() < p; }

  // True with probability parts_per_million / 1e6, in integers only.
  bool chance_ppm(uint32_t parts_per_million) { return below(1000000) < parts_per_million; }

  // Exponential with the given mean.
  double exponential(double mean) {
    MSGSIM_ASSERT(mean >= 0.0);
    const double u = 1.0 - uniform01();  // (0, 1]
    return -det_log(u) * mean;
  }

  // Normal(mean, stddev) by Marsaglia's polar method (needs only log and sqrt).
  double normal(double mean, double stddev) {
    for (int attempt = 0; attempt < 1000; ++attempt) {
      const double u = 2.0 * uniform01() - 1.0;
      const double v = 2.0 * uniform01() - 1.0;
      const double s = u * v + v * v + (u * u - u * v);  // u^2 + v^2, written to avoid contraction doubts
      if (s > 0.0 && s < 1.0) return mean + stddev * u * std::sqrt(-2.0 * det_log(s) / s);
    }
    MSGSIM_UNREACHABLE("polar method rejected 1000 draws in a row");
  }

  // Log-normal whose median is `median` and whose log has standard deviation `sigma`.
  double lognormal(double median, double sigma) { return median * det_exp(normal(0.0, sigma)); }

  void fill(std::span<uint8_t> out) {
    size_t i = 0;
    while (i < out.size()) {
      uint64_t word = next_u64();
      for (int b = 0; b < 8 && i < out.size(); ++b, ++i, word >>= 8) out[i] = static_cast<uint8_t>(word);
    }
  }

  template <typename T>
  void shuffle(std::span<T> items) {
    for (size_t i = items.size(); i > 1; --i) {
      const size_t j = below(i);
      std::swap(items[i - 1], items[j]);
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  uint64_t seed_;
  uint64_t state_[4];
};

}  // namespace msgsim
