// libsodium's randomness, made deterministic for the simulator and for test vectors.
//
// libsodium draws every key, nonce and signature seed from `randombytes_buf`. Inside the
// simulator that must come from the run's seed, so `install_deterministic_randombytes` replaces
// libsodium's generator (randombytes_set_implementation, before sodium_init) with one that
// reads the stream `current_randombytes_stream()` points at: the simulator points it at the
// running node's crypto stream around each handler, so a node's keys do not depend on what
// other nodes drew. The replacement is process-wide: `reseed_randombytes` at the start of
// every run makes a process that runs several seeds give each the same bytes as a fresh one.
#pragma once

#include <cstdint>

#include "impl/base/prng.h"

namespace msgsim::sim {

// Installs the deterministic generator and calls sodium_init. Idempotent. Aborts if libsodium
// was already initialised with another generator (the replacement must come first).
void install_deterministic_randombytes();

// Resets the fallback stream (used when no node stream is current) to `seed`.
void reseed_randombytes(uint64_t seed);

// The stream randombytes reads next; nullptr selects the fallback stream. Returns the previous.
Prng* set_randombytes_stream(Prng* stream);

// Scopes a stream for the duration of a handler.
class RandombytesScope {
 public:
  explicit RandombytesScope(Prng* stream) : previous_(set_randombytes_stream(stream)) {}
  ~RandombytesScope() { set_randombytes_stream(previous_); }
  RandombytesScope(const RandombytesScope&) = delete;
  RandombytesScope& operator=(const RandombytesScope&) = delete;

 private:
  Prng* previous_;
};

}  // namespace msgsim::sim
