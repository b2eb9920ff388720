// Variable-base X25519 (RFC 7748, section 5), up to four at once: the Montgomery ladder on four
// lanes of AVX-512 IFMA (52-bit multiply-accumulate on 256-bit vectors, radix 2^51), byte for
// byte what libsodium's crypto_scalarmult computes, including its verdict. X3DH's four DHs are
// independent (two scalars, four points), so one pass of the four-job ladder (one X25519 per
// lane) costs about twice one X25519 alone; a lone DH (the ratchet's) takes a second ladder
// that holds the four coordinates of one ladder in the four lanes. On a CPU without IFMA (or
// under valgrind, whose CPUID hides AVX-512) every job goes to crypto_scalarmult.
//
// libsodium 1.0.18 refuses (returns -1) exactly when the result is all zero: its ref10 code
// also refuses a blacklist of seven small-order encodings first, but a clamped scalar is a
// multiple of the cofactor 8, so those points give the all-zero result anyway (tests/crypto_test
// and tests/fuzz/fuzz_x25519.cpp compare the verdicts and bytes with libsodium's).
//
// The scalars are SECRET: the ladder runs in constant time (see x25519.cpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace msgsim::crypto {

constexpr size_t kX25519Lanes = 4;

// One X25519(scalar, u): the scalar is clamped, the top bit of u is ignored and non-canonical
// u >= p is taken modulo p, as RFC 7748 says. `ok` is false, with `shared` all zero, when the
// result is all zero (a small-order u), where crypto_scalarmult returns -1.
struct X25519Job {
  const std::array<uint8_t, 32>* scalar = nullptr;
  const std::array<uint8_t, 32>* u = nullptr;
  std::array<uint8_t, 32> shared{};
  bool ok = false;
};

// Runs every job, kX25519Lanes at a time on the vector ladder when the CPU has it; a group of
// one (a single job, or the last of five) takes the ladder that spreads one X25519 over the
// four lanes instead.
void x25519_jobs(std::span<X25519Job> jobs);

// Whether x25519_jobs uses the IFMA ladder on this CPU (else libsodium).
bool x25519_vector_ladder_available();

// The same jobs on the IFMA ladder whatever the dispatch says (asserts that the CPU has it):
// for the tests and the benchmarks, which compare it with libsodium.
void x25519_jobs_on_vector_ladder(std::span<X25519Job> jobs);

}  // namespace msgsim::crypto
