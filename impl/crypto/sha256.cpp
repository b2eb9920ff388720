#include "impl/crypto/sha256.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "impl/base/assert.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define MSGSIM_HAVE_SHA_NI_CODE 1
#else
#define MSGSIM_HAVE_SHA_NI_CODE 0
#endif

namespace msgsim::crypto {

namespace {

bool detect_sha_ni() {
#if MSGSIM_HAVE_SHA_NI_CODE
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  const bool ssse3 = (ecx & (1u << 9)) != 0;
  const bool sse41 = (ecx & (1u << 19)) != 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  const bool sha = (ebx & (1u << 29)) != 0;
  return ssse3 && sse41 && sha;
#else
  return false;
#endif
}

}  // namespace

bool sha_ni_available() {
  static const bool available = detect_sha_ni();
  return available;
}

Sha256Engine resolve_sha256_engine(Sha256Engine engine) {
  if (engine != Sha256Engine::fastest) return engine;
  return sha_ni_available() ? Sha256Engine::sha_ni : Sha256Engine::libsodium;
}

#if MSGSIM_HAVE_SHA_NI_CODE

namespace {

alignas(16) constexpr uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

// The SHA extensions keep the state as two vectors, ABEF and CDGH, and do two rounds per
// sha256rnds2; sha256msg1/msg2 compute the message schedule four words at a time.
__attribute__((target("sha,sse4.1,ssse3"))) void compress_blocks(Sha256State& state,
                                                                 const uint8_t* blocks,
                                                                 size_t block_count) {
  const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i abcd = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[0]));
  __m128i efgh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[4]));
  abcd = _mm_shuffle_epi32(abcd, 0xB1);          // CDAB
  efgh = _mm_shuffle_epi32(efgh, 0x1B);          // HGFE
  __m128i abef = _mm_alignr_epi8(abcd, efgh, 8);  // ABEF
  __m128i cdgh = _mm_blend_epi16(efgh, abcd, 0xF0);  // CDGH

  for (size_t b = 0; b < block_count; ++b, blocks += 64) {
    const __m128i abef_before = abef;
    const __m128i cdgh_before = cdgh;
    __m128i w[4];  // the last four groups of four schedule words, w[g % 4]
#pragma GCC unroll 16
    for (int g = 0; g < 16; ++g) {
      if (g < 4) {
        w[g] = _mm_shuffle_epi8(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + 16 * g)), byte_swap);
      } else {
        // W[t..t+3] = msg2(msg1(W[t-16..], W[t-12..]) + W[t-7..t-4], W[t-4..t-1]).
        const __m128i w16 = w[g % 4], w12 = w[(g + 1) % 4], w8 = w[(g + 2) % 4],
                      w4 = w[(g + 3) % 4];
        w[g % 4] = _mm_sha256msg2_epu32(
            _mm_add_epi32(_mm_sha256msg1_epu32(w16, w12), _mm_alignr_epi8(w4, w8, 4)), w4);
      }
      __m128i message = _mm_add_epi32(
          w[g % 4], _mm_load_si128(reinterpret_cast<const __m128i*>(&kRoundConstants[4 * g])));
      cdgh = _mm_sha256rnds2_epu32(cdgh, abef, message);
      message = _mm_shuffle_epi32(message, 0x0E);
      abef = _mm_sha256rnds2_epu32(abef, cdgh, message);
    }
    abef = _mm_add_epi32(abef, abef_before);
    cdgh = _mm_add_epi32(cdgh, cdgh_before);
  }

  const __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
  const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[0]), _mm_blend_epi16(feba, dchg, 0xF0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[4]), _mm_alignr_epi8(dchg, feba, 8));
}

// The same round code for two independent single blocks, interleaved lane by lane: one
// sha256rnds2 chain waits for its predecessor's result, so a second chain fills the idle issue
// slots and two compressions take little more time than one.
__attribute__((target("sha,sse4.1,ssse3"))) void compress_two_blocks(Sha256State& state_a,
                                                                     const uint8_t* block_a,
                                                                     Sha256State& state_b,
                                                                     const uint8_t* block_b) {
  const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  Sha256State* states[2] = {&state_a, &state_b};
  const uint8_t* blocks[2] = {block_a, block_b};
  __m128i abef[2], cdgh[2], abef_before[2], cdgh_before[2];
  __m128i w[2][4];
#pragma GCC unroll 2
  for (int l = 0; l < 2; ++l) {
    __m128i abcd = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&(*states[l])[0]));
    __m128i efgh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&(*states[l])[4]));
    abcd = _mm_shuffle_epi32(abcd, 0xB1);
    efgh = _mm_shuffle_epi32(efgh, 0x1B);
    abef[l] = _mm_alignr_epi8(abcd, efgh, 8);
    cdgh[l] = _mm_blend_epi16(efgh, abcd, 0xF0);
    abef_before[l] = abef[l];
    cdgh_before[l] = cdgh[l];
  }
