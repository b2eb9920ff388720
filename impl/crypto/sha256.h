// SHA-256 with the x86 SHA extensions (SHA-NI), for the HMACs of the message path.
//
// A Double Ratchet message costs about 14 SHA-256 compressions per side (KDF_CK, the HKDF of
// the message key); libsodium 1.0.18 computes them in portable C, several times slower than
// the SHA-NI instructions that current x86 CPUs have. This file holds only the compression
// and a small streaming hash over it; primitives.h chooses it at run time when the CPU has the
// instructions (Sha256Engine::fastest) and keeps libsodium's code as the fallback. Both engines
// are tested against each other and against the NIST and RFC 4231 vectors (tests/crypto_test).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace msgsim::crypto {

enum class Sha256Engine : uint8_t {
  fastest,    // sha_ni when the CPU has it, otherwise libsodium
  libsodium,  // libsodium's portable code (the fallback, and the reference in tests)
  sha_ni,     // the SHA extensions; only where sha_ni_available()
};

// True when this CPU executes the SHA extensions (and SSE4.1, which the code also uses).
bool sha_ni_available();
// Sha256Engine::fastest resolved for this CPU (computed once).
Sha256Engine resolve_sha256_engine(Sha256Engine engine);

using Sha256State = std::array<uint32_t, 8>;
inline constexpr Sha256State kSha256InitialState = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                                    0xa54ff53a, 0x510e527f, 0x9b05688c,
                                                    0x1f83d9ab, 0x5be0cd19};

// Compresses `block_count` consecutive 64-byte blocks into `state`. Only call it where
// sha_ni_available() (the instructions fault otherwise).
void sha256_compress_sha_ni(Sha256State& state, const uint8_t* blocks, size_t block_count);
// Compresses one 64-byte block into each of two independent states, interleaved (about the
// time of one compression: HMAC's ipad/opad pair and KDF_CK's two MACs). Same precondition.
void sha256_compress_two_sha_ni(Sha256State& state_a, const uint8_t* block_a,
                                Sha256State& state_b, const uint8_t* block_b);

// A SHA-256 computation over the SHA-NI compression, resumable from a midstate (HMAC starts
// from the state after its ipad/opad block). Holds message bytes: wipe() it after secret input.
class Sha256NiStream {
 public:
  // Continues from `state` after `bytes_done` bytes (a multiple of 64) were compressed into it.
  Sha256NiStream(const Sha256State& state, uint64_t bytes_done)
      : state_(state), total_bytes_(bytes_done) {}
  void update(std::span<const uint8_t> data);
  // Pads, compresses and writes the 32-byte digest. The stream must not be updated after.
  void finish(uint8_t* digest_out);
  void wipe();

 private:
  Sha256State state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace msgsim::crypto
