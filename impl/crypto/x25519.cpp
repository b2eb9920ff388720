#include "impl/crypto/x25519.h"

#include <immintrin.h>
#include <algorithm>
#include <sodium.h>

#include "impl/base/assert.h"
#include "impl/crypto/field25519.h"

namespace msgsim::crypto {

namespace {

using field::Fe;
using field::kMask51;

// The loops below have fixed counts and index arrays of vectors: unrolled, the arrays live in
// registers (GCC at -O2 keeps them in memory otherwise, three times slower).
#define MSGSIM_IFMA __attribute__((target("avx2,avx512f,avx512vl,avx512ifma"), always_inline))

// Four field elements, one per 64-bit lane: v[i] holds limb i (weight 2^(51 i)) of each lane.
// Between operations the limbs are below 2^52 (the IFMA multipliers read only 52 bits of their
// operands), except the unreduced sums that fe4_carry takes back below it.
struct Fe4 {
  __m256i v[5];
};

MSGSIM_IFMA inline __m256i times19(__m256i x) {
  return _mm256_add_epi64(_mm256_add_epi64(_mm256_slli_epi64(x, 4), _mm256_slli_epi64(x, 1)), x);
}

// One parallel carry round: limbs below 2^62 in, below 2^51 + 2^17 out (each limb keeps its
// low 51 bits plus the carry of the limb below; the top carry wraps to limb 0 times 19).
MSGSIM_IFMA inline Fe4 fe4_carry(const Fe4& a) {
  const __m256i mask = _mm256_set1_epi64x(static_cast<long long>(kMask51));
  __m256i c[5];
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) c[i] = _mm256_srli_epi64(a.v[i], 51);
  Fe4 r;
  r.v[0] = _mm256_add_epi64(_mm256_and_si256(a.v[0], mask), times19(c[4]));
  #pragma GCC unroll 10
  for (int i = 1; i < 5; ++i) r.v[i] = _mm256_add_epi64(_mm256_and_si256(a.v[i], mask), c[i - 1]);
  return r;
}

// a * b, limbs below 2^52 in, carried out. Each 104-bit product a_i b_j is split by IFMA into
// its low 52 bits (weight 2^(51 (i + j))) and its high part (weight 2^(51 (i + j)) * 2^52, that
// is twice at position i + j + 1). Position k sums at most 5 low parts and twice 5 high parts,
// below 15 * 2^52 < 2^56; positions 5..9 fold onto 0..4 times 19 (2^255 = 19): below 2^61.
MSGSIM_IFMA inline Fe4 fe4_mul(const Fe4& a, const Fe4& b) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i lo[10], hi[10];
  #pragma GCC unroll 10
  for (int k = 0; k < 10; ++k) lo[k] = hi[k] = zero;
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) {
    #pragma GCC unroll 10
    for (int j = 0; j < 5; ++j) {
      lo[i + j] = _mm256_madd52lo_epu64(lo[i + j], a.v[i], b.v[j]);
      hi[i + j + 1] = _mm256_madd52hi_epu64(hi[i + j + 1], a.v[i], b.v[j]);
    }
  }
  __m256i s[10];
  #pragma GCC unroll 10
  for (int k = 0; k < 10; ++k) s[k] = _mm256_add_epi64(lo[k], _mm256_slli_epi64(hi[k], 1));
  Fe4 r;
  for (int k = 0; k < 5; ++k) r.v[k] = _mm256_add_epi64(s[k], times19(s[k + 5]));
  return fe4_carry(r);
}

// a^2: the 10 cross products once, doubled after the accumulation (doubling an operand could
// take it past the 52 bits IFMA reads), the 5 squares once. Same bounds as fe4_mul.
MSGSIM_IFMA inline Fe4 fe4_square(const Fe4& a) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i lo[10], hi[10], dlo[10], dhi[10];
  #pragma GCC unroll 10
  for (int k = 0; k < 10; ++k) lo[k] = hi[k] = dlo[k] = dhi[k] = zero;
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) {
    lo[2 * i] = _mm256_madd52lo_epu64(lo[2 * i], a.v[i], a.v[i]);
    hi[2 * i + 1] = _mm256_madd52hi_epu64(hi[2 * i + 1], a.v[i], a.v[i]);
    #pragma GCC unroll 10
    for (int j = i + 1; j < 5; ++j) {
      dlo[i + j] = _mm256_madd52lo_epu64(dlo[i + j], a.v[i], a.v[j]);
      dhi[i + j + 1] = _mm256_madd52hi_epu64(dhi[i + j + 1], a.v[i], a.v[j]);
    }
  }
  __m256i s[10];
  #pragma GCC unroll 10
  for (int k = 0; k < 10; ++k) {
    // lo + 2 hi + 2 (dlo + 2 dhi)
    const __m256i doubled = _mm256_add_epi64(dlo[k], _mm256_slli_epi64(dhi[k], 1));
    s[k] = _mm256_add_epi64(_mm256_add_epi64(lo[k], _mm256_slli_epi64(hi[k], 1)),
                            _mm256_slli_epi64(doubled, 1));
  }
  Fe4 r;
  for (int k = 0; k < 5; ++k) r.v[k] = _mm256_add_epi64(s[k], times19(s[k + 5]));
  return fe4_carry(r);
}