#pragma GCC unroll 16
  for (int g = 0; g < 16; ++g) {
    const __m128i constants =
        _mm_load_si128(reinterpret_cast<const __m128i*>(&kRoundConstants[4 * g]));
#pragma GCC unroll 2
    for (int l = 0; l < 2; ++l) {
      if (g < 4) {
        w[l][g] = _mm_shuffle_epi8(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[l] + 16 * g)), byte_swap);
      } else {
        const __m128i w16 = w[l][g % 4], w12 = w[l][(g + 1) % 4], w8 = w[l][(g + 2) % 4],
                      w4 = w[l][(g + 3) % 4];
        w[l][g % 4] = _mm_sha256msg2_epu32(
            _mm_add_epi32(_mm_sha256msg1_epu32(w16, w12), _mm_alignr_epi8(w4, w8, 4)), w4);
      }
      __m128i message = _mm_add_epi32(w[l][g % 4], constants);
      cdgh[l] = _mm_sha256rnds2_epu32(cdgh[l], abef[l], message);
      message = _mm_shuffle_epi32(message, 0x0E);
      abef[l] = _mm_sha256rnds2_epu32(abef[l], cdgh[l], message);
    }
  }
#pragma GCC unroll 2
  for (int l = 0; l < 2; ++l) {
    const __m128i feba = _mm_shuffle_epi32(_mm_add_epi32(abef[l], abef_before[l]), 0x1B);
    const __m128i dchg = _mm_shuffle_epi32(_mm_add_epi32(cdgh[l], cdgh_before[l]), 0xB1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(&(*states[l])[0]),
                     _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(&(*states[l])[4]),
                     _mm_alignr_epi8(dchg, feba, 8));
  }
}

}  // namespace

void sha256_compress_sha_ni(Sha256State& state, const uint8_t* blocks, size_t block_count) {
  MSGSIM_ASSERT(sha_ni_available(), "SHA-NI compression on a CPU without the SHA extensions");
  compress_blocks(state, blocks, block_count);
}

void sha256_compress_two_sha_ni(Sha256State& state_a, const uint8_t* block_a,
                                Sha256State& state_b, const uint8_t* block_b) {
  MSGSIM_ASSERT(sha_ni_available(), "SHA-NI compression on a CPU without the SHA extensions");
  compress_two_blocks(state_a, block_a, state_b, block_b);
}

#else

void sha256_compress_sha_ni(Sha256State&, const uint8_t*, size_t) {
  MSGSIM_ASSERT(false, "SHA-NI compression on a CPU without the SHA extensions");
}

void sha256_compress_two_sha_ni(Sha256State&, const uint8_t*, Sha256State&, const uint8_t*) {
  MSGSIM_ASSERT(false, "SHA-NI compression on a CPU without the SHA extensions");
}

#endif

void Sha256NiStream::update(std::span<const uint8_t> data) {
  total_bytes_ += data.size();
  size_t at = 0;
  if (buffered_ > 0) {
    const size_t take = std::min(data.size(), buffer_.size() - buffered_);
    std::memcpy(buffer_.data() + buffered_, data.data(), take);
    buffered_ += take;
    at = take;
    if (buffered_ < buffer_.size()) return;
    sha256_compress_sha_ni(state_, buffer_.data(), 1);
    buffered_ = 0;
  }
  const size_t whole_blocks = (data.size() - at) / 64;
  if (whole_blocks > 0) {
    sha256_compress_sha_ni(state_, data.data() + at, whole_blocks);
    at += whole_blocks * 64;
  }
  if (at < data.size()) {
    std::memcpy(buffer_.data(), data.data() + at, data.size() - at);
    buffered_ = data.size() - at;
  }
}

void Sha256NiStream::finish(uint8_t* digest_out) {
  const uint64_t total_bits = total_bytes_ * 8;
  buffer_[buffered_++] = 0x80;
  if (buffered_ > 56) {
    std::fill(buffer_.begin() + static_cast<ptrdiff_t>(buffered_), buffer_.end(), uint8_t{0});
    sha256_compress_sha_ni(state_, buffer_.data(), 1);
    buffered_ = 0;
  }
  std::fill(buffer_.begin() + static_cast<ptrdiff_t>(buffered_), buffer_.begin() + 56,
            uint8_t{0});
  for (int i = 0; i < 8; ++i) buffer_[56 + i] = static_cast<uint8_t>(total_bits >> (56 - 8 * i));
  sha256_compress_sha_ni(state_, buffer_.data(), 1);
  for (size_t i = 0; i < 8; ++i) {
    digest_out[4 * i] = static_cast<uint8_t>(state_[i] >> 24);
    digest_out[4 * i + 1] = static_cast<uint8_t>(state_[i] >> 16);
    digest_out[4 * i + 2] = static_cast<uint8_t>(state_[i] >> 8);
    digest_out[4 * i + 3] = static_cast<uint8_t>(state_[i]);
  }
}

void Sha256NiStream::wipe() {
  sodium_memzero(state_.data(), sizeof state_);
  sodium_memzero(buffer_.data(), buffer_.size());
}

}  // namespace msgsim::crypto
