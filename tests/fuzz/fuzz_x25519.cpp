// Differential fuzzing of our four-lane X25519 ladder (impl/crypto/x25519.h) against libsodium's
// crypto_scalarmult. The input is up to four (scalar, u) pairs of 64 bytes (a shorter tail is
// padded with zeros); the first byte's low bits pick how many of the u are replaced by points
// of the curve (public keys of the raw bytes), so that both the twist's u and the curve's are
// reached. Each job's verdict and bytes must be libsodium's, on the vector ladder when the CPU
// has AVX-512 IFMA and through x25519_jobs' dispatch either way.
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "impl/base/assert.h"
#include "impl/crypto/x25519.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  MSGSIM_ASSERT(sodium_init() >= 0, "libsodium failed to initialise");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace msgsim::crypto;
  if (size < 1) return 0;
  const unsigned on_curve_mask = data[0];
  ++data;
  --size;
  const size_t count = std::min<size_t>(kX25519Lanes, std::max<size_t>(1, (size + 63) / 64));
  std::array<std::array<uint8_t, 32>, kX25519Lanes> scalars{}, points{};
  for (size_t i = 0; i < count; ++i) {
    const size_t at = 64 * i;
    if (at < size) std::memcpy(scalars[i].data(), data + at, std::min<size_t>(32, size - at));
    if (at + 32 < size) std::memcpy(points[i].data(), data + at + 32, std::min<size_t>(32, size - at - 32));
    if ((on_curve_mask >> i) & 1) {
      std::array<uint8_t, 32> seed = points[i];
      MSGSIM_ASSERT(crypto_scalarmult_base(points[i].data(), seed.data()) == 0);
    }
  }
  std::array<X25519Job, kX25519Lanes> jobs, dispatched;
  for (size_t i = 0; i < count; ++i) jobs[i] = dispatched[i] = {&scalars[i], &points[i], {}, false};
  if (x25519_vector_ladder_available()) {
    x25519_jobs_on_vector_ladder(std::span<X25519Job>(jobs.data(), count));
  }
  x25519_jobs(std::span<X25519Job>(dispatched.data(), count));
  for (size_t i = 0; i < count; ++i) {
    std::array<uint8_t, 32> theirs{};
    const bool their_ok = crypto_scalarmult(theirs.data(), scalars[i].data(), points[i].data()) == 0;
    if (!their_ok) theirs.fill(0);
    if (x25519_vector_ladder_available()) {
      MSGSIM_ASSERT(jobs[i].ok == their_ok, "X25519 verdict differs from libsodium's");
      MSGSIM_ASSERT(jobs[i].shared == theirs, "X25519 bytes differ from libsodium's");
    }
    MSGSIM_ASSERT(dispatched[i].ok == their_ok, "dispatched X25519 verdict differs");
    MSGSIM_ASSERT(dispatched[i].shared == theirs, "dispatched X25519 bytes differ");
  }
  return 0;
}