MSGSIM_IFMA inline Fe4 fe4_add(const Fe4& a, const Fe4& b) {
  Fe4 r;
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) r.v[i] = _mm256_add_epi64(a.v[i], b.v[i]);
  return r;
}

// a + 2p - b: b's limbs must be below 2p's (2^52 - 38 for limb 0, 2^52 - 2 above), which the
// carried outputs (below 2^51 + 2^17) are. Not carried.
MSGSIM_IFMA inline Fe4 fe4_sub(const Fe4& a, const Fe4& b) {
  const __m256i two_p0 = _mm256_set1_epi64x(0xFFFFFFFFFFFDALL);
  const __m256i two_p = _mm256_set1_epi64x(0xFFFFFFFFFFFFELL);
  Fe4 r;
  r.v[0] = _mm256_sub_epi64(_mm256_add_epi64(a.v[0], two_p0), b.v[0]);
  #pragma GCC unroll 10
  for (int i = 1; i < 5; ++i) r.v[i] = _mm256_sub_epi64(_mm256_add_epi64(a.v[i], two_p), b.v[i]);
  return r;
}

// a + k e for a constant k below 2^17, carried: a and e carried outputs. The ladder's k is
// 121665 = (A - 2) / 4 or 121666 = (A + 2) / 4.
MSGSIM_IFMA inline Fe4 fe4_add_small_times(const Fe4& a, const Fe4& e, long long k) {
  const __m256i a24 = _mm256_set1_epi64x(k);
  __m256i hi[6];
  Fe4 r;
  hi[0] = _mm256_setzero_si256();
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) {
    r.v[i] = _mm256_madd52lo_epu64(a.v[i], e.v[i], a24);
    hi[i + 1] = _mm256_madd52hi_epu64(_mm256_setzero_si256(), e.v[i], a24);
  }
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) r.v[i] = _mm256_add_epi64(r.v[i], _mm256_slli_epi64(hi[i], 1));
  r.v[0] = _mm256_add_epi64(r.v[0], times19(_mm256_slli_epi64(hi[5], 1)));
  return fe4_carry(r);
}

// Swaps the lanes of a and b where `mask` is all ones, keeps them where it is zero: no branch
// and no memory index depends on the mask (a bit of a secret scalar per lane).
MSGSIM_IFMA inline void fe4_cswap(Fe4& a, Fe4& b, __m256i mask) {
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) {
    const __m256i flip = _mm256_and_si256(mask, _mm256_xor_si256(a.v[i], b.v[i]));
    a.v[i] = _mm256_xor_si256(a.v[i], flip);
    b.v[i] = _mm256_xor_si256(b.v[i], flip);
  }
}

MSGSIM_IFMA inline Fe4 fe4_square_times(Fe4 a, int times) {
  for (int i = 0; i < times; ++i) a = fe4_square(a);
  return a;
}

// z^(p - 2), ref10's addition chain (field25519.h's fe_invert on four lanes); 0 for 0.
MSGSIM_IFMA inline Fe4 fe4_invert(const Fe4& z) {
  const Fe4 z2 = fe4_square(z);
  const Fe4 z9 = fe4_mul(fe4_square_times(z2, 2), z);
  const Fe4 z11 = fe4_mul(z9, z2);
  const Fe4 z_5_0 = fe4_mul(fe4_square(z11), z9);
  const Fe4 z_10_0 = fe4_mul(fe4_square_times(z_5_0, 5), z_5_0);
  const Fe4 z_20_0 = fe4_mul(fe4_square_times(z_10_0, 10), z_10_0);
  const Fe4 z_40_0 = fe4_mul(fe4_square_times(z_20_0, 20), z_20_0);
  const Fe4 z_50_0 = fe4_mul(fe4_square_times(z_40_0, 10), z_10_0);
  const Fe4 z_100_0 = fe4_mul(fe4_square_times(z_50_0, 50), z_50_0);
  const Fe4 z_200_0 = fe4_mul(fe4_square_times(z_100_0, 100), z_100_0);
  const Fe4 z_250_0 = fe4_mul(fe4_square_times(z_200_0, 50), z_50_0);
  return fe4_mul(fe4_square_times(z_250_0, 5), z11);
}

MSGSIM_IFMA inline Fe4 fe4_of_lanes(const Fe (&lanes)[kX25519Lanes]) {
  Fe4 r;
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) {
    r.v[i] = _mm256_set_epi64x(static_cast<long long>(lanes[3].v[i]),
                               static_cast<long long>(lanes[2].v[i]),
                               static_cast<long long>(lanes[1].v[i]),
                               static_cast<long long>(lanes[0].v[i]));
  }
  return r;
}

// The ladder of RFC 7748 on four lanes, for `count` (1..4) jobs; unused lanes repeat job 0.
//
// Constant time in the scalars: every lane runs all 255 steps whatever its bits (bit 254 is
// set by clamping, bits 0..2 cleared); each step does the same vector operations on all
// lanes; a scalar bit is used only as a lane mask of fe4_cswap; the words and bit positions
// read depend on the loop counter alone; the IFMA multiply-adds, shifts and logic take no
// data-dependent time, and the inversion is a fixed chain. The verdict (the all-zero test) is
// public: a small-order u is the peer's choice, not a secret.
__attribute__((target("avx2,avx512f,avx512vl,avx512ifma"))) void ladder4(X25519Job* jobs,
                                                                          size_t count) {
  alignas(32) uint64_t words[4][kX25519Lanes];  // words[w][lane]: the clamped scalar
  Fe u_lanes[kX25519Lanes];
  for (size_t lane = 0; lane < kX25519Lanes; ++lane) {
    const X25519Job& job = jobs[lane < count ? lane : 0];
    std::array<uint8_t, 32> k = *job.scalar;
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    for (int w = 0; w < 4; ++w) words[w][lane] = field::load_le64(k.data() + 8 * w);
    sodium_memzero(k.data(), k.size());
    u_lanes[lane] = field::fe_from_bytes(job.u->data());  // top bit ignored; u >= p works mod p
  }
  __m256i scalar_words[4];
  for (int w = 0; w < 4; ++w) {
    scalar_words[w] = _mm256_load_si256(reinterpret_cast<const __m256i*>(words[w]));
  }
  sodium_memzero(words, sizeof words);

  const __m256i zero = _mm256_setzero_si256();
  const __m256i one_bit = _mm256_set1_epi64x(1);
  const Fe4 x1 = fe4_of_lanes(u_lanes);
  Fe4 x2 = {{one_bit, zero, zero, zero, zero}};
  Fe4 z2 = {{zero, zero, zero, zero, zero}};
  Fe4 x3 = x1;
  Fe4 z3 = x2;
  __m256i swap = zero;
  for (int t = 254; t >= 0; --t) {
    const __m256i bit = _mm256_and_si256(
        _mm256_srli_epi64(scalar_words[t >> 6], static_cast<unsigned>(t & 63)), one_bit);
    swap = _mm256_xor_si256(swap, bit);
    const __m256i mask = _mm256_sub_epi64(zero, swap);
    fe4_cswap(x2, x3, mask);
    fe4_cswap(z2, z3, mask);
    swap = bit;
    // RFC 7748's ladder step: (x2, z2) doubled, (x3, z3) = (x2, z2) + (x3, z3) given x1.
    const Fe4 a = fe4_carry(fe4_add(x2, z2));
    const Fe4 aa = fe4_square(a);
    const Fe4 b = fe4_carry(fe4_sub(x2, z2));
    const Fe4 bb = fe4_square(b);
    const Fe4 e = fe4_carry(fe4_sub(aa, bb));
    const Fe4 c = fe4_carry(fe4_add(x3, z3));
    const Fe4 d = fe4_carry(fe4_sub(x3, z3));
    const Fe4 da = fe4_mul(d, a);
    const Fe4 cb = fe4_mul(c, b);
    x3 = fe4_square(fe4_carry(fe4_add(da, cb)));
    z3 = fe4_mul(x1, fe4_square(fe4_carry(fe4_sub(da, cb))));
    x2 = fe4_mul(aa, bb);
    z2 = fe4_mul(e, fe4_add_small_times(aa, e, 121665));
  }
  const __m256i mask = _mm256_sub_epi64(zero, swap);
  fe4_cswap(x2, x3, mask);
  fe4_cswap(z2, z3, mask);
  for (int w = 0; w < 4; ++w) scalar_words[w] = zero;
  const Fe4 result = fe4_mul(x2, fe4_invert(z2));

  alignas(32) uint64_t limbs[5][kX25519Lanes];
  for (int i = 0; i < 5; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(limbs[i]), result.v[i]);
  }
  for (size_t lane = 0; lane < count; ++lane) {
    const Fe out = {{limbs[0][lane], limbs[1][lane], limbs[2][lane], limbs[3][lane],
                     limbs[4][lane]}};
    jobs[lane].shared = field::fe_to_bytes(out);
    uint8_t any = 0;
    for (const uint8_t byte : jobs[lane].shared) any |= byte;
    jobs[lane].ok = any != 0;
  }
}

// Lane shuffles of every limb: imm picks the source lane of each of the four 64-bit lanes
// (two bits each, lane 0 lowest), as vpermq does.
template <int imm>
MSGSIM_IFMA inline Fe4 fe4_permute(const Fe4& a) {
  Fe4 r;
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) r.v[i] = _mm256_permute4x64_epi64(a.v[i], imm);
  return r;
}

// Lanes from b where the 4-bit `lanes` mask has a bit, from a elsewhere.
template <int lanes>
MSGSIM_IFMA inline Fe4 fe4_blend(const Fe4& a, const Fe4& b) {
  constexpr int dwords = (lanes & 1 ? 0x03 : 0) | (lanes & 2 ? 0x0C : 0) | (lanes & 4 ? 0x30 : 0) |
                         (lanes & 8 ? 0xC0 : 0);
  Fe4 r;
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) r.v[i] = _mm256_blend_epi32(a.v[i], b.v[i], dwords);
  return r;
}

// Each lane pair (0, 1) and (2, 3) exchanged: an in-lane shuffle, cheaper than vpermq.
MSGSIM_IFMA inline Fe4 fe4_swap_pairs(const Fe4& a) {
  Fe4 r;
  #pragma GCC unroll 10
  for (int i = 0; i < 5; ++i) r.v[i] = _mm256_shuffle_epi32(a.v[i], 0x4E);
  return r;
}

// One X25519 with the four lanes holding the four coordinates of one ladder, P = (x2, z2, x3,
// z3): a step is three four-lane products instead of nine one-lane ones, for a lone DH (the
// ratchet's DH steps, the one after X3DH), where the four-job ladder would leave three lanes idle.
//   [A, B, C, D]      = [x2 + z2, x2 - z2, x3 + z3, x3 - z3]
//   [AA, BB, DA, CB]  = [A, B, D, C] * [A, B, A, B]
//   U = [AA, E, s, d] = [AA, AA - BB, DA + CB, DA - CB]
//   V                 = [BB, BB + 121666 E, s, d]
//   [x2, z2, x3, d^2] = U * V                      (BB + 121666 E = AA + 121665 E)
//   [x2, z2, x3, z3]  = [x2, z2, x3, d^2] * [1, 1, 1, x1]
// Constant time in the scalar as ladder4 is: the conditional swap of (x2, z2) with (x3, z3) is
// a lane permutation blended in by a mask made from the bit, never a branch or an index.
__attribute__((target("avx2,avx512f,avx512vl,avx512ifma"))) void ladder1(X25519Job& job) {
  std::array<uint8_t, 32> k = *job.scalar;
  k[0] &= 248;
  k[31] &= 127;
  k[31] |= 64;
  uint64_t words[4];
  for (int w = 0; w < 4; ++w) words[w] = field::load_le64(k.data() + 8 * w);
  sodium_memzero(k.data(), k.size());
  const Fe u = field::fe_from_bytes(job.u->data());  // top bit ignored; u >= p works mod p

  Fe4 p;  // [x2, z2, x3, z3] = [1, 0, u, 1]
  Fe4 x1_in_lane3;  // [1, 1, 1, u]
  for (int i = 0; i < 5; ++i) {
    const long long one = i == 0 ? 1 : 0;
    const long long limb = static_cast<long long>(u.v[i]);
    p.v[i] = _mm256_set_epi64x(one, limb, 0, one);
    x1_in_lane3.v[i] = _mm256_set_epi64x(limb, one, one, one);
  }
  uint64_t swap = 0;
  for (int t = 254; t >= 0; --t) {
    const uint64_t bit = (words[t >> 6] >> (t & 63)) & 1;
    swap ^= bit;
    const __m256i mask = _mm256_set1_epi64x(-static_cast<long long>(swap));
    const Fe4 exchanged = fe4_permute<0x4E>(p);  // [x3, z3, x2, z2]
    #pragma GCC unroll 10
    for (int i = 0; i < 5; ++i) {
      p.v[i] = _mm256_xor_si256(
          p.v[i], _mm256_and_si256(mask, _mm256_xor_si256(p.v[i], exchanged.v[i])));
    }
    swap = bit;
    const Fe4 q = fe4_swap_pairs(p);  // [z2, x2, z3, x3]
    const Fe4 abcd = fe4_carry(fe4_blend<0b1010>(fe4_add(p, q), fe4_sub(q, p)));
    const Fe4 t1 = fe4_mul(fe4_permute<0xB4>(abcd), fe4_permute<0x44>(abcd));  // [AA, BB, DA, CB]
    const Fe4 t2 = fe4_swap_pairs(t1);                                        // [BB, AA, CB, DA]
    const Fe4 diff = fe4_sub(t2, t1);  // lane 1: AA - BB = E, lane 3: DA - CB = d
    const Fe4 uu = fe4_carry(fe4_blend<0b1010>(fe4_blend<0b0100>(t1, fe4_add(t1, t2)), diff));
    const Fe4 w = fe4_add_small_times(t1, uu, 121666);  // lane 1: BB + 121666 E
    const Fe4 vv = fe4_blend<0b0010>(fe4_blend<0b0001>(uu, t2), w);
    p = fe4_mul(fe4_mul(uu, vv), x1_in_lane3);
  }
  const __m256i mask = _mm256_set1_epi64x(-static_cast<long long>(swap));
  const Fe4 exchanged = fe4_permute<0x4E>(p);
  for (int i = 0; i < 5; ++i) {
    p.v[i] = _mm256_xor_si256(p.v[i],
                              _mm256_and_si256(mask, _mm256_xor_si256(p.v[i], exchanged.v[i])));
  }
  sodium_memzero(words, sizeof words);
  alignas(32) uint64_t limbs[5][4];
  for (int i = 0; i < 5; ++i) _mm256_store_si256(reinterpret_cast<__m256i*>(limbs[i]), p.v[i]);
  const Fe x2 = {{limbs[0][0], limbs[1][0], limbs[2][0], limbs[3][0], limbs[4][0]}};
  const Fe z2 = {{limbs[0][1], limbs[1][1], limbs[2][1], limbs[3][1], limbs[4][1]}};
  sodium_memzero(limbs, sizeof limbs);
  job.shared = field::fe_to_bytes(field::fe_mul(x2, field::fe_invert(z2)));
  uint8_t any = 0;
  for (const uint8_t byte : job.shared) any |= byte;
  job.ok = any != 0;
}

bool detect_vector_ladder() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512ifma");
}

}  // namespace

bool x25519_vector_ladder_available() {
  static const bool available = detect_vector_ladder();
  return available;
}

void x25519_jobs_on_vector_ladder(std::span<X25519Job> jobs) {
  MSGSIM_ASSERT(x25519_vector_ladder_available(), "this CPU has no AVX-512 IFMA");
  for (size_t first = 0; first < jobs.size(); first += kX25519Lanes) {
    const size_t count = std::min(kX25519Lanes, jobs.size() - first);
    // A lone job on the four-job ladder would leave three lanes idle: it takes the ladder that
    // spreads one X25519 over the four lanes (BM_X25519VectorLadder1 and 4 compare them).
    if (count == 1) {
      ladder1(jobs[first]);
    } else {
      ladder4(jobs.data() + first, count);
    }
  }
}

void x25519_jobs(std::span<X25519Job> jobs) {
  if (x25519_vector_ladder_available()) {
    x25519_jobs_on_vector_ladder(jobs);
    return;
  }
  for (X25519Job& job : jobs) {
    job.ok = crypto_scalarmult(job.shared.data(), job.scalar->data(), job.u->data()) == 0;
    if (!job.ok) job.shared.fill(0);  // libsodium's ref10 leaves it unwritten when it refuses
  }
}

}  // namespace msgsim::crypto
